"""Every dotted ``archer.x.y`` name in the documents, docstrings and comments names something that
exists: moved code leaves no stale references behind (six of fifteen claims were stale before the
layered redesign). Modules are found by their files and names by the modules' source, so nothing is
imported (vLLM or Ray need not be installed)."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATTERN = re.compile(r"(?<![\w/.])archer(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
DELIBERATE = {"archer.no_such_module"}  # a test's example of a missing module


def _documents() -> list[Path]:
    out = [REPO / n for n in ("README.md", "BENCHMARKS.md", "CONTRIBUTING.md")]
    out += sorted((REPO / "docs").glob("*.md"))
    for folder in ("archer", "benchmarks", "tests", "examples"):
        out += sorted(p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".yaml", ".md"))
    return [p for p in out if p.is_file() and "bundled" not in p.parts and p.name != Path(__file__).name]


def _module_file(parts: list[str]) -> Path | None:
    base = REPO.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@functools.cache
def _names(path: Path) -> dict[str, set[str]]:
    """Top-level names of a module, and for each class its attribute and method names."""
    tree = ast.parse(path.read_text())
    out: dict[str, set[str]] = {"": set()}
    for node in tree.body:
        targets: list[str] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            targets = [node.name]
        elif isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            targets = [(a.asname or a.name).split(".")[0] for a in node.names]
        out[""].update(targets)
        if isinstance(node, ast.ClassDef):
            members = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            members |= {
                n.target.id
                for n in node.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            }
            out[node.name] = members
    # names a module serves lazily (``__getattr__`` over a table of name strings, ``__all__``)
    strings = (n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    out[""].update(v for v in strings if v.isidentifier())
    return out


def resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        path = _module_file(parts[:i])
        if path is None:
            continue
        rest = parts[i:]
        names = _names(path)
        if not rest:
            return True
        if rest[0] not in names[""] and _module_file([*parts[:i], rest[0]]) is None:
            return False
        return len(rest) == 1 or rest[0] not in names or rest[1] in names[rest[0]] or len(rest) > 2
    return False


def test_every_dotted_archer_name_exists():
    stale = {}
    for doc in _documents():
        for m in PATTERN.finditer(doc.read_text(errors="ignore")):
            name = m.group(0).rstrip(".")
            if name not in DELIBERATE and not resolves(name):
                stale.setdefault(name, str(doc.relative_to(REPO)))
    assert not stale, f"stale references (name: first file): {stale}"


def test_the_check_can_fail():
    assert resolves("archer.rl.loop.train") and resolves("archer.config.Config.nccl")
    assert not resolves("archer.train.rl") and not resolves("archer.rl.loop.no_such_function")
