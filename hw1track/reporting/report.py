"""The study on one page: a self-contained HTML report built from the tracking store alone.

For every experiment in `runs/`, the newest finished parent run contributes its
claims (the homework's questions answered across seeds, as `hw1track analyze`
logged them in `claims.json`, else computed from the store), its figures (the
PNGs `hw1track analyze` logged under `figures/`, else drawn in memory by the
experiment's analysis module), the final metrics of its models, its config
and its provenance tags. Experiments without a finished run are listed as "not
run", so the page also shows what is missing. Images are embedded as base64, so
the file can be mailed or archived on its own.

The page is logged as `report.html` to a run of its own in the MLflow experiment
`hw1/report` rather than to the experiments' parent runs: it spans every
experiment, so filing it under one parent would misplace it and a copy under
each would multiply it. Its run records, as params `parent.<experiment>`, which
parent run each section was built from, and earlier reports stay browsable there.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from mlflow.entities import Run

from hw1track.errors import StoreError
from hw1track.stats.claims import SUPPORTED, Claim, from_json
from hw1track.stats.intervals import CONFIDENCE
from hw1track.study.discovery import Experiment, discover
from hw1track.tracking.ending import ended_with_status
from hw1track.tracking.names import (CLAIMS_ARTIFACT, PARAM_SEEDS, TAG_DATA_MD5, TAG_DATASET, TAG_EXPERIMENT,
                                     TAG_GIT_COMMIT, TAG_MNIST_MD5, TAG_PRESET, TAG_ROLE, TAG_SEED, TAG_TORCH_THREADS,
                                     TAG_VERSION_PREFIX)
from hw1track.tracking.provenance import git_commit
from hw1track.tracking.query import StoreReader, parent_dataset
from hw1track.tracking.runs import TrackedRun
from hw1track.tracking.store import artifact_location
from hw1track.training.data import IMAGE_SETS, MNIST

REPORT_EXPERIMENT = "report"
REPORT_ARTIFACT = "report.html"
FIGURES_FOLDER = "figures"

HEADLINE_METRICS = ("test_acc", "test_loss", "train_acc", "train_loss")
MAX_METRIC_COLUMNS = 8
MAX_PARAM_COLUMNS = 4
MAX_CHILD_ROWS = 20  # beyond this (part1_2c's 100 trainings) the table summarises instead of listing
PROVENANCE_TAGS = (TAG_PRESET, TAG_SEED, TAG_GIT_COMMIT, TAG_DATASET, TAG_DATA_MD5, TAG_MNIST_MD5, TAG_TORCH_THREADS)


@dataclass
class Section:
    """What the report shows of one experiment; `parent` is None when it was never run to the end."""

    experiment: Experiment
    parent: Run | None = None
    children: list[Run] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)  # name -> PNG
    figures_drawn: bool = False  # True: no figures were logged, so they were drawn for the report
    command: list[str] | None = None
    claims: list[Claim] = field(default_factory=list)
    claims_computed: bool = False  # True: no claims.json was logged, so they were computed for the report
    # the latest finished parent of every image set the experiment ran on, with its models and claims
    datasets: dict[str, DatasetResult] = field(default_factory=dict)


@dataclass
class DatasetResult:
    """One image set's latest finished run of an experiment, as the side-by-side comparison shows it."""

    parent: Run
    children: list[Run]
    claims: list[Claim]


@dataclass
class Report:
    path: Path
    run_id: str | None  # None when the store cannot be written: the page is written, not logged
    sections: list[Section]
    not_logged: str | None = None  # why it was not logged


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the store is a server that serves one."""
    if urlparse(tracking_uri).scheme not in {"http", "https"}:
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _figures(reader: StoreReader, experiment: Experiment, parent: Run) -> tuple[dict[str, bytes], bool]:
    """The logged figures of `parent`; if it has none yet, the analysis draws them here (not logged)."""
    logged = [path for path in reader.artifacts(parent, FIGURES_FOLDER) if path.endswith(".png")]
    if logged:
        with tempfile.TemporaryDirectory(prefix="hw1track-report-") as folder:
            return {Path(path).stem: reader.download(parent, path, folder).read_bytes() for path in logged}, False
    import hw1track.reporting.plotting  # noqa: F401 (the shared figure style, and a non-interactive backend)

    drawn = experiment.analysis().figures(reader, parent)
    return {name: _png(figure) for name, figure in drawn.items()}, True


def _command(reader: StoreReader, parent: Run) -> list[str] | None:
    """The command line that made the run, from its run_config.json."""
    if "run_config.json" not in reader.artifacts(parent):
        return None
    with tempfile.TemporaryDirectory(prefix="hw1track-report-") as folder:
        return json.loads(reader.download(parent, "run_config.json", folder).read_text()).get("argv")


def _claims(reader: StoreReader, experiment: Experiment, parent: Run) -> tuple[list[Claim], bool]:
    """The claims `hw1track analyze` logged to `parent`; if none, computed here from the store (not logged)."""
    if CLAIMS_ARTIFACT in reader.artifacts(parent):
        with tempfile.TemporaryDirectory(prefix="hw1track-report-") as folder:
            return from_json(reader.download(parent, CLAIMS_ARTIFACT, folder).read_text()), False
    return experiment.claims(reader, parent), True


def _latest_per_dataset(parents: list[Run]) -> dict[str, Run]:
    """The newest parent of each image set, MNIST first (`parents` come newest first)."""
    latest: dict[str, Run] = {}
    for parent in parents:
        dataset = parent_dataset(parent)
        if dataset is not None:
            latest.setdefault(dataset, parent)
    return dict(sorted(latest.items(), key=lambda item: list(IMAGE_SETS).index(item[0])))


def collect(reader: StoreReader) -> list[Section]:
    """One section per experiment, in study order; a `StoreError` when the store holds no finished run at all.

    A section shows the newest MNIST run (the newest run when there is none),
    and, when the experiment also finished on another image set, the headline
    numbers and claim verdicts of each set side by side.
    """
    sections = []
    for name, experiment in discover().items():
        parents = reader.parents(name)
        per_dataset = _latest_per_dataset(parents)
        shown = per_dataset.get(MNIST.name) or (parents[0] if parents else None)
        sections.append(Section(experiment, shown))
        if len(per_dataset) > 1:
            sections[-1].datasets = {dataset: DatasetResult(parent, reader.children(parent),
                                                            _claims(reader, experiment, parent)[0])
                                     for dataset, parent in per_dataset.items()}
    if not any(section.parent for section in sections):
        raise StoreError(f"no runs in {reader.store.uri}; run `hw1track run <experiment>` first")
    for section in sections:
        if section.parent is not None:
            section.children = reader.children(section.parent)
            section.figures, section.figures_drawn = _figures(reader, section.experiment, section.parent)
            section.command = _command(reader, section.parent)
            section.claims, section.claims_computed = _claims(reader, section.experiment, section.parent)
    return sections


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e7:
        return str(int(value))
    return f"{value:.4g}"


def _when(milliseconds: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(milliseconds / 1000)) if milliseconds else "?"


def _text(value) -> str:
    return html.escape(str(value))


def _link(text: str, url: str | None) -> str:
    return f'<a href="{html.escape(url)}">{_text(text)}</a>' if url else _text(text)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped by the caller); header cells are plain text."""
    head = "".join(f"<th>{_text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(items: Mapping[str, str]) -> str:
    return _table(["name", "value"], [[f"<code>{_text(k)}</code>", _text(v)] for k, v in items.items()])


def _metric_columns(children: list[Run]) -> list[str]:
    """The headline accuracy/loss metrics first, then whatever else the models logged, up to a readable width."""
    keys = set().union(*(child.data.metrics for child in children)) if children else set()
    ordered = [k for k in HEADLINE_METRICS if k in keys] + sorted(keys - set(HEADLINE_METRICS))
    return ordered[:MAX_METRIC_COLUMNS]


def _param_columns(children: list[Run]) -> list[str]:
    """P, then the params that tell the models apart (the run name already says `model`)."""
    varying = [key for key in children[0].data.params
               if key not in {"model", "n_params"}
               and len({child.data.params.get(key) for child in children}) > 1]
    return (["n_params"] if "n_params" in children[0].data.params else []) + varying[:MAX_PARAM_COLUMNS - 1]


def _models_table(section: Section, uri: str) -> str:
    children = section.children
    if not children:
        return "<p>No finished model runs under this parent.</p>"
    metrics = _metric_columns(children)
    if len(children) > MAX_CHILD_ROWS:
        rows = []
        for key in metrics:
            values = sorted(child.data.metrics[key] for child in children if key in child.data.metrics)
            rows.append([f"<code>{_text(key)}</code>", str(len(values)), _number(values[0]),
                         _number(values[len(values) // 2]), _number(values[-1])])
        return (f"<p>{len(children)} models; final values summarised over them.</p>"
                + _table(["metric", "models", "min", "median", "max"], rows))
    params = _param_columns(children)
    rows = []
    for child in children:
        url = run_link(uri, child.info.experiment_id, child.info.run_id)
        rows.append([_link(child.info.run_name, url)]
                    + [_text(child.data.params.get(key, "")) for key in params]
                    + [_number(child.data.metrics[key]) if key in child.data.metrics else "" for key in metrics])
    return _table(["model run"] + params + metrics, rows)


def _claims_table(section: Section) -> str:
    """The homework's questions answered, first thing in a section: a reader should not have to read the figures."""
    origin = ("computed for this report (none logged yet; `hw1track analyze` logs claims.json)"
              if section.claims_computed else "as logged by `hw1track analyze` (claims.json)")
    rows = []
    for claim in section.claims:
        interval = "—" if math.isnan(claim.ci_low) else f"[{_number(claim.ci_low)}, {_number(claim.ci_high)}]"
        verdict = claim.verdict.replace(" ", "-")
        rows.append([f'<span class="verdict {verdict}">{_text(claim.verdict)}</span>',
                     f"{_text(claim.statement)}<br><code>{_text(claim.id)}</code>",
                     f"{_text(claim.effect_name)} = {_number(claim.effect)}", interval, str(claim.n_seeds),
                     _text("; ".join(part for part in (claim.detail, claim.method) if part))])
    return (f"<h3>Claims</h3><p class=\"note\">{_text(origin)}; {CONFIDENCE:.0%} intervals over seeds</p>"
            + _table(["verdict", "claim", "effect", f"{CONFIDENCE:.0%} CI", "seeds", "how"], rows))


def _accuracy_text(children: list[Run]) -> str:
    accuracies = [run.data.metrics["test_acc"] for run in children if "test_acc" in run.data.metrics]
    if not accuracies:
        return "—"
    return f"{_number(sum(accuracies) / len(accuracies))} (best {_number(max(accuracies))})"


def _verdict_text(claim: Claim | None) -> str:
    if claim is None:
        return "—"
    interval = "" if math.isnan(claim.ci_low) else f" [{_number(claim.ci_low)}, {_number(claim.ci_high)}]"
    verdict = claim.verdict.replace(" ", "-")
    return (f'<span class="verdict {verdict}">{_text(claim.verdict)}</span><br>'
            f"{_number(claim.effect)}{_text(interval)}")


def _datasets_table(section: Section) -> str:
    """The experiment on each image set, side by side: which of its findings hold on both, and which differ."""
    results = section.datasets
    header = ["", *(IMAGE_SETS[name].title for name in results)]
    rows = [["parent run", *(f"<code>{_text(r.parent.info.run_id)}</code>, "
                             f"{_text(r.parent.data.tags.get(TAG_PRESET, '?'))}, "
                             f"{_text(_when(r.parent.info.start_time))}" for r in results.values())],
            ["models (seeds each)", *(f"{len(r.children)} ({_text(r.parent.data.params.get(PARAM_SEEDS, '1'))})"
                                      for r in results.values())],
            ["final test accuracy, mean over models", *(_accuracy_text(r.children) for r in results.values())]]
    claim_ids = list(dict.fromkeys(claim.id for r in results.values() for claim in r.claims))
    for claim_id in claim_ids:
        found = [next((c for c in r.claims if c.id == claim_id), None) for r in results.values()]
        statement = next(c.statement for c in found if c is not None)
        rows.append([f"{_text(statement)}<br><code>{_text(claim_id)}</code>", *(_verdict_text(c) for c in found)])
    return ("<h3>On each image set</h3><p class=\"note\">the newest finished run on each set; effects with their "
            f"{CONFIDENCE:.0%} intervals over seeds</p>" + _table(header, rows))


def _provenance(parent: Run) -> dict[str, str]:
    tags = parent.data.tags
    shown = {key: tags[key] for key in PROVENANCE_TAGS if key in tags}
    shown.update({key: tags[key] for key in sorted(tags) if key.startswith(TAG_VERSION_PREFIX)})
    return shown


def _summary(section: Section) -> str:
    """The run module's first docstring line, without the experiment name it starts with."""
    return section.experiment.summary.removeprefix(f"{section.experiment.name}: ")


def _section_html(section: Section, uri: str) -> str:
    name = section.experiment.name
    title = f'<h2 id="{_text(name)}">{_text(name)}</h2><p class="summary">{_text(_summary(section))}</p>'
    parent = section.parent
    if parent is None:
        return f'<section>{title}<p class="missing">not run: no finished run in the store.</p></section>'
    url = run_link(uri, parent.info.experiment_id, parent.info.run_id)
    duration = ((parent.info.end_time or 0) - parent.info.start_time) / 1000
    parts = [title, f"<p>Parent run {_link(parent.info.run_name, url)} (<code>{_text(parent.info.run_id)}</code>), "
                    f"started {_text(_when(parent.info.start_time))}, {duration:.0f} s, "
                    f"{len(section.children)} models, {_text(parent.data.params.get(PARAM_SEEDS, '1'))} "
                    f"seed(s) per configuration.</p>"]
    if section.datasets:
        parts.append(_datasets_table(section))
    if section.claims:
        parts.append(_claims_table(section))
    origin = ("drawn for this report (no figures logged yet; `hw1track analyze` logs them)" if section.figures_drawn
              else "as logged by `hw1track analyze`")
    parts.append(f"<h3>Figures</h3><p class=\"note\">{_text(origin)}</p>")
    for figure_name, png in section.figures.items():
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{encoded}" alt="{_text(figure_name)}">'
                     f"<figcaption>{_text(figure_name)}</figcaption></figure>")
    parts.append("<h3>Final metrics of each model</h3>" + _models_table(section, uri))
    if parent.data.metrics:
        parts.append("<h3>Metrics of the parent run</h3>"
                     + _pairs({k: _number(v) for k, v in sorted(parent.data.metrics.items())}))
    parts.append("<h3>Config</h3>" + _pairs(dict(sorted(parent.data.params.items()))))
    if section.command:
        parts.append(f"<p>Command line: <code>{_text(' '.join(section.command))}</code></p>")
    parts.append("<h3>Provenance</h3>" + _pairs(_provenance(parent)))
    return "<section>" + "".join(parts) + "</section>"


def _overview(sections: list[Section], uri: str) -> str:
    rows = []
    for section in sections:
        name = f'<a href="#{_text(section.experiment.name)}">{_text(section.experiment.name)}</a>'
        parent = section.parent
        if parent is None:
            rows.append([name, _text(_summary(section)), '<span class="missing">not run</span>', "", "", "", ""])
            continue
        url = run_link(uri, parent.info.experiment_id, parent.info.run_id)
        status = (f"{_link(parent.data.tags.get(TAG_PRESET, '?'), url)}, "
                  f"{_text(_when(parent.info.start_time))}")
        supported = sum(claim.verdict == SUPPORTED for claim in section.claims)
        rows.append([name, _text(_summary(section)), status, str(len(section.children)),
                     _text(section.parent.data.params.get(PARAM_SEEDS, "1")),
                     f"{supported} of {len(section.claims)}" if section.claims else "", str(len(section.figures))])
    return _table(["experiment", "what", "latest finished run", "models", "seeds", "claims supported", "figures"],
                  rows)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hw1track report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption, .note, .summary {{ color: #666; font-size: 0.9em; }}
.missing {{ color: #a33; }}
.verdict {{ font-weight: bold; white-space: nowrap; }}
.supported {{ color: #1a7f37; }} .not-supported {{ color: #b42318; }} .inconclusive {{ color: #9a6700; }}
section {{ border-top: 2px solid #ddd; margin-top: 2em; }}
</style></head>
<body>
<h1>HW1: the latest finished run of every experiment</h1>
<p>Built {generated} from the tracking store <code>{uri}</code>.</p>
{overview}
{sections}
</body></html>
"""


def render(sections: list[Section], uri: str) -> str:
    return PAGE.format(generated=_text(time.strftime("%Y-%m-%d %H:%M")), uri=_text(uri),
                       overview=_overview(sections, uri),
                       sections="\n".join(_section_html(section, uri) for section in sections))


def _log(reader: StoreReader, path: Path, sections: list[Section]) -> str:
    store = reader.store
    experiment_id = store.experiment_id(REPORT_EXPERIMENT, create=True)
    tags = {TAG_EXPERIMENT: REPORT_EXPERIMENT, TAG_ROLE: "report", TAG_GIT_COMMIT: git_commit()}
    created = store.client.create_run(experiment_id, run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
    with ended_with_status(TrackedRun(store.client, created.info.run_id)) as run:
        run.log_params({f"parent.{s.experiment.name}": s.parent.info.run_id if s.parent else "not run"
                        for s in sections})
        with tempfile.TemporaryDirectory(prefix="hw1track-report-") as folder:
            logged = Path(folder) / REPORT_ARTIFACT  # one artifact name, whatever --out was called
            shutil.copyfile(path, logged)
            run.log_file(logged)
    return created.info.run_id


def _report_artifacts(reader: StoreReader) -> str | None:
    """Where the report's run keeps its artifacts: its experiment's folder, or the one it would be created with."""
    found = reader.store.experiment_id(REPORT_EXPERIMENT)
    if found is not None:
        return reader.client.get_experiment(found).artifact_location
    return artifact_location(reader.store.uri, REPORT_EXPERIMENT)


def write_report(reader: StoreReader, out: str | Path) -> Report:
    """Write the page to `out` and log it; nothing is written when the store has no finished run.

    A store that cannot be written (a read-only mount, published results) still
    gives its page; only the logging is skipped, and `not_logged` says why.
    """
    sections = collect(reader)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(sections, reader.store.uri), encoding="utf-8")
    not_logged = reader.cannot_log_reason(_report_artifacts(reader))
    if not_logged is not None:
        return Report(path, None, sections, not_logged)
    return Report(path, _log(reader, path, sections), sections)
