"""A reused run is another invocation's finished run: it can be read back, and there is nothing to write it with."""

import torch

from hw1track.tracking.names import TAG_REUSED_PREFIX
from hw1track.tracking.runs import ReusedRun, TrackedRun, parent_run
from hw1track.tracking.store import Store
from hw1track.tracking.weights import restore_weights

SCOPE = {"preset": "quick", "code_version": "v1", "seed": 0}


def _trained_then_reused(store_uri):
    """A model trained under one parent, its run as stored then, and the same recipe asked for under a second one."""
    store = Store(store_uri)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    with parent_run(store, "unit", "quick", "first", {}, scope=SCOPE, reuse=True) as first:
        with first.child("c", {"seed": 0}) as trained:
            trained.log_series({"train_loss": [0.75, 0.5, 0.25]}, first_step=0)
            trained.log_state_dict(model)
    finished = store.client.get_run(trained.run_id)
    with parent_run(store, "unit", "quick", "second", {}, scope=SCOPE, reuse=True) as second:
        with second.child("c", {"seed": 0}) as reused:
            pass
    return model, finished, second, reused


def test_a_reused_run_has_no_writer_of_a_tracked_run_nor_any_other(store_uri):
    _, finished, _, reused = _trained_then_reused(store_uri)
    assert isinstance(reused, ReusedRun) and not isinstance(reused, TrackedRun)
    writers = {name for name in dir(TrackedRun) if not name.startswith("_") and callable(getattr(TrackedRun, name))}
    assert {"log_metrics", "log_series", "flush", "set_tags", "log_state_dict", "end"} <= writers
    assert sorted(name for name in writers if hasattr(reused, name)) == []
    assert {name for name in dir(reused) if not name.startswith("_")} == {"client", "run", "run_id"}
    assert reused.run_id == finished.info.run_id


def test_a_reused_run_gives_back_the_finished_model_and_leaves_it_as_it_was(store_uri, reader):
    model, finished, second, reused = _trained_then_reused(store_uri)
    assert isinstance(reused, ReusedRun) and reused.run_id == finished.info.run_id
    assert reused.run.data.metrics == finished.data.metrics == {"train_loss": 0.25}

    restored = torch.nn.Linear(3, 2)
    restore_weights(restored, reused.client, reused.run_id)
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor)

    links = [value for key, value in reader.client.get_run(second.run_id).data.tags.items()
             if key.startswith(TAG_REUSED_PREFIX)]
    assert links == [finished.info.run_id]
    after = reader.client.get_run(finished.info.run_id)
    assert (after.info.status, after.info.end_time, after.data.tags, after.data.params) \
        == ("FINISHED", finished.info.end_time, finished.data.tags, finished.data.params)
    history = reader.client.get_metric_history(finished.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.75), (1, 0.5), (2, 0.25)]
