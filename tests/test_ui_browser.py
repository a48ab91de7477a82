"""The MLflow UI as a person uses it: `hw1track ui` in headless Chromium, and a plain `mlflow ui`.

A tiny part1_1b study of two seeds plus its figures is browsed from the experiment
page down to a child's metrics and the parent's figure artifacts, and its runs
table is grouped by configuration, as a person compares replicates. Chromium is
Debian's (/usr/bin/chromium, installed by `make test`); every request that does
not go to the loopback server is refused, so the page can only show what the
store holds.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import hw1track
from playwright.sync_api import Page, expect, sync_playwright
from servers import LOOPBACK, free_port, serving, ui_server

from hw1track.tracking.names import TAG_GROUP
from hw1track.tracking.query import StoreReader

EXPERIMENT = "part1_1b"
MODELS = ("cnn1", "cnn2", "cnn3")
SEEDS = 2
TINY = ("--set", "epochs=1", "--set", "train_size=500", "--set", "test_size=200", "--threads", "1",
        "--seeds", str(SEEDS))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="module")
def analysed_store(tmp_path_factory, data_root) -> Path:
    """A folder whose default store (mlflow.db, mlruns/) holds one finished, analysed part1_1b run of two seeds."""
    folder = tmp_path_factory.mktemp("ui-store")
    ran = hw1track("run", EXPERIMENT, *TINY, cwd=folder)
    assert ran.returncode == 0, ran.stderr
    drawn = hw1track("analyze", EXPERIMENT, cwd=folder)
    assert drawn.returncode == 0, drawn.stderr
    return folder


@contextmanager
def chromium_page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", lambda route: route.continue_()
                       if urllib.parse.urlparse(route.request.url).hostname == LOOPBACK else route.abort())
            yield page
        finally:
            browser.close()


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
def test_browser_shows_runs_metrics_and_figures(analysed_store, tmp_path):
    reader = StoreReader(f"sqlite:///{analysed_store / 'mlflow.db'}")
    parent = reader.latest_parent(EXPERIMENT)
    children = reader.children(parent)
    figures = sorted(Path(p).name for p in reader.artifacts(parent, "figures"))
    assert [c.info.run_name for c in children] == [*MODELS, *(f"{m}#1" for m in MODELS)] and figures
    parent_name, child = parent.info.run_name, children[0]
    shot = tmp_path / "parent-figure.png"

    with ui_server(tmp_path / "ui.log", cwd=analysed_store) as (url, ui), chromium_page() as page:
        expect.set_options(timeout=TIMEOUT_MS)
        open_runs_of_experiment(page, url)

        parent_link = page.get_by_role("link", name=parent_name, exact=True)
        expect(parent_link).to_be_visible()
        # Children are nested under their parent; the parent's name cell holds the expand button.
        page.get_by_role("gridcell").filter(has=parent_link).get_by_role("button").click()
        for run in children:
            expect(page.get_by_role("link", name=run.info.run_name, exact=True)).to_be_visible()

        page.get_by_role("link", name=child.info.run_name, exact=True).click()
        expect(page.get_by_role("heading", name=child.info.run_name, exact=True)).to_be_visible()
        for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert metric in child.data.metrics
            expect(page.get_by_role("link", name=metric, exact=True)).to_be_visible()  # the metrics table
        page.get_by_role("tab", name="Model metrics").click()
        for metric in ("train_loss", "test_acc"):  # one chart per metric, titled by its name
            expect(page.get_by_text(f"{child.info.run_name} ({metric})", exact=True)).to_be_visible()

        page.get_by_role("tab", name="Overview").click()
        page.get_by_role("link", name=parent_name, exact=True).click()  # "Parent run"
        expect(page.get_by_role("heading", name=parent_name, exact=True)).to_be_visible()
        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("figures", exact=True).click()
        for name in figures:
            expect(page.get_by_text(name, exact=True)).to_be_visible()
        page.get_by_text(figures[0], exact=True).click()
        expect(page.get_by_text(f"figures/{figures[0]}", exact=True)).to_be_visible()
        # The preview names where the file lives: the store's own artifact folder, read by the server.
        stored = (analysed_store / "mlruns" / EXPERIMENT / parent.info.run_id / "artifacts" / "figures" / figures[0])
        expect(page.get_by_text(re.compile(re.escape(f"Path: {stored.as_uri()}")))).to_be_visible()
        preview = page.get_by_role("img", name=f"figures/{figures[0]}", exact=True)
        expect(preview).to_be_visible()
        assert preview.evaluate("img => img.complete && img.naturalWidth") == png_size(stored)[0]  # decoded
        page.screenshot(path=str(shot))

        ui.send_signal(signal.SIGINT)  # Ctrl-C
        assert ui.wait(timeout=30) == 130
    log = (tmp_path / "ui.log").read_text()
    assert f"MLflow UI for sqlite:///{analysed_store / 'mlflow.db'} at {url}" in log
    assert "Traceback" not in log

    assert png_size(shot) == (VIEWPORT["width"], VIEWPORT["height"])
    assert shot.stat().st_size > 30_000  # a rendered page with a plotted figure, not a blank one



def open_runs_of_experiment(page, url: str) -> None:
    """The experiment's runs table, reached as a user reaches it from the UI's home page."""
    page.goto(f"{url}/")
    # MLflow 3 opens on its GenAI view; runs and their metrics live under "Model training".
    page.get_by_role("button", name="Model training").click()
    page.get_by_role("link", name=f"hw1/{EXPERIMENT}", exact=True).click()

def runs_table_groups(page: Page) -> dict[str | None, tuple[int, set[str]]]:
    """The grouped runs table as shown: {group value: (the count on its badge, the run names listed under it)}.

    Read from the Run Name column in row order, because the table says which run
    belongs to which group only by where the run's row sits; the runs without the
    tag ("Additional runs", collapsed) are under None.
    """
    cells = page.evaluate("""() => [...document.querySelectorAll('[role=row]')]
        .map(row => [Number(row.getAttribute('aria-rowindex')), row.querySelector('[col-id="attributes.`Run Name`"]')])
        .filter(([, cell]) => cell).sort(([a], [b]) => a - b)
        .map(([, cell]) => ({badge: cell.querySelector('[role=status]')?.innerText ?? null, text: cell.innerText}))""")
    groups: dict[str | None, tuple[int, set[str]]] = {}
    names: set[str] = set()
    for cell in cells:
        if cell["badge"] is not None:
            label = re.search(r"Group: (\S+)", cell["text"])
            assert label or "Additional runs" in cell["text"], cell
            names = set()
            groups[label[1] if label else None] = (int(cell["badge"]), names)
        else:
            names.add(cell["text"].strip().splitlines()[-1])
    return groups


@pytest.mark.slow
def test_browser_groups_the_replicates_of_each_configuration(analysed_store, tmp_path):
    """What a user does to see seed noise in the UI: Group by the tag hw1track.group, one group per configuration.

    The expected groups come from the models and the seed count, not from the
    tags, so a tag that differed between replicates (one group per run) or was
    missing (every run under "Additional runs") fails here.
    """
    reader = StoreReader(f"sqlite:///{analysed_store / 'mlflow.db'}")
    children = reader.children(reader.latest_parent(EXPERIMENT))
    tags = {run.info.run_name: run.data.tags.get(TAG_GROUP) for run in children}
    expected = {tags[model]: (SEEDS, {model, f"{model}#1"}) for model in MODELS}
    shot = tmp_path / "grouped-runs.png"

    with ui_server(tmp_path / "ui.log", cwd=analysed_store) as (url, _), chromium_page() as page:
        expect.set_options(timeout=TIMEOUT_MS)
        open_runs_of_experiment(page, url)
        # The group-by choice is not in the URL (MLflow keeps it in the browser's local storage): pick it in the menu.
        page.get_by_role("button", name="Group by", exact=True).click()
        menu = page.get_by_role("menu")
        menu.get_by_placeholder("Search").fill(TAG_GROUP)
        menu.get_by_role("menuitemcheckbox", name=TAG_GROUP, exact=True).click()
        page.keyboard.press("Escape")
        expect(page.get_by_role("button", name=f"Group by: {TAG_GROUP}")).to_be_visible()
        for name in tags:  # groups open expanded, so every replicate is listed
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        shown = runs_table_groups(page)
        page.screenshot(path=str(shot))

    assert shown.pop(None)[0] == 1  # the parent run, which has no group tag
    assert shown == expected
    assert png_size(shot) == (VIEWPORT["width"], VIEWPORT["height"])


def runs_table_column(page: Page, column: str) -> dict[str, str]:
    """{run name: the text of its cell in `column`}, the table's rows joined on their row index.

    The table draws its pinned columns (Run Name) and the rest in separate
    containers, so one visual row is two DOM rows with the same aria-rowindex.
    """
    rows = page.evaluate("""column => {
        const cells = {};
        for (const row of document.querySelectorAll('[role=row]')) {
            for (const cell of row.querySelectorAll('[col-id]')) {
                const index = row.getAttribute('aria-rowindex');
                (cells[index] ??= {})[cell.getAttribute('col-id')] = cell.innerText;
            }
        }
        return Object.values(cells);
    }""", column)
    name, wanted = "attributes.`Run Name`", f"attributes.`{column}`"
    return {row[name].strip().splitlines()[-1]: row[wanted] for row in rows
            if name in row and wanted in row and row[name] != "Run Name"}


@pytest.mark.slow
def test_browser_shows_what_each_run_trained_on_and_what_started_it(analysed_store, tmp_path):
    """The runs table's Dataset and Source columns, which MLflow leaves at "-" unless a run logs them.

    Each model names its training and test split (the image set and the digest
    of the split's bytes); every run, the parent included, names the command
    that started it, exactly as typed.
    """
    reader = StoreReader(f"sqlite:///{analysed_store / 'mlflow.db'}")
    parent = reader.latest_parent(EXPERIMENT)
    children = reader.children(parent)
    splits = {run.info.run_name: {tag.value: entry.dataset.digest for entry in run.inputs.dataset_inputs
                                  for tag in entry.tags} for run in children}
    command = " ".join(["hw1track", "run", EXPERIMENT, *TINY])

    with ui_server(tmp_path / "ui.log", cwd=analysed_store) as (url, _), chromium_page() as page:
        expect.set_options(timeout=TIMEOUT_MS)
        open_runs_of_experiment(page, url)
        parent_link = page.get_by_role("link", name=parent.info.run_name, exact=True)
        page.get_by_role("gridcell").filter(has=parent_link).get_by_role("button").click()
        for name in splits:
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        datasets, sources = runs_table_column(page, "Dataset"), runs_table_column(page, "Source")

    assert set(datasets) == set(sources) == {parent.info.run_name, *splits}
    assert set(sources.values()) == {command}
    assert datasets.pop(parent.info.run_name).strip() == "-"  # the parent trains nothing
    for name, shown in datasets.items():
        assert set(splits[name]) == {"train", "test"}
        lines = shown.splitlines()
        for split, digest in splits[name].items():
            assert lines[lines.index(f"mnist ({digest})") + 1] == split.capitalize(), (name, shown)
    assert len({digests["train"] for digests in splits.values()}) == 1  # one training subset for every model


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_plain_mlflow_ui_in_the_folder_opens_the_same_store(analysed_store, tmp_path):
    """What the README promises: `mlflow ui` with no options, run where `hw1track run` ran."""
    parent = StoreReader(f"sqlite:///{analysed_store / 'mlflow.db'}").latest_parent(EXPERIMENT)
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--port", str(port), "--workers", "1"]
    url = f"http://{LOOPBACK}:{port}"
    with serving(command, f"{url}/health", tmp_path / "mlflow-ui.log", cwd=analysed_store):
        found = _get_json(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=hw1/{EXPERIMENT}")
        assert found["experiment"]["experiment_id"] == parent.info.experiment_id
        query = urllib.parse.urlencode({"run_uuid": parent.info.run_id, "path": "figures"})
        listed = _get_json(f"{url}/ajax-api/2.0/mlflow/artifacts/list?{query}")  # what the artifact tab asks
        names = {Path(f["path"]).name for f in listed["files"]}
        assert names == {p.name for p in (analysed_store / "figures" / EXPERIMENT).glob("*.png")}
        name = sorted(names)[0]
        query = urllib.parse.urlencode({"run_uuid": parent.info.run_id, "path": f"figures/{name}"})
        with urllib.request.urlopen(f"{url}/get-artifact?{query}", timeout=30) as response:
            assert response.read() == (analysed_store / "figures" / EXPERIMENT / name).read_bytes()
    assert not (analysed_store / "mlartifacts").exists()


def test_ui_without_a_store_says_so_in_one_line(tmp_path):
    done = hw1track("ui", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"hw1track: error: no store at {tmp_path / 'mlflow.db'}; " \
                          "run `hw1track run <experiment>` first\n"
    assert not (tmp_path / "mlflow.db").exists()


def test_ui_refuses_a_taken_port_and_a_server_uri(tmp_path):
    (tmp_path / "mlflow.db").touch()
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        done = hw1track("ui", "--port", str(taken.getsockname()[1]), cwd=tmp_path)
    assert done.returncode == 2 and "choose another --port" in done.stderr and done.stderr.count("\n") == 1
    done = hw1track("ui", "--tracking-uri", "http://127.0.0.1:5000", cwd=tmp_path)
    assert done.returncode == 2 and "serves its own UI" in done.stderr and done.stderr.count("\n") == 1
