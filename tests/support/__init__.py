"""What several test folders share: running the command line, tiny Hugging Face models and datasets saved to disk,
output folders built from known scores, the bodies of spawned processes. Importing this package imports nothing
heavy (spawned processes import `support.workers` alone)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
