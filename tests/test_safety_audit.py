"""Safety audit as a test: walk the package's AST for calls that would run a stranger's code.

Forbidden in ``worldgen/``, ``renderer/`` and ``exporters/``: importing pickle (or cPickle,
dill, joblib, shelve, marshal), ``eval`` / ``exec`` / ``compile`` / ``__import__`` of data,
``os.system`` / ``os.popen``, any call with ``shell=True``, ``yaml.load`` / ``unsafe_load`` /
``full_load`` (``safe_load`` only), ``trust_remote_code=True`` (or not a literal False),
``torch.load`` without ``weights_only=True``, ``np.load(..., allow_pickle=True)``. A
distributed engine's own task transport (Ray) is not user data and not called here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("worldgen", "renderer", "exporters")
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal",
                  "cloudpickle"}  # fmt: skip
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}


def _sources() -> list[Path]:
    files = []
    for pkg in PACKAGES:
        files += [p for p in (REPO / pkg).rglob("*.py") if "node_modules" not in p.parts]
    return sorted(files)


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def audit(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every forbidden construct in a module's AST."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for m in mods:
                if m and m.split(".")[0] in BANNED_MODULES:
                    bad.append((node.lineno, f"import {m}"))
        if not isinstance(node, ast.Call):
            continue
        fn = _name(node.func)
        last = fn.rsplit(".", 1)[-1]
        if fn in BANNED_CALLS:
            bad.append((node.lineno, f"{fn}()"))
        if fn in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
            bad.append((node.lineno, f"{fn}()"))
        shell = _kw(node, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            bad.append((node.lineno, f"{fn}(shell=...)"))
        if (
            fn.endswith("yaml.load")
            or last in ("unsafe_load", "full_load", "load_all")
            and ("yaml" in fn)
        ):
            bad.append((node.lineno, f"{fn}() (use yaml.safe_load)"))
        trc = _kw(node, "trust_remote_code")
        if trc is not None and not (isinstance(trc, ast.Constant) and trc.value is False):
            bad.append((node.lineno, f"{fn}(trust_remote_code=...)"))
        if fn == "torch.load":
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                bad.append((node.lineno, "torch.load without weights_only=True"))
        if last == "load" and fn.split(".")[0] in ("np", "numpy"):
            ap = _kw(node, "allow_pickle")
            if not (isinstance(ap, ast.Constant) and ap.value is False):
                bad.append((node.lineno, f"{fn} without allow_pickle=False"))
    return bad


def test_package_has_no_forbidden_calls():
    found = []
    files = _sources()
    assert len(files) > 50
    for p in files:
        for line, what in audit(ast.parse(p.read_text(), str(p))):
            found.append(f"{p.relative_to(REPO)}:{line}: {what}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "src",
    [
        "import pickle",
        "from dill import loads",
        "eval(text)",
        "exec(code)",
        "subprocess.run(cmd, shell=True)",
        "subprocess.run(cmd, shell=flag)",
        "os.system('ls')",
        "yaml.load(f)",
        "yaml.unsafe_load(f)",
        "AutoModel.from_pretrained(m, trust_remote_code=True)",
        "torch.load(p)",
        "torch.load(p, weights_only=False)",
        "np.load(p)",
        "np.load(p, allow_pickle=True)",
    ],
)
def test_audit_catches_each_forbidden_construct(src):
    assert audit(ast.parse(src)), src


@pytest.mark.parametrize(
    "src",
    [
        "yaml.safe_load(f)",
        "torch.load(p, weights_only=True)",
        "np.load(p, allow_pickle=False)",
        "subprocess.run(['ls'], shell=False)",
        "AutoModel.from_pretrained(m, trust_remote_code=False)",
        "json.load(f)",
    ],
)
def test_audit_allows_the_safe_forms(src):
    assert not audit(ast.parse(src)), src
