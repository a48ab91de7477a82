"""`hw1track report`: one self-contained HTML page built from the store, logged to a run of its own."""

import base64
import re

import pytest
from conftest import hw1track, run_quick

from hw1track.reporting.report import REPORT_ARTIFACT, run_link
from hw1track.stats.claims import from_json
from hw1track.study.discovery import discover
from hw1track.tracking.names import CLAIMS_ARTIFACT
from hw1track.tracking.query import StoreReader
from hw1track.training.threads import intra_op_threads

EMBEDDED_PNG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)">')


def _section(page: str, name: str) -> str:
    return page.split(f'<h2 id="{name}">', 1)[1].split("</section>", 1)[0]


@pytest.mark.slow
def test_report_embeds_logged_and_drawn_figures_lists_missing_experiments_and_is_logged(store_uri, tmp_path):
    with intra_op_threads(1):
        analysed = run_quick("part1_3c_i", store_uri, "epochs=1", "train_size=600", "test_size=200")
        unanalysed = run_quick("part1_2b", store_uri, "sinc_iterations=60", "mnist_epochs=1", "train_size=640",
                               "test_size=200")
    drawn = hw1track("analyze", "part1_3c_i", "--tracking-uri", store_uri, "--out", str(tmp_path / "figs"),
                     cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr

    out = tmp_path / "pages" / "study.html"
    done = hw1track("report", "--out", str(out), "--tracking-uri", store_uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 experiments, 7 not run" in done.stdout
    page = out.read_text(encoding="utf-8")
    reader = StoreReader(store_uri)

    # part1_3c_i: the figure `analyze` logged, byte for byte
    images = dict((alt, data) for data, alt in EMBEDDED_PNG.findall(_section(page, "part1_3c_i")))
    assert set(images) == {"interpolation", "loss_surface"}
    for name, data in images.items():
        logged_png = reader.download(reader.client.get_run(analysed), f"figures/{name}.png", tmp_path / "dl")
        assert data == base64.b64encode(logged_png.read_bytes()).decode("ascii"), name

    # part1_2b had no figures: drawn for the page by its analysis module, and not logged to its run
    images = dict((alt, data) for data, alt in EMBEDDED_PNG.findall(_section(page, "part1_2b")))
    assert set(images) == {"grad_norm_sinc", "grad_norm_mnist"}
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n") for data in images.values())
    assert reader.client.list_artifacts(unanalysed, "figures") == []

    # every other experiment is listed as not run
    for name in discover():
        section = _section(page, name)
        assert ("not run" in section) == (name not in {"part1_3c_i", "part1_2b"}), name

    # headline numbers, config and provenance of the parent runs
    parent = reader.client.get_run(analysed)
    section = _section(page, "part1_3c_i")
    for child in reader.children(parent):
        assert f"<td>{child.info.run_name}</td>" in section
        assert f"<td>{child.data.metrics['test_acc']:.4g}</td>" in section
    assert parent.data.tags["hw1track.git_commit"] in section
    assert parent.data.tags["hw1track.mnist_md5"] in section
    assert "<code>alphas_per_unit</code></td><td>10</td>" in section
    assert "<a href=" not in section  # a SQLite store has no UI to link to

    # the claims come first in a section: as analyze logged them for part1_3c_i, computed for part1_2b (none)
    logged_claims = from_json(reader.download(parent, CLAIMS_ARTIFACT, tmp_path / "claims").read_text())
    assert logged_claims and section.index("<h3>Claims</h3>") < section.index("<h3>Figures</h3>")
    assert "as logged by `hw1track analyze` (claims.json)" in section
    for claim in logged_claims:
        assert f"<code>{claim.id}</code>" in section and f'<span class="verdict {claim.verdict.replace(" ", "-")}">' \
            in section
    assert "<h3>Claims</h3>" not in _section(page, "part1_2b")
    supported = sum(claim.verdict == "supported" for claim in logged_claims)
    assert f"<td>{supported} of {len(logged_claims)}</td>" in page.split("<section>", 1)[0]  # the overview

    # the page is the artifact of a run of its own, which names the parents it was built from
    report_id = reader.store.experiment_id("report")
    [run] = reader.client.search_runs([report_id])
    assert run.info.status == "FINISHED" and run.data.tags["hw1track.role"] == "report"
    assert run.data.params["parent.part1_3c_i"] == analysed and run.data.params["parent.part1_1a"] == "not run"
    copy = reader.client.download_artifacts(run.info.run_id, REPORT_ARTIFACT, str(tmp_path / "report-copy"))
    assert open(copy, encoding="utf-8").read() == page


def test_report_of_an_empty_store_is_one_line_and_writes_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = hw1track("report", "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"hw1track: error: no runs in {uri}; run `hw1track run <experiment>` first\n"
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "mlflow.db").exists()


def test_runs_link_to_the_mlflow_ui_only_when_the_store_is_a_server():
    assert run_link("http://host:5000/", "3", "abc") == "http://host:5000/#/experiments/3/runs/abc"
    assert run_link("https://mlflow.example.org", "3", "abc") == "https://mlflow.example.org/#/experiments/3/runs/abc"
    assert run_link("sqlite:////tmp/mlflow.db", "3", "abc") is None
