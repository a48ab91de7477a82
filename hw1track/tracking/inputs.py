"""What a child trained and was tested on, as MLflow dataset inputs, and what started it, as MLflow's source tags.

The MLflow UI fills its Dataset and Source columns from exactly these: a run
table of MNIST and Fashion-MNIST models, or of part1_3a's true and shuffled
labels, then says which data each model saw without opening a run. A split is
an MLflow `Dataset` holding only metadata (no copy of the images): its name is
the image set's, its digest a hash of the split's own bytes (a subset or
shuffled labels get their own), and its context the split (`train`, `test`).

MLflow's store gets-or-creates a dataset row in two steps (read, then insert),
so children of one study logging the same new split at the same moment from
several processes (Ray workers, one shared server) race: every loser's insert
breaks the row's unique key and its whole request is rolled back. Logging again
then finds the winner's row, so a lost race is retried, never reported.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

DIGEST_LENGTH = 16
LOG_ATTEMPTS = 5  # a lost race needs one more; more guards against a third process winning the next one too
RETRY_PAUSE_SECONDS = 0.05
# How SQLite, PostgreSQL and MySQL word a broken unique key, as the server relays SQLAlchemy's IntegrityError.
_DUPLICATE_ROW_MARKERS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


def split_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """The first hex digits of the MD5 of a split's images and labels, as stored (about 0.3 s for 60,000 images)."""
    digest = hashlib.md5()
    for tensor in (x, y):
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


class SplitInputs:
    """The dataset inputs of an invocation's children, each split hashed once however many children use it."""

    def __init__(self, dataset: str, checksum: str):
        self.dataset, self.checksum = dataset, checksum
        self._digests: dict[tuple[int, int, int, int], str] = {}

    def inputs(self, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> list[DatasetInput]:
        return [DatasetInput(self._dataset(x, y), tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)])
                for split, (x, y) in splits.items()]

    def _dataset(self, x: torch.Tensor, y: torch.Tensor) -> Dataset:
        key = (x.data_ptr(), len(x), y.data_ptr(), len(y))  # the same tensors for every child of the invocation
        if key not in self._digests:
            self._digests[key] = split_digest(x, y)
        return Dataset(name=self.dataset, digest=self._digests[key], source_type="hw1track",
                       source=json.dumps({"dataset": self.dataset, "files_md5": self.checksum}),
                       profile=json.dumps({"num_rows": len(x)}))


def log_inputs(client: MlflowClient, run_id: str, datasets: Sequence[DatasetInput]) -> None:
    """Log a run's dataset inputs, logging again when another process created the same dataset row first."""
    for attempt in range(1, LOG_ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, datasets=list(datasets))
            return
        except MlflowException as error:
            if attempt == LOG_ATTEMPTS or not lost_dataset_race(error):
                raise
            time.sleep(RETRY_PAUSE_SECONDS * attempt)


def lost_dataset_race(error: MlflowException) -> bool:
    """Whether the store refused a dataset row because an identical one was inserted since it looked."""
    message = str(error)
    return "datasets" in message and any(marker in message for marker in _DUPLICATE_ROW_MARKERS)


def source_tags() -> dict[str, str]:
    """MLflow's Source column: the command that started the run (`hw1track run part1_3b ...`, or a script)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    command = " ".join(["hw1track" if program in {"hw1track", "cli.py", "__main__.py"} else program, *sys.argv[1:]])
    return {MLFLOW_SOURCE_NAME: command[:500], MLFLOW_SOURCE_TYPE: "LOCAL"}
