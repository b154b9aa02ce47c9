"""Specimen renderers of the simulator: CCPs, ER, microtubules and F-actin on the fine (GT) grid.

CCPs are sparse hollow rings 50–150 nm across, microtubules long smooth
crossing filaments, ER a tubular network with three-way junctions and a few
fenestrated sheets, F-actin a dense meshwork of thin filaments plus bundles;
each object has its own brightness, inside a cell with a soft edge, slow
brightness variation and a dim diffuse pool of label. See ``docs/data.md#simulator``.
"""

from __future__ import annotations

import numpy as np

from dfcan_tf.data.simulate.optics import _gaussian_blur
from dfcan_tf.errors import DfcanError

SPECIMENS = ("CCPs", "ER", "Microtubules", "F-actin", "F-actin_Nonlinear")
NONLINEAR = "F-actin_Nonlinear"

__all__ = ["NONLINEAR", "SPECIMENS", "render_structure"]


def _splat(ys: np.ndarray, xs: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Bilinear splatting of point weights (pixel coordinates) onto an n×n grid."""
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    fy, fx = ys - y0, xs - x0
    img = np.zeros(n * n, np.float64)
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < n) & (xx >= 0) & (xx < n)
        img += np.bincount(yy[ok] * n + xx[ok], weights=(weights * w)[ok], minlength=n * n)
    return img.reshape(n, n)


def _worm(rng: np.random.Generator, start: np.ndarray, angle: float, length: float,
          persistence: float, ds: float) -> np.ndarray:
    """A worm-like chain (smooth random curve) as (k, 2) points in nm, spaced ds."""
    k = max(int(length / ds), 2)
    turns = rng.normal(0.0, np.sqrt(ds / persistence), size=k)
    theta = angle + np.cumsum(turns)
    steps = ds * np.stack([np.sin(theta), np.cos(theta)], axis=1)
    return start + np.cumsum(steps, axis=0)


def _lines_to_image(curves: list[np.ndarray], brightness: np.ndarray, n: int, pixel_nm: float,
                    ds: float) -> np.ndarray:
    """Splat curves with a line density ``brightness`` (per pixel length)."""
    if not curves:
        return np.zeros((n, n))
    pts = np.concatenate(curves)
    w = np.concatenate([np.full(len(c), b * ds / pixel_nm) for c, b in zip(curves, brightness)])
    return _splat(pts[:, 0] / pixel_nm, pts[:, 1] / pixel_nm, w, n)


def _ccps(rng, n, px, area_um2):
    count = max(int(rng.uniform(0.8, 1.6) * area_um2), 5)
    centres = rng.uniform(0, n * px, size=(count, 2))
    radii = rng.uniform(25.0, 75.0, size=count)  # 50–150 nm across
    bright = rng.lognormal(0.0, 0.4, size=count)
    ys, xs, ws = [], [], []
    for c, r, b in zip(centres, radii, bright):
        k = 32
        span = rng.uniform(0.7, 1.0) * 2 * np.pi  # pits are often incomplete rings
        t = rng.uniform(0, 2 * np.pi) + np.linspace(0, span, k, endpoint=False)
        ys.append(c[0] + r * np.sin(t))
        xs.append(c[1] + r * np.cos(t))
        ws.append(np.full(k, b * (r / 50.0) / k * 60.0))  # more coat for bigger pits
    img = _splat(np.concatenate(ys) / px, np.concatenate(xs) / px, np.concatenate(ws), n)
    return _gaussian_blur(img, 10.0, px), {"n_pits": count}


def _microtubules(rng, n, px, area_um2):
    width = n * px
    count = max(int(rng.uniform(1.8, 3.0) * width / 1000.0), 4)
    curves = []
    ds = px / 3
    for _ in range(count):
        length = rng.uniform(1.0, 2.5) * width
        c = _worm(rng, np.zeros(2), rng.uniform(0, 2 * np.pi), length, rng.uniform(3000, 12000), ds)
        curves.append(c - c[len(c) // 2] + rng.uniform(0, width, size=2))  # pass through a random point
    bright = rng.lognormal(0.0, 0.25, size=count)
    img = _lines_to_image(curves, bright, n, px, ds)
    return _gaussian_blur(img, 12.0, px), {"n_microtubules": count}


def _er(rng, n, px, area_um2):
    from scipy.spatial import Voronoi

    width = n * px
    count = max(int(rng.uniform(1.0, 2.0) * area_um2), 12)
    vor = Voronoi(rng.uniform(-0.1 * width, 1.1 * width, size=(count, 2)))
    ds = px / 3
    curves = []
    for a, b in vor.ridge_vertices:
        if a < 0 or b < 0 or rng.random() < 0.2:  # open edges, and some tubules missing
            continue
        p, q = vor.vertices[a], vor.vertices[b]
        seg = q - p
        length = float(np.hypot(*seg))
        if length < 1.0 or length > 0.6 * width:
            continue
        normal = np.array([-seg[1], seg[0]]) / length
        ctrl = (p + q) / 2 + normal * rng.normal(0, 0.15 * length)  # tubules are gently curved
        t = np.linspace(0, 1, max(int(length / ds), 2))[:, None]
        curves.append((1 - t) ** 2 * p + 2 * (1 - t) * t * ctrl + t**2 * q)
    bright = rng.lognormal(0.0, 0.3, size=len(curves))
    lines = _lines_to_image(curves, bright, n, px, ds)
    # Sheets: irregular flat patches with small holes (fenestrations), dimmer than tubule peaks.
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * px
    sheets = np.zeros((n, n))
    n_sheets = int(rng.integers(1, 4))
    sigma = 30.0
    tubule_peak = 1.0 / (np.sqrt(2 * np.pi) * sigma / px)
    for _ in range(n_sheets):
        cy, cx = rng.uniform(0.1 * width, 0.9 * width, size=2)
        r0 = rng.uniform(300.0, 900.0)
        ang = np.arctan2(yy - cy, xx - cx)
        rad = np.hypot(yy - cy, xx - cx)
        edge = r0 * (1 + sum(rng.normal(0, 0.12) * np.cos(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)))
        sheet = (rad < edge).astype(float)
        for _ in range(int(r0 / 80)):
            hy, hx = cy + rng.normal(0, r0 / 2), cx + rng.normal(0, r0 / 2)
            sheet[np.hypot(yy - hy, xx - hx) < rng.uniform(40, 90)] = 0.0
        sheets += 0.4 * tubule_peak * rng.lognormal(0, 0.2) * sheet
    return _gaussian_blur(lines + sheets, sigma, px), {"n_tubules": len(curves), "n_sheets": n_sheets}


def _factin(rng, n, px, area_um2):
    width = n * px
    ds = px / 3
    count = max(int(rng.uniform(3.0, 5.0) * area_um2), 10)
    curves = [
        _worm(rng, rng.uniform(0, width, size=2), rng.uniform(0, 2 * np.pi), rng.uniform(800, 4000),
              rng.uniform(1000, 5000), ds)
        for _ in range(count)
    ]
    bright = list(rng.lognormal(0.0, 0.35, size=count))
    n_bundles = int(rng.integers(2, 7))
    for _ in range(n_bundles):  # bundles / stress fibres: several nearly straight parallel filaments
        base = _worm(rng, np.zeros(2), rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.5) * width, 30000.0, ds)
        base = base - base[len(base) // 2] + rng.uniform(0.1 * width, 0.9 * width, size=2)
        d = np.gradient(base, axis=0)
        normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
        for _ in range(int(rng.integers(3, 9))):
            curves.append(base + normal * rng.normal(0, 40.0))
            bright.append(float(rng.lognormal(0.0, 0.2)))
    img = _lines_to_image(curves, np.asarray(bright), n, px, ds)
    return _gaussian_blur(img, 8.0, px), {"n_filaments": count, "n_bundles": n_bundles}


_GENERATORS = {"CCPs": _ccps, "ER": _er, "Microtubules": _microtubules, "F-actin": _factin, NONLINEAR: _factin}


def render_structure(specimen: str, n: int, pixel_nm: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Draw a random specimen on an n×n grid of ``pixel_nm`` pixels.

    Parameters
    ----------
    specimen
        One of :data:`SPECIMENS`.
    n, pixel_nm
        Grid size and pixel size (nm).
    rng
        Source of randomness (the result depends only on its state).

    Returns
    -------
    structure : numpy.ndarray
        (n, n) float64 fluorophore density, ≥ 0, 99.9th percentile 1.
    info : dict
        Object counts and the cell-envelope parameters.
    """
    if specimen not in _GENERATORS:
        raise DfcanError(f"unknown specimen. Received: specimen={specimen!r}; expected one of {SPECIMENS}")
    area_um2 = (n * pixel_nm / 1000.0) ** 2
    img, info = _GENERATORS[specimen](rng, n, pixel_nm, area_um2)
    # Cell envelope: a soft-edged irregular cell covering most of the field, with slowly varying
    # brightness, so images have real background regions as BioSR cells do near their edges.
    width = n * pixel_nm
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * pixel_nm
    cy, cx = width / 2 + rng.normal(0, 0.15 * width, size=2)
    r0 = rng.uniform(0.55, 0.85) * width
    ang = np.arctan2(yy - cy, xx - cx)
    edge = r0 * (1 + sum(rng.normal(0, 0.08) * np.cos(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)))
    envelope = 1.0 / (1.0 + np.exp(-(edge - np.hypot(yy - cy, xx - cx)) / 150.0))
    slow = _gaussian_blur(rng.standard_normal((n, n)), 1500.0, pixel_nm)
    slow = 1.0 + 0.3 * (slow - slow.mean()) / max(slow.std(), 1e-12)
    cell = envelope * np.clip(slow, 0.2, None)
    img = np.clip(img, 0, None) * cell
    img /= max(np.percentile(img, 99.9), 1e-12)
    # Diffuse cytosolic pool of the label (unbound protein): dim, smooth, and everywhere in the
    # cell. It carries most of the illumination pattern's peak in the raw spectra, as in real cells.
    diffuse = rng.uniform(0.04, 0.1)
    img = img + diffuse * cell
    img /= np.percentile(img, 99.9)
    info.update({"cell_radius_nm": float(r0), "cell_centre_nm": [float(cy), float(cx)], "diffuse": float(diffuse)})
    return img, info

