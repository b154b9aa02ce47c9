"""``dfcan import-weights``: a run folder from the authors' Keras 2 weight files (``weights.best``).

The network is built with the paper's configuration for ``--architecture``,
``--input-channels`` and ``--scale``; every layer of the file is paired with
one of ours and checked (:func:`dfcan_tf.nets.reference_weights.map_reference_weights`),
the pairing is printed, and the run folder is written like a trained one
(``config.json``, ``weights/best.weights.h5`` and ``weights/last.weights.h5``)
through a staged folder, so ``dfcan predict``, ``evaluate`` and ``export``
take it as they take a trained run. The input file is only read. See
``docs/architecture.md#using-the-authors-weights``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMAND = "import-weights"
# --architecture value -> registered architecture (the DFGAN generator is DFCAN-shaped, see nets/dfcan.py)
ARCHITECTURES = {"dfcan": "dfcan", "dfgan": "dfgan_generator"}
SCALES = (2, 3)
NORMALIZATION = "minmax"  # the authors' 0-100th percentile normalisation (docs/data.md#normalisation)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan import-weights`` flags on ``parser``."""
    # numpy and scipy only: --help stays light (no TensorFlow)
    from dfcan_tf.data.simulate.optics import RAW_PIXEL_NM

    parser.add_argument("weights", metavar="WEIGHTS",
                        help="the authors' weights file (weights.best, HDF5 written by Keras 2 save_weights); "
                             "only read")
    parser.add_argument("run", metavar="RUN", help="run folder to write (config.json + weights/)")
    parser.add_argument("--architecture", choices=tuple(ARCHITECTURES), required=True,
                        help="network the file belongs to: dfcan, or dfgan (the DFGAN generator)")
    parser.add_argument("--input-channels", type=int, required=True, metavar="C",
                        help="input channels the weights were trained with: 1 for wide-field (SISR), "
                             "9 for linear-SIM raw frames, 25 for nonlinear-SIM raw frames")
    parser.add_argument("--scale", type=int, choices=SCALES, required=True,
                        help="upsampling factor the weights were trained with")
    parser.add_argument("--pixel-size", type=float, default=RAW_PIXEL_NM, metavar="NM",
                        help="pixel size of the network input in nm, recorded in the run "
                             "(BioSR's raw and wide-field pixel)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace RUN if an earlier 'dfcan import-weights' wrote it (never another folder)")


def import_weights(weights: str | os.PathLike, run: str | os.PathLike, *, architecture: str, input_channels: int,
                   scale: int, pixel_size_nm: float | None = None, overwrite: bool = False,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write run folder ``run`` holding the authors' ``weights`` for the paper's ``architecture``.

    Parameters
    ----------
    weights
        The authors' Keras 2 weights file; read only, and checked to be unchanged afterwards.
    run
        The run folder to write (replaced only with ``overwrite`` and only if this command wrote it).
    architecture
        ``"dfcan"`` or ``"dfgan"`` (the DFGAN generator).
    input_channels, scale
        What the weights were trained for (1 or 9/25 channels; scale 2 or 3).
    pixel_size_nm
        Input pixel size recorded in the run's ``data`` section (default: BioSR's 62.6 nm).
    log
        Receives the mapping table and the summary line.

    Returns
    -------
    dict
        The provenance recorded in ``config.json`` under ``imported``.
    """
    from dfcan_tf.data.simulate.optics import RAW_PIXEL_NM
    from dfcan_tf.errors import DfcanError
    from dfcan_tf.export.records import sha256_of
    from dfcan_tf.safety import check_output_dir

    weights, run = Path(weights), Path(run)
    if architecture not in ARCHITECTURES:
        raise DfcanError(f"architecture must be one of {tuple(ARCHITECTURES)}. Received: {architecture!r}")
    if scale not in SCALES:
        raise DfcanError(f"scale must be one of {SCALES} (the paper's). Received: scale={scale}")
    if not isinstance(input_channels, int) or input_channels < 1:
        raise DfcanError(f"input channels must be a positive integer. Received: {input_channels!r}")
    pixel_size_nm = RAW_PIXEL_NM if pixel_size_nm is None else float(pixel_size_nm)
    if not (pixel_size_nm > 0 and pixel_size_nm < float("inf")):
        raise DfcanError(f"pixel size must be a positive number of nm. Received: {pixel_size_nm}")
    if not weights.is_file():
        raise DfcanError(f"{weights}: no such file" if not weights.exists()
                         else f"{weights}: not a file; give the authors' weights file (weights.best)")
    check_output_dir(run, command=COMMAND, overwrite=overwrite, inputs=[weights], flag="run folder")
    digest = sha256_of(weights)

    from dfcan_tf.nets import registry
    from dfcan_tf.nets.reference_weights import map_reference_weights

    arch = ARCHITECTURES[architecture]
    config = registry.config_class(arch)(architecture=arch, input_channels=input_channels, scale=scale)
    model = registry.build(config)
    mapping = map_reference_weights(model, weights)
    log(mapping.table())
    mapping.apply()
    provenance = {"command": f"dfcan {COMMAND}", "source": weights.name, "sha256": digest,
                  "layers": len(mapping.matches), "parameters": mapping.n_parameters, **mapping.file.attrs}
    log(f"all {len(mapping.matches)} layers and {mapping.n_parameters:,} parameters match; writing {run} "
        f"(the receptive field is measured for tiling: up to a few minutes on a CPU for the DFGAN generator)")
    _write(run, model, config, provenance, pixel_size_nm)
    if sha256_of(weights) != digest:
        raise DfcanError(f"{weights}: the file changed while it was imported; import it again")
    log(f"dfcan {COMMAND}: {run}: {registry.describe(config)}, {len(mapping.matches)} layers, "
        f"{mapping.n_parameters:,} parameters from {weights.name} (sha256 {digest[:12]}...)")
    return provenance


def _write(run: Path, model, config, provenance: dict, pixel_size_nm: float) -> None:
    """Stage the run folder, check it loads back with exactly the imported weights, then move it into place."""
    import numpy as np

    from dfcan_tf import runs
    from dfcan_tf.errors import DfcanError
    from dfcan_tf.safety import staged_dir

    data = {"task": "sim" if config.input_channels > 1 else "sisr", "input_channels": config.input_channels,
            "scale": config.scale, "normalization": NORMALIZATION, "pixel_size_nm": pixel_size_nm}
    with staged_dir(run, command=COMMAND) as staged:
        for which in runs.WEIGHTS:
            runs.save_weights(model, runs.weights_path(staged, which))
        runs.write_config(staged, config, train={}, data=data, extra={"imported": provenance})
        back = runs.load_run(staged, "best").model  # what predict, evaluate and export will read
        for which in runs.WEIGHTS:
            if which != "best":
                runs.load_weights_checked(back, runs.weights_path(staged, which),
                                          f"the network of {staged / 'config.json'}")
            for ours, theirs in zip(model.weights, back.weights, strict=True):
                if ours.path != theirs.path or not np.array_equal(np.asarray(ours.numpy()), np.asarray(theirs.numpy())):
                    raise DfcanError(f"{run}: the {which} weights of {ours.path} did not read back equal")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan import-weights`` with parsed ``args``; return the exit status."""
    import_weights(args.weights, args.run, architecture=args.architecture, input_channels=args.input_channels,
                   scale=args.scale, pixel_size_nm=args.pixel_size, overwrite=args.overwrite,
                   log=lambda line: print(line, file=sys.stdout))
    return 0
