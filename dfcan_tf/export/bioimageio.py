"""bioimage.io model package (``.zip``, format 0.5): rdf.yaml, ONNX and SavedModel weights, test tensors, card.

See ``docs/export.md#bioimageio``. The input pre-processing is the run's
normalisation (``docs/data.md#normalisation``) written as bioimage.io
operations (:func:`preprocessing`); the output is the network's output in
[0, 1] (the min-max stretch ``dfcan predict`` applies for 16-bit TIFF is
described in the card). Descriptions and citations come from the registry
(:func:`dfcan_tf.nets.registry.get`), so any registered network exports. The
package is validated with ``bioimageio.spec`` and test-run with
``bioimageio.core`` before it is kept.

Nothing in the package names a local path: the run's configuration is
written with every path reduced to its last component (:func:`portable`),
the run folder by its name only. The training data are described from what
the run folder records (:func:`training_data`: BioSR, the data
``dfcan simulate`` writes, or "not recorded").
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError
from dfcan_tf.export import verify
from dfcan_tf.export.bioimageio_meta import (
    BIOSR_DOI,
    GIT_REPO_PLACEHOLDER,
    VALIDATION_PINS,
    architecture_of,
    citation,
    cites,
    data_origin,
    maintainer_entries,
    package_metadata,
    portable,
    training_data,
)
from dfcan_tf.export.onnx import DEFAULT_OPSET, to_onnx_proto
from dfcan_tf.export.records import record, sha256_of
from dfcan_tf.export.saved_model import save
from dfcan_tf.inference.backends import (
    INPUT_NAME,
    OUTPUT_NAME,
    onnx_runner,
    saved_model_runner,
)

BIOIMAGEIO_TEST_SIZE = 64


def preprocessing(normalization: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's :class:`~dfcan_tf.data.normalize.Normalizer` as bioimage.io pre-processing operations."""
    axes = ["y", "x", "channel"]
    mode = normalization["mode"]
    if mode == "divide65535":
        return [{"id": "scale_linear", "kwargs": {"gain": 1.0 / 65535.0, "offset": 0.0}}]
    lo, hi = (0.0, 100.0) if mode == "minmax" else (float(normalization["pmin"]), float(normalization["pmax"]))
    ops = [{"id": "scale_range", "kwargs": {"axes": axes, "min_percentile": lo, "max_percentile": hi,
                                            "eps": max(float(normalization["eps"]), 1e-12)}}]
    if normalization.get("clip"):
        ops.append({"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}})
    return ops


def _model_card(src: verify.Source, name: str, checks: dict[str, list[verify.Check]], opset: int,
                origin: str) -> str:
    import keras
    import tensorflow as tf

    from dfcan_tf import __version__
    from dfcan_tf.nets import registry

    cfg = src.config
    arch = architecture_of(cfg)
    train = portable(src.run.config.get("train") or {})
    data = portable(dict(src.run.data))
    task = data.get("task", "sim" if cfg.input_channels > 1 else "sisr")
    norm = src.normalization()
    lines = [
        f"# {name}", "",
        (f"{arch.description or cfg.architecture} for "
         f"{'SIM reconstruction' if task == 'sim' else 'single-image super-resolution'} of fluorescence "
         f"microscopy images: {cfg.input_channels} input channel(s) "
         f"({'raw SIM frames' if cfg.input_channels > 1 else 'a wide-field image'}), "
         f"output {cfg.scale}x larger, one channel."), "",
        "## Architecture", "",
        f"- {registry.describe(cfg)};",
        f"- {src.reference.count_params():,} parameters.", "",
        "## Pre- and post-processing", "",
        f"- input: normalisation `{norm['mode']}` over the whole image (all channels jointly), as in training",
        f"  (dfcan_tf docs/data.md#normalisation: {json.dumps(norm)});",
        "- output: the network's output, not post-processed in this package; `dfcan predict`",
        "  (and the authors' code) additionally stretch it to [0, 1] by min-max before writing 16-bit TIFF.",
        "- Networks with global attention see the whole image: tiles give slightly different results",
        "  from whole-image prediction.", "",
        "## How the weights were made", "",
        f"- trained with dfcan_tf {__version__} (TensorFlow {tf.__version__}, Keras {keras.__version__});",
        f"- run folder `{Path(src.run.path).name}`, `{src.run.which}` weights;",
    ]
    for key in ("steps", "iterations", "batch_size", "lr", "loss", "dataset", "specimen", "seed"):
        if key in train:
            lines.append(f"- {key}: {train[key]}")
    for key in ("task", "normalization", "pixel_size_nm", "specimen", "dataset"):
        if key in data:
            lines.append(f"- data {key}: {data[key]}")
    if not train:
        lines.append("- the run folder records no training settings (untrained or externally trained weights);")
    if hasattr(cfg, "spectrum"):
        lines += ["- Fourier attention in these weights is computed by a sampled DFT written as matrix products",
                  "  (only the frequencies the spectrum resize reads), equal to the FFT used in training to ~1e-6;"]
    lines += [
        f"- TensorFlow SavedModel written by Keras' ExportArchive; ONNX converted from it with tf2onnx (opset {opset}).",
        "", "## Validation", "",
        "Each weight format was run on random inputs and simulated microscopy images at two sizes and compared",
        "with the Keras model (max abs difference on the [0, 1] output):", "",
    ]
    for fmt, cs in checks.items():
        lines.append(f"- {fmt}: " + ", ".join(f"{c.kind} {c.shape[1]}x{c.shape[2]} {c.max_abs_diff:.1e}" for c in cs))
    described = training_data(src, origin)
    lines += ["", "## Training data", "", described["description"] + "."]
    if origin == "biosr":
        lines.append(f"BioSR: https://doi.org/{BIOSR_DOI}")
    elif origin == "simulated":
        lines += ["The simulator (dfcan_tf docs/data.md#simulator) draws CCPs, microtubules, ER or F-actin,",
                  "images them through the OTF of a circular pupil (NA 1.3, 525 nm) with sinusoidal SIM",
                  "illumination onto 62.6 nm camera pixels with Poisson, read and background noise, and",
                  "makes GT-SIM targets through an OTF of scale x the detection support at 1,000 photons.",
                  "No real cell images were used."]
    if data.get("path"):
        lines.append(f"Training folder (name only): `{data['path']}`.")
    lines += [
        "", "## Validating this package", "",
        "In a fresh Python 3.11 virtual environment:", "",
        "```",
        f"pip install {VALIDATION_PINS}",
        "bioimageio validate-format bioimageio.zip   # the description, format 0.5",
        "bioimageio test bioimageio.zip              # runs the weights on the test tensors",
        "```", "",
        "pydantic is pinned because pydantic 2.14 breaks bioimageio.spec 0.5.12's file serializer, while",
        "bioimageio.spec 0.5.12.0 asks only for pydantic<3,>=2.10.3, so pip would otherwise install it.",
        "`bioimageio test` also needs `onnxruntime` and/or `tensorflow` for the weight formats it runs.",
    ]
    cite = citation(cfg)
    lines += ["", "## Reference", "", cite["text"]]
    if "doi" in cite:
        lines.append(f"https://doi.org/{cite['doi']}")
    return "\n".join(lines + [""])


def _cover(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    """Input (nearest-upsampled, channel mean) beside the min-max stretched output, as an 8-bit PNG."""
    import imageio.v3 as iio

    from dfcan_tf.data.normalize import Normalizer

    stretch = Normalizer(eps=1e-12)
    scale = y.shape[0] // x.shape[0]
    wf = stretch.normalize(np.repeat(np.repeat(x.mean(axis=-1), scale, axis=0), scale, axis=1))
    sr = stretch.normalize(y[..., 0])
    pair = np.concatenate([wf, np.ones((wf.shape[0], 4)), sr], axis=1)
    iio.imwrite(path, (np.clip(pair, 0, 1) * 255).astype(np.uint8))


def _rdf(src: verify.Source, name: str, authors: list[dict], opset: int, *, origin: str,
         maintainers: list[dict], git_repo: str) -> dict:
    import tensorflow as tf

    from dfcan_tf import __version__

    cfg = src.config
    pixel_um = float(src.run.data.get("pixel_size_nm", 62.6)) / 1000.0
    c = cfg.input_channels
    channel_names = ["wide_field"] if c == 1 else [f"frame{i}" for i in range(c)]
    space = {"type": "space", "unit": "micrometer"}
    norm = src.normalization()
    return {
        "format_version": "0.5.4",
        "type": "model",
        "name": name,
        "description": (f"{architecture_of(cfg).description or cfg.architecture} super-resolution "
                        f"({c} channel(s) in, x{cfg.scale}), exported by dfcan_tf"),
        "authors": authors,
        "cite": cites(cfg),
        "license": "BSD-3-Clause",
        "tags": ["super-resolution", "fluorescence-light-microscopy", "structured-illumination-microscopy",
                 cfg.architecture.replace("_", "-"), "2d", "onnx", "tensorflow"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "version": __version__,
        "version_comment": f"exported by dfcan_tf {__version__}",
        "git_repo": git_repo,
        **({"maintainers": maintainers} if maintainers else {}),
        "training_data": training_data(src, origin),
        "inputs": [{
            "id": INPUT_NAME,
            "description": f"raw image, any intensity range; normalised as in training ({norm['mode']})",
            "axes": [
                {"type": "batch"},
                {**space, "id": "y", "size": {"min": 16, "step": 1}, "scale": pixel_um},
                {**space, "id": "x", "size": {"min": 16, "step": 1}, "scale": pixel_um},
                {"type": "channel", "channel_names": channel_names},
            ],
            "test_tensor": {"source": "test_input.npy"},
            "sample_tensor": {"source": "sample_input.tif"},
            "data": {"type": "float32"},
            "preprocessing": preprocessing(norm),
        }],
        "outputs": [{
            "id": OUTPUT_NAME,
            "description": f"super-resolved image, {cfg.scale}x the input size",
            "axes": [
                {"type": "batch"},
                {**space, "id": "y", "size": {"tensor_id": INPUT_NAME, "axis_id": "y"},
                 "scale": pixel_um / cfg.scale},
                {**space, "id": "x", "size": {"tensor_id": INPUT_NAME, "axis_id": "x"},
                 "scale": pixel_um / cfg.scale},
                {"type": "channel", "channel_names": ["super_resolution"]},
            ],
            "test_tensor": {"source": "test_output.npy"},
            "sample_tensor": {"source": "sample_output.tif"},
            "data": {"type": "float32"},
            # No post-processing op: a sample-statistics `scale_range` on the output fails in
            # bioimageio.core 0.11 (it computes output statistics during pre-processing).
            # Min-max stretching for display is described in the card.
        }],
        "weights": {
            "tensorflow_saved_model_bundle": {
                "source": "tf_saved_model.zip",
                "tensorflow_version": tf.__version__.split("-")[0],
                "comment": "Keras model exported with keras.export.ExportArchive, signature serving_default",
            },
            "onnx": {
                "source": "weights.onnx",
                "opset_version": opset,
                "parent": "tensorflow_saved_model_bundle",
                "comment": "converted with tf2onnx; dynamic batch, height and width",
            },
        },
        "config": {"dfcan_tf": package_metadata(src)},
    }


def _check_package(package: Path, *, test_run: bool, workdir: Path) -> None:
    """Validate with bioimageio.spec and (``test_run``) test-run with bioimageio.core; raise on failure."""
    from bioimageio.spec import InvalidDescr, load_description

    package = package.resolve()
    descr = load_description(package, perform_io_checks=True)
    if isinstance(descr, InvalidDescr):
        raise DfcanError(f"{package}: bioimageio.spec rejects the package:\n{descr.validation_summary.format()}")
    if test_run:
        from bioimageio.core import test_model

        # bioimageio.core unzips SavedModel weights into a folder relative to the working
        # directory: run it from a scratch folder so nothing is left behind.
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            summary = test_model(package)
        finally:
            os.chdir(cwd)
        if summary.status != "passed":
            raise DfcanError(f"{package}: bioimageio.core test run failed:\n{summary.format()}")


def write_bioimageio(src: verify.Source, out: Path, *, opset: int = DEFAULT_OPSET, sizes=verify.VERIFY_SIZES,
                     tolerance: float = verify.TOLERANCE, name: str | None = None,
                     authors: Sequence[dict] | None = None, test_size: int = BIOIMAGEIO_TEST_SIZE,
                     test_run: bool = True, maintainers: Sequence[dict] | None = None,
                     git_repo: str | None = None, origin: str | None = None) -> verify.ExportResult:
    """Write a bioimage.io package of ``src`` to ``out`` (.zip), verified, validated and test-run, and record it.

    Both weight formats are verified against Keras as the ONNX and SavedModel
    exports are; the package is then validated by ``bioimageio.spec`` and
    (``test_run=True``) test-run by ``bioimageio.core``, offline, before it is
    moved onto ``out``.

    Parameters
    ----------
    name
        Model name (default: from the architecture and the run folder's name).
    authors
        ``[{"name": ..., "affiliation": ...}]`` (default: the dfcan_tf contributors).
    test_size
        Side of the test input tensor (a simulated image).
    test_run
        Run ``bioimageio.core``'s model test (every weight format, several sizes).
    maintainers
        ``[{"github_user": ..., "name": ...}]``. The spec requires a GitHub user
        name and checks it online (offline, only names it already knows pass);
        default: the ``authors`` that give one, else the field is left out
        (no name is invented).
    git_repo
        URL of the repository (default :data:`GIT_REPO_PLACEHOLDER`: dfcan_tf
        has no published one).
    origin
        ``"biosr"``, ``"simulated"`` or ``"unknown"`` training data (default
        :func:`data_origin` of the run's data section).
    """
    from dfcan_tf.data.normalize import Normalizer

    cfg = src.config
    name = name or f"{cfg.architecture} x{cfg.scale} {cfg.input_channels}-channel {Path(src.run.path).resolve().name}"
    authors = list(authors or [{"name": "dfcan_tf contributors"}])
    maintainers = maintainer_entries(authors, maintainers)
    git_repo = git_repo or GIT_REPO_PLACEHOLDER
    if origin not in (None, "biosr", "simulated", "unknown"):
        raise DfcanError(f"training data origin must be 'biosr', 'simulated' or 'unknown'. Received: {origin!r}")
    origin = origin or data_origin(dict(src.run.data))
    reference = verify.keras_reference(src.reference)
    normalizer = Normalizer.from_config(src.normalization())
    with verify.staged(out) as tmp, tempfile.TemporaryDirectory(prefix=f"{safety.PART_PREFIX}bioimageio-",
                                                                dir=out.parent) as work:
        work = Path(work)
        checks: dict[str, list[verify.Check]] = {}
        save(src.portable, src.channels, work / "saved_model")
        checks["tensorflow_saved_model_bundle"] = verify.compare(
            saved_model_runner(work / "saved_model"), reference, src.channels, src.scale, sizes, tolerance,
            what=f"bioimage.io SavedModel weights of {src.run.path}", twin=src.twin())
        proto = to_onnx_proto(src.portable, src.channels, opset=opset, metadata=package_metadata(src))
        (work / "weights.onnx").write_bytes(proto.SerializeToString())
        checks["onnx"] = verify.compare(onnx_runner(work / "weights.onnx"), reference, src.channels, src.scale,
                                        sizes, tolerance, what=f"bioimage.io ONNX weights of {src.run.path}",
                                        twin=src.twin())
        with zipfile.ZipFile(work / "tf_saved_model.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted((work / "saved_model").rglob("*")):
                zf.write(f, f.relative_to(work / "saved_model"))
        # Test tensors: a raw-intensity simulated image, and what the run's normalisation + model make of it.
        raw = (verify.simulated_image(test_size, src.channels, seed=7) * 4000.0 + 100.0)[None].astype(np.float32)
        expected = reference(normalizer.normalize(raw, (1, 2, 3)))
        np.save(work / "test_input.npy", raw)
        np.save(work / "test_output.npy", expected)
        # Sample tensors (spec: readable by imageio, not .npy): the same pair as float32 TIFF,
        # axes y, x, channel (input) and y, x (output).
        tifffile.imwrite(work / "sample_input.tif", raw[0], photometric="minisblack", planarconfig="contig")
        tifffile.imwrite(work / "sample_output.tif", expected[0, ..., 0], photometric="minisblack")
        _cover(raw[0], expected[0], work / "cover.png")
        (work / "README.md").write_text(_model_card(src, name, checks, opset, origin))
        rdf = _rdf(src, name, authors, opset, origin=origin, maintainers=maintainers, git_repo=git_repo)
        # JSON is valid YAML; no YAML writer needed.
        (work / "rdf.yaml").write_text(json.dumps(rdf, indent=2) + "\n")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for member in ("rdf.yaml", "README.md", "cover.png", "weights.onnx", "tf_saved_model.zip",
                           "test_input.npy", "test_output.npy", "sample_input.tif", "sample_output.tif"):
                zf.write(work / member, member)
        _check_package(tmp, test_run=test_run, workdir=work)
        sha = sha256_of(tmp)
    short = {"tensorflow_saved_model_bundle": "savedmodel", "onnx": "onnx"}
    flat = [verify.Check(f"{short[fmt]} {c.kind}", c.shape, c.max_abs_diff) for fmt, cs in checks.items() for c in cs]
    result = verify.ExportResult(out, "bioimageio", flat, tolerance, {"opset": opset, "test_run": test_run})
    return record(src, result, sha)
