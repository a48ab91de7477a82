"""A disk that fills, or a quota that runs out, while a command writes: one line saying where and what to do.

Weights, figures and metrics are written deep inside MLflow, which raises the
OSError as it is, wraps it in an MlflowException, or (SQLite) reports "database
or disk is full". By the time it reaches the command line the runs it hit have
ended FAILED (see `ending`), so what the user needs is where the disk is full,
not a traceback through MLflow's artifact repository.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from hw1track.errors import Hw1Error

# What the errors say when only their text survived the wrapping (an MlflowException, a server's reply).
NO_SPACE_TEXTS = ("No space left on device", "database or disk is full")
QUOTA_TEXTS = ("Disk quota exceeded",)


class DiskFull(Hw1Error):
    """The disk (or the quota) a command writes to ran out."""


def _cause(exc: BaseException) -> tuple[int, str | None] | None:
    """(errno, the file being written if known) when `exc` or anything it wraps is a full disk or quota."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc.errno, exc.filename2 or exc.filename
        text = str(exc)
        if any(t in text for t in NO_SPACE_TEXTS):
            return errno.ENOSPC, None
        if any(t in text for t in QUOTA_TEXTS):
            return errno.EDQUOT, None
        exc = exc.__cause__ or exc.__context__
    return None


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _free(path: Path) -> str:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return f"{shutil.disk_usage(existing).free / 1e6:.1f} MB free now"
    except OSError:
        return "free space unknown"


def disk_full_error(exc: BaseException, folders: Iterable[str | Path]) -> DiskFull | None:
    """The one-line error for `exc` when it is a full disk or quota, else None.

    `folders` are where the command writes (the store's folder, `--out`): named
    when the error does not say which file it was writing.
    """
    found = _cause(exc)
    if found is None:
        return None
    code, filename = found
    places = [Path(filename).parent] if filename else [Path(folder) for folder in folders]
    where = " or ".join(f"{place} (on the disk mounted at {_mount_point(place)}, {_free(place)})"
                       for place in places) or "a disk"
    what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
    return DiskFull(f"{what} while writing to {where}; free space there or write elsewhere (--tracking-uri, --out); "
                    f"any run in progress ended FAILED")
