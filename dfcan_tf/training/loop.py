"""Training any registered network at the paper's recipe: resumable, observable, distributable (``docs/training.md``).

:func:`train` turns a :class:`~dfcan_tf.training.config.TrainConfig` and training data
into a run folder (see :mod:`dfcan_tf.runs`)::

    RUN/
      config.json                      model, training recipe, data (paths, normalisation)
      weights/best.weights.h5          SR network (DFGAN: generator) at the best validation NRMSE
      weights/last.*, ckpt-*, last.state.json   the last checkpoint (:mod:`dfcan_tf.training.checkpoint`)
      history.csv                      one row per validation (written with each checkpoint)
      .dfcan-train.lock                flock held by the `dfcan train` writing the folder (:mod:`.lock`)
      logs/                            TensorBoard: losses, metrics, learning rates, sample images
      samples/step_NNNNNNN.png         input | output | GT with metrics

The pieces: batches (:mod:`.sources`, a pure function of ``(seed, step)``),
the trainable wrappers (:mod:`.trainers`), devices (:mod:`.distribute`), the
learning-rate rule (:mod:`.schedule`) and checkpoints (:mod:`.checkpoint`);
:class:`TrainingLoop` drives them.

Safety: one ``dfcan train`` per run folder; NaN or infinite training data are
refused naming the file; a non-finite loss or validation metric stops training
with the last good checkpoint untouched; a Ctrl-C that cuts a validation short
rolls it back and the resumed run redoes it, so its history equals an
uninterrupted one.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dfcan_tf.data.files import atomic_path
from dfcan_tf.errors import DfcanError
from dfcan_tf.runs import read_run_config, save_weights, write_config
from dfcan_tf.training import losses
from dfcan_tf.training.checkpoint import Checkpointer, read_history
from dfcan_tf.training.config import (
    PRECISIONS,
    TrainConfig,
    config_from_doc,
    train_section,
)
from dfcan_tf.training.distribute import make_strategy, worker
from dfcan_tf.training.lock import LOCK_NAME, lock_run, missing_ancestor, undo_new_run
from dfcan_tf.training.samples import bicubic_nrmse, sample_figure
from dfcan_tf.training.schedule import PlateauSchedule
from dfcan_tf.training.sources import resolve_data, train_dataset
from dfcan_tf.training.trainers import (
    build_trainer,
    get_lr,
    load_init_generator,
    set_lr,
)

# What may differ between the sessions of one run: how long, and on which devices.
RESUMABLE_CHANGES = ("steps", "strategy")

__all__ = ["LOCK_NAME", "TrainResult", "TrainingLoop", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    step: int
    lr: float
    best_nrmse: float
    bicubic_nrmse: float
    history: list[dict] = field(default_factory=list)
    d_lr: float | None = None


# --------------------------------------------------------------------------- training


def train(
    config: TrainConfig | None,
    run_dir: str | os.PathLike,
    *,
    data: Any = None,
    resume: bool = False,
    normalization: str = "minmax",
    task: str | None = None,
    pixel_size_nm: float | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a network (DFCAN, DFGAN or any registered architecture) into the run folder ``run_dir``.

    The recipe is described in ``docs/training.md``.

    Parameters
    ----------
    config
        The recipe and the network. The model's ``input_channels`` and
        ``scale`` must match the data. With ``resume=True`` it may be ``None``
        (the run's own configuration is used) or differ from it only in
        ``steps`` (to train longer) and ``strategy`` (other devices).
    run_dir
        The run folder; must not exist (or be empty) unless ``resume``.
    data
        A DL-SR patch folder (``training_wf/`` or ``training/``, ``training_gt/``,
        ``validate_wf/`` or ``validate/``, ``validate_gt/``), an ``.npz`` file
        with ``x_train, y_train, x_val, y_val``, or those four arrays as a
        tuple (inputs ``(N, h, w, C)``, GT ``(N, s·h, s·w[, 1])``). On resume,
        defaults to the path recorded in ``config.json``.
    resume
        Continue ``run_dir`` from its last checkpoint: same step count,
        learning rates, optimizer moments and plateau counters.
    normalization
        ``"minmax"`` (per patch, 0–100th percentile) or ``"divide65535"``.
    task
        Patch folders only: ``"sisr"`` (wide-field input, ``training_wf/``) or
        ``"sim"`` (raw frames, ``training/``); default from the model's input channels.
    pixel_size_nm
        Input pixel size, recorded in ``config.json`` for prediction and export.
    stop_at
        Stop after this global step as if interrupted (a ``last`` checkpoint is
        written); ``resume=True`` continues from there.
    progress
        Show the progress bar and per-validation summary lines.

    Returns
    -------
    TrainResult
        Final step, learning rate(s), best validation NRMSE, the bicubic
        baseline NRMSE on the same validation patches, and the history rows.
    """
    run_dir = Path(run_dir)
    doc = None
    if stop_at is not None and (not isinstance(stop_at, int) or stop_at < 1):
        raise DfcanError(f"stop_at must be a positive step number. Received: stop_at={stop_at!r}")
    if resume:
        doc, _ = read_run_config(run_dir)
        saved = config_from_doc(doc)
        if config is None:
            config = saved
        else:
            diff = sorted(k for k, v in config.to_dict().items()
                          if k not in RESUMABLE_CHANGES and saved.to_dict()[k] != v)
            if diff:
                raise DfcanError(f"{run_dir}: cannot resume with a different configuration (differs in {diff}); "
                                 f"only {RESUMABLE_CHANGES} may change")
        saved_data = doc.get("data") or {}
        normalization = saved_data.get("normalization", normalization)
        task = saved_data.get("task", task)
        if data is None:
            if saved_data.get("path") is None:
                raise DfcanError(f"{run_dir}: this run was trained on in-memory arrays; pass data= to resume it")
            data = saved_data["path"]
    elif config is None:
        raise DfcanError("config is required for a new run")
    if data is None:
        raise DfcanError("no training data given")
    cfg = config

    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy = make_strategy(cfg.strategy)
    is_chief, task_id = worker(strategy)
    out_dir = run_dir if is_chief else run_dir / f".worker-{task_id}"
    created_from = None if resume else missing_ancestor(out_dir)
    # One `dfcan train` per run folder: a second one (new run or --resume) is refused, not interleaved.
    lock = lock_run(out_dir, create=not resume)
    try:
        return _train_locked(cfg, run_dir, out_dir, is_chief, strategy, doc, data, resume, normalization,
                             task, pixel_size_nm, stop_at, progress)
    except BaseException:
        if not resume and not (out_dir / "config.json").exists():
            undo_new_run(out_dir, created_from)
        raise
    finally:
        lock.close()


def _train_locked(cfg, run_dir, out_dir, is_chief, strategy, doc, data, resume, normalization, task,
                  pixel_size_nm, stop_at, progress) -> TrainResult:
    """:func:`train` once the run folder's lock is held."""
    if not resume and any(not p.name.startswith(".worker-") and p.name != LOCK_NAME for p in out_dir.iterdir()):
        raise DfcanError(f"{out_dir}: run folder exists and is not empty; resume it or choose a new folder")

    if task is None:
        task = "sisr" if cfg.model.input_channels == 1 else "sim"
    if task not in ("sisr", "sim"):
        raise DfcanError(f"task must be 'sisr' or 'sim'. Received: task={task!r}")
    train_src, val_src, data_info = resolve_data(data, normalization, task)
    for src in (train_src, val_src):
        if src.channels != cfg.model.input_channels or src.scale != cfg.model.scale:
            raise DfcanError(f"{src.name}: data have {src.channels} input channel(s) at scale {src.scale}, the model "
                             f"expects {cfg.model.input_channels} at scale {cfg.model.scale}")
    if min(train_src.size) < cfg.patch_size:
        raise DfcanError(f"{train_src.name}: training patches of {train_src.size} are smaller than "
                         f"patch_size={cfg.patch_size}")
    data_info.update({
        "task": task,
        "input_channels": cfg.model.input_channels, "scale": cfg.model.scale,
        "normalization": normalization, "pixel_size_nm": pixel_size_nm,
        "n_train": len(train_src), "n_validate": min(len(val_src), cfg.validate_patches),
    })
    if resume and doc is not None:
        data_info = {**data_info, **{k: v for k, v in (doc.get("data") or {}).items() if k == "pixel_size_nm"}}

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[cfg.precision])
    try:
        loop = TrainingLoop(cfg, run_dir, out_dir, strategy, is_chief=is_chief, progress=progress)
        loop.prepare(train_src, val_src, data_info, resume=resume)
        return loop.run(stop_at=stop_at)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)



# --------------------------------------------------------------------------- the loop


class TrainingLoop:
    """One training session of a run folder: build, restore or start, then step, validate and checkpoint.

    Parameters
    ----------
    cfg
        The recipe and the network.
    run_dir, out_dir
        The run folder, and where this process writes (the run folder on the
        chief, ``RUN/.worker-<id>/`` on other workers).
    strategy
        The ``tf.distribute`` strategy (build inside its scope).
    is_chief
        Whether this process writes the run folder's history, logs and samples.
    progress
        Show the progress bar and per-validation summary lines.

    Notes
    -----
    A validation computes everything first and commits at the end, in memory
    (state, schedules and learning rates, then the history row: the marker of
    a completed validation) and on disk (:meth:`Checkpointer.commit`), so that
    an interrupted validation is either wholly done or wholly redone.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, out_dir: Path, strategy, *, is_chief: bool = True,
                 progress: bool = True):
        self.cfg, self.run_dir, self.out_dir = cfg, Path(run_dir), Path(out_dir)
        self.strategy, self.is_chief, self.progress = strategy, is_chief, progress
        self.is_gan = cfg.mode == "dfgan"
        keras.utils.set_random_seed(cfg.seed)
        with strategy.scope():
            self.trainer = build_trainer(cfg)
        self.network = self.trainer.network
        self.opts = self.trainer.training_optimizers()
        self.g_key = next(iter(self.opts))
        networks = {"weights": self.network}
        if self.is_gan:
            networks["discriminator.weights"] = self.trainer.discriminator
        self.checkpointer = Checkpointer(out_dir, networks, self.opts, write_history_file=is_chief)
        self.step = 0
        self.best_nrmse = math.inf
        self.elapsed_s = 0.0
        self.window: dict[str, list[float]] = {}  # training losses since the last validation
        self.history: list[dict] = []
        self.pending = False  # resumed from a Ctrl-C that cut short the validation of the checkpoint's step
        self.schedules = self._schedules(math.inf, 0)
        self._t_session = time.perf_counter()

    # -- setting up ------------------------------------------------------------------------------
    def _schedules(self, best: float, wait: int) -> dict[str, PlateauSchedule]:
        cfg = self.cfg
        return {k: PlateauSchedule(cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_min_delta,
                                   cfg.min_d_lr if k == "discriminator" else cfg.min_lr, get_lr(o), best, wait)
                for k, o in self.opts.items()}

    def prepare(self, train_src, val_src, data_info: dict, *, resume: bool) -> None:
        """Restore the last checkpoint (``resume``) or write the new run's ``config.json``; load validation data."""
        cfg = self.cfg
        if resume:
            state = self.checkpointer.restore(f"the network of {self.run_dir / 'config.json'}")
            iters = int(keras.ops.convert_to_numpy(self.opts[self.g_key].iterations))
            if iters != state["step"] * (cfg.g_updates if self.is_gan else 1):
                raise DfcanError(f"{self.checkpointer.state_path}: the checkpoint is inconsistent (step "
                                 f"{state['step']} but the optimizer made {iters} updates)")
            self.step = state["step"]
            self.best_nrmse = float(state.get("best_nrmse", math.inf))
            self.elapsed_s = float(state.get("elapsed_s", 0.0))
            self.window = {k: [float(x) for x in v] for k, v in state.get("window", {}).items()}
            self.pending = bool(state.get("pending_validation", False))
            self.schedules = self._schedules(float(state.get("plateau_best", math.inf)),
                                             int(state.get("plateau_wait", 0)))
            if self.is_chief and cfg != config_from_doc(read_run_config(self.run_dir)[0]):
                doc, _ = read_run_config(self.run_dir)  # steps or strategy changed: record what this session runs
                write_config(self.run_dir, cfg.model, train=train_section(cfg), data=doc.get("data"),
                             extra={"discriminator": doc["discriminator"]} if "discriminator" in doc else None)
        else:
            if self.is_gan and cfg.init_generator:
                load_init_generator(self.network, cfg.init_generator)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            extra = {"discriminator": cfg.discriminator.to_dict()} if self.is_gan else None
            write_config(self.out_dir, cfg.model, train=train_section(cfg), data=data_info, extra=extra)
        self.history = read_history(self.out_dir / "history.csv", self.step) if self.is_chief else []
        if self.pending:  # its row, if any, is redone
            self.history = [r for r in self.history if r["step"] < self.step]
        self.val_x, self.val_y = val_src.head(cfg.validate_patches)
        self.bicubic = bicubic_nrmse(self.val_x, self.val_y)
        self.data_errors: list[str] = []
        self.iterator = iter(train_dataset(train_src, cfg, self.step, self.strategy, self.data_errors))
        self._committed = self._snapshot()

        trainer, strategy, network = self.trainer, self.strategy, self.network

        @tf.function
        def train_fn(it):
            logs = strategy.run(trainer.train_step, args=(next(it),))
            return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in logs.items()}

        @tf.function(reduce_retracing=True)
        def predict_fn(x):
            return tf.cast(network(x, training=False), tf.float32)

        self.train_fn, self.predict_fn = train_fn, predict_fn

    # -- pieces ------------------------------------------------------------------------------------
    def _snapshot(self) -> dict:
        """What the last completed validation left: restored if Ctrl-C cuts one short."""
        return {"best_nrmse": self.best_nrmse, "schedules": {k: s.copy() for k, s in self.schedules.items()}}

    def _elapsed(self) -> float:
        return self.elapsed_s + time.perf_counter() - self._t_session

    def lr(self, key: str | None = None) -> float:
        """The current learning rate of the network's (or ``key``'s) optimizer."""
        return get_lr(self.opts[key or self.g_key])

    def is_validation_step(self, s: int) -> bool:
        return s % self.cfg.validate_every == 0 or s == self.cfg.steps

    def checkpoint(self, step: int, pending_validation: bool = False) -> None:
        """Commit checkpoint ``step`` (kill-safe; see :mod:`dfcan_tf.training.checkpoint`)."""
        g = self.schedules[self.g_key]
        state = {"best_nrmse": self.best_nrmse, "plateau_best": g.best, "plateau_wait": g.wait,
                 "elapsed_s": self._elapsed(), "window": self.window, "pending_validation": pending_validation,
                 "replicas": int(self.strategy.num_replicas_in_sync), "lr": self.lr(),
                 **({"d_lr": self.lr("discriminator")} if self.is_gan else {})}
        self.checkpointer.commit(step, self.history, state)

    def validate(self) -> tuple[dict, np.ndarray]:
        """Validation metrics (means over the validation patches) and the outputs."""
        bs = max(1, self.cfg.batch_size)
        sr = np.concatenate([self.predict_fn(tf.constant(self.val_x[i:i + bs])).numpy()
                             for i in range(0, len(self.val_x), bs)])
        m = losses.image_metrics(self.val_y, sr)
        return {k: float(np.mean(v.numpy())) for k, v in m.items()}, sr

    def write_sample(self, step: int) -> None:
        sr0 = self.predict_fn(tf.constant(self.val_x[:1])).numpy()[0]
        png, _ = sample_figure(self.val_x[0], sr0, self.val_y[0], step)
        with atomic_path(self.out_dir / "samples" / f"step_{step:07d}.png") as tmp:
            tmp.write_bytes(png)
        tf.summary.image("samples/input_output_gt", tf.image.decode_png(png)[None], step=step)

    def last_good(self) -> str:
        if not self.checkpointer.exists():
            return "No checkpoint was written."
        return f"The run keeps its last good checkpoint (step {self.checkpointer.read_state()['step']})."

    def validation(self, step: int) -> None:
        """Validate at ``step``, update the best NRMSE and the learning rates, commit a checkpoint."""
        metrics, _ = self.validate()
        nrmse = metrics["nrmse"]
        if not math.isfinite(nrmse):
            raise DfcanError(f"step {step}: the validation NRMSE is {nrmse} (the network outputs non-finite "
                             f"values); training diverged. {self.last_good()} Start a new run with a lower --lr")
        improved = nrmse < self.best_nrmse
        best = nrmse if improved else self.best_nrmse
        schedules = {k: s.copy() for k, s in self.schedules.items()}
        lrs = {k: s.update(nrmse) for k, s in schedules.items()}
        w = self.window
        row = {"step": step, "time_s": self._elapsed(), "lr": lrs[self.g_key],
               "d_lr": lrs["discriminator"] if self.is_gan else None,
               "loss": float(np.mean(w["loss"])) if w.get("loss") else float("nan"),
               "d_loss": float(np.mean(w["d_loss"])) if w.get("d_loss") else None,
               "g_adv": float(np.mean(w["g_adv"])) if w.get("g_adv") else None,
               **{f"val_{k}": v for k, v in metrics.items()}, "best_nrmse": best}
        for k, v in metrics.items():
            tf.summary.scalar(f"val/{k}", v, step=step)
        tf.summary.scalar("val/lr", row["lr"], step=step)
        if self.is_chief and improved:
            save_weights(self.network, self.out_dir / "weights" / "best.weights.h5")
        self.best_nrmse, self.schedules = best, schedules
        for k, v in lrs.items():
            set_lr(self.opts[k], v)
        self.history.append(row)
        self.window.clear()
        self._committed = self._snapshot()
        self.checkpoint(step)
        if self.progress and self.is_chief:
            from tqdm.auto import tqdm

            tqdm.write(f"step {step}/{self.cfg.steps}: val NRMSE {nrmse:.4f}  SSIM {metrics['ssim']:.4f}  "
                       f"PSNR {metrics['psnr']:.2f} dB  MSE {metrics['mse']:.2e}  loss {row['loss']:.4f}  "
                       f"lr {row['lr']:.2e}" + ("  (best)" if improved else ""))

    def train_step(self) -> dict[str, float]:
        """One global training step; its (replica-mean) losses."""
        logs = {k: float(v) for k, v in self.train_fn(self.iterator).items()}
        if self.data_errors:
            raise DfcanError(f"{self.data_errors[0]}. {self.last_good()}")
        bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
        if bad:
            raise DfcanError(f"step {self.step + 1}: training diverged, the training loss is not finite "
                             f"({', '.join(f'{k}={v}' for k, v in bad.items())}). {self.last_good()} "
                             f"Start a new run with a lower --lr, or check the training data")
        self.step += 1
        for k, v in logs.items():
            self.window.setdefault(k, []).append(v)
        return logs

    def _log(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            tf.summary.scalar(f"train/{k}", v, step=self.step)
        tf.summary.scalar("train/lr", self.lr(), step=self.step)
        if self.is_gan:
            tf.summary.scalar("train/d_lr", self.lr("discriminator"), step=self.step)

    def _interrupted(self) -> None:
        """Ctrl-C: checkpoint the steps applied, rolling back a validation cut short (the resumed run redoes it)."""
        # A step's tf.function call is never cut short, but Ctrl-C may land after it returned and before
        # `step` was counted: the optimizer's own counter says how many steps were applied.
        done = int(keras.ops.convert_to_numpy(self.opts[self.g_key].iterations)) // (
            self.cfg.g_updates if self.is_gan else 1)
        completed = bool(self.history) and self.history[-1]["step"] == done
        unfinished = self.is_validation_step(done) and not completed
        if unfinished:
            self.best_nrmse = self._committed["best_nrmse"]
            self.schedules = {k: s.copy() for k, s in self._committed["schedules"].items()}
            for k, s in self.schedules.items():
                set_lr(self.opts[k], s.lr)
        elif completed:
            self.window.clear()
        self.checkpoint(done, pending_validation=unfinished)
        if self.is_chief:
            from tqdm.auto import tqdm

            tqdm.write(f"interrupted: checkpoint at step {done}; continue with --resume {self.run_dir}",
                       file=sys.stderr)

    def run(self, stop_at: int | None = None) -> TrainResult:
        """Train to ``cfg.steps`` (or stop after ``stop_at`` with a checkpoint); return the result."""
        from tqdm.auto import tqdm

        cfg, chief = self.cfg, self.is_chief
        writer = (tf.summary.create_file_writer(str(self.out_dir / "logs")) if chief
                  else tf.summary.create_noop_writer())
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and chief), desc=cfg.mode)
        if self.progress and chief and self.step == 0:
            tqdm.write(f"validation: {len(self.val_x)} patches; bicubic-upsampled input NRMSE {self.bicubic:.4f}")
        try:
            with writer.as_default():
                if self.pending:  # finish what the interrupted session left undone at this step
                    if self.step % cfg.sample_every == 0 and chief:
                        self.write_sample(self.step)
                    self.validation(self.step)
                    writer.flush()
                while self.step < cfg.steps:
                    logs = self.train_step()
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()} | {"lr": f"{self.lr():.1e}"},
                                    refresh=False)
                    if self.step % cfg.log_every == 0:
                        self._log(logs)
                    if self.step % cfg.sample_every == 0 and chief:
                        self.write_sample(self.step)
                    if self.is_validation_step(self.step):
                        self.validation(self.step)
                        writer.flush()
                    if stop_at is not None and self.step >= stop_at and self.step < cfg.steps:
                        self.checkpoint(self.step)
                        break
        except KeyboardInterrupt:
            self._interrupted()
            raise
        finally:
            bar.close()
            writer.close()
        return TrainResult(run_dir=self.run_dir, step=self.step, lr=self.lr(), best_nrmse=self.best_nrmse,
                           bicubic_nrmse=self.bicubic, history=self.history,
                           d_lr=self.lr("discriminator") if self.is_gan else None)
