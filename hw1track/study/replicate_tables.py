"""Parent tables that span replicates, written one replicate at a time and assembled when the invocation ends.

A table such as part1_3c_i's `interpolation.csv` holds one block of rows per
replicate. Replicates trained as separate tasks (see `executors`) would
overwrite each other's table, so each replicate logs its block as a part,
`parts/<table stem>/replicate-<r>.csv`, and the parent's table is the parts
concatenated in replicate order. The in-process path goes through the same
parts, so both ways of running write the same artifact. The parts stay beside
the table: they are what it was made from.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from hw1track.tracking.names import PARAM_REPLICATE
from hw1track.tracking.runs import TrackedRun

PARTS = "parts"
_PART = re.compile(r"replicate-(\d+)\.csv")


def part_path(table: str, replicate: int) -> str:
    return f"{PARTS}/{PurePosixPath(table).stem}/replicate-{replicate}.csv"


def log_parts(parent: TrackedRun, table: str, frame: Any) -> None:
    """One part per replicate present in `frame` (a pandas DataFrame with a `replicate` column)."""
    if not table.endswith(".csv") or "/" in table:
        raise ValueError(f"a replicate table is a CSV file at the top of the parent's artifacts, not {table!r}")
    for replicate, rows in frame.groupby(PARAM_REPLICATE, sort=True):
        parent.log_csv(rows, part_path(table, int(replicate)))


def merge(parent: TrackedRun) -> list[str]:
    """Log every table whose parts the parent holds, its parts concatenated in replicate order; the tables' names.

    The CSV text is joined as written (one header), so values are exactly those the replicates logged.
    """
    client = parent.client
    folders = client.list_artifacts(parent.run_id, PARTS)
    tables = [PurePosixPath(folder.path).name for folder in folders if folder.is_dir]
    if not tables:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        parts = Path(client.download_artifacts(parent.run_id, PARTS, tmp))
        for stem in tables:
            _log_joined(parent, sorted(_numbered(parts / stem)), Path(tmp) / f"{stem}.csv")
    return [f"{stem}.csv" for stem in tables]


def _numbered(folder: Path) -> list[tuple[int, Path]]:
    return [(int(found.group(1)), path) for path in folder.iterdir() if (found := _PART.fullmatch(path.name))]


def _log_joined(parent: TrackedRun, parts: list[tuple[int, Path]], joined: Path) -> None:
    lines = parts[0][1].read_text().splitlines(keepends=True)
    header = lines[0]
    for _, path in parts[1:]:
        more = path.read_text().splitlines(keepends=True)
        if more[0] != header:
            raise ValueError(f"{path.name} of {joined.name} has other columns than the first part")
        lines.extend(more[1:])
    joined.write_text("".join(lines))
    parent.log_file(joined)
