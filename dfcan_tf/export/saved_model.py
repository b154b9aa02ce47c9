"""SavedModel export: a TF2 SavedModel with one signature, ``serving_default`` (``docs/export.md#formats``).

``{"input": (N, H, W, C)} -> {"output": (N, s·H, s·W, 1)}``. The folder
carries export's marker (:data:`dfcan_tf.safety.MARKER`), so ``overwrite`` may
replace it later; no other folder is ever replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfcan_tf.export import verify
from dfcan_tf.export.records import record, sha256_of
from dfcan_tf.inference.backends import saved_model_runner


def save(model: Any, channels: int, path: Path) -> None:
    """Write ``model`` as a SavedModel folder at ``path`` (Keras' ExportArchive, ``serving_default``)."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", verify.serving_function(model, channels, as_dict=True))
    archive.write_out(str(path), verbose=False)


def write_saved_model(src: verify.Source, out: Path, *, sizes=verify.VERIFY_SIZES,
                      tolerance: float = verify.TOLERANCE) -> verify.ExportResult:
    """Write ``src``'s portable network to the folder ``out``, verify it against Keras, record it."""
    with verify.staged(out, folder=True) as tmp:
        save(src.portable, src.channels, tmp)
        checks = verify.compare(saved_model_runner(tmp), verify.keras_reference(src.reference), src.channels,
                                src.scale, sizes, tolerance, what=f"SavedModel export of {src.run.path}",
                                twin=src.twin())
        sha = sha256_of(tmp)
    return record(src, verify.ExportResult(out, "saved_model", checks, tolerance), sha)
