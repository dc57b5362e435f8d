"""Configuration travels as typed objects: outside the CLI files (``*cli.py``) no function takes
an argparse result, so every library call can be made without argv.

Read from the source with ``ast``: a function outside a ``*cli.py`` file with a parameter named
``args`` or annotated ``Namespace`` / ``argparse.Namespace``, or any mention of
``argparse.Namespace`` outside those files, fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The package roots scanned.
SCANNED_ROOTS = ("core", "trainer", "export", "calibration", "evaluation", "runtime")
NAMESPACE_NAMES = {"Namespace", "argparse.Namespace"}


def _is_cli_file(path: Path) -> bool:
    return path.name.endswith("cli.py")


def _annotation(arg: ast.arg) -> str:
    return ast.unparse(arg.annotation).strip("'\"") if arg.annotation is not None else ""


def findings(source: str, where: str) -> list[str]:
    """What the rule refuses in one non-CLI module's source."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            params = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p is not None]
            name = getattr(node, "name", "<lambda>")
            for p in params:
                if p.arg == "args" and p is not a.vararg:
                    found.append(f"{where}:{node.lineno} {name}() takes a parameter named args")
                elif _annotation(p) in NAMESPACE_NAMES:
                    found.append(f"{where}:{node.lineno} {name}() takes an argparse Namespace ({p.arg})")
        elif isinstance(node, ast.Attribute) and ast.unparse(node) == "argparse.Namespace":
            found.append(f"{where}:{node.lineno} refers to argparse.Namespace")
        elif isinstance(node, ast.ImportFrom) and node.module == "argparse" and any(
                a.name == "Namespace" for a in node.names):
            found.append(f"{where}:{node.lineno} imports argparse.Namespace")
    return found


def _modules():
    for root in SCANNED_ROOTS:
        for path in sorted((ROOT / root).rglob("*.py")):
            if not _is_cli_file(path):
                yield path


def test_no_library_function_takes_an_argparse_result():
    scanned = list(_modules())
    assert len(scanned) > 50  # the roots are where the packages are
    bad = [f for path in scanned for f in findings(path.read_text(), str(path.relative_to(ROOT)))]
    assert not bad, "library code takes argv-shaped configuration; build a typed request instead:\n" + "\n".join(bad)


def test_the_rule_sees_each_shape():
    """Each shape the rule refuses is found (and the ordinary ``*args`` is not)."""
    cases = {
        "def step(args, payload): ...": 1,
        "def step(payload, *, args=None): ...": 1,
        "def run(self, ns: argparse.Namespace): ...": 2,  # the parameter, and the name itself
        "def run(ns: 'Namespace') -> int: ...": 1,
        "async def go(ns: Namespace): ...": 1,
        "import argparse\nNS = argparse.Namespace": 1,
        "from argparse import Namespace": 1,
        "def wrap(*args, **kwargs): ...": 0,
        "def export(request: ExportRequest) -> int: ...": 0,
    }
    for source, count in cases.items():
        assert len(findings(source, "x.py")) == count, source


def test_cli_files_are_the_ones_left_out():
    assert _is_cli_file(Path("export/ffexport/cli.py")) and _is_cli_file(Path("evaluation/ffeval/bench_cli.py"))
    assert not _is_cli_file(Path("export/ffexport/orchestrate.py"))
    names = {p.name for p in _modules()}
    assert "cli.py" not in names and "bench_cli.py" not in names and "orchestrate.py" in names
