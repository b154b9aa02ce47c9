"""The tutorials run top to bottom in quick mode (they also assert their own key numbers), their rendered
pages in docs/notebooks/ match their current code, and every image the docs show exists."""

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _renderer():
    """docs/render_notebooks.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("render_notebooks", ROOT / "docs" / "render_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_present():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("DFCAN_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs stripped"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    pngs = sorted(tmp_path.rglob("*.png"))
    assert pngs, "each tutorial saves its figures"
    assert all(p.stat().st_size > 1000 for p in pngs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_rendered_page_matches_notebook_code(path):
    """A notebook whose code changed without `python docs/render_notebooks.py NN` fails here."""
    render = _renderer()
    page = ROOT / "docs" / "notebooks" / f"{path.stem}.md"
    assert page.is_file(), f"no rendered page for {path.name}: run .venv/bin/python docs/render_notebooks.py"
    assert render.recorded_sha256(page) == render.code_sha256(nbformat.read(path, as_version=4)), (
        f"{page.relative_to(ROOT)} was rendered from other code than {path.name}'s: "
        f"re-run .venv/bin/python docs/render_notebooks.py {path.stem[:2]}")
    text = page.read_text(encoding="utf-8")
    nb = nbformat.read(path, as_version=4)
    # Every code cell appears on the page, and the page shows at least one figure.
    assert all(c.source.strip() in text for c in nb.cells if c.cell_type == "code")
    assert re.search(r"!\[[^\]]*\]\(images/[^)]+\.png\)", text)


def test_code_hash_sees_code_only():
    render = _renderer()
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    before = render.code_sha256(nb)
    assert re.fullmatch(r"[0-9a-f]{64}", before)
    markdown = next(c for c in nb.cells if c.cell_type == "markdown")
    code = [c for c in nb.cells if c.cell_type == "code"]
    markdown.source += "\nmore prose"
    code[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="x\n")]
    assert render.code_sha256(nb) == before
    code[0].source += "\n# a comment"
    assert render.code_sha256(nb) != before
    # The cell boundaries count: "ab" + "c" is not "a" + "bc".
    split = [nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(a), nbformat.v4.new_code_cell(b)])
             for a, b in (("ab", "c"), ("a", "bc"))]
    assert render.code_sha256(split[0]) != render.code_sha256(split[1])

def _local_targets(md: Path, images_only: bool) -> list[tuple[str, Path]]:
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.DOTALL)  # not in code blocks
    found = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text) + re.findall(r'<img[^>]*src="([^"]+)"', text)
    if not images_only:
        found += re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", text)
    targets = []
    for target in found:
        target = target.split("#")[0]
        if target and not re.match(r"[a-z]+:", target):
            targets.append((target, (md.parent / target).resolve()))
    return targets


def test_images_and_links_in_the_docs_exist():
    """Every image shown by README.md, docs/**/*.md, notebooks/README.md and export/README.md exists;
    every local link of the README and the two indexes exists."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "notebooks" / "README.md",
             ROOT / "export" / "README.md"]
    indexes = {ROOT / "README.md", ROOT / "docs" / "README.md", ROOT / "notebooks" / "README.md"}
    missing = [f"{md.relative_to(ROOT)} -> {target}" for md in pages if md.is_file()
               for target, path in _local_targets(md, images_only=md not in indexes) if not path.exists()]
    assert not missing, missing
    shown = {path for md in pages if md.is_file() for _, path in _local_targets(md, images_only=True)}
    assert (ROOT / "docs" / "images" / "readme_figure.png").resolve() in shown
