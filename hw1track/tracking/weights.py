"""A run's stored weights back into a model, for a reused run or an analysis that evaluates it again.

Loading never unpickles arbitrary objects (`weights_only=True`), and every way
it can fail (missing artifact, a file that is not a state_dict, a state_dict of
another architecture) ends in one `StoreError` line naming the run, not a
traceback from deep inside torch or MLflow.
"""

from __future__ import annotations

import tempfile

import torch
from mlflow import MlflowClient

from hw1track.errors import StoreError
from hw1track.tracking.names import WEIGHTS_ARTIFACT


def load_state_dict(client: MlflowClient, run_id: str,
                    artifact_path: str = WEIGHTS_ARTIFACT) -> dict[str, torch.Tensor]:
    """Weights saved by `TrackedRun.log_state_dict`."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, artifact_path, tmp)
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise StoreError(f"run {run_id}: artifact {artifact_path} cannot be loaded ({_first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StoreError(f"run {run_id}: artifact {artifact_path} does not hold a state_dict")
    return state


def restore_weights(model: torch.nn.Module, client: MlflowClient, run_id: str,
                    artifact_path: str = WEIGHTS_ARTIFACT) -> None:
    """Put a run's stored weights back into `model`."""
    state = load_state_dict(client, run_id, artifact_path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise StoreError(f"run {run_id}: artifact {artifact_path} does not fit the model "
                         f"({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
