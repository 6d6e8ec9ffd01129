"""AlignBench: compare vision-language connectors on the same backbone, data and budget."""

__version__ = "0.1.0"
