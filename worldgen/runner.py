"""The stage runner: a build is a declared list of stages that one small loop executes.

A :class:`Stage` names the values it reads (``inputs``) and the values it makes
(``outputs``), the plain function that makes them, and what its cache key depends on. The
runner (:func:`run_stages`) does, for every stage, in order: time it and report progress
(``Reporter.stage``), work out its key, look the key up in the :class:`~worldgen.cache.StageCache`
(entries are verified by checksum there: a truncated or corrupt entry is rebuilt, never
trusted), run the function on a miss and store its outputs, and say where a re-run resumed
(``resumed from <stage>``: the first stage that had to run after one or more cache hits).

Keys chain: a stage's key hashes its name, worldgen's version, its own ``params`` (the parts
of the config it reads, file hashes) and the keys of the values it reads, so changing an early
stage's config invalidates everything after it and nothing before it. A value that no stage
made (the photo's path, the config) has the key its caller gives in ``roots``.

Adding a stage is one :class:`Stage` entry in ``pipeline.STAGE_LIST``; no stage reads another
stage's private state, only the named values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cache import StageCache, stage_key
from .progress import Reporter

Values = dict[str, Any]
"""The build's named values: the roots, then every stage's outputs."""


@dataclass(frozen=True)
class Stage:
    """One step of a build.

    ``fn(values) -> {output: value}`` reads only the names in ``inputs`` and returns exactly
    ``outputs``. ``params(values) -> dict`` gives the JSON-able parts of its key besides the
    input keys (a cached stage's ``params`` may read only its inputs: it runs before the stage;
    an uncached stage's runs after it). ``encode(outputs) -> (arrays, meta)`` and
    ``decode(arrays, meta, values) -> outputs`` make it cached (both or neither).
    ``when(values) -> bool`` skips the stage when false (its ``skipped`` outputs are used).
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn: Callable[[Values], dict]
    params: Callable[[Values], dict] | None = None
    encode: Callable[[dict], tuple[dict, dict]] | None = None
    decode: Callable[[dict, dict, Values], dict] | None = None
    when: Callable[[Values], bool] | None = None
    skipped: Callable[[Values], dict] | None = None

    @property
    def cached(self) -> bool:
        return self.encode is not None and self.decode is not None


@dataclass
class RunLog:
    """What the runner did: stage keys, cache hits, stages run, where it resumed."""

    keys: dict[str, str] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    resumed_from: str | None = None


def check_stages(stages: list[Stage], roots: set[str]) -> None:
    """Every input is a root or an earlier stage's output; names are unique. Raises
    AssertionError (a programming error, not a user's)."""
    known = set(roots)
    names = set()
    for s in stages:
        assert s.name not in names, f"stage {s.name!r} declared twice"
        names.add(s.name)
        missing = [i for i in s.inputs if i not in known]
        assert not missing, f"stage {s.name!r} reads {missing}, which nothing before it makes"
        assert (s.encode is None) == (s.decode is None), f"stage {s.name!r}: encode and decode"
        known.update(s.outputs)


def run_stages(
    stages: list[Stage],
    values: Values,
    root_keys: dict[str, str],
    cache: StageCache,
    reporter: Reporter,
    log: RunLog | None = None,
    check: Callable[[str, Values], None] | None = None,
) -> RunLog:
    """Run ``stages`` in order over ``values`` (updated in place with every output).

    ``root_keys``: the key of each root value. ``check(stage_name, values)`` is called before
    each stage (the pipeline's hook for resource checks); it may raise, or replace values.
    """
    check_stages(stages, set(values))
    log = log or RunLog()
    value_keys: dict[str, str] = dict(root_keys)
    cached = [k for k, s in enumerate(stages) if s.cached]
    # with every cached stage a hit, a re-run resumes at the first stage after the last one
    after_hits = {s.name for s in stages[cached[-1] + 1 :]} if cached else set()
    missed = False
    for s in stages:
        if check is not None:
            check(s.name, values)
        if s.when is not None and not s.when(values):
            if s.skipped is not None:
                out = s.skipped(values)
                values.update(out)
                for o in out:
                    value_keys[o] = stage_key(s.name + ":skipped", inputs=_in_keys(s, value_keys))
            continue
        with reporter.stage(s.name):
            key = None
            out = None
            if s.cached:
                key = _key(s, values, value_keys)
                got = cache.get(s.name, key)
                if got is not None:
                    out = s.decode(got[0], got[1], values)
                    log.hits.append(s.name)
                else:
                    note = cache.take_rejection(s.name)
                    if note:
                        reporter.note(note)
            if out is None:
                resumes = s.cached or s.name in after_hits
                if log.hits and not missed and log.resumed_from is None and resumes:
                    log.resumed_from = s.name
                    reporter.note(f"resumed from {s.name} ({', '.join(log.hits)} from the cache)")
                missed = missed or s.cached
                out = s.fn(values)
                log.ran.append(s.name)
                if s.cached:
                    arrays, meta = s.encode(out)
                    cache.put(s.name, key, arrays, meta)
            missing = set(s.outputs) - set(out)
            assert not missing, f"stage {s.name!r} did not return {sorted(missing)}"
            values.update({k: out[k] for k in s.outputs})
            if key is None:
                key = _key(s, values, value_keys)
            log.keys[s.name] = key
            for o in s.outputs:
                value_keys[o] = key
    return log


def _in_keys(s: Stage, value_keys: dict[str, str]) -> dict[str, str]:
    return {i: value_keys[i] for i in s.inputs if i in value_keys}


def _key(s: Stage, values: Values, value_keys: dict[str, str]) -> str:
    params = s.params(values) if s.params is not None else {}
    return stage_key(s.name, params=params, inputs=_in_keys(s, value_keys))
