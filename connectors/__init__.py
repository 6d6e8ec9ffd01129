"""Built-in connectors, one file each. Importing this package registers them."""

from . import align, mlp, ovis, perceiver  # noqa: F401
