"""What reproduces a run: the code's commit and the versions of everything that computes."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import hw1track

PACKAGES = ("torch", "torchvision", "mlflow", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib")


def _git(*args: str) -> str | None:
    source_dir = Path(hw1track.__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", *args], cwd=source_dir, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> str:
    """The checked-out commit of this source tree, suffixed '-dirty' when it has local edits."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "hw1track": hw1track.__version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    import torch

    versions["torch"] = torch.__version__  # the build tag (+cpu, +cu130) matters for reproducing numbers
    return versions
