"""Guarding a user's files: what a command may create, replace or refuse.

The rules every command follows (see the README, "Your data is safe"):

* A command never modifies, moves or deletes its inputs, nor anything it did
  not write itself.
* ``--overwrite`` replaces only a previous output of the *same command*. A
  folder output proves it is ours with a marker file (:data:`MARKER`) written
  inside it; a file output proves it by a record in a manifest kept next to it
  (:data:`MANIFEST`), holding the command that wrote it.
* An output never holds, nor lies above, nor equals any of the command's
  inputs.
* An output that is an existing folder where a file is expected (or a file
  where a folder is expected) is refused, whatever the flags.
* Destinations are checked before any work starts, so a bad ``-o`` fails in a
  second, not after an hour of computing.

Every refusal is a :class:`DfcanError` naming the path and what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from dfcan_tf.errors import DfcanError

MARKER = ".dfcan-output.json"
MANIFEST = ".dfcan-outputs.json"

# Temporary names every writer of this package uses (``data.atomic.atomic_path``, :func:`staged_dir`, the
# export's staging); stale ones are safe to remove because the prefix names this package: a user's own
# ``.part-*`` files (browsers, download managers) are never matched.
PART_PREFIX = ".dfcan-part-"
STALE_SECONDS = 3600.0


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(os.fspath(path))))


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies inside it (symlinks resolved)."""
    p, f = _resolved(path), _resolved(folder)
    return p == f or f in p.parents


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, flag: str = "output") -> None:
    """Refuse an output that equals or holds an input, or lies inside an input folder.

    ``out`` may not be an input, contain an input, or (for folder inputs) be a
    path the command would read from.
    """
    out_r = _resolved(out)
    for inp in inputs:
        inp_r = _resolved(inp)
        if out_r == inp_r:
            raise DfcanError(f"{out}: the {flag} is the input {inp}; choose another {flag}")
        if out_r in inp_r.parents:
            raise DfcanError(f"{out}: the {flag} holds the input {inp}; replacing it would destroy your data. "
                             f"Choose an {flag} outside the input")
        if inp_r in out_r.parents and Path(inp).is_dir():
            raise DfcanError(f"{out}: the {flag} lies inside the input folder {inp}; choose an {flag} outside it")


def _check_writable_parent(path: Path, flag: str) -> None:
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise DfcanError(f"{path}: cannot write the {flag} there: {parent} is a file, not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise DfcanError(f"{path}: cannot write the {flag}: {parent} is not writable")


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker a command left in ``folder``, or None when it has none (or it is unreadable)."""
    path = Path(folder) / MARKER
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_marker(folder: str | os.PathLike, command: str, **info) -> None:
    """Mark ``folder`` as written by ``command`` (so a later ``--overwrite`` may replace it)."""
    folder = Path(folder)
    doc = {"command": command, "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    fd, tmp = tempfile.mkstemp(prefix=PART_PREFIX, dir=folder)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, folder / MARKER)


def check_output_dir(out: str | os.PathLike, *, command: str, overwrite: bool,
                     inputs: Iterable[str | os.PathLike] = (), flag: str = "output folder") -> bool:
    """Check that ``out`` may become this command's output folder; return True when it must be replaced.

    An absent or empty folder is fine. A non-empty one is replaced only with
    ``overwrite`` and only when its marker says ``command`` wrote it.
    """
    out = Path(out)
    check_not_input(out, inputs, flag=flag)
    if out.exists() and not out.is_dir():
        raise DfcanError(f"{out}: the {flag} is an existing file; give a folder path")
    _check_writable_parent(out, flag)
    if not out.exists() or not any(out.iterdir()):
        if out.exists() and not os.access(out, os.W_OK | os.X_OK):
            raise DfcanError(f"{out}: the {flag} is not writable")
        return False
    marker = read_marker(out)
    if not overwrite:
        raise DfcanError(f"{out} exists and is not empty; pass --overwrite to replace a previous "
                         f"'dfcan {command}' output, or choose another {flag}")
    if marker is None or marker.get("command") != command:
        what = "no dfcan output marker" if marker is None else f"the output of 'dfcan {marker.get('command')}'"
        raise DfcanError(f"{out} was not written by 'dfcan {command}' ({what}); --overwrite replaces only a "
                         f"previous output of the same command. Choose another {flag} or remove it yourself")
    return True


def replace_dir(staged: str | os.PathLike, out: str | os.PathLike, *, command: str) -> None:
    """Move the complete folder ``staged`` onto ``out``, replacing ``out`` only if ``command`` marked it.

    An existing empty folder ``out`` is kept and filled with the staged files.
    """
    staged, out = Path(staged), Path(out)
    write_marker(staged, command)
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        # An empty folder (the user made it for us): fill it, marker last, keeping the folder itself.
        for child in sorted(staged.iterdir(), key=lambda c: c.name == MARKER):
            os.replace(child, out / child.name)
        staged.rmdir()
        return
    if out.exists():
        marker = read_marker(out)
        if not out.is_dir() or marker is None or marker.get("command") != command:
            raise DfcanError(f"{out} changed while 'dfcan {command}' ran and is not its output; left untouched")
        swap_dir(staged, out)
    else:
        os.replace(staged, out)


def swap_dir(staged: str | os.PathLike, out: str | os.PathLike) -> None:
    """Put the complete folder ``staged`` in place of the existing folder ``out`` (the caller checked ownership).

    The old folder is moved aside into a ``.dfcan-part-old-*`` folder first, so ``out``
    is never half old, half new; that leftover is removed at once, or by
    :func:`clean_stale_parts` after a kill.
    """
    staged, out = Path(staged), Path(out)
    trash = Path(tempfile.mkdtemp(prefix=PART_PREFIX + "old-", dir=out.parent))
    os.replace(out, trash / out.name)
    os.replace(staged, out)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, *, command: str | None) -> Iterator[Path]:
    """Yield a fresh ``.dfcan-part-*`` folder next to ``out``; when the block succeeds, it becomes ``out``.

    With ``command``, ``out`` is replaced by :func:`replace_dir` (marker written,
    only a previous output of ``command`` replaced); with ``None`` the caller
    has checked ownership and an existing ``out`` is swapped (:func:`swap_dir`).
    Stale leftovers of killed runs are cleaned first, and the staged folder is
    removed whatever happens: the command touches nothing else.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_parts(out.parent)
    staged = Path(tempfile.mkdtemp(prefix=f"{PART_PREFIX}{command or out.name}-", dir=out.parent))
    umask = os.umask(0)  # mkdtemp makes 0700; the finished folder gets ordinary permissions
    os.umask(umask)
    os.chmod(staged, 0o777 & ~umask)
    try:
        yield staged
        if command is not None:
            replace_dir(staged, out, command=command)
        elif out.exists():
            swap_dir(staged, out)
        else:
            os.replace(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _manifest_path(path: Path) -> Path:
    return path.parent / MANIFEST


def _read_manifest(path: Path) -> dict:
    try:
        doc = json.loads(_manifest_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def written_by(path: str | os.PathLike) -> str | None:
    """The command the manifest next to ``path`` says wrote it, or None."""
    path = Path(path)
    entry = _read_manifest(path).get(path.name)
    return entry.get("command") if isinstance(entry, dict) else None


def output_record(path: str | os.PathLike) -> dict | None:
    """The whole manifest entry of ``path`` (``command``, ``written`` and what the writer recorded), or None."""
    path = Path(path)
    entry = _read_manifest(path).get(path.name)
    return dict(entry) if isinstance(entry, dict) else None


def record_output(path: str | os.PathLike, command: str, **info) -> None:
    """Record in the manifest next to ``path`` that ``command`` wrote it (atomic)."""
    path = Path(path)
    doc = _read_manifest(path)
    doc[path.name] = {"command": command, "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    try:
        fd, tmp = tempfile.mkstemp(prefix=PART_PREFIX, dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
        os.replace(tmp, _manifest_path(path))
    except OSError:  # a read-only folder that already held the output: the file itself was written
        pass


def check_output_file(out: str | os.PathLike, *, command: str, overwrite: bool,
                      inputs: Iterable[str | os.PathLike] = (), flag: str = "output") -> None:
    """Check that ``out`` may become this command's output file.

    A folder is always refused. An existing file is replaced only with
    ``overwrite`` and only when the manifest next to it says ``command`` wrote it.
    """
    out = Path(out)
    check_not_input(out, inputs, flag=flag)
    if out.is_dir():
        raise DfcanError(f"{out}: the {flag} is an existing folder, a file path is expected; "
                         f"choose another {flag} (a folder is never replaced)")
    _check_writable_parent(out, flag)
    if out.exists():
        if not overwrite:
            raise DfcanError(f"{out} exists; pass --overwrite to replace a previous 'dfcan {command}' output, "
                             f"or choose another {flag}")
        by = written_by(out)
        if by != command:
            raise DfcanError(f"{out} was not written by 'dfcan {command}'; --overwrite replaces only a previous "
                             f"output of the same command. Choose another {flag} or remove it yourself")


def clean_stale_parts(folder: str | os.PathLike, *, older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove ``.dfcan-part-*`` leftovers of killed writers in ``folder`` older than ``older_than`` seconds.

    Only names with this package's temporary prefix are touched; returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob(PART_PREFIX + "*"):
        try:
            if now - p.lstat().st_mtime < older_than:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed
