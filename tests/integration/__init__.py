"""Several layers together on tiny models: training, evaluation, caches, probes, reports, real backbones and data."""
