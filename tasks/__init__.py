"""Built-in tasks, one definition each. Importing this package registers them."""

from . import chartqa, docvqa, infovqa, transcribe  # noqa: F401
