"""Resolution from images, in numpy: decorrelation analysis and Fourier ring correlation.

* :func:`decorrelation_resolution`: decorrelation analysis (Descloux,
  Grußmayer & Radenovic, Nature Methods 16, 918–924, 2019) from a single image.
* :func:`frc_resolution`: Fourier ring correlation of two independent noisy
  acquisitions of the same field, 1/7 (or half-bit) threshold.

Both return nanometres given the pixel size; see ``docs/metrics.md``.
"""

from __future__ import annotations

import math

import numpy as np

from dfcan_tf.errors import DfcanError

__all__ = ["decorrelation_curve", "decorrelation_resolution", "frc_curve", "frc_resolution"]


# --------------------------------------------------------------------------- Fourier helpers


def _edge_apodize(image: np.ndarray, width: int | None = None) -> np.ndarray:
    """Subtract the mean and taper the outer ``width`` pixels with a cosine ramp.

    Removes the cross-shaped spectral leakage of the image border, which would
    otherwise look like high-frequency content (Descloux et al. apodise 20 px).
    """
    x = np.asarray(image, dtype=np.float64)
    x = x - x.mean()
    h, w = x.shape
    if width is None:
        width = max(1, min(20, min(h, w) // 8))

    def ramp(n: int) -> np.ndarray:
        win = np.ones(n)
        t = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
        win[:width] = t
        win[n - width :] = t[::-1]
        return win

    return x * ramp(h)[:, None] * ramp(w)[None, :]


def _radial_grid(shape: tuple[int, int]) -> np.ndarray:
    """Normalised spatial frequency of each (unshifted) FFT bin: 1 = Nyquist (0.5 cycles/pixel)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    return 2.0 * np.sqrt(fy * fy + fx * fx)


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    x = np.squeeze(np.asarray(image, dtype=np.float64))
    if x.ndim != 2 or min(x.shape) < 16:
        raise DfcanError(f"{name} needs a 2-D image of at least 16x16 pixels. Received: shape={np.shape(image)}")
    if not np.all(np.isfinite(x)):
        raise DfcanError(f"{name} needs a finite image; it contains NaN or inf")
    return x


# --------------------------------------------------------------------------- decorrelation analysis


def _local_max(d: np.ndarray, min_drop: float = 5e-4) -> int:
    """Index of the decorrelation peak, or 0 when the curve has none.

    The highest value counts only if it is not at the end of the curve and the
    curve falls by at least ``min_drop`` after it; otherwise the tail is cut and
    the search repeats (Descloux et al.'s rule for a local maximum).
    """
    d = np.asarray(d)
    end = d.size
    while end > 1:
        i = int(np.argmax(d[:end]))
        if i == 0:
            return 0
        if i < end - 1 and d[i] - np.min(d[i:end]) >= min_drop:
            return i
        end -= 1
    return 0


class _RadialSums:
    """The spectrum's bins sorted by radius, to evaluate d(r) at any radius cheaply.

    With the normalised spectrum Iₙ = I/|I| the numerator Σ Re(I·conj(Iₙ·M))
    of d(r) is Σ_{|k|<r} |I| and Σ|Iₙ·M|² is the number of bins inside r, so
    one cumulative sum over the bins sorted by radius gives d at every radius.
    A real high-pass filter H multiplies only I, not Iₙ.
    """

    def __init__(self, radius: np.ndarray, amp: np.ndarray):
        # Only the disc r <= 1 (Nyquist) enters, normalisation included: the corners of the
        # spectrum are not on the curve, and high-pass filtering would otherwise weight their noise most.
        inside = radius.ravel() <= 1.0
        r = radius.ravel()[inside]
        order = np.argsort(r)
        self.r_sorted = r[order]
        self.amp_sorted = np.asarray(amp, dtype=np.float64).ravel()[inside][order]
        self.r2_sorted = self.r_sorted ** 2

    def curve(self, width: float | None = None) -> _Curve:
        """d(r) of the spectrum high-passed by ``1 - exp(-2 g² r²)``, g = ``width`` (dimensionless, r = 1 at
        Nyquist: Descloux et al.'s convention); None: unfiltered."""
        a = self.amp_sorted if width is None else self.amp_sorted * -np.expm1(-2.0 * width * width * self.r2_sorted)
        return _Curve(self.r_sorted, np.cumsum(a), math.sqrt(float(np.dot(a, a))))


class _Curve:
    """d(r) of one (filtered) spectrum, exact at any radius (a step function of the bin radii)."""

    def __init__(self, r_sorted: np.ndarray, cum: np.ndarray, norm: float):
        self.r_sorted, self.cum, self.norm = r_sorted, cum, norm

    def __call__(self, radii: np.ndarray) -> np.ndarray:
        radii = np.asarray(radii, dtype=np.float64)
        d = np.zeros_like(radii)
        if self.norm == 0.0:
            return d
        idx = np.searchsorted(self.r_sorted, radii, side="left")  # bins strictly inside r
        ok = idx > 0
        d[ok] = self.cum[idx[ok] - 1] / (self.norm * np.sqrt(idx[ok]))
        return d

    def peak(self, grid: np.ndarray, min_amplitude: float, min_drop: float = 5e-4,
             n_fine: int = 32) -> tuple[float, float]:
        """(position, amplitude) of the decorrelation peak, located continuously; (0, 0) if none.

        The peak is found on ``grid`` (Descloux et al.'s local-maximum rule,
        :func:`_local_max`), then located on ``n_fine`` samples per grid step
        over three steps either side: the maximum d_max within one step of the
        grid peak, then the centroid, weighted by ``d - (d_max - min_drop)``,
        of the contiguous top around it within ``min_drop`` (values closer
        than the rule's own significance are not told apart). On a sharp peak
        that is the maximum; on a flat top, its middle rather than whichever
        end noise favours; a rise of the curve after the peak's dip (noise
        under a strong high-pass) is never part of it. The position varies
        continuously with the image instead of snapping to a grid.
        """
        d = self(grid)
        i = _local_max(d, min_drop)
        if i == 0 or d[i] < min_amplitude:
            return 0.0, 0.0
        lo, hi = grid[max(i - 3, 0)], grid[min(i + 3, grid.size - 1)]
        fine = np.linspace(lo, hi, int(round((hi - lo) / (grid[1] - grid[0]))) * n_fine + 1)
        df = self(fine)
        # The maximum near the grid peak, then the contiguous top around it: the curve may rise
        # again past the peak's dip (noise under a high-pass), and that rise is not the peak.
        near = np.nonzero((fine >= grid[i - 1]) & (fine <= grid[i + 1]))[0]
        j = int(near[np.argmax(df[near])])
        floor = df[j] - min_drop
        a, b = j, j
        while a > 0 and df[a - 1] >= floor:
            a -= 1
        while b < fine.size - 1 and df[b + 1] >= floor:
            b += 1
        w = df[a:b + 1] - floor
        return float(np.dot(w, fine[a:b + 1]) / w.sum()), float(df[j])


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _golden_max(f, lo: float, hi: float, n_iter: int) -> list[tuple[float, float]]:
    """Golden-section search for the maximum of ``f`` on [lo, hi]; every (x, f(x)) it evaluated."""
    seen = []
    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    seen += [(c, fc), (d, fd)]
    for _ in range(n_iter):
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
            seen.append((c, fc))
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
            seen.append((d, fd))
    return seen


def decorrelation_curve(image: np.ndarray, *, n_radii: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The decorrelation function d(r) of ``image`` (no high-pass filtering).

    Returns
    -------
    radii, d
        Normalised frequency (1 = Nyquist) and the correlation coefficient of the
        image with its phase-only spectrum low-passed at that radius.
    """
    x = _check_image(image, "decorrelation analysis")
    amp = np.abs(np.fft.fft2(_edge_apodize(x)))
    radii = np.linspace(0.0, 1.0, n_radii + 1)[1:]
    return radii, _RadialSums(_radial_grid(x.shape), amp).curve()(radii)


def decorrelation_resolution(
    image: np.ndarray,
    pixel_size_nm: float,
    *,
    n_radii: int = 50,
    n_filters: int = 10,
    min_amplitude: float = 0.05,
    n_refine: int = 16,
    return_details: bool = False,
) -> float | tuple[float, dict]:
    """Image resolution by decorrelation analysis (Descloux et al., Nature Methods 2019).

    The image (mean removed, edges apodised) is correlated with its own
    phase-only spectrum restricted to a disc of radius r; the curve d(r) peaks
    where signal gives way to noise. The search is repeated on the spectrum
    high-pass filtered by ``1 - exp(-2 g² r²)`` (r: normalised frequency,
    1 = Nyquist; g: dimensionless width, the paper's convention): a coarse
    sweep of one weak filter g = max(H, W)/4 followed by ``n_filters`` widths
    spaced geometrically from ``2 / r₀`` (r₀: peak without filtering) down to
    0.15, then a golden-section search (``n_refine`` steps) of log g between
    the coarse neighbours of the width that gave the highest peak position
    (one geometric step past 0.15 when that is the best). Each peak is
    found on ``n_radii`` radii and then located continuously between them
    (:meth:`_Curve.peak`), so the cut-off is not quantised by either grid.
    Peaks lower than ``min_amplitude`` (0.05, the paper's SNR floor) are
    rejected as unphysical. The cut-off k_c is the highest accepted peak
    position and the resolution is ``2 · pixel_size / k_c`` (k_c = 1 is the
    Nyquist frequency).

    Parameters
    ----------
    image
        2-D image, at least 16×16 pixels.
    pixel_size_nm
        Pixel size of ``image`` in nm.
    n_radii
        Sampling of r in (0, 1] for the peak search.
    n_filters
        Number of geometrically spaced high-pass widths in the coarse sweep (at
        least 3), after the weak first filter g = max(H, W)/4.
    min_amplitude
        Smallest peak height (correlation coefficient) accepted as signal.
    n_refine
        Golden-section steps on the filter width (0: coarse sweep only).
    return_details
        Also return a dict with ``kc``, ``snr`` (peak amplitude A₀ of the
        unfiltered curve), ``radii`` and ``d`` (unfiltered curve), ``widths``
        (the ``n_filters + 1`` widths g of the coarse sweep) and ``peaks``
        ((r, A) of each high-pass curve of the coarse sweep), ``width_kc``
        (the width g that gave k_c; 0 for the unfiltered curve).

    Returns
    -------
    float
        Resolution in nm; ``inf`` when no peak exists (no structure above noise).
    """
    if not pixel_size_nm or pixel_size_nm <= 0:
        raise DfcanError(f"pixel size must be positive. Received: pixel_size_nm={pixel_size_nm}")
    if n_filters < 3:
        raise DfcanError(f"decorrelation analysis needs n_filters >= 3. Received: n_filters={n_filters}")
    x = _check_image(image, "decorrelation analysis")
    amp = np.abs(np.fft.fft2(_edge_apodize(x)))
    radii = np.linspace(0.0, 1.0, n_radii + 1)[1:]
    sums = _RadialSums(_radial_grid(x.shape), amp)

    unfiltered = sums.curve()
    d0 = unfiltered(radii)
    r0, a0 = unfiltered.peak(radii, min_amplitude)

    def peak_for(width: float) -> tuple[float, float]:
        return sums.curve(width).peak(radii, min_amplitude)

    g_max = 2.0 / r0 if r0 > 0 else max(x.shape) / 2.0
    sweep = np.linspace(math.log(g_max), math.log(0.15), n_filters)
    # The paper's list of widths: one weak filter g = size/4 first, then the geometric sweep.
    log_widths = np.concatenate([[math.log(max(x.shape) / 4.0)], sweep])
    widths = np.exp(log_widths)
    peaks = [peak_for(g) for g in widths]
    # Every (g, r) tried: the coarse sweep, then a golden-section search of log g between the
    # coarse neighbours of the width with the highest peak (past the finest width, one geometric step further).
    tried = [(float(g), r) for g, (r, _) in zip(widths, peaks) if r > 0]
    found = [i for i, (r, _) in enumerate(peaks) if r > 0]
    if found and n_refine > 0:
        # Neighbours by width: size/4 need not be the widest (2/r₀ > size/4 when r₀ < 8/size).
        by_width = np.sort(log_widths)[::-1]
        j = int(np.searchsorted(-by_width, -log_widths[max(found, key=lambda k: peaks[k][0])]))
        lo = by_width[j + 1] if j + 1 < by_width.size else by_width[-1] - (sweep[0] - sweep[1])
        hi = by_width[max(j - 1, 0)]
        tried += [(math.exp(v), r) for v, r in _golden_max(lambda v: peak_for(math.exp(v))[0], lo, hi, n_refine)
                  if r > 0]
    best_r, best_width = max([(r0, 0.0)] + [(r, g) for g, r in tried])

    resolution = 2.0 * float(pixel_size_nm) / best_r if best_r > 0 else float("inf")
    if return_details:
        return resolution, {"kc": best_r, "snr": a0, "radii": radii, "d": d0, "peaks": peaks, "widths": widths,
                            "width_kc": best_width}
    return resolution


# --------------------------------------------------------------------------- FRC


def frc_curve(image1: np.ndarray, image2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fourier ring correlation of two independent acquisitions of the same field.

    Returns
    -------
    freq, frc, counts
        Ring centre frequency in cycles/pixel (0 … 0.5), the FRC value, and the
        number of Fourier bins in each ring (for the half-bit threshold).
    """
    a = _check_image(image1, "FRC")
    b = _check_image(image2, "FRC")
    if a.shape != b.shape:
        raise DfcanError(f"FRC needs two images of the same shape. Received: {a.shape} and {b.shape}")
    fa = np.fft.fft2(_edge_apodize(a))
    fb = np.fft.fft2(_edge_apodize(b))
    n = min(a.shape)
    # Ring index: frequency in units of 1/n cycles/pixel, rounded.
    ring = np.rint(_radial_grid(a.shape) / 2.0 * n).astype(np.int64).ravel()
    n_rings = n // 2 + 1
    keep = ring < n_rings
    ring = ring[keep]
    num = np.bincount(ring, (fa * np.conj(fb)).real.ravel()[keep], n_rings)
    pa = np.bincount(ring, (np.abs(fa) ** 2).ravel()[keep], n_rings)
    pb = np.bincount(ring, (np.abs(fb) ** 2).ravel()[keep], n_rings)
    counts = np.bincount(ring, minlength=n_rings)
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = np.where(pa * pb > 0, num / np.sqrt(pa * pb), 0.0)
    freq = np.arange(n_rings) / n
    return freq, frc, counts


def frc_resolution(
    image1: np.ndarray,
    image2: np.ndarray,
    pixel_size_nm: float,
    *,
    threshold: str | float = "1/7",
    return_details: bool = False,
) -> float | tuple[float, dict]:
    """Resolution from the FRC of two independent noisy acquisitions, in nm.

    The FRC curve (smoothed over 3 rings) is searched from low to high
    frequency for its first crossing below the threshold: the fixed 1/7 ≈ 0.143
    (default), ``"halfbit"`` (van Heel & Schatz 2005) or a number. The crossing
    frequency f (cycles/pixel, linearly interpolated) gives ``pixel_size / f``.
    If the curve never crosses, the Nyquist limit ``2 · pixel_size`` is returned;
    if it is already below at the first ring (no common structure), ``inf``.
    """
    if not pixel_size_nm or pixel_size_nm <= 0:
        raise DfcanError(f"pixel size must be positive. Received: pixel_size_nm={pixel_size_nm}")
    freq, frc, counts = frc_curve(image1, image2)
    smooth = np.convolve(frc, np.ones(3) / 3.0, mode="same")
    smooth[0], smooth[-1] = frc[0], frc[-1]
    if threshold == "1/7":
        thr = np.full_like(freq, 1.0 / 7.0)
    elif threshold == "halfbit":
        nb = np.sqrt(np.maximum(counts, 1))
        thr = (0.2071 + 1.9102 / nb) / (1.2071 + 0.9102 / nb)
    elif isinstance(threshold, (int, float)):
        thr = np.full_like(freq, float(threshold))
    else:
        raise DfcanError(f"unknown FRC threshold. Received: threshold={threshold!r}; expected '1/7', 'halfbit' or a number")
    below = np.nonzero(smooth[1:] < thr[1:])[0]
    if below.size == 0:
        f_cut = 0.5
    else:
        j = int(below[0]) + 1
        if j == 1:
            f_cut = 0.0  # uncorrelated already at the lowest ring: no resolvable structure
        else:
            # Linear interpolation of (smooth - thr) between rings j-1 and j.
            y0, y1 = smooth[j - 1] - thr[j - 1], smooth[j] - thr[j]
            t = y0 / (y0 - y1) if y0 != y1 else 0.0
            f_cut = freq[j - 1] + t * (freq[j] - freq[j - 1])
    resolution = float(pixel_size_nm) / f_cut if f_cut > 0 else float("inf")
    if return_details:
        return resolution, {"freq": freq, "frc": frc, "threshold": thr, "f_cut": f_cut}
    return resolution
