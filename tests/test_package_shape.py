"""The package's shape, checked: module sizes, import order without cycles, argparse only in cli/,
citations inside the repository, one min-max formula."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dfcan_tf"
MAX_LINES = 500
# The flow imports follow at module level (docs/package.md); a module may import its own stage or an
# earlier one. Leaves (errors, safety, shipped, config) may be imported from anywhere.
ORDER = ["config", "data", "nets", "runs", "training", "inference", "sim", "evaluation", "export", "benchmark",
         "napari", "cli"]
LEAVES = {"errors", "safety", "shipped", "config"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "_weights" in path.parts:
            continue
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _top_level_imports(path: Path) -> set[str]:
    """dfcan_tf modules imported at module level (not inside functions, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dfcan_tf"):
            found.add(node.module)
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dfcan_tf"))
    return found


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_module_level_imports_have_no_cycle_and_point_down_the_flow():
    modules = _modules()
    graph = {name: {m for m in _top_level_imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    backwards = []
    for name, deps in graph.items():
        stage = _stage(name)
        if stage not in ORDER:
            continue
        for dep in deps:
            dep_stage = _stage(dep)
            if dep_stage in LEAVES or dep_stage == stage or dep_stage not in ORDER or dep == "dfcan_tf":
                continue
            if ORDER.index(dep_stage) > ORDER.index(stage):
                backwards.append((name, dep))
    assert not backwards, f"imports pointing back up the flow: {backwards}"

    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*trail, node, dep])}")
            if dep not in state:
                visit(dep, [*trail, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_argparse_lives_only_in_cli():
    users = [name for name, path in _modules().items()
             if not name.startswith("dfcan_tf.cli") and re.search(r"ArgumentParser\(|\.add_argument\(", path.read_text())]
    assert not users, f"argparse outside dfcan_tf/cli/: {users}"


def test_citations_stay_inside_the_repository():
    for path in [*PACKAGE.rglob("*.py"), *ROOT.glob("weights/*/MODEL_CARD.md"), *ROOT.glob("docs/*.md")]:
        assert "REFERENCE §" not in path.read_text() and "REFERENCE.md" not in path.read_text(), path
    for path in PACKAGE.rglob("*.py"):
        for cited in re.findall(r"docs/([a-z_-]+\.md)", path.read_text()):
            assert (ROOT / "docs" / cited).is_file(), f"{path} cites docs/{cited}, which does not exist"


def test_min_max_formula_is_written_once():
    pattern = re.compile(r"\(\s*\w+\s*-\s*(lo|mn|vmin|x_min|lo_)\w*\s*\)\s*/\s*\(\s*(hi|mx|vmax|x_max)\w*\s*-")
    writers = [name for name, path in _modules().items() if pattern.search(path.read_text())]
    assert writers == ["dfcan_tf.data.normalize"], writers


def test_no_lambda_layers():
    """Every layer is a registered class: Lambda layers do not load with safe_mode and do not export."""
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in PACKAGE.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"layers\.Lambda\s*\(|\bLambda\s*\(", line)]
    assert not offenders, offenders
