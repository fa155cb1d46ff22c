"""Progress of long steps (venv creation, pip installs) on stderr, shared by `vboot setup` and `vboot kernel`."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from bootstrap.cli import output

if TYPE_CHECKING:

    from bootstrap.core.setup import Step


class StepProgress:
    """A spinner with the current step and the last line of its output (TTY), or one line per step (logs, CI)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty() and not output.STATE.json
        self.status: output.Status | None = None
        self.step = ""
        self.started = time.monotonic()
        self._last_draw = 0.0

    def __enter__(self) -> StepProgress:
        if self.tty:
            self.status = output.err_console().status("starting...")
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)

    def on_step(self, index: int, step: Step) -> None:
        if self.step:
            self._done()
        self.step = f"[{index + 1}/{self.total}] {step.name}"
        self.started = time.monotonic()
        if self.status is not None:
            self.status.update(f"{self.step}: {output.escape(step.why[:100])}")
        else:
            output.info(f"{self.step}: {step.why}")

    def on_line(self, line: str) -> None:
        if self.status is None:
            return
        now = time.monotonic()
        if now - self._last_draw > 0.1:
            self._last_draw = now
            elapsed = output.human_duration(now - self.started)
            self.status.update(f"{self.step} ({elapsed}): {output.escape(line[:110])}")

    def finish(self) -> None:
        if self.step:
            self._done()
            self.step = ""

    def _done(self) -> None:
        output.info(f"[green]✓[/] {self.step} ({output.human_duration(time.monotonic() - self.started)})")
