"""Typed, torch-free configuration dataclasses, one module per kind (backbone, data, train, eval, parallel, run,
launch, cost). Each has `validate()`; checks that need a registry (a task, connector or backbone name) look it
up inside the method, so importing a configuration never imports torch."""
