"""The input pipeline: (input, GT) batches from DL-SR patch folders, as ``tf.data``.

Reads the folders :func:`dfcan_tf.data.patches.make_patches` writes (the layout of
the authors' DL-SR code)::

    <root>/training/<id>/01.tif .. NN.tif   raw SIM frames  -> SIM input (h, w, NN)
    <root>/training_wf/<id>.tif             WF patch        -> SISR input (h, w, 1)
    <root>/training_gt/<id>.tif             GT patch        -> target (s·h, s·w, 1)
    (validate/, validate_wf/, validate_gt/ likewise)

A multi-page TIFF ``training/<id>.tif`` is accepted in place of a frame folder.
Inputs and targets are normalised per patch (``docs/data.md#normalisation``): min-max to [0, 1]
(over all channels of a SIM input together), or divided by 65535 with
``normalize=False``. Files are decoded in parallel threads, optionally cached in
memory, shuffled, augmented with the same random flip / rot90 on input and GT,
batched and prefetched. :func:`load_patch_arrays` gives the same data as numpy
arrays (validation sets, notebooks). :func:`make_dataset` is for users who
feed a patch folder to their own Keras ``fit``; ``dfcan train`` reads patches
through :mod:`dfcan_tf.training.sources` (which ``dfcan benchmark data`` times).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dfcan_tf.data.patches import minmax
from dfcan_tf.errors import DfcanError

TASKS = ("sisr", "sim")
SPLITS = ("training", "validate")


def list_patches(
    folder_root: str | os.PathLike, split: str = "training", task: str = "sisr"
) -> list[tuple[list[Path], Path]]:
    """List (input files, GT file) pairs of a patch folder.

    Parameters
    ----------
    folder_root
        Folder holding ``training/``, ``training_wf/``, ``training_gt/``, ...
    split
        ``"training"`` or ``"validate"``.
    task
        ``"sisr"`` (WF input) or ``"sim"`` (raw frames as channels).

    Returns
    -------
    list of (list of pathlib.Path, pathlib.Path)
        Input file(s) — one WF file, the frame files in order, or one
        multi-page TIFF — and the GT file, sorted by patch name.

    Raises
    ------
    DfcanError
        Unknown split/task, missing folder, no patches, or an input without GT.
    """
    if split not in SPLITS:
        raise DfcanError(f"split must be one of {SPLITS}. Received: split={split!r}")
    if task not in TASKS:
        raise DfcanError(f"task must be one of {TASKS}. Received: task={task!r}")
    root = Path(folder_root)
    in_dir = root / (f"{split}_wf" if task == "sisr" else split)
    gt_dir = root / f"{split}_gt"
    for d in (in_dir, gt_dir):
        if not d.is_dir():
            raise DfcanError(f"{d}: no such folder (expected the patch layout of dfcan patches)")
    pairs: list[tuple[list[Path], Path]] = []
    for entry in sorted(in_dir.iterdir()):
        if entry.is_dir():
            frames = sorted(entry.glob("*.tif*"), key=lambda p: (len(p.stem), p.stem))  # 2 before 10
            if not frames:
                raise DfcanError(f"{entry}: patch folder without frame TIFFs")
            name = entry.name
            inputs = frames
        elif entry.suffix.lower() in (".tif", ".tiff"):
            name = entry.stem
            inputs = [entry]
        else:
            continue
        gt = gt_dir / f"{name}.tif"
        if not gt.is_file():
            raise DfcanError(f"{gt}: missing GT for the input {entry}")
        pairs.append((inputs, gt))
    if not pairs:
        raise DfcanError(f"{in_dir}: no patches found")
    return pairs


def read_pair(inputs: list[Path], gt: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one patch pair as ``(input (h, w, C), gt (sh, sw, 1))`` float32 in the files' own intensities.

    Training (:class:`dfcan_tf.training.sources.FolderSource`) normalises the
    crops it cuts from these; :func:`load_pair` normalises whole patches.
    """
    import tifffile

    try:
        frames = [tifffile.imread(p) for p in inputs]
        y = tifffile.imread(gt).astype(np.float32)
    except Exception as exc:  # corrupt TIFF: name the patch
        raise DfcanError(f"{inputs[0].parent if len(inputs) > 1 else inputs[0]}: unreadable patch ({exc})") from None
    for arr, path in [*zip(frames, inputs), (y, gt)]:
        if arr.ndim < 2 or arr.size == 0:  # tifffile returns an empty array for some corrupt files
            raise DfcanError(f"{path}: unreadable patch (no image data)")
    x = np.stack(frames) if len(frames) > 1 else frames[0]
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x[None]
    x = np.moveaxis(x, 0, -1)  # frames become channels
    return x.astype(np.float32), y[..., None].astype(np.float32)


def load_pair(inputs: list[Path], gt: Path, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read one patch pair as ``(input (h, w, C), gt (sh, sw, 1))`` float32, normalised (see ``docs/data.md``)."""
    x, y = read_pair(inputs, gt)
    if normalize:
        x, y = minmax(x), minmax(y)
    else:
        x, y = x / 65535.0, y / 65535.0
    return x.astype(np.float32), y.astype(np.float32)


def load_patch_arrays(
    folder_root: str | os.PathLike,
    split: str = "validate",
    task: str = "sisr",
    *,
    normalize: bool = True,
    limit: int | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a split into memory as numpy arrays.

    Parameters
    ----------
    folder_root, split, task
        As :func:`list_patches`.
    normalize
        Per-patch min-max (default) or division by 65535.
    limit
        Read only the first ``limit`` patches (the paper validates on ≤ 500).
    threads
        Reader threads (default: CPU count).

    Returns
    -------
    x, y : numpy.ndarray
        (N, h, w, C) inputs and (N, sh, sw, 1) GT, float32.
    """
    pairs = list_patches(folder_root, split, task)[:limit]
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        loaded = list(pool.map(lambda p: load_pair(p[0], p[1], normalize), pairs))
    shapes = {(a.shape, b.shape) for a, b in loaded}
    if len(shapes) > 1:
        raise DfcanError(f"{folder_root}: patches of different shapes {sorted(shapes)} in {split}")
    return np.stack([a for a, _ in loaded]), np.stack([b for _, b in loaded])


def _augment(x, y, r):
    """The same random flip / rot90 (one of the 8 symmetries of the square) on input and GT."""
    import tensorflow as tf

    k = tf.cast(r % 4, tf.int32)
    x, y = tf.image.rot90(x, k), tf.image.rot90(y, k)
    flip = tf.equal((r // 4) % 2, 1)
    x = tf.cond(flip, lambda: tf.image.flip_left_right(x), lambda: x)
    y = tf.cond(flip, lambda: tf.image.flip_left_right(y), lambda: y)
    return x, y


def make_dataset(
    folder_root: str | os.PathLike,
    split: str = "training",
    task: str = "sisr",
    batch_size: int = 4,
    *,
    shuffle: bool = True,
    augment: bool = False,
    normalize: bool = True,
    repeat: bool = False,
    cache: bool = False,
    drop_remainder: bool = False,
    seed: int | None = 0,
    parallel: int | None = None,
):
    """Build a ``tf.data.Dataset`` of (input, GT) batches from a patch folder.

    Parameters
    ----------
    folder_root, split, task
        As :func:`list_patches`: ``task="sisr"`` gives 1-channel WF inputs,
        ``task="sim"`` the 9 (or 25) raw frames as channels.
    batch_size
        Patches per batch (the paper: 4 for DFCAN, 2 for DFGAN).
    shuffle
        Shuffle the patch order, anew every epoch.
    augment
        Random flip / rot90, the same for input and GT (square patches only).
    normalize
        Per-patch min-max to [0, 1] (``docs/data.md#normalisation``), else divide by 65535.
    repeat
        Repeat forever (for step-based training loops).
    cache
        Keep decoded patches in memory after the first pass.
    drop_remainder
        Drop a last, smaller batch.
    seed
        Seed of shuffling and augmentation (``None``: different every run).
    parallel
        Decoding threads (default: tf.data autotuning).

    Returns
    -------
    tf.data.Dataset
        Yields ``(x, y)``: float32 ``(B, h, w, C)`` and ``(B, s·h, s·w, 1)``.
    """
    import tensorflow as tf

    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DfcanError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    pairs = list_patches(folder_root, split, task)
    x0, y0 = load_pair(*pairs[0], normalize=normalize)
    if augment and (x0.shape[0] != x0.shape[1]):
        raise DfcanError(f"augment needs square patches; {pairs[0][1]} is {x0.shape[:2]}")

    def load(i):
        inputs, gt = pairs[int(i)]
        x, y = load_pair(inputs, gt, normalize)
        if x.shape != x0.shape or y.shape != y0.shape:
            raise DfcanError(f"{gt}: patch shape {x.shape}/{y.shape} differs from {x0.shape}/{y0.shape}")
        return x, y

    def tf_load(i):
        x, y = tf.numpy_function(load, [i], (tf.float32, tf.float32), stateful=False)
        x.set_shape(x0.shape)
        y.set_shape(y0.shape)
        return x, y

    autotune = tf.data.AUTOTUNE
    n = len(pairs)
    ds = tf.data.Dataset.range(n)
    if cache:
        ds = ds.map(tf_load, num_parallel_calls=parallel or autotune).cache()
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    else:
        if shuffle:  # shuffling indices before decoding keeps the buffer small
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(tf_load, num_parallel_calls=parallel or autotune, deterministic=True)
    if repeat:
        ds = ds.repeat()
    if augment:
        rand = tf.data.Dataset.random(seed=seed)
        ds = tf.data.Dataset.zip((ds, rand)).map(lambda xy, r: _augment(xy[0], xy[1], r),
                                                  num_parallel_calls=autotune)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(autotune)
