"""notebooks/explore_runs.ipynb runs headlessly against a store it is pointed at, and is committed without outputs."""

import nbformat
import pytest
from conftest import REPO, run_quick
from nbclient import NotebookClient

from hw1track.tracking.query import StoreReader, by_group
from hw1track.training.threads import intra_op_threads

NOTEBOOK = REPO / "notebooks" / "explore_runs.ipynb"


def _outputs_text(notebook) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def test_the_committed_notebook_has_no_outputs_and_one_parameters_cell():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert sum("parameters" in cell.metadata.get("tags", []) for cell in code) == 1


@pytest.mark.slow
def test_notebook_queries_and_redraws_the_runs_of_the_store_it_is_pointed_at(store_uri, tmp_path, monkeypatch):
    with intra_op_threads(1):
        parent_id = run_quick("part1_3c_i", store_uri, "epochs=1", "train_size=600", "test_size=200", seeds=2)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    [parameters] = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters.source = 'EXPERIMENT = "part1_3c_i"\nMETRIC = "test_acc"\nX_PARAM = "batch_size"\n'
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)  # the kernel inherits the environment

    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = _outputs_text(notebook)
    assert store_uri in text
    reader = StoreReader(store_uri)
    children = reader.children(reader.client.get_run(parent_id))
    for child in children:
        assert child.info.run_name in text
    assert parent_id in text  # the invocations table
    groups = by_group(children)
    assert len(groups) == len(children) // 2
    for group, replicates in groups.items():  # the replicates table: one row per configuration, both seeds
        assert group in text and ", ".join(run.info.run_name for run in replicates) in text
    images = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert len(images) == 3  # final values, learning curves, mean and band over seeds
