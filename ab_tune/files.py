"""Every file ab_tune writes is written whole or not at all: into a temporary file beside it, then
renamed onto it (an interrupted run never leaves a half-written report or settings file)."""
from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator

__all__ = ["atomic_path", "remove_written", "write_atomically"]


def _temporary(path: str, writer: str) -> str:
    """The temporary beside ``path`` of the process ``writer`` (a pid, or a glob pattern of pids)."""
    root, extension = os.path.splitext(path)
    return f"{root}.tmp{writer}{extension}"


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` (same extension, for writers that infer the format from it),
    renamed onto ``path`` when the block ends without an error, removed when it raises."""
    temporary = _temporary(path, str(os.getpid()))
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as e:  # the file it was for, not the temporary
        raise type(e)(e.errno, f"cannot write {path}: {e.strerror}") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_atomically(path: str, text: str) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as f:
        f.write(text)


def remove_written(path: str) -> None:
    """Remove ``path`` and the temporaries of it that writers killed mid-write left beside it."""
    for leftover in [path, *glob.glob(_temporary(glob.escape(path), "[0-9]*"))]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(leftover)
