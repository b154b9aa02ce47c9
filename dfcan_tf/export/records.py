"""Export records: what each artefact was made from, its checksum and its verification.

Every export records, in the manifest (:data:`dfcan_tf.safety.MANIFEST`) next to
the artefact, the format, the SHA-256 of the weights file it was made from,
the artefact's own SHA-256 and the verification result. A run folder's
artefact is loaded for prediction only when that record matches the current
weights and the file on disk (:func:`check_recorded_export`), so a copied-in,
stale or edited artefact is refused, never run. See ``docs/export.md#contract``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError

if TYPE_CHECKING:  # pragma: no cover
    from dfcan_tf.export.verify import ExportResult, Source

COMMAND = "export"


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, or of a folder's files (relative names and contents, in sorted order).

    In a folder, the output marker (:data:`dfcan_tf.safety.MARKER`) at the top
    is left out: it is written when the folder is moved into place.
    """
    path = Path(path)

    def file_digest(f: Path) -> str:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    if not path.is_dir():
        return file_digest(path)
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_dir() or rel == safety.MARKER:
            continue
        h.update(f"{rel}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def weights_file(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """The weights file :func:`dfcan_tf.runs.load_run` reads for ``which`` (the other one if it is missing)."""
    from dfcan_tf.runs import weights_path

    path = weights_path(run_dir, which)
    if path.is_file():
        return path
    other = weights_path(run_dir, "last" if which == "best" else "best")
    return other if other.is_file() else path


def record(src: Source, result: ExportResult, sha256: str) -> ExportResult:
    """Record ``result`` in the manifest next to the artefact: what it was made from, its checksum, its check."""
    run_dir = Path(src.run.path)
    weights = src.weights_file
    try:
        weights_name = weights.relative_to(run_dir).as_posix() if weights is not None else None
    except ValueError:
        weights_name = str(weights)
    result.extra["sha256"] = sha256
    extra: dict[str, Any] = {k: v for k, v in result.extra.items() if k != "sha256"}
    safety.record_output(
        result.path, COMMAND, format=result.format, sha256=sha256, run=str(run_dir.resolve()),
        weights_file=weights_name, weights_sha256=src.weights_sha256, normalization=src.normalization(),
        verification={"passed": True, "max_abs_diff": result.max_abs_diff, "tolerance": result.tolerance,
                      "checks": [{"kind": c.kind, "shape": list(c.shape), "max_abs_diff": c.max_abs_diff}
                                 for c in result.checks]},
        **extra)
    return result


def check_recorded_export(run_dir: str | os.PathLike, artefact: str | os.PathLike, format: str,
                          which: str = "best") -> dict:
    """Return export's record of ``artefact`` if it may be used for ``run_dir``'s current ``which`` weights.

    The record (the manifest entry :func:`record` writes next to the
    artefact) must say ``dfcan export`` wrote it in ``format``, name the
    SHA-256 of the run's current weights file and the artefact's own SHA-256,
    and a passed verification. Anything else raises :class:`DfcanError` (an
    unrecorded artefact is never loaded: it could be anyone's model).
    """
    run_dir, artefact = Path(run_dir), Path(artefact)
    redo = f"dfcan export {run_dir} --format {format} --which {which} --overwrite"
    entry = safety.output_record(artefact)
    if entry is None or entry.get("command") != COMMAND or entry.get("format") != format:
        raise DfcanError(f"{artefact}: not recorded as a verified '{format}' export of this run (copied in or "
                         f"written by something else?), so it is not loaded. Move it out of the way and run "
                         f"'dfcan export {run_dir} --format {format} --which {which}'")
    weights = weights_file(run_dir, which)
    if not weights.is_file():
        raise DfcanError(f"{run_dir}: no weights found (expected {weights})")
    if entry.get("weights_sha256") != sha256_of(weights):
        made_from = entry.get("weights_file") or "other weights"
        raise DfcanError(f"{artefact} is stale: it was exported from {made_from} with other contents than the "
                         f"current {weights} (retrained, or exported from another run). Re-export: {redo}")
    if entry.get("sha256") != sha256_of(artefact):
        raise DfcanError(f"{artefact} changed after it was exported and verified; it is not loaded. "
                         f"Re-export: {redo}")
    verification = entry.get("verification") or {}
    if verification.get("passed") is not True:
        raise DfcanError(f"{artefact}: its record holds no passed verification against Keras. Re-export: {redo}")
    return entry
