"""The folder tree is the dependency diagram: each folder is one layer and imports only go down.

Every ``import`` of an archer module anywhere in a file counts, inside functions and ``if
TYPE_CHECKING:`` blocks too (a lazy import is still a dependency; it only moves the cost). The table
is the one in ``docs/DESIGN.md`` ("Where things live"); change both together.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "archer"

# Lowest first. A module may import its own folder and any folder of a strictly lower layer.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "safe_yaml", "atomic_json"),  # L0: no archer imports at all
    ("sandbox", "algo"),  # L1: untrusted-code execution; pure tensor functions
    ("data",),  # L2: Problem schema, formats, prompts, n-grams, curricula over prompts
    ("distributed",),  # L3: World, launch, sharded checkpoints, Ray helpers
    ("models", "tracking"),  # L4: the one loader, checkpoints, tiny models; metric sinks and plots
    ("rewards", "rollout", "tasks"),  # L5: verifiers and scoring; engines; bundled tasks
    ("config",),  # L6: dataclasses, YAML, validation against the registries below
    ("sft", "eval"),  # L7: services the runs below use: supervised training, generate-then-score
    ("rl", "rm", "curation"),  # L8: RL runs, reward models, data curation
    ("cli",),  # L9: entry points; nothing imports it
]
FRONT_DOOR = {"__init__", "__main__"}  # archer/__init__.py (lazy names) and `python -m archer`
MAX_FUNCTION_LEVEL_IMPORTS = 80


def _rank() -> dict[str, int]:
    return {name: i for i, group in enumerate(LAYERS) for name in group}


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def archer_imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every archer import in ``path``."""
    module = _module(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                names = [f"archer.{a.name}" for a in child.names] if target == "archer" else [target]
            found.extend((n, child.lineno, in_function) for n in names if n.split(".")[0] == "archer")
            visit(child, inside)

    visit(tree, False)
    return found


def _files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def _edges() -> list[tuple[Path, str, str, int, bool]]:
    out = []
    for p in _files():
        src = _folder(_module(p))
        for target, line, in_fn in archer_imports(p):
            if _folder(target) != src:
                out.append((p, src, _folder(target), line, in_fn))
    return out


def test_every_folder_has_a_layer() -> None:
    folders = {_folder(_module(p)) for p in _files()} - FRONT_DOOR
    assert folders <= set(_rank()), f"folders without a layer in LAYERS: {sorted(folders - set(_rank()))}"


def test_imports_only_go_down() -> None:
    rank = _rank()
    bad = [
        f"{p.relative_to(PKG.parent)}:{line} ({src}, L{rank[src]}) imports archer.{dst} (L{rank.get(dst)})"
        for p, src, dst, line, _ in _edges()
        if src not in FRONT_DOOR and (dst in FRONT_DOOR or rank[dst] >= rank[src])
    ]
    assert not bad, "imports that do not go down:\n" + "\n".join(bad)


def test_nothing_imports_cli() -> None:
    bad = [f"{p.relative_to(PKG.parent)}:{line}" for p, src, dst, line, _ in _edges() if dst == "cli"]
    bad = [b for b in bad if not b.startswith("archer/__main__.py")]
    assert not bad, f"archer.cli is imported by: {bad}"


def test_no_import_cycle_between_folders() -> None:
    graph: dict[str, set[str]] = {}
    for _, src, dst, _, _ in _edges():
        if src not in FRONT_DOOR:
            graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}

    def cycle_from(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt not in state and (found := cycle_from(nxt, [*stack, node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = cycle_from(start, [])
            assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_function_level_imports_are_few() -> None:
    """Lazy archer imports are for optional extras and command start-up cost only."""
    counts = Counter(
        str(p.relative_to(PKG.parent)) for p in _files() for _, _, in_fn in archer_imports(p) if in_fn
    )
    total = sum(counts.values())
    assert total <= MAX_FUNCTION_LEVEL_IMPORTS, f"{total} function-level imports: {counts.most_common(12)}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The rules above can fail: a lazy import inside a method and a relative import are both found."""
    probe = PKG / "algo" / "_layer_probe.py"
    probe.write_text(
        "from . import losses\n\nclass A:\n    def f(self):\n        from archer.rl.loop import train\n"
    )
    try:
        found = archer_imports(probe)
    finally:
        probe.unlink()
    assert ("archer.algo", 1, False) in found and ("archer.rl.loop", 5, True) in found


def test_no_task_name_branch_outside_tasks() -> None:
    """The generic code asks the task registry; only tasks/ may compare a value with a task's name."""
    from archer.tasks.registry import task_names

    names = set(task_names())
    bad = []
    for p in _files():
        if _folder(_module(p)) == "tasks":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                consts += [
                    e
                    for c in node.comparators
                    if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                    for e in c.elts
                    if isinstance(e, ast.Constant)
                ]
                if any(c.value in names for c in consts):
                    bad.append(f"{p.relative_to(PKG.parent)}:{node.lineno}")
    assert not bad, f"task-name branches outside archer/tasks: {bad}"


MAX_FUNCTION_LINES = 100


def test_no_function_over_100_lines() -> None:
    """Long functions hid the RL step's stages; a function that needs more is several functions."""
    long = [
        f"{p.relative_to(PKG.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for p in _files()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
