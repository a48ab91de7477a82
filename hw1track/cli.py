"""The `hw1track` command: list, run and analyze the experiments.

Every user mistake ends in one line on stderr and a non-zero exit code, before
anything is written to the tracking store. So does a disk that fills while a
command writes (see `full_disk`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from hw1track import config as configs
from hw1track.errors import Hw1Error, UsageError
from hw1track.full_disk import disk_full_error
from hw1track.study import executors
from hw1track.study.discovery import Experiment, discover, get_experiment
from hw1track.study.invocation import resolve_device, run_experiment
from hw1track.study.replicates import MAX_SEEDS
from hw1track.tracking import server_retries
from hw1track.tracking.ending import Terminated, raise_on_signals
from hw1track.tracking.names import CLAIMS_ARTIFACT, TAG_PRESET
from hw1track.tracking.runs import TrackedRun
from hw1track.tracking.store import Store, check_tracking_uri, default_tracking_uri, local_database
from hw1track.training.data import FASHION_MNIST, MNIST, image_set_of, load_images
from hw1track.training.denormals import flush_denormals
from hw1track.training.threads import MAX_THREADS
from hw1track.writable import why_not_writable


def _supported_uri(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Checked while the command line is parsed, so an unusable store is refused before anything runs."""
    check_tracking_uri(value or default_tracking_uri(), "--tracking-uri" if value else "$MLFLOW_TRACKING_URI")
    return value


TRACKING_URI = click.option("--tracking-uri", default=None, metavar="URI", callback=_supported_uri,
                            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).")


def _check_can_write(path: str | Path, what: str) -> None:
    """Refuse an output place that cannot be created before any work is done, and create nothing meanwhile."""
    reason = why_not_writable(path)
    if reason is not None:
        raise UsageError(f"cannot write {what} {path}: {reason}")


@contextmanager
def _failures_in_one_line(uri: str | None, *outputs: str | Path) -> Iterator[None]:
    """A full disk or quota, or a tracking server lost for longer than requests are retried, becomes one
    line naming where the command was writing (the store, `outputs`) or the server it lost.

    The runs they hit have already ended FAILED on the way out (see `ending`).
    """
    uri = uri or default_tracking_uri()
    with server_retries.reported_in_one_line(uri):
        try:
            yield
        except Exception as exc:
            database = local_database(uri)
            folders = ([database.parent] if database is not None else []) + [Path(o) for o in outputs]
            error = disk_full_error(exc, folders)
            if error is None:
                raise
            raise error from None


def _selected(name: str) -> list[Experiment]:
    return list(discover().values()) if name == "all" else [get_experiment(name)]


def _settings_for(experiment: Experiment, assignments: tuple[str, ...], many: bool) -> list[str]:
    """With `all`, a --set key applies to the experiments that have it (it must exist in at least one)."""
    if not many:
        return list(assignments)
    fields = {f.name for f in dataclasses.fields(next(iter(experiment.presets.values())))}
    return [a for a in assignments if a.partition("=")[0].strip() in fields]


def _check_keys_exist_somewhere(experiments: list[Experiment], assignments: tuple[str, ...]) -> None:
    known = set()
    for experiment in experiments:
        known |= {f.name for f in dataclasses.fields(next(iter(experiment.presets.values())))}
    for assignment in assignments:
        key = assignment.partition("=")[0].strip()
        if key not in known:
            raise UsageError(f"unknown setting {key!r} (no selected experiment has it)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Run the HW1 experiments on MNIST and track them in MLflow."""


@cli.command("list")
@TRACKING_URI
def list_experiments(tracking_uri: str | None) -> None:
    """The experiments, and the latest finished run of each in the store."""
    from hw1track.tracking.query import StoreReader

    reader = StoreReader(tracking_uri)
    for name, experiment in discover().items():
        with _failures_in_one_line(tracking_uri):
            parents = reader.parents(name)
        if parents:
            run = parents[0]
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
            status = f"finished ({run.data.tags.get(TAG_PRESET)}, {when})"
        else:
            status = "not run"
        click.echo(f"{name:<13} {status:<32} {experiment.summary}")


@cli.command()
@click.argument("name")
@click.option("--preset", default="quick", show_default=True, help="quick (minutes) or full (the homework's scale).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override a config field; repeatable.")
@click.option("--seed", type=int, default=None, help="Base seed (each model derives its own from it).")
@click.option("--seeds", type=click.IntRange(min=1, max=MAX_SEEDS), default=None,
              help="Replicates of every model, each with its own seed (default: quick 2, full 3).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--dataset", type=click.Choice(configs.IMAGE_SET_NAMES), default=None,
              help="The image set every image experiment trains on (default: mnist); the same as "
                   "--set dataset=NAME.")
@click.option("--mnist-dir", default=None, metavar="DIR",
              help="Folder with the MNIST IDX files to import (default: $HW1TRACK_MNIST_DIR).")
@click.option("--fashion-mnist-dir", default=None, metavar="DIR",
              help="Folder with the Fashion-MNIST IDX files to import (default: $HW1TRACK_FASHION_MNIST_DIR).")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), default=None,
              help="CPU threads for torch (default: the experiment's THREADS, else torch's choice).")
@click.option("--force", is_flag=True,
              help="Train every model again, even those whose identical config already finished.")
@click.option("--executor", type=click.Choice(executors.EXECUTORS), default=executors.LOCAL, show_default=True,
              help="local: in this process; ray: one Ray task per (experiment, replicate) on a Ray cluster.")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="The Ray cluster for --executor ray: HEAD:PORT, auto (the one `ray start` runs here) or local "
                   "(default: $RAY_ADDRESS, else local: one started on this machine for this command).")
@TRACKING_URI
def run(name: str, preset: str, assignments: tuple[str, ...], seed: int | None, seeds: int | None, device: str,
        dataset: str | None, mnist_dir: str | None, fashion_mnist_dir: str | None, threads: int | None, force: bool,
        executor: str, ray_address: str | None, tracking_uri: str | None) -> None:
    """Train experiment NAME (or all) and log it to MLflow, reusing models that already finished."""
    experiments = _selected(name)
    if seed is not None:
        assignments = (*assignments, f"seed={seed}")
    if dataset is not None:
        if not any(e.uses_mnist for e in experiments):
            raise UsageError(f"{name} does not train on images: --dataset does not apply to it")
        assignments = (*assignments, f"dataset={dataset}")
    many = len(experiments) > 1
    if many:
        _check_keys_exist_somewhere(experiments, assignments)
    planned = [(e, e.config(preset, _settings_for(e, assignments, many))) for e in experiments]
    store = Store(tracking_uri)
    if executor == executors.RAY:
        _check_ray_executor(ray_address, store.uri)
    elif ray_address is not None:
        raise UsageError("--ray-address needs --executor ray")
    # the cluster's nodes have the GPUs, not necessarily this one (`ray_executor.connected` checks them)
    torch_device = resolve_device(device, here=executor == executors.LOCAL)
    store.check_ready()  # a read-only folder or a server that does not answer fails here, in seconds
    data_dirs = {MNIST.name: mnist_dir, FASHION_MNIST.name: fashion_mnist_dir}
    for image_set in {image_set_of(config) for e, config in planned if e.uses_mnist}:
        # missing or corrupted data must fail before the store is created
        load_images(image_set, source=data_dirs[image_set.name])
    with (_failures_in_one_line(store.uri),
          executors.started(executor, ray_address, torch_device, len(planned)) as chosen):
        for experiment, config in planned:
            started = time.perf_counter()
            run_id = run_experiment(experiment, preset, config, store, torch_device,
                                    data_dirs[image_set_of(config).name], threads,
                                    reuse=not force, seeds=seeds, executor=chosen)
            chosen.when_done(run_id, functools.partial(_echo_finished, experiment.name, run_id, started, store.uri))


def _echo_finished(experiment: str, run_id: str, started: float, uri: str) -> None:
    click.echo(f"{experiment}: finished in {time.perf_counter() - started:.1f}s, parent run {run_id} ({uri})")


def _check_ray_executor(ray_address: str | None, tracking_uri: str) -> None:
    """Ray installed, and a store every node can reach: refused in one line before anything is created."""
    from hw1track.study import ray_executor

    ray_executor.check_installed()
    ray_executor.check_store_reachable(ray_executor.cluster_address(ray_address), tracking_uri)


@cli.command()
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=24.0, show_default=True,
              metavar="HOURS", help="A RUNNING run of another host counts as orphaned after this long.")
@click.option("--dry-run", is_flag=True, help="List the orphaned runs without marking them.")
@TRACKING_URI
def doctor(older_than: float, dry_run: bool, tracking_uri: str | None) -> None:
    """Mark runs KILLED that were left RUNNING by a process that is gone (kill -9, a crash, a reboot)."""
    from hw1track.tracking.orphans import describe, find_orphans, mark_killed
    from hw1track.tracking.query import StoreReader

    store = Store(tracking_uri)
    if not StoreReader.exists(store.uri):
        click.echo(f"no store at {store.uri}: nothing to check")
        return
    if not dry_run:
        store.check_ready()
    with _failures_in_one_line(store.uri):
        orphans = find_orphans(store, stale_after_hours=older_than)
        if not dry_run:
            mark_killed(store, orphans)
    for run in orphans:
        click.echo(f"{'orphaned' if dry_run else 'marked KILLED'}: {describe(run)}")
    note = " (not marked: --dry-run)" if dry_run and orphans else ""
    click.echo(f"{len(orphans)} orphaned runs{note} in {store.uri}")


@cli.command()
@click.argument("name")
@click.option("--run-id", default=None, help="Parent run to draw (default: the newest finished one).")
@click.option("--dataset", type=click.Choice(configs.IMAGE_SET_NAMES), default=None,
              help="Draw the newest finished run on this image set (default: the newest on any).")
@click.option("--out", default="figures", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the PNG files (one subfolder per experiment).")
@TRACKING_URI
def analyze(name: str, run_id: str | None, dataset: str | None, out: str, tracking_uri: str | None) -> None:
    """Draw the figures of NAME (or all) from the store, answer its claims, and log both to its parent run."""
    from hw1track.reporting.plotting import save_figures
    from hw1track.stats.claims import to_json
    from hw1track.tracking.query import StoreReader

    experiments = _selected(name)
    if run_id and len(experiments) > 1:
        raise UsageError("--run-id needs a single experiment, not all")
    _check_can_write(out, "figures to")
    reader = StoreReader(tracking_uri)
    with _failures_in_one_line(tracking_uri):  # fail before drawing anything
        parents = [(e, reader.latest_parent(e.name, run_id, dataset)) for e in experiments]
    for experiment, parent in parents:
        not_logged = reader.cannot_log_reason(parent.info.artifact_uri)
        tracked = None if not_logged else TrackedRun(reader.client, parent.info.run_id)
        with _failures_in_one_line(reader.store.uri, out):
            figures = experiment.analysis().figures(reader, parent)
            paths = save_figures(figures, Path(out) / experiment.name, tracked)
            claims = experiment.claims(reader, parent)
            if claims and tracked is not None:
                tracked.log_json(to_json(claims), CLAIMS_ARTIFACT)
        logged = (f"logged to run {parent.info.run_id}" if tracked is not None
                  else f"not logged to run {parent.info.run_id}: {not_logged}")
        click.echo(f"{experiment.name}: {len(paths)} figures in {Path(out) / experiment.name}"
                   f"{f', {len(claims)} claims' if claims else ''} ({logged})")
        for claim in claims:
            click.echo(f"  {claim.line()}")


@cli.command()
@click.argument("name")
@click.option("--data", type=click.Choice(["mnist", "synthetic"]), default="mnist", show_default=True,
              help="MNIST classifiers, or nets fitting a 1-D function.")
def new(name: str, data: str) -> None:
    """Start experiment NAME: runs/NAME.py, analysis/NAME.py and tests/test_NAME.py that work as written."""
    from hw1track.study.scaffold import create

    written = create(name, data)
    for path, what in ((written.run, "what it trains: Config, PRESETS, run()"),
                       (written.analysis, "what it draws from the store: figures()"),
                       (written.test, "runs it at tiny settings and draws its figures")):
        click.echo(f"wrote {_shown(path):<40} {what}")
    click.echo(f"next:\n  hw1track run {name}\n  hw1track analyze {name}\n  pytest {_shown(written.test)}\n"
               f"  add {name}'s tiny settings (TINY in {_shown(written.test)}) to TINY in tests/test_reliability.py, "
               f"where reuse, crashes and identity are tested for every experiment")


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it, as the user would type it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@cli.command()
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (self-contained: figures are embedded).")
@TRACKING_URI
def report(out: str, tracking_uri: str | None) -> None:
    """One HTML page of the latest finished run of every experiment, also logged to MLflow (hw1/report)."""
    from hw1track.reporting.report import write_report
    from hw1track.tracking.query import StoreReader

    _check_can_write(out, "the report to")
    with _failures_in_one_line(tracking_uri, Path(out).parent):
        written = write_report(StoreReader(tracking_uri), out)
    missing = sum(section.parent is None for section in written.sections)
    logged = f"logged to run {written.run_id}" if written.run_id else f"not logged to MLflow: {written.not_logged}"
    click.echo(f"report: {len(written.sections) - missing} experiments, {missing} not run, in {written.path} "
               f"({logged})")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 shares the UI with the network).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@TRACKING_URI
def ui(host: str, port: int, tracking_uri: str | None) -> None:
    """Browse the store in MLflow's web UI until Ctrl-C."""
    from hw1track.reporting.ui import serve

    sys.exit(serve(tracking_uri, host, port))


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit 2 for bad input, 130/143 when interrupted."""
    for noisy in ("mlflow", "alembic"):  # database set-up chatter hides the progress lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    raise_on_signals()
    flush_denormals()  # before any torch operation starts the thread pool
    try:
        cli.main(args=argv, prog_name="hw1track", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.UsageError as exc:
        click.echo(f"hw1track: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except Hw1Error as exc:
        click.echo(f"hw1track: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):  # click turns Ctrl-C into Abort
        click.echo("hw1track: interrupted; the active runs were marked KILLED", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("hw1track: terminated; the active runs were marked KILLED", err=True)
        sys.exit(143)


if __name__ == "__main__":
    main()
