"""Files that hold record text or secrets are created readable by their owner only (0600, folders 0700).

Record text is protected health information: a store, a saved model with
retriever points, a cache, a secret key must not be readable by other users of
the machine just because the process umask was 022. Existing files are left as
they are (a team may share a store on purpose); what taxonomist creates is private.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["FILE_MODE", "DIR_MODE", "private_dir", "private_file"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | Path) -> Path:
    """Create a folder (and missing parents) as 0700; an existing folder is left as it is."""
    p = Path(path)
    missing = []
    for parent in (p, *p.parents):
        if parent.exists():
            break
        missing.append(parent)
    p.mkdir(parents=True, exist_ok=True)
    for created in missing:
        with contextlib.suppress(OSError):
            os.chmod(created, DIR_MODE)
    return p


def private_file(path: str | Path) -> Path:
    """Create `path` empty as 0600 when it does not exist (then whatever writes it keeps that mode).

    SQLite gives its -wal and -shm files the mode of the database file, so
    creating the database this way keeps all three private. An existing file
    is not touched.
    """
    p = Path(path)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    return p

