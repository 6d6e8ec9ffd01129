"""Built-in connectors, one file each. Importing this package registers them, in the order tables list them:
the study's four (AlignVLM, Table 2), then the other connectors it and today's VLMs compare."""

from . import mlp, perceiver, ovis, align, hreducer, cabstractor, pixelshuffle  # noqa: F401, I001
