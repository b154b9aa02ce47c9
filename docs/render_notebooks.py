"""Execute the tutorials in notebooks/ and render each one as a Markdown page a reader can see without running it.

    .venv/bin/python docs/render_notebooks.py            # execute and render every notebook
    .venv/bin/python docs/render_notebooks.py 03 05      # only the notebooks whose names start so
    .venv/bin/python docs/render_notebooks.py --check    # only check that every page matches its notebook

Each notebook ``notebooks/NN_name.ipynb`` is executed top to bottom with nbclient
in a fresh kernel (the same default quick mode the notebooks document and the test
suite runs; the notebooks' own files go to a temporary folder) and rendered into
``docs/notebooks/NN_name.md``: Markdown cells as they are, code cells as Python
blocks, text outputs as text blocks, and every figure saved as a PNG under
``docs/notebooks/images/``. The notebooks themselves are not modified (they are
committed with their outputs stripped).

Each page records the SHA-256 of its notebook's code (:func:`code_sha256`) in a
``code-sha256`` line. tests/test_notebooks.py recomputes it from the current
notebooks, so a change to a notebook's code that is not followed by a re-render
fails the test suite.

This script does not import dfcan_tf; the kernel it starts does.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PAGES = ROOT / "docs" / "notebooks"
IMAGES = PAGES / "images"
HASH_LINE = re.compile(r"^code-sha256: `([0-9a-f]{64})`", re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def code_sha256(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of a notebook's code: every code cell's source, UTF-8, each followed by a NUL byte.

    Markdown cells, outputs and metadata do not enter it, so only a change to what
    runs calls for a re-render.
    """
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8") + b"\0")
    return h.hexdigest()


def page_path(notebook: Path) -> Path:
    """The rendered page of ``notebook``: docs/notebooks/<stem>.md."""
    return PAGES / f"{notebook.stem}.md"


def recorded_sha256(page: Path) -> str | None:
    """The code hash a rendered page records, or None when it records none."""
    match = HASH_LINE.search(page.read_text(encoding="utf-8"))
    return match.group(1) if match else None


# Run after every code cell (and dropped from the page): shows the figures the cell left open. The kernel's
# inline backend shows them by itself only until something switches matplotlib to Agg, as dfcan_tf's
# plotting functions (training samples, evaluation curves) do.
CAPTURE = """\
import io as _io
import matplotlib.pyplot as _plt
from IPython.display import Image as _Image, display as _display
for _n in _plt.get_fignums():
    _buf = _io.BytesIO()
    _plt.figure(_n).savefig(_buf, format="png", bbox_inches="tight")
    _display(_Image(_buf.getvalue()))
_plt.close("all")
"""


def execute(notebook: Path, workdir: Path, timeout: int = 1800) -> tuple[nbformat.NotebookNode, float]:
    """Run ``notebook`` in a fresh python3 kernel inside ``workdir``; return it with outputs, and the seconds taken.

    The figures a cell leaves open become that cell's outputs (:data:`CAPTURE`).
    """
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    run = nbformat.v4.new_notebook(metadata=nb.metadata)
    owners = []  # for each cell of ``run``: the code cell of ``nb`` whose figures it captures, or None
    for cell in nb.cells:
        run.cells.append(cell)
        owners.append(None)
        if cell.cell_type == "code":
            run.cells.append(nbformat.v4.new_code_cell(CAPTURE))
            owners.append(cell)
    env = {"DFCAN_NOTEBOOK_OUT": str(workdir), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
    saved = {k: os.environ.get(k) for k in [*env, "MPLBACKEND", "DFCAN_FULL"]}
    os.environ.update(env)
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend is what turns figures into outputs
    os.environ.pop("DFCAN_FULL", None)  # the documented default: quick mode
    try:
        t0 = time.perf_counter()
        NotebookClient(run, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()
        seconds = time.perf_counter() - t0
        for capture, owner in zip(run.cells, owners):
            if owner is not None:
                owner.outputs.extend(capture.outputs)
        return nb, seconds
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Log lines of TensorFlow's C++ runtime and absl on stderr, and warnings raised inside installed libraries
# (with their quoted source line): not the notebook's output, dropped from the page.
LOG_NOISE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|WARNING:absl:"
                       r"|INFO: Created TensorFlow Lite)")


def _text_block(text: str, workdir: str, stderr: bool = False) -> list[str]:
    text = ANSI.sub("", text).replace(workdir, "notebook_output")
    if stderr:
        kept, lines = [], text.splitlines()
        for i, line in enumerate(lines):
            library_warning = re.search(r"site-packages/\S+:\d+: \w+Warning", line)
            quoted = line.startswith(" ") and i > 0 and re.search(r"site-packages/\S+:\d+: \w+Warning", lines[i - 1])
            if not (LOG_NOISE.match(line) or library_warning or quoted):
                kept.append(line)
        text = "\n".join(kept)
    text = text.rstrip("\n")
    return ["```text", text, "```", ""] if text.strip() else []


def render(notebook: Path, nb: nbformat.NotebookNode, seconds: float, workdir: str) -> tuple[str, dict[str, bytes]]:
    """The Markdown page of an executed notebook and its figures ({file name: PNG bytes}).

    The temporary folder the notebook ran in (``workdir``) is shown as ``notebook_output``, the
    notebooks' default output folder.
    """
    stem = notebook.stem
    images: dict[str, bytes] = {}
    lines = [
        f"<!-- Generated by docs/render_notebooks.py from notebooks/{notebook.name}; do not edit by hand. -->",
        "",
    ]
    header_done = False
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            lines += [cell.source.rstrip("\n"), ""]
        elif cell.cell_type == "code":
            lines += ["```python", cell.source.rstrip("\n"), "```", ""]
            for k, out in enumerate(cell.get("outputs", [])):
                kind = out.get("output_type")
                if kind == "stream":
                    lines += _text_block(out.get("text", ""), workdir, stderr=out.get("name") == "stderr")
                elif kind in ("display_data", "execute_result"):
                    data = out.get("data", {})
                    if "image/png" in data:
                        name = f"{stem}_cell{index:02d}_{k}.png"
                        images[name] = base64.b64decode(data["image/png"])
                        lines += [f"![output of cell {index}](images/{name})", ""]
                    elif "text/plain" in data:
                        lines += _text_block(data["text/plain"], workdir)
                elif kind == "error":
                    raise RuntimeError(f"{notebook.name}: cell {index} raised {out.get('ename')}")
        if not header_done and cell.cell_type == "markdown":
            # After the title cell: where the page comes from and how it was run.
            lines += [
                f"> Rendered from [`notebooks/{notebook.name}`](../../notebooks/{notebook.name}) by "
                f"`docs/render_notebooks.py` on {datetime.now(timezone.utc):%Y-%m-%d}, in the notebook's default "
                f"quick mode (no `DFCAN_FULL`), on the project's 2-core CPU machine: {seconds:.0f} s for the "
                "whole notebook. Numbers printed below are from that run.",
                "",
                f"code-sha256: `{code_sha256(nb)}` (of the notebook's code cells; the test suite checks it)",
                "",
            ]
            header_done = True
    return "\n".join(lines).rstrip("\n") + "\n", images


def write_page(notebook: Path, page: str, images: dict[str, bytes]) -> Path:
    """Write the page and its figures, replacing this notebook's previous figures; return the page path."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    for old in IMAGES.glob(f"{notebook.stem}_cell*.png"):
        if old.name not in images:
            old.unlink()
    for name, data in images.items():
        tmp = IMAGES / f".{name}.part"
        tmp.write_bytes(data)
        tmp.replace(IMAGES / name)
    path = page_path(notebook)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def check(notebooks: list[Path]) -> list[str]:
    """Problems with the rendered pages of ``notebooks`` (missing page, missing or stale hash)."""
    problems = []
    for notebook in notebooks:
        page = page_path(notebook)
        if not page.is_file():
            problems.append(f"{notebook.name}: no rendered page {page.relative_to(ROOT)}")
            continue
        want = code_sha256(nbformat.read(notebook, as_version=4))
        have = recorded_sha256(page)
        if have != want:
            problems.append(f"{page.relative_to(ROOT)} records code-sha256 {have}, but {notebook.name}'s code "
                            f"hashes to {want}: re-run docs/render_notebooks.py {notebook.stem[:2]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="render only notebooks whose file names start with these prefixes")
    parser.add_argument("--check", action="store_true", help="only check that the pages match the notebooks' code")
    args = parser.parse_args(argv)
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.only:
        notebooks = [p for p in notebooks if any(p.name.startswith(prefix) for prefix in args.only)]
        if not notebooks:
            print(f"no notebook in {NOTEBOOKS} starts with {args.only}", file=sys.stderr)
            return 2
    if args.check:
        problems = check(notebooks)
        print("\n".join(problems) if problems else f"{len(notebooks)} rendered pages match their notebooks")
        return 1 if problems else 0
    for notebook in notebooks:
        print(f"executing {notebook.name} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="dfcan-render-") as workdir:
            nb, seconds = execute(notebook, Path(workdir))
        page, images = render(notebook, nb, seconds, workdir)
        path = write_page(notebook, page, images)
        print(f"  {seconds:.0f} s -> {path.relative_to(ROOT)} with {len(images)} figures", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
