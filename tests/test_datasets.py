"""A second image set: a Fashion-MNIST model is told apart from an MNIST one in the store, the UI and the figures."""

import json

from conftest import hw1track, run_quick

from analysis import part1_3b as analysis
from hw1track.reporting.report import write_report
from hw1track.tracking.names import TAG_CONFIG_HASH, TAG_DATA_MD5, TAG_DATASET, TAG_MNIST_MD5
from hw1track.training.data import FASHION_MNIST, MNIST

SMALL = ("widths=6,28", "train_size=500", "test_size=300", "epochs=1")


def test_a_quick_experiment_on_fashion_mnist_is_its_own_result_everywhere(store_uri, reader, fashion_source,
                                                                           monkeypatch, tmp_path):
    monkeypatch.setenv(FASHION_MNIST.source_env, str(fashion_source))
    ids = {name: run_quick("part1_3b", store_uri, *SMALL, f"dataset={name}", seeds=1)
           for name in (MNIST.name, FASHION_MNIST.name)}
    parents = {name: reader.client.get_run(run_id) for name, run_id in ids.items()}
    for image_set in (MNIST, FASHION_MNIST):
        parent = parents[image_set.name]
        assert parent.data.tags[TAG_DATASET] == parent.data.params["dataset"] == image_set.name
        assert parent.data.tags[TAG_DATA_MD5] == image_set.checksum()
        assert all(child.data.params["dataset"] == image_set.name for child in reader.children(parent))
    assert TAG_MNIST_MD5 in parents["mnist"].data.tags and TAG_MNIST_MD5 not in parents["fashion-mnist"].data.tags
    assert MNIST.checksum() != FASHION_MNIST.checksum()

    # the same widths, seeds and recipe on the other set are other models: never reused for each other
    children = {name: reader.children(parent) for name, parent in parents.items()}
    hashes = {name: {child.data.tags[TAG_CONFIG_HASH] for child in runs} for name, runs in children.items()}
    assert len(hashes["mnist"]) == len(hashes["fashion-mnist"]) == 2 and not hashes["mnist"] & hashes["fashion-mnist"]
    accuracies = {name: sorted(child.data.metrics["test_acc"] for child in runs) for name, runs in children.items()}
    assert accuracies["mnist"] != accuracies["fashion-mnist"]

    titles = {name: [ax.get_title() for fig in analysis.figures(reader, parent).values() for ax in fig.axes]
              for name, parent in parents.items()}
    assert any(title.startswith("Fashion-MNIST ") for title in titles["fashion-mnist"])
    assert not any("Fashion-MNIST" in title for title in titles["mnist"])
    assert any(title.startswith("MNIST ") for title in titles["mnist"])

    # the report puts the two sets side by side in the experiment's section, and only there
    page = write_report(reader, tmp_path / "report.html").path.read_text()
    section = page.split('<h2 id="part1_3b">')[1].split("<section>")[0]
    assert "On each image set" in section and "<th>MNIST</th><th>Fashion-MNIST</th>" in section
    assert all(run_id in section for run_id in ids.values())
    assert page.count("On each image set") == 1


def test_dataset_on_an_experiment_without_images_is_refused_in_one_line(tmp_path):
    done = hw1track("run", "part1_1a", "--dataset", "fashion-mnist", "--tracking-uri",
                    f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert done.returncode == 2 and "does not train on images" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "mlflow.db").exists()


def test_children_show_their_splits_as_mlflow_datasets_and_every_run_its_source(store_uri, reader):
    parent = reader.client.get_run(run_quick("part1_3a", store_uri, "train_size=300", "test_size=200",
                                             "max_epochs=2", seeds=1))
    digests = {}
    for child in reader.children(parent):
        inputs = {tag.value: entry.dataset for entry in child.inputs.dataset_inputs for tag in entry.tags
                  if tag.key == "mlflow.data.context"}
        assert set(inputs) == {"train", "test"} and {d.name for d in inputs.values()} == {"mnist"}
        assert all(json.loads(d.profile)["num_rows"] == n for d, n in ((inputs["train"], 300), (inputs["test"], 200)))
        digests[child.data.params["label_mode"]] = {split: d.digest for split, d in inputs.items()}
        assert child.data.tags["mlflow.source.type"] == "LOCAL" and child.data.tags["mlflow.source.name"]
    # shuffled labels are other training data; the test set is the same
    assert digests["random"]["train"] != digests["true"]["train"]
    assert digests["random"]["test"] == digests["true"]["test"]
    assert parent.data.tags["mlflow.source.name"] == reader.children(parent)[0].data.tags["mlflow.source.name"]


def test_a_function_fit_beside_images_is_not_labelled_with_the_image_set(store_uri, reader):
    parent = reader.client.get_run(run_quick("part1_2b", store_uri, seeds=1))
    for child in reader.children(parent):
        images = child.data.params.get("dataset") == "mnist"
        assert images == bool(child.inputs.dataset_inputs), child.data.params["model"]


def test_analyze_draws_the_newest_run_of_the_set_it_is_asked_for(store_uri, reader, fashion_source, monkeypatch,
                                                                 tmp_path):
    monkeypatch.setenv(FASHION_MNIST.source_env, str(fashion_source))
    mnist_id = run_quick("part1_3b", store_uri, *SMALL, seeds=1)
    fashion_id = run_quick("part1_3b", store_uri, *SMALL, "dataset=fashion-mnist", seeds=1)
    for dataset, expected in (("mnist", mnist_id), ("fashion-mnist", fashion_id), (None, fashion_id)):
        assert reader.latest_parent("part1_3b", dataset=dataset).info.run_id == expected
    done = hw1track("analyze", "part1_3b", "--dataset", "mnist", "--tracking-uri", store_uri, "--out",
                    str(tmp_path / "figures"), cwd=tmp_path)
    assert done.returncode == 0 and f"logged to run {mnist_id}" in done.stdout, done.stderr
