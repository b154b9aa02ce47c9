"""Make ``docs/images/readme_figure.png``: wide-field input, the shipped DFCAN's output and GT-SIM on one unseen cell.

    .venv/bin/python docs/make_readme_figure.py

The cell is simulated (:func:`dfcan_tf.data.simulate.simulate_cell`: microtubules,
256×256 raw pixels of 62.6 nm, seed 2026, which the shipped weights' training data
(master seed 7) never used). The input is the wide-field image at signal level 5 of 9
(the sum of its 9 raw SIM frames), super-resolved exactly as ``dfcan predict`` does
(the shipped run folder in its inference form, whole image, min-max normalisation).
PSNR and SSIM against GT-SIM are the project's metrics
(:func:`dfcan_tf.evaluation.metrics.evaluate_pair`, after per-image min-max
normalisation, as ``dfcan evaluate``), for the network and for the bicubic-upsampled
input. The script prints them as the README caption states them; it is deterministic
and may be re-run at any time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images" / "readme_figure.png"
SIZE, LEVEL, SEED = 256, 5, 2026
SCALE_BAR_UM = 2.0
ZOOM = (slice(300, 420), slice(300, 420))  # on the 512×512 SR grid (3.76 µm square)


def _display(img: np.ndarray) -> np.ndarray:
    """Stretch ``img`` between its 0.1 and 99.9 percentiles to 0–1 (display only)."""
    lo, hi = np.percentile(img, (0.1, 99.9))
    return np.clip((img - lo) / (hi - lo), 0, 1)


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from dfcan_tf.data.atomic import atomic_path
    from dfcan_tf.data.simulate import RAW_PIXEL_NM, level_photons, simulate_cell
    from dfcan_tf.evaluation.evaluate import bicubic_upsample
    from dfcan_tf.evaluation.metrics import evaluate_pair
    from dfcan_tf.inference.predict import predict_image
    from dfcan_tf.runs import load_run
    from dfcan_tf.shipped import shipped_model

    cell = simulate_cell("Microtubules", size=SIZE, seed=SEED)  # all 9 signal levels (the default)
    wf = cell.wf[LEVEL - 1]
    run = load_run(shipped_model(), spectrum="dft")  # the form `dfcan predict` uses
    sr = predict_image(run.model, wf, scale=run.scale)
    gt = cell.gt.astype(np.float32)
    model = evaluate_pair(sr, gt)
    bicubic = evaluate_pair(bicubic_upsample(wf, run.scale), gt)
    photons = level_photons(9)[LEVEL - 1]

    sr_px = RAW_PIXEL_NM / run.scale / 1000  # µm per SR pixel
    extent_um = SIZE * RAW_PIXEL_NM / 1000
    panels = [
        (wf, f"wide-field input ({RAW_PIXEL_NM:.1f} nm pixels)"),
        (sr, f"DFCAN, shipped weights ({RAW_PIXEL_NM / 2:.1f} nm)\n"
             f"PSNR {model['psnr']:.1f} dB, SSIM {model['ssim']:.3f}"),
        (gt, f"GT-SIM ({RAW_PIXEL_NM / 2:.1f} nm)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.4))
    for col, (img, title) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(_display(img), cmap="gray", extent=(0, extent_um, extent_um, 0), interpolation="nearest")
        top.set_title(title, fontsize=9)
        y0, x0 = ZOOM[0].start * sr_px, ZOOM[1].start * sr_px
        side = (ZOOM[0].stop - ZOOM[0].start) * sr_px
        top.add_patch(Rectangle((x0, y0), side, side, fill=False, ec="yellow", lw=1))
        step = img.shape[0] // SIZE  # 1 on the raw grid, 2 on the SR grid
        crop = img[tuple(slice(z.start * step // 2, z.stop * step // 2) for z in ZOOM)]
        bottom.imshow(_display(crop), cmap="gray", extent=(0, side, side, 0), interpolation="nearest")
        for ax, bar in ((top, SCALE_BAR_UM), (bottom, 1.0)):
            ax.set_axis_off()
            lim = ax.get_xlim()[1]
            ax.plot([0.05 * lim, 0.05 * lim + bar], [0.93 * lim] * 2, color="white", lw=3)
            ax.text(0.05 * lim + bar / 2, 0.89 * lim, f"{bar:g} µm", color="white", ha="center", fontsize=8)
    fig.suptitle(f"Simulated unseen microtubule cell, signal level {LEVEL}/9 (~{photons:.0f} photons/pixel/frame); "
                 f"bicubic-upsampled input: PSNR {bicubic['psnr']:.1f} dB, SSIM {bicubic['ssim']:.3f}", fontsize=9)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    print(f"wrote {OUT}")
    print(f"level {LEVEL}/9, {photons:.0f} photons; DFCAN vs GT-SIM: PSNR {model['psnr']:.2f} dB, "
          f"SSIM {model['ssim']:.3f}, NRMSE {model['nrmse']:.3f}; bicubic WF vs GT-SIM: PSNR {bicubic['psnr']:.2f} dB, "
          f"SSIM {bicubic['ssim']:.3f}, NRMSE {bicubic['nrmse']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
