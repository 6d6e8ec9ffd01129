"""Typed, torch-free configuration dataclasses, one module per kind (backbone, data, train, eval, parallel, run,
launch, cost, session; the commands of many runs: sweep, probe, prepare, report). Each has `validate()`; checks that
need a registry (a task, connector or backbone name) look it up inside the method, so importing a configuration
never imports torch.

A field declared with `base.opt` is a command-line option: its help and default are stated there once and
`alignbench.cli.options` generates the commands' options from them."""
