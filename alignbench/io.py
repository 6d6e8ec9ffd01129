"""The one way files reach the disk safely: atomic writes, atomic folder publishing, locks and fsync.

- `atomic_path(path)`: a temporary name beside `path` to write to; when the block ends, the file is synced,
  renamed over `path` and the folder entry synced, so a reader sees the old file or the new one, never a part.
  `atomic_write(path, text)` is the common case (and turns a failure into one message).
- `publish_dir(tmp, final)`: a finished temporary folder renamed into place (synced first), for caches that
  are written as a whole folder (prepared backbones, embedded datasets, checkpoints).
- `lock(path)`: an exclusive lock file (`filelock`), for what several processes must do one at a time.
- `append_synced(file, text)`: an append that is on disk when it returns (the evaluation journal).

Nothing else in the package calls `os.replace`, `fsync` or `fcntl`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import AlignBenchError


def fsync_path(path: Path) -> None:
    """Flush a file or a folder entry to disk (a folder: the names in it, e.g. a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # file systems that cannot sync a folder still renamed it
        fsync_path(folder)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path in `path`'s folder; once the block has written it, it replaces `path` (synced, renamed,
    the folder synced). If the block fails, the temporary file is removed and `path` is left as it was. OSError
    propagates: callers say what was being written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{secrets.token_hex(3)}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` atomically (`atomic_path`); a failure is one message saying what is intact."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
    except OSError as exc:
        raise AlignBenchError(
            f"could not write {str(path)!r} ({exc.strerror or exc}); its previous version, if any, "
            "is intact: free space, fix permissions or create the folder, then run again"
        ) from None


def publish_dir(tmp: Path, final: Path, *, replace: bool = False) -> bool:
    """Rename the finished folder `tmp` to `final`, synced: a reader sees a whole folder or none.

    `replace`: an existing `final` is removed first (a preparation that is done again). Otherwise, when another
    process published `final` first (the same content, made from the same key), theirs is kept and `tmp` removed;
    returns whether `tmp` became `final`. OSError propagates when `final` could not be written at all."""
    for f in Path(tmp).rglob("*"):
        if f.is_file():
            fsync_path(f)
    fsync_path(tmp)
    if replace and final.exists():
        shutil.rmtree(final)
    try:
        os.replace(tmp, final)
    except OSError:
        if replace or not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    _fsync_folder(Path(final).parent)
    return True


def lock(path: Path, timeout: float = -1):
    """An exclusive lock on the file `path` (created if missing), as a context manager; `timeout` seconds to wait
    (-1: as long as it takes, 0: not at all, raising `filelock.Timeout`). Released when the process dies."""
    from filelock import FileLock

    return FileLock(str(path), timeout=timeout)


def append_synced(file, text: str) -> None:
    """Append `text` to an open file and return once it is on disk."""
    file.write(text)
    file.flush()
    os.fsync(file.fileno())
