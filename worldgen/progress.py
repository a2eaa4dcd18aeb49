"""Progress reporting with per-stage timings (rich on stderr, or silent)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Reporter:
    """Silent reporter: records stage timings only."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []

    @contextmanager
    def stage(self, name: str, total_stages: int | None = None) -> Iterator[None]:
        t0 = time.perf_counter()
        yield  # a failing stage is not reported as done
        self.timings[name] = round(time.perf_counter() - t0, 4)
        self._done(name, self.timings[name])

    def _done(self, name: str, seconds: float) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)

    def close(self) -> None:
        pass


class RichReporter(Reporter):
    """A progress bar over the build's stages on stderr, a line per finished stage."""

    def __init__(self, total: int, title: str = "building") -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task(title, total=total)
        self.progress.start()

    @contextmanager
    def stage(self, name: str, total_stages: int | None = None) -> Iterator[None]:
        self.progress.update(self.task, description=name)
        with super().stage(name):
            yield

    def _done(self, name: str, seconds: float) -> None:
        self.progress.advance(self.task)
        self.progress.console.print(f"  [green]✓[/green] {name:<12} {seconds:7.2f} s")

    def note(self, text: str) -> None:
        super().note(text)
        self.progress.console.print(f"  [cyan]·[/cyan] {text}")

    def close(self) -> None:
        self.progress.stop()
