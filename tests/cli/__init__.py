"""The `alignbench` command line, driven as a user drives it."""
