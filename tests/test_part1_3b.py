"""part1_3b: a sweep over the dense width only, with P over two decades, and figures against P."""

import math

import pytest
import torch
from conftest import hw1track, run_quick

from hw1track.training.data import load_mnist, subset
from hw1track.training.evaluation import evaluate_splits
from hw1track.training.fit import fit
from hw1track.training.models import cnn, n_params
from hw1track.training.sinks import NullSink
from hw1track.training.tasks import CLASSIFICATION
from runs import part1_3b

# params that legitimately differ between the models of the sweep
VARYING = {"model", "width", "n_params", "seed"}


def test_default_widths_span_two_decades_of_parameters():
    cfg = part1_3b.PRESETS["full"]
    sizes = [n_params(cnn(cfg.channels, (width,))) for width in cfg.widths]
    assert len(set(cfg.widths)) == len(cfg.widths) >= 10
    assert sizes == sorted(sizes) and sizes[0] <= 1.1e4 and sizes[-1] >= 1.5e6
    assert part1_3b.PRESETS["quick"].widths == cfg.widths


@pytest.mark.slow
def test_quick_sweep_varies_only_the_dense_width_and_logs_full_set_final_metrics(store_uri, reader, tmp_path):
    n_train, n_test, epochs = 600, 500, 1
    parent_id = run_quick("part1_3b", store_uri, f"epochs={epochs}", f"train_size={n_train}", f"test_size={n_test}")
    parent = reader.client.get_run(parent_id)
    children = reader.children(parent)
    cfg = part1_3b.PRESETS["quick"]
    assert len(children) == len(cfg.widths) >= 10

    widths = [int(child.data.params["width"]) for child in children]
    sizes = [int(child.data.params["n_params"]) for child in children]
    assert widths == list(cfg.widths) and len(set(widths)) == len(widths)
    assert math.log10(max(sizes) / min(sizes)) >= 2
    shared = [{k: v for k, v in child.data.params.items() if k not in VARYING} for child in children]
    assert all(params == shared[0] for params in shared)
    assert shared[0]["epochs"] == str(epochs) and shared[0]["n_train"] == str(n_train)
    assert len({child.data.params["seed"] for child in children}) == len(children)

    mnist = load_mnist()
    splits = {"train": subset(mnist.train_x, mnist.train_y, n_train, 0),
              "test": subset(mnist.test_x, mnist.test_y, n_test, 0)}
    conv_shapes = set()
    for child, width, size in zip(children, widths, sizes):
        history = reader.history([child], ["train_loss", "test_loss", "train_acc", "test_acc"])
        assert set(history.groupby("key").step.max()) == {epochs}
        # the logged weights are the model the params describe, and its last logged metrics are
        # full-set evaluations of those weights, not running minibatch averages
        state = torch.load(reader.download(child, "weights/final.pt"), weights_only=True)
        model = cnn(part1_3b.PRESETS["quick"].channels, (width,))
        model.load_state_dict(state)
        assert n_params(model) == size
        conv_shapes.add(tuple(state["0.weight"].shape))
        logged = child.data.metrics
        for key, value in evaluate_splits(model, splits, CLASSIFICATION).items():
            assert logged[key] == pytest.approx(value, rel=1e-5), (width, key)
    assert len(conv_shapes) == 1

    out = tmp_path / "figures"
    drawn = hw1track("analyze", "part1_3b", "--tracking-uri", store_uri, "--out", str(out), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    names = {"loss_vs_params.png", "accuracy_vs_params.png"}
    assert {p.name for p in (out / "part1_3b").iterdir()} == names
    assert {a.path for a in reader.client.list_artifacts(parent_id, "figures")} == {f"figures/{n}" for n in names}

    from analysis import part1_3b as analysis

    figure = analysis.figures(reader, parent)["loss_vs_params"]
    (axes,) = figure.axes
    assert axes.get_xscale() == "log"
    train_line = next(line for line in axes.lines if line.get_label() == "train")
    assert list(train_line.get_xdata()) == sorted(sizes)
    by_size = sorted(children, key=lambda child: int(child.data.params["n_params"]))
    assert list(train_line.get_ydata()) == [child.data.metrics["train_loss"] for child in by_size]


def test_conv_models_train_channels_last_and_their_weights_load_into_a_plain_model():
    """fit switches conv weights to channels-last for speed; what it saves must mean the same in NCHW."""
    mnist = load_mnist()
    train = (mnist.train_x[:512], mnist.train_y[:512])
    model = cnn((4, 8), (16,))  # the second conv has 4 input channels, so its two layouts differ
    fit(model, train, task=CLASSIFICATION, epochs=1, batch_size=128, lr=1e-3, seed=0, eval_splits={},
        sink=NullSink())
    assert model[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[3].weight.is_contiguous()

    plain = cnn((4, 8), (16,))
    plain.load_state_dict(model.state_dict())
    assert plain[3].weight.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(plain(train[0][:256]), model(train[0][:256]), rtol=1e-5, atol=1e-5)
