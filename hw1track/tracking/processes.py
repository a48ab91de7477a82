"""Which process a run belongs to, and whether that process still exists.

A run killed with `kill -9` (or lost with its machine) never ends itself and
stays RUNNING in the store. Every run records the host and process that opened
it, so a later command can tell a run that is still being written from one
whose writer is gone. The process's start time is recorded too where the
system exposes it (Linux), so that a recycled process id does not keep a dead
run alive.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from hw1track.tracking.names import TAG_HOST, TAG_PID, TAG_PROCESS_START


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _process_start(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def current_process_tags() -> dict[str, str]:
    """The tags that name this process: host, pid and (where known) its start time."""
    tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}
    start = _process_start(os.getpid())
    if start is not None:
        tags[TAG_PROCESS_START] = start
    return tags


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process `pid` of this host still runs (and, given its start time, is the same process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    fields = _stat_fields(pid)
    if fields:
        if fields[0] == "Z":  # exited, not yet reaped by its parent
            return False
        if start is not None and len(fields) > 19 and fields[19] != start:
            return False  # the id now belongs to another process
    return True


def writer_gone(tags: Mapping[str, str], started_ms: int, now_ms: int, stale_after_s: float) -> bool:
    """Whether the process that opened a RUNNING run with these tags is gone.

    On this host that is checked directly. A run opened on another host, or one
    that predates these tags, cannot be checked from here; it counts as gone once
    it has been running for longer than `stale_after_s`.
    """
    host, pid = tags.get(TAG_HOST), tags.get(TAG_PID)
    if host == socket.gethostname() and pid and pid.isdigit():
        return not process_alive(int(pid), tags.get(TAG_PROCESS_START))
    return now_ms - started_ms > stale_after_s * 1000
