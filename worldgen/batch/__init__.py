"""``worldgen batch``: one world per photo for many photos, on Ray (local by default).

- ``inputs``: photos, folders and CSV lists -> ``Item`` (photo, world folder, overrides)
- ``item``: one item in a worker: complete / stale / build (``pipeline.build``), its record
- ``driver``: Ray start/connect, tasks or an actor pool, resource requests, the wait loop
- ``report``: ``OUTDIR/batch.json`` and the progress bar

Ray is the optional ``[batch]`` extra and is imported only when a batch runs.
"""

from .driver import BatchOptions, BatchResult, run_batch
from .inputs import Item, discover

__all__ = ["BatchOptions", "BatchResult", "Item", "discover", "run_batch"]
