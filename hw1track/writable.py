"""Whether a file or folder can be written, asked before any work is done and without creating anything.

A command told to write where it cannot (an `--out` under a regular file, a
store on a read-only mount) should say so in one line before it spends minutes
drawing, and a refused command must leave no folder behind, so nothing here
writes to find out: it asks the kernel (`access`), which also knows read-only
mounts and immutable files, where permission bits alone would not stop root.
"""

from __future__ import annotations

import os
from pathlib import Path


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _on_read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def why_not_writable(path: str | Path) -> str | None:
    """None when `path` (a file or a folder, existing or not) can be written or created, else why not, in a phrase.

    A missing path counts as creatable when its nearest existing ancestor is a
    folder that can be written, so its missing folders can be made on the way.
    """
    path = Path(path)
    existing = _nearest_existing(path)
    if existing != path and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    mode = os.W_OK | os.X_OK if existing.is_dir() else os.W_OK
    if os.access(existing, mode):
        return None
    if _on_read_only_mount(existing):
        return f"{existing} is on a read-only file system"
    return f"{existing} is not writable (permission denied)"
