"""One module, class or function at a time: connectors, metrics, data, prompts, registries, configuration."""
