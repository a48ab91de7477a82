"""Real read-only and full file systems for the tests, mounted for a test and unmounted in its teardown.

Permission bits do not stop root, and a folder made immutable is not what a
read-only mount or a full disk looks like to MLflow and SQLite; a real mount is.
`read_only(folder)` makes `folder` read-only where it is (a read-only bind
mount of itself), so the artifact paths a store records still point into it.
As root the mount is made here; otherwise each command runs in a user and
mount namespace of its own (`unshare -rm`) that makes it first.
`mounted_tmpfs(folder, size)` mounts a tmpfs of `size` there, a disk that
fills up, as root only. Tests skip, saying why, when mounting is not permitted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Run by `sh -c` inside a fresh namespace: $0 is the folder, the rest the command to run once it is read-only.
_READ_ONLY_THEN_RUN = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'


@dataclass
class Mount:
    """A mounted folder, and what a command must run under to see the mount ([] when it was made here)."""

    folder: Path
    prefix: list[str] = field(default_factory=list)

    def hw1track(self, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        """The command line in a fresh process that sees the mount, as a user would run it."""
        return subprocess.run([*self.prefix, sys.executable, "-m", "hw1track.cli", *args], cwd=cwd,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _unmount(folder: Path) -> None:
    """Unmounted even when a file is still open there (detached then, and gone once it is closed)."""
    if _run("umount", str(folder)).returncode != 0:
        _run("umount", "--lazy", str(folder)).check_returncode()


@contextmanager
def read_only(folder: Path) -> Iterator[Mount]:
    """`folder` on a read-only mount of itself for the duration."""
    refusals = []
    if os.geteuid() == 0:
        bound = _run("mount", "--bind", str(folder), str(folder))
        if bound.returncode == 0:
            made_read_only = _run("mount", "-o", "remount,ro,bind", str(folder), str(folder))
            if made_read_only.returncode == 0:
                try:
                    yield Mount(folder)
                finally:
                    _unmount(folder)
                return
            _unmount(folder)
            refusals.append(made_read_only.stderr.strip())
        else:
            refusals.append(bound.stderr.strip())
    prefix = ["unshare", "-rm", "sh", "-c", _READ_ONLY_THEN_RUN, str(folder)]
    try:
        probe = _run(*prefix, "sh", "-c", 'test ! -w "$0"', str(folder))
    except FileNotFoundError:
        probe = None
    if probe is None or probe.returncode != 0:
        refusals.append("unshare -rm: " + (probe.stderr.strip() if probe else "not installed"))
        pytest.skip(f"cannot mount {folder} read-only here (no mount rights, no user namespaces): {refusals}")
    yield Mount(folder, prefix)


@contextmanager
def mounted_tmpfs(folder: Path, size: str) -> Iterator[Mount]:
    """A tmpfs of `size` (e.g. "3m") mounted on `folder` for the duration: a disk that fills up."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {folder}: {mounted.stderr.strip()}")
    try:
        yield Mount(folder)
    finally:
        _unmount(folder)
