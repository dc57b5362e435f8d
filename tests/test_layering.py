"""The import direction between packages, read from the source (ast), and torch-free imports.

    ffcore  <- every package; imports none of them (and never torch)
    ffrt    <- ffcore only
    fftrain <- ffcore only
    ffcalib <- ffrt, ffcore (NOT fftrain: it runs where torch is not installed)
    ffeval  <- ffrt, ffcore (ffbench --vs-torch runs `python -m fftrain.eager` as a child process)
    ffexport <- fftrain, ffcalib, ffrt, ffcore (the orchestrator)
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "ffcore": ROOT / "core" / "ffcore",
    "ffrt": ROOT / "runtime" / "ffrt",
    "fftrain": ROOT / "trainer" / "fftrain",
    "ffcalib": ROOT / "calibration" / "ffcalib",
    "ffeval": ROOT / "evaluation" / "ffeval",
    "ffexport": ROOT / "export" / "ffexport",
}
ALLOWED = {
    "ffcore": set(),
    "ffrt": {"ffcore"},
    "fftrain": {"ffcore"},
    "ffcalib": {"ffrt", "ffcore"},
    "ffeval": {"ffrt", "ffcore"},
    "ffexport": {"fftrain", "ffcalib", "ffrt", "ffcore"},
}

def _imports(tree: ast.AST):
    """(top-level package, enclosing function or None, line) of every import in ``tree``."""
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Import):
                out.extend((a.name.split(".")[0], func, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module.split(".")[0], func, child.lineno))
            visit(child, f)

    visit(tree, None)
    return out


def test_every_package_imports_only_those_below_it():
    bad = []
    for pkg, folder in PACKAGES.items():
        assert folder.is_dir(), folder
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            for mod, func, line in _imports(ast.parse(path.read_text(), str(path))):
                if mod in PACKAGES and mod != pkg and mod not in ALLOWED[pkg]:
                    bad.append(f"{pkg}/{rel}:{line} imports {mod}" + (f" (in {func})" if func else ""))
                if mod == "torch" and pkg in ("ffcore", "ffrt", "ffcalib", "ffeval"):
                    bad.append(f"{pkg}/{rel}:{line} imports torch")
    assert not bad, "imports against the direction:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_and_nested_imports():
    """The parse above must catch an import inside a function (the old lazy escapes)."""
    src = "import os\ndef f():\n    if True:\n        from fftrain.data import x\n"
    assert ("fftrain", "f", 4) in _imports(ast.parse(src))


@pytest.mark.parametrize("module", ["ffcore", "ffrt", "ffcalib", "ffeval",
                                    "ffcalib.int8", "ffcalib.thresholds", "ffcalib.cli", "ffeval.bench",
                                    "ffeval.evaluate", "ffeval.bench_cli", "ffeval.eval_cli", "ffrt.cli",
                                    "ffrt.review", "ffeval.review", "ffcalib.review", "ffcalib.setthresholds"])
def test_imports_with_torch_unimportable(module):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # `import torch` raises ImportError
        sys.modules["torchvision"] = None
        import {module}
        assert "fftrain" not in sys.modules, "{module} imported fftrain"
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p.parent) for p in PACKAGES.values())}  # this tree's sources
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
