"""A process beside training that writes handed-over metrics to a tracking server.

Against a tracking server every `log_batch` is an HTTP request that returns
only once the server has stored the rows; made from the training loop, each
request would stall training for that long and spend the client's CPU on
building and encoding the request. A separate process makes the requests
while training goes on; the training process only pickles rows into a pipe.
(A local SQLite store does not need one: `sqlite_metrics` writes its rows in
the training process for a few µs each.)

Crash safety:

- A batch stays in the training process until the writer confirms it. If the
  writer dies, stalls or reports an error, `settle` writes the unconfirmed
  batches in the training process (MLflow skips rows already stored), so a
  failing store still raises there, as it would without a writer.
- A message interrupted half-way (Ctrl-C, SIGTERM) would leave the pipe out of
  step, so the training process then stops using that writer: it closes the
  pipe, the writer stores the complete messages before it and exits, and
  `settle` writes the rest itself.
- The writer reads its pipe to the end and writes everything in it before it
  exits, also when the training process was killed (the pipe then reaches
  EOF). It runs in its own session, so a Ctrl-C or a signal sent to the
  terminal's process group does not stop it before the training process has
  flushed. A `kill -9` of the training process loses only what it had not
  handed over yet (less than one batch, or `FLUSH_EVERY_SECONDS` of logging).
- A server that stops answering is retried as long as `server_retries` says,
  in the writer while training goes on, and the training process waits for a
  silent writer longer than that (`stall_seconds`). A writer that gives up on
  the server says so: the training process then stops waiting for it and
  fails the run (`TrackedRun`) instead of retrying each batch for as long again.

One writer serves every run logged through one `MlflowClient`; it is started on
the first hand-over (runs that log fewer values than a batch never start one)
and stopped when that client is garbage collected or the interpreter exits.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hw1track.tracking import server_retries

# A metric row as it crosses the pipe: key, value, timestamp (ms), step. Plain
# tuples pickle several times faster than mlflow.entities.Metric objects.
Row = tuple[str, float, int, int]
WriteHere = Callable[[str, Sequence[Row]], None]

PIPE_BYTES = 1 << 20  # room for ~25 batches in flight, so that a burst of logging never waits for the writer
REPLY_WAIT_SECONDS = 1.0  # how often a waiting training process checks that the writer is still alive
STALL_MARGIN_SECONDS = 30.0  # no reply for this long past the longest request while waiting: the writer is given up
EXIT_WAIT_SECONDS = 30.0
_LENGTH = struct.Struct("!Q")

_writers: weakref.WeakKeyDictionary[Any, MetricWriter] = weakref.WeakKeyDictionary()


def stall_seconds() -> float:
    """How long a waiting training process lets the writer stay silent: longer than its longest request."""
    return server_retries.longest_request_seconds() + STALL_MARGIN_SECONDS


def write_rows(client: Any, run_id: str, rows: Sequence[Row], rows_per_call: int) -> None:
    """Write `rows` with `client.log_batch`, at most `rows_per_call` per request."""
    from mlflow.entities import Metric

    metrics = [Metric(*row) for row in rows]
    for start in range(0, len(metrics), rows_per_call):
        client.log_batch(run_id, metrics=metrics[start:start + rows_per_call])


def _send(fd: int, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(_LENGTH.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, PIPE_BYTES))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int) -> Any:
    """The next message, or None at the end of the pipe (also when it ends inside a message)."""
    header = _read_exactly(fd, _LENGTH.size)
    payload = None if header is None else _read_exactly(fd, _LENGTH.unpack(header)[0])
    return None if payload is None else pickle.loads(payload)


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


class MetricWriter:
    """The training process's end of one writer process."""

    def __init__(self, tracking_uri: str, rows_per_call: int):
        to_writer_read, to_writer_write = os.pipe()
        from_writer_read, from_writer_write = os.pipe()
        _grow_pipe(to_writer_write)
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                         os.environ.get("PYTHONPATH")]))}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "hw1track.tracking.metric_writer", str(to_writer_read), str(from_writer_write),
                 tracking_uri, str(rows_per_call)],
                pass_fds=(to_writer_read, from_writer_write), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=env, start_new_session=True)
        except BaseException:
            os.close(to_writer_write)
            os.close(from_writer_read)
            raise
        finally:
            os.close(to_writer_read)
            os.close(from_writer_write)
        self._outbox: int | None = to_writer_write
        self._inbox: int | None = from_writer_read
        self._unconfirmed: dict[int, tuple[str, Sequence[Row]]] = {}
        self._next_batch = 0
        self._replied_through = -1
        self.broken = False

    @property
    def pid(self) -> int:
        return self._process.pid

    def submit(self, run_id: str, rows: Sequence[Row], write_here: WriteHere) -> None:
        """Hand `rows` over; written here instead if the writer is gone."""
        if not rows:
            return
        self._read_replies(through=None)
        if server_retries.is_given_up() and not self.broken:
            self._give_up()
        if self.broken:
            write_here(run_id, rows)
            return
        batch = self._next_batch
        self._next_batch += 1
        self._unconfirmed[batch] = (run_id, rows)
        try:
            _send(self._outbox, (batch, run_id, rows))
        except OSError:  # the writer died: its end of the pipe is closed
            self._give_up()
        except BaseException:  # interrupted, perhaps half-way through the message
            self._give_up()
            raise

    def settle(self, run_id: str, write_here: WriteHere) -> None:
        """Return once every batch of `run_id` handed over so far is stored, by the writer or else here."""
        batches = [batch for batch, (owner, _) in self._unconfirmed.items() if owner == run_id]
        if batches:
            self._read_replies(through=max(batches))
        for batch in batches:
            if batch in self._unconfirmed:  # failed in the writer, or the writer was given up
                write_here(*self._unconfirmed.pop(batch))

    def _read_replies(self, through: int | None) -> None:
        """Take in the writer's replies: those already there, or, with `through`, wait up to that batch."""
        silent, stall = 0.0, stall_seconds()
        while not self.broken:
            waiting = through is not None and self._replied_through < through
            if not _readable(self._inbox, REPLY_WAIT_SECONDS if waiting else 0):
                if not waiting:
                    return
                silent += REPLY_WAIT_SECONDS
                if self._process.poll() is not None or silent >= stall or server_retries.is_given_up():
                    self._give_up()
                continue
            try:
                reply = _receive(self._inbox)
            except BaseException:
                self._give_up(replies_in_step=False)
                raise
            if reply is None:  # the writer exited
                self._give_up()
                return
            self._take(reply)
            silent = 0.0

    def _take(self, reply: tuple[int, str | None, bool]) -> None:
        batch, error, server_lost = reply
        self._replied_through = batch
        if server_lost:
            server_retries.give_up_quickly()
        if error is None:
            self._unconfirmed.pop(batch, None)

    def _give_up(self, replies_in_step: bool = True) -> None:
        """Stop using this writer: it stores the complete messages it holds and exits; `settle` does the rest.

        Its last replies are read once it has exited, so that what it stored is not written twice.
        Once the server is lost it is killed at once: it might be retrying a request for another outage.
        """
        self.broken = True
        if self._outbox is not None:
            os.close(self._outbox)
            self._outbox = None
        try:
            self._process.wait(0 if server_retries.is_given_up() else EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()  # stalled: what it did not confirm is written by `settle`
            self._process.wait()
        if self._inbox is None:
            return
        while replies_in_step and (reply := _receive(self._inbox)) is not None:
            self._take(reply)
        os.close(self._inbox)
        self._inbox = None

    def close(self) -> None:
        """Let the writer finish what it holds and exit.

        Runs settle before they end, so usually every batch is confirmed and there is nothing to wait
        for: the writer exits by itself once it reads the end of the pipe, and the training process does
        not sit through the writer's interpreter shut-down (about 0.4 s per invocation). With batches
        still unconfirmed, it is given up and waited for, as after an error.
        """
        if self.broken:
            return
        if self._unconfirmed:
            self._give_up()
            return
        self.broken = True
        for fd in (self._outbox, self._inbox):
            if fd is not None:
                os.close(fd)
        self._outbox = self._inbox = None


def writer_for(client: Any, rows_per_call: int) -> MetricWriter | None:
    """The writer of `client`'s store, started on first use; None if no process can be started here."""
    if os.name != "posix":  # passing pipe ends to a child and select() on pipes are POSIX-only
        return None
    writer = _writers.get(client)
    if writer is None or writer.broken:
        try:
            writer = MetricWriter(client.tracking_uri, rows_per_call)
        except OSError:
            return None
        _writers[client] = writer
        weakref.finalize(client, writer.close)
    return writer


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # the default pipe size only means the training process waits sooner


def _serve(inbox: int, outbox: int, tracking_uri: str, rows_per_call: int) -> None:
    """Write batches until the training process closes the pipe, replying (batch, error or None, lost) to each.

    Batches waiting in the pipe are merged into requests of up to `rows_per_call`
    rows, since each request costs a transaction besides its rows.
    """
    from mlflow import MlflowClient

    client = None
    done = False
    while not done:
        batches = [_receive(inbox)]
        while batches[-1] is not None and sum(len(rows) for _, _, rows in batches) < rows_per_call \
                and _readable(inbox, 0):
            batches.append(_receive(inbox))
        if batches[-1] is None:
            done = True
            batches.pop()
        for run_id, group in itertools.groupby(batches, key=lambda message: message[1]):
            group = list(group)
            error, server_lost = None, False
            try:
                client = client or MlflowClient(tracking_uri=tracking_uri)
                write_rows(client, run_id, [row for _, _, rows in group for row in rows], rows_per_call)
            except Exception as exc:  # reported, and the training process writes the batch itself
                error = f"{type(exc).__name__}: {exc}"
                server_lost = server_retries.give_up_quickly_if_lost(exc)
            for batch, _, _ in group:
                try:
                    _send(outbox, (batch, error, server_lost))
                except OSError:
                    pass  # the training process is gone or gave up on this writer; keep writing what it sent


def main(argv: Sequence[str]) -> None:
    inbox, outbox, tracking_uri, rows_per_call = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training process decides when writing stops
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _serve(int(inbox), int(outbox), tracking_uri, int(rows_per_call))


if __name__ == "__main__":
    main(sys.argv[1:])
