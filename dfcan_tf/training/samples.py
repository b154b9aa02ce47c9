"""What a validation shows: the bicubic baseline and the input | output | GT figure (``docs/training.md``)."""

from __future__ import annotations

import io as _io

import numpy as np
import tensorflow as tf

from dfcan_tf.training import losses

__all__ = ["bicubic_nrmse", "sample_figure"]


def _wf(x: np.ndarray) -> np.ndarray:
    """The wide-field view of inputs ``(N, h, w, C)``: the frame for SISR, the mean of the raw frames for SIM."""
    return x.mean(axis=-1, keepdims=True)


def bicubic_nrmse(x: np.ndarray, y: np.ndarray) -> float:
    up = tf.image.resize(_wf(x), y.shape[1:3], method="bicubic")
    return float(np.mean(losses.image_nrmse(y, up).numpy()))


def sample_figure(x: np.ndarray, sr: np.ndarray, gt: np.ndarray, step: int) -> tuple[bytes, dict]:
    """PNG bytes of input | output | GT (first validation patch) with the output's metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = {k: float(v[0]) for k, v in losses.image_metrics(gt[None], sr[None]).items()}
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    panels = [(_wf(x[None])[0, ..., 0], "input" + (" (WF)" if x.shape[-1] > 1 else "")),
              (sr[..., 0], f"output  NRMSE {m['nrmse']:.3f}\nSSIM {m['ssim']:.3f}  PSNR {m['psnr']:.2f} dB"),
              (gt[..., 0], "ground truth")]
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"step {step}", fontsize=10)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue(), m
