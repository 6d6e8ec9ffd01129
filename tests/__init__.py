"""AlignBench's tests, by layer: unit, integration, cli, distributed, reliability (docs/testing.md)."""
