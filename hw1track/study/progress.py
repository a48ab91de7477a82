"""One progress line for a whole study whose tasks run elsewhere: done, running, queued and failed.

Tasks on a cluster cannot print into the terminal of the command that started
them, so the command keeps one line on stderr up to date instead. On a
terminal the line is rewritten in place; into a log it is a new line per
change, so the log still tells the story.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class StudyProgress:
    """Counts of the study's experiments and tasks so far; `experiments` is how many experiments the study has.

    Every experiment's tasks are submitted as soon as its parent run is open,
    so the line counts the study as a whole rather than one experiment at a time.
    """

    experiments: int
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    experiments_done: int = 0
    submitted: int = 0
    started: int = 0
    done: int = 0
    failed: int = 0
    _shown: str = ""

    def tasks_submitted(self, tasks: int) -> None:
        self.submitted += tasks
        self._show()

    def task_started(self) -> None:
        self.started += 1
        self._show()

    def task_ended(self, ok: bool, was_started: bool) -> None:
        self.started += 0 if was_started else 1  # a task that failed before it said so had started all the same
        self.done += ok
        self.failed += not ok
        self._show()

    def experiment_ended(self) -> None:
        self.experiments_done += 1
        self._show()

    def line(self) -> str:
        running = self.started - self.done - self.failed
        queued = self.submitted - self.started
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"[study] experiments {self.experiments_done} of {self.experiments} done: tasks {self.done} done, "
                f"{running} running, {queued} queued{failed}")

    def end_line(self) -> None:
        """Close the line being rewritten, so that what is printed next starts on a line of its own."""
        if self._shown and self._is_terminal():
            self.stream.write("\n")
            self.stream.flush()
        self._shown = ""

    def _show(self) -> None:
        line = self.line()
        if line == self._shown:
            return
        self._shown = line
        self.stream.write(f"\r{line}\x1b[K" if self._is_terminal() else f"{line}\n")
        self.stream.flush()

    def _is_terminal(self) -> bool:
        return getattr(self.stream, "isatty", lambda: False)()
