"""Built-in tasks, one definition each. Importing this package registers them."""

from . import chartqa, docvqa, infovqa  # noqa: F401
