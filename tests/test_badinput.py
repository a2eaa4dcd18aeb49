"""The bad-input corpus (tests/badinput.py) through the real CLI, one process per case.

Every case: a one-line error with its exit code (or exit 0 and a complete, sound world), no
traceback, the inputs' bytes unchanged, no partial output (nothing of the output's name, no
temporary or lock file, after an error), within its time bound and a memory bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tests.badinput import Case, make_corpus, unmount_all
from tests.conftest import REPO
from worldgen.world import load_world

MAX_RSS_MB = 3000  # per case, the forked interpreter (~230 MB with torch) included

#: cases that find bugs outside this issue's code, kept visible until fixed
KNOWN_BUGS: dict[str, str] = {}  # e.g. "exif-orientation-5": "why" (fixed in 2c438e6)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    try:
        cases = make_corpus(root)
        (root / "cases.json").write_text(json.dumps([asdict(c) for c in cases]))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        r = subprocess.run(
            [sys.executable, "-m", "tests.badinput", str(root)],
            capture_output=True, text=True, timeout=900, env=env, cwd=REPO,
        )  # fmt: skip
    finally:
        unmount_all(root)
    assert r.returncode == 0, r.stderr[-3000:]
    results = {x["name"]: x for x in json.loads(r.stdout)}
    return {c.name: c for c in cases}, results


def test_corpus_has_every_kind_of_case(corpus):
    cases, results = corpus
    assert len(cases) >= 40 and set(results) == set(cases)
    if "output-full-disk" not in cases:  # a tmpfs mount needs root (CAP_SYS_ADMIN)
        import warnings

        warnings.warn("no tmpfs could be mounted: the full-disk case was left out", stacklevel=1)


def _check(case: Case, res: dict) -> None:
    err = res["stderr"]
    assert not res["timed_out"], f"hung ({case.timeout_s} s)"
    assert "Traceback" not in err, err[-2000:]
    assert res["inputs_changed"] == [], "an input was modified"
    assert res["max_rss_mb"] < MAX_RSS_MB, f"peak RSS {res['max_rss_mb']} MB"
    lines = err.strip().splitlines()
    if case.expect == "error":
        assert res["rc"] in case.codes, f"exit {res['rc']}, wanted {case.codes}: {err[-500:]}"
        assert len(lines) == 1 and lines[0].startswith("worldgen "), err[-1000:]
        assert "internal error" not in lines[0], lines[0]
        assert res["output_entries"] == [], f"partial output: {res['output_entries']}"
        return
    assert res["rc"] == 0 and lines == [], err[-1000:]
    out = Path(case.output)
    assert res["output_entries"] == [out.name], res["output_entries"]
    w = load_world(out)
    s = w.splats
    assert len(s) > 0 and bool(torch.isfinite(s.means).all())
    assert float(s.means.abs().max()) < 1e6, "a splat at an absurd distance"
    try:
        notes = json.loads(res["stdout"])["notes"]
    except (ValueError, KeyError):
        raise AssertionError(f"no JSON summary on stdout: {res['stdout'][:200]!r}") from None
    if case.notice:
        assert any(case.notice in n for n in notes), notes


def test_every_corpus_case_fails_cleanly_or_builds_a_sound_world(corpus):
    cases, results = corpus
    failures, fixed = [], []
    for name, case in cases.items():
        try:
            _check(case, results[name])
        except AssertionError as e:
            if name not in KNOWN_BUGS:
                failures.append(f"{name}: {str(e).splitlines()[0][:300]}")
        else:
            if name in KNOWN_BUGS:
                fixed.append(name)
    assert not failures, "\n".join(failures)
    assert not fixed, f"fixed, remove from KNOWN_BUGS: {fixed}"
