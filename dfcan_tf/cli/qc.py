"""``dfcan qc SR INPUT -o OUT``: forward-consistency map of an SR image against its measurement, in noise units.

The method is in :mod:`dfcan_tf.evaluation.qc` and ``docs/qc.md``. Writes into the
output folder ``qc_map.tif`` (float32 z map on the SR grid, with its pixel
size), ``qc_overlay.png`` (the SR image with |z| > k in colour) and
``qc.json`` (scores, fitted intensity map, noise model, optics); for a raw
SIM input also ``qc_frames.tif`` (per-frame z through the estimated patterns).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from dfcan_tf.errors import DfcanError

COMMAND = "qc"
MAP_NAME, PNG_NAME, JSON_NAME, FRAMES_NAME = "qc_map.tif", "qc_overlay.png", "qc.json", "qc_frames.tif"


def _infer_scale(sr_path, sr_shape, in_path, in_shape, scale: int | None) -> int:
    hs, ws = sr_shape
    hi, wi = in_shape
    if scale is None:
        if hs % hi or ws % wi or hs // hi != ws // wi or hs < hi:
            raise DfcanError(f"{sr_path} is {hs}×{ws} and {in_path} is {hi}×{wi}: the SR image is not an integer "
                             "multiple of the input on both axes; give matching files (or --scale)")
        return hs // hi
    if (hs, ws) != (scale * hi, scale * wi):
        raise DfcanError(f"{sr_path} is {hs}×{ws} but {in_path} is {hi}×{wi}; at --scale {scale} the SR image must "
                         f"be {scale * hi}×{scale * wi}. Check the files belong together and the scale")
    return scale


def qc_files(sr_path, input_path, out_dir, *, scale: int | None = None, pixel_nm: float | None = None,
             na: float = 1.3, emission_nm: float | None = None, overwrite: bool = False, progress: bool = True,
             **kwargs):
    """Run :func:`forward_consistency` on files and write ``qc_map.tif``, ``qc_overlay.png``, ``qc.json``.

    Parameters
    ----------
    sr_path, input_path
        The SR image (one frame) and the measurement (a WF image or a 9/25-frame raw SIM stack),
        TIFF or MRC.
    out_dir
        Output folder: new, empty, or a previous ``dfcan qc`` output (with ``overwrite``).
    scale
        SR grid factor (default: from the shapes).
    pixel_nm, emission_nm
        Raw pixel size and emission wavelength (default: the input's metadata, else 62.6 nm, 525 nm).
    na
        Numerical aperture.
    **kwargs
        Passed to :func:`forward_consistency` (``k``, ``smooth``, camera parameters, …).
    """
    import json
    from pathlib import Path

    from dfcan_tf import safety
    from dfcan_tf.data.files import atomic_path, read_image, write_tiff
    from dfcan_tf.data.simulate import RAW_PIXEL_NM
    from dfcan_tf.evaluation.qc import forward_consistency, upsample_map

    def say(msg: str) -> None:
        if progress:
            print(f"qc: {msg}", flush=True)

    sr_path, input_path, out_dir = Path(sr_path), Path(input_path), Path(out_dir)
    safety.check_output_dir(out_dir, command=COMMAND, overwrite=overwrite, inputs=[sr_path, input_path])
    say(f"reading {sr_path} and {input_path}")
    sr, sr_meta = read_image(sr_path)
    meas, in_meta = read_image(input_path)
    if sr.shape[0] != 1:
        raise DfcanError(f"{sr_path} holds {sr.shape[0]} frames; expected one SR image")
    if meas.shape[0] not in (1, 9, 25):
        raise DfcanError(f"{input_path} holds {meas.shape[0]} frames; expected 1 (wide-field) or 9 / 25 raw SIM "
                         "frames")
    scale = _infer_scale(sr_path, sr.shape[1:], input_path, meas.shape[1:], scale)
    if emission_nm is None:
        emission_nm = in_meta.get("wavelength_nm") or 525.0
    if pixel_nm is None:
        # Metadata only when physically possible: a TIFF without resolution tags reads as 1000 nm pixels.
        nyquist_px = float(emission_nm) / (4.0 * na)
        for source, value in ((input_path, in_meta.get("pixel_size_nm")),
                              (sr_path, (sr_meta.get("pixel_size_nm") or 0) * scale)):
            if value and value < nyquist_px:
                pixel_nm = value
                break
            if value:
                say(f"ignoring the pixel size {value:g} nm of {source}'s metadata (raw pixels must be below "
                    f"λ/(4·NA) = {nyquist_px:.0f} nm)")
        pixel_nm = pixel_nm or RAW_PIXEL_NM
    pixel_nm, emission_nm = float(pixel_nm), float(emission_nm)
    if not (pixel_nm > 0 and emission_nm > 0 and 0 < na < 2):
        raise DfcanError(f"optics out of range: --pixel-nm {pixel_nm}, --emission-nm {emission_nm}, --na {na}")
    say(f"scale {scale}, raw pixel {pixel_nm:g} nm, NA {na:g}, emission {emission_nm:g} nm; "
        f"comparing with {'the wide-field image' if meas.shape[0] == 1 else f'the WF sum of {len(meas)} frames'}")
    result = forward_consistency(sr[0], meas if meas.shape[0] > 1 else meas[0], scale=scale, pixel_nm=pixel_nm,
                                 na=na, emission_nm=emission_nm, **kwargs)
    s = result.scores
    say(f"residual RMS / noise RMS {s['rms_ratio']:.3f}; |z| > {s['k']:g} on {100 * s['fraction_above_k']:.2f}% "
        f"of pixels (pure noise: {100 * s['expected_fraction_noise']:.2f}%)")
    if "frames" in s:
        f = s["frames"]
        say(f"frame by frame through the estimated patterns: residual RMS / noise RMS {f['rms_ratio']:.3f}; "
            f"|z| > {s['k']:g} on {100 * f['fraction_above_k']:.2f}%")
    doc = {"sr": str(sr_path), "input": str(input_path), **result.to_dict()}
    with safety.staged_dir(out_dir, command=COMMAND) as staged:
        write_tiff(staged / MAP_NAME, result.z_sr, pixel_size_nm=pixel_nm / scale, dtype="float32")
        plot_overlay(sr[0], result.z_sr, s["k"], staged / PNG_NAME,
                     title=f"{sr_path.name}: |z| > {s['k']:g} on {100 * s['fraction_above_k']:.2f}%, "
                           f"RMS ratio {s['rms_ratio']:.2f}",
                     border_sr=scale * result.params["settings"]["border_px"])
        if result.z_frames is not None:
            z_frames = np.stack([upsample_map(z, scale, result.params["settings"]["sampling"])
                                 for z in result.z_frames]).astype(np.float32)
            write_tiff(staged / FRAMES_NAME, z_frames, pixel_size_nm=pixel_nm / scale, dtype="float32")
        with atomic_path(staged / JSON_NAME) as tmp:
            tmp.write_text(json.dumps(doc, indent=2))
    say(f"wrote {out_dir / MAP_NAME}, {out_dir / PNG_NAME}, {out_dir / JSON_NAME}")
    return result


def plot_overlay(sr: np.ndarray, z_sr: np.ndarray, k: float, path, *, title: str = "", border_sr: int = 0) -> None:
    """Write a PNG: the SR image in grey, |z| > k coloured by z (red: measured brighter), a colour bar.

    ``border_sr`` (SR pixels) draws the scored region as a dashed rectangle.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dfcan_tf.data.files import atomic_path

    sr = np.asarray(sr, np.float64)
    lo, hi = np.percentile(sr, [0.1, 99.9])
    grey = np.clip((sr - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    zlim = max(2.0 * k, float(np.nanmax(np.abs(z_sr))) if z_sr.size else k)
    flagged = np.ma.masked_where(np.abs(z_sr) <= k, z_sr)
    hgt, wid = sr.shape
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * hgt / wid + 0.4), dpi=110)
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if border_sr:
        ax.add_patch(plt.Rectangle((border_sr - 0.5, border_sr - 0.5), wid - 2 * border_sr, hgt - 2 * border_sr,
                                   fill=False, ls="--", lw=0.8, ec="yellow"))
    im = ax.imshow(flagged, cmap="RdBu_r", vmin=-zlim, vmax=zlim, interpolation="nearest", alpha=0.85)
    ax.set_axis_off()
    ax.set_title(title or f"forward consistency: |z| > {k:g}", fontsize=9)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("z (noise units); red: measurement brighter, blue: SR brighter", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``dfcan qc`` to ``parser``."""
    parser.add_argument("sr", metavar="SR", help="super-resolved image (TIFF or MRC, one frame)")
    parser.add_argument("input", metavar="INPUT",
                        help="the measurement it was made from: a wide-field image, or the 9 / 25 raw SIM frames "
                             "(compared through their sum)")
    parser.add_argument("-o", "--output", required=True,
                        help=f"output folder for {MAP_NAME}, {PNG_NAME} and {JSON_NAME}")
    parser.add_argument("--scale", type=int, help="SR grid factor (default: from the image shapes)")
    parser.add_argument("--pixel-nm", type=float,
                        help="raw pixel size in nm (default: the input's metadata, else 62.6)")
    parser.add_argument("--na", type=float, default=1.3, help="detection numerical aperture")
    parser.add_argument("--emission-nm", type=float,
                        help="emission wavelength in nm (default: the input's MRC metadata, else 525)")
    parser.add_argument("--sr-support", default="scale", metavar="scale|object|X",
                        help="OTF support of the SR image in detection cutoffs: 'scale' (an image like GT-SIM), "
                             "'object' (a deconvolved object estimate) or a number > 1")
    parser.add_argument("--sampling", choices=("fourier", "bin"), default="fourier",
                        help="how raw pixels sample the SR grid: 'fourier' (point samples of the band-limited "
                             "image, as the simulator) or 'bin' (average of scale×scale blocks)")
    parser.add_argument("--gain", type=float, help="camera gain, ADU per photo-electron (default: estimated)")
    parser.add_argument("--read-noise", type=float,
                        help="camera read noise per raw frame, ADU rms (with --offset; default: estimated)")
    parser.add_argument("--offset", type=float, help="camera offset per raw frame, ADU (with --read-noise)")
    parser.add_argument("-k", type=float, default=3.0, help="threshold in noise units")
    parser.add_argument("--no-frames", action="store_true",
                        help="raw SIM input: compare only the WF sum, not each frame through the estimated patterns")
    parser.add_argument("--no-smooth", action="store_true",
                        help="do not smooth the z map with the PSF-sized Gaussian before thresholding")
    parser.add_argument("--border", type=int,
                        help="raw pixels at each edge left out of the scores (default: one PSF width λ/NA)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output folder if it holds a previous 'dfcan qc' output")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def _sr_support(value: str) -> float | None:
    v = str(value).strip().lower()
    if v == "scale":
        return -1.0
    if v == "object":
        return None
    try:
        x = float(v)
    except ValueError:
        x = float("nan")
    if not x > 1.0:
        raise DfcanError(f"--sr-support must be 'scale', 'object' or a number > 1. Received: {value!r}")
    return x


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan qc``; 0 on success."""
    qc_files(args.sr, args.input, args.output, scale=args.scale, pixel_nm=args.pixel_nm, na=args.na,
             emission_nm=args.emission_nm, overwrite=args.overwrite, progress=not args.quiet,
             sr_support=_sr_support(args.sr_support), sampling=args.sampling, gain=args.gain,
             read_noise=args.read_noise, offset=args.offset, k=args.k, smooth=not args.no_smooth,
             border=args.border, frames=not args.no_frames)
    print(os.path.join(args.output, JSON_NAME))
    return 0
