"""The machine's own metrics on every parent run, through MLflow's system-metrics monitor, and how to turn them off."""

from conftest import run_quick

from hw1track.tracking.system_metrics import PREFIX, SWITCH_ENV

FAST = ("train_size=600", "test_size=300")


def test_a_parent_run_records_cpu_and_memory_and_its_children_do_not(store_uri, reader, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    parent = reader.client.get_run(run_quick("part1_3c_i", store_uri, *FAST, seeds=1))
    system = {key for key in parent.data.metrics if key.startswith(PREFIX)}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
    assert 0 <= parent.data.metrics["system/cpu_utilization_percentage"] <= 100
    assert parent.data.metrics["system/system_memory_usage_megabytes"] > 0
    history = reader.client.get_metric_history(parent.info.run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in history] == list(range(len(history)))  # one row per sampling interval, in order
    for child in reader.children(parent):
        assert not any(key.startswith(PREFIX) for key in child.data.metrics)


def test_a_parent_shorter_than_one_interval_still_gets_a_sample(store_uri, reader, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "3600")
    parent = reader.client.get_run(run_quick("part1_3c_i", store_uri, *FAST, seeds=1))
    assert "system/cpu_utilization_percentage" in parent.data.metrics


def test_system_metrics_can_be_turned_off(store_uri, reader, monkeypatch):
    monkeypatch.setenv(SWITCH_ENV, "0")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    parent = reader.client.get_run(run_quick("part1_3c_i", store_uri, *FAST, seeds=1))
    assert not any(key.startswith(PREFIX) for key in parent.data.metrics)
