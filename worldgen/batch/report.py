"""What a batch tells its user: ``OUTDIR/batch.json`` and the driver's progress bar.

``batch.json`` (written atomically: a temporary file in OUTDIR, then ``os.replace``)::

    {"format": "worldgen.batch", "version": 1, "finished": bool, "seconds": float,
     "counts": {"built": n, "skipped": n, "stale": n, "failed": n, "interrupted": n,
                "pending": n},
     "options": {...BatchOptions...}, "ray": {"address", "start_seconds", "nodes", ...},
     "items": [{"input", "output", "status", "seconds", "error", "node", ...}, ...]}

``status``: ``built``, ``skipped`` (complete and up to date), ``stale`` (built with other
settings; rebuilt only with --force), ``failed`` (``error``: one line, ``Type: message``),
``interrupted`` or ``pending`` (the batch stopped before it finished). ``node`` is the Ray node
id that ran the item.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import write_bytes

BATCH_JSON = "batch.json"


def write_batch_json(
    path: Path,
    records: list[dict],
    counts: dict[str, int],
    *,
    options: dict,
    ray: dict,
    seconds: float,
    finished: bool,
) -> None:
    doc = {
        "format": "worldgen.batch",
        "version": 1,
        "finished": finished,
        "seconds": round(seconds, 3),
        "counts": counts,
        "options": options,
        "ray": ray,
        "items": records,
    }
    write_bytes(Path(path), json.dumps(doc, indent=1).encode(), suffix=".tmp")


class BatchProgress:
    """A rich progress bar on stderr: done / failed / in flight, items per minute, ETA.

    ``update(records, in_flight)`` is the driver's ``on_update`` callback."""

    def __init__(self, total: int, title: str = "batch") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(title, total=total, detail="")
        self.t0 = time.perf_counter()
        self.reported: set[int] = set()
        self.progress.start()

    def update(self, records: list[dict], in_flight: int) -> None:
        finished = [r for r in records if r["status"] not in ("pending",)]
        failed = sum(r["status"] == "failed" for r in records)
        built = sum(r["status"] == "built" for r in records)
        minutes = max(time.perf_counter() - self.t0, 1e-6) / 60
        detail = (
            f"built {built} · failed {failed} · running {in_flight} · "
            f"{built / minutes:.1f} worlds/min"
        )
        for k, r in enumerate(records):
            if r["status"] == "failed" and k not in self.reported:
                self.reported.add(k)
                self.progress.console.print(f"  [red]✗[/red] {r['input']}: {r['error']}")
        self.progress.update(self.task, completed=len(finished), detail=detail)

    def close(self) -> None:
        self.progress.stop()
