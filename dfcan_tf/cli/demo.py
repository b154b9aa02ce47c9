"""``dfcan demo``: the main job end to end on embedded defaults, in a few minutes on a laptop CPU.

1. simulate BioSR-like test cells (microtubules, the public recipe's test cell
   numbers 36+, a seed never used for the shipped weights' training data);
2. load the shipped run folder (``weights/dfcan_sisr_mt_x2``: DFCAN, wide-field
   SISR ×2, trained on simulated microtubules — its MODEL_CARD.md says how);
3. evaluate it on every (cell, signal level) against GT-SIM, next to the
   bicubic-upsampled input, with the paper's metrics (CSV + PNG curves);
4. super-resolve one wide-field image from a TIFF file into a 16-bit TIFF with
   the pixel size;
5. export the network to ONNX, verified against Keras, and run that file with
   onnxruntime on the same image.

Everything goes into one output folder, marked as the demo's: a rerun into it
replaces the demo's previous results, while any other non-empty folder (one
the demo did not write) is refused before anything runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError
from dfcan_tf.shipped import DEFAULT_MODEL, SHIPPED_DIR, shipped_model

DEFAULT_RUN = SHIPPED_DIR / DEFAULT_MODEL


def check_output(out: str | Path, run_dir: str | Path) -> None:
    """Refuse an output folder the demo may not write: a file, unwritable, not empty and not a demo output."""
    out = Path(out)
    safety.check_not_input(out, [run_dir], flag="output folder")
    if out.is_dir() and any(out.iterdir()):
        marker = safety.read_marker(out)
        if marker is None or marker.get("command") != "demo":
            what = "no dfcan output marker" if marker is None else f"the output of 'dfcan {marker.get('command')}'"
            raise DfcanError(f"{out} is not empty and was not written by 'dfcan demo' ({what}); "
                             "give -o/--output a new or empty folder (or a previous demo output)")
    safety.check_output_dir(out, command="demo", overwrite=True, inputs=[run_dir], flag="output folder")


def run_demo(out_dir: str | Path = "demo_output", *, run_dir: str | Path = DEFAULT_RUN, cells: int = 2,
             size: int = 128, seed: int = 2026, progress: bool = True) -> dict:
    """Run the end-to-end demo into ``out_dir``; return the headline numbers.

    The test cells get all :data:`~dfcan_tf.data.simulate.N_LEVELS` signal levels; the wide-field TIFF
    of step 4 is the highest level of the first cell.
    """
    from dfcan_tf.data.files import read_image, write_tiff
    from dfcan_tf.data.normalize import Normalizer
    from dfcan_tf.data.simulate import N_LEVELS, RAW_PIXEL_NM, simulate_dataset
    from dfcan_tf.evaluation.evaluate import evaluate_run
    from dfcan_tf.export.run import export_run
    from dfcan_tf.inference.backends import load_backend
    from dfcan_tf.inference.files import predict_files
    from dfcan_tf.runs import load_run

    out = Path(out_dir)
    run_dir = shipped_model() if Path(run_dir) == DEFAULT_RUN else Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise DfcanError(f"{run_dir}: shipped run folder not found (expected config.json and weights/)")
    check_output(out, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    safety.write_marker(out, "demo")
    t0 = time.perf_counter()

    print(f"[1/5] simulating {cells} microtubule test cells ({size}×{size} raw, {N_LEVELS} signal levels)")
    data = out / "data"
    simulate_dataset(data, specimens=["Microtubules"], cells=f"36-{35 + cells}", size=size, seed=seed,
                     overwrite=True, progress=progress)

    print(f"[2/5] loading {run_dir}")
    run = load_run(run_dir, spectrum="dft")  # the inference form, as `dfcan predict` uses
    print(f"      {run.model_config.architecture}, {run.model.count_params():,} parameters, "
          f"input channels {run.input_channels}, scale ×{run.scale}")

    print("[3/5] evaluating every (cell, level) against GT-SIM")
    result = evaluate_run(run, data, out / "evaluation", progress=progress, resolution=True, overwrite=True)
    if not result.ok:
        raise DfcanError(f"evaluation failed on {len(result.failures)} records: {result.failures[0]}")
    headline = {}
    print(f"      {'metric':8s} {'DFCAN':>8s} {'bicubic':>8s}")
    for metric in ("psnr", "ssim", "nrmse"):
        model, bicubic = result.mean(metric, "model"), result.mean(metric, "bicubic")
        headline[metric] = (model, bicubic)
        print(f"      {metric:8s} {model:8.4f} {bicubic:8.4f}")
    print(f"      per-record metrics: {result.csv_path}; curves: {', '.join(str(p) for p in result.plots)}")

    print("[4/5] super-resolving a wide-field TIFF")
    raw, _ = read_image(data / "Microtubules" / "Cell_036" / f"RawSIMData_level_{N_LEVELS:02d}.mrc")
    wf_path = out / "input" / "Cell_036_wf.tif"
    wf = raw.astype(np.float32).sum(axis=0)
    write_tiff(wf_path, np.clip(wf, 0, 65535).astype(np.uint16), pixel_size_nm=RAW_PIXEL_NM)
    summary = predict_files(run, wf_path, out / "predictions", progress=progress, overwrite=True)
    if not summary.ok:
        raise DfcanError(f"prediction failed: {summary.failures[0]}")
    print(f"      wrote {', '.join(str(p) for p in summary.outputs)}")

    print("[5/5] exporting to ONNX (verified against Keras) and running it with onnxruntime")
    onnx_path = out / "export" / "dfcan_sisr_mt_x2.onnx"

    # The demo owns its folder: a rerun replaces its previous export.
    export_run(run_dir, onnx_path, format="onnx", overwrite=True)
    onnx_fn = load_backend(onnx_path, "onnx")
    x = Normalizer(eps=0.0).normalize(wf)[None, :, :, None]  # exact range, as dfcan predict
    diff = float(np.max(np.abs(onnx_fn(x) - run.model(x).numpy())))
    headline["onnx_max_abs_diff"] = diff
    print(f"      {onnx_path}: max |onnxruntime − Keras| = {diff:.2e} on a {wf.shape[0]}×{wf.shape[1]} image")
    print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {out}/")
    return headline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan demo`` flags on ``parser``."""
    from dfcan_tf.cli.main import DeprecatedAlias

    parser.add_argument("-o", "--output", default="demo_output",
                        help="output folder: new, empty, or a previous demo output (replaced)")
    parser.add_argument("--out", action=DeprecatedAlias, new="-o/--output", dest="output")
    parser.add_argument("--run", default=str(DEFAULT_RUN),
                        help="run folder to demonstrate (default: the shipped weights, weights/dfcan_sisr_mt_x2)")
    parser.add_argument("--cells", type=int, default=2, help="simulated test cells")
    parser.add_argument("--size", type=int, default=128, help="raw image side in pixels")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan demo`` with parsed ``args``; return the exit status."""
    run_demo(args.output, run_dir=args.run, cells=args.cells, size=args.size, progress=not args.no_progress)
    return 0
