"""The trainable wrappers: one network (:class:`DFCANTrainer`) or a generator and a discriminator (:class:`DFGAN`).

The SR network is wrapped in a small :class:`keras.Model` whose ``train_step``
does one update, or two networks in :class:`DFGAN`, whose ``train_step``
updates the discriminator once and the generator ``g_updates`` times. Both also
work with ``model.fit``; the training loop calls ``train_step`` itself through
``strategy.run`` so that it controls validation, checkpoints and the step
counter. :func:`build_trainer` builds any registered architecture's network
(``docs/networks.md``) with the recipe its :class:`TrainConfig` records
(``docs/training.md#recipe``, ``docs/networks.md#training-recipes``): content
loss by name (:func:`dfcan_tf.training.losses.content_loss`), Adam or SGD, and
for adversarial training DFGAN's discriminator or Pix2Pix's PatchGAN.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from dfcan_tf.errors import DfcanError
from dfcan_tf.nets import registry
from dfcan_tf.nets.base import BicubicUpsample
from dfcan_tf.nets.discriminators import build_discriminator
from dfcan_tf.nets.pix2pix import PatchGANConfig
from dfcan_tf.nets.pix2pix import build_discriminator as build_patchgan
from dfcan_tf.training import losses
from dfcan_tf.training.config import SGD_MOMENTUM, TrainConfig
from dfcan_tf.training.distribute import replicas

__all__ = ["DFGAN", "DFCANTrainer", "build_trainer", "get_lr", "load_init_generator", "make_optimizer", "set_lr"]


def _bce(target: float, output: tf.Tensor, from_logits: bool = False) -> tf.Tensor:
    """Mean binary cross-entropy of probabilities (Keras' epsilon clipping) or logits against a constant label.

    The mean runs over everything: the batch and, for a PatchGAN, every patch.
    """
    output = tf.cast(output, tf.float32)
    labels = tf.fill(tf.shape(output), target)
    if from_logits:
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=output))
    return tf.reduce_mean(keras.losses.binary_crossentropy(labels, output))


class DFCANTrainer(keras.Model):
    """One-network training wrapper: ``train_step`` is one optimiser update on the content loss.

    DFCAN's recipe is ``MSE + 0.1·(1 − SSIM)`` (``loss="mse_ssim"``); the
    comparison networks' own recipes use ``"mse"`` or ``"mae"``.

    Parameters
    ----------
    network
        The SR network (``input → SR``).
    loss, loss_weight
        Content loss name (:data:`dfcan_tf.training.losses.LOSSES`) and its weight.
    mse_weight, ssim_weight
        Weights inside ``"mse_ssim"`` (1 and 0.1).

    Notes
    -----
    ``compile(optimizer=...)`` before use. ``train_step`` takes ``(x, y)`` of
    shapes ``(N, h, w, C)`` / ``(N, sh, sw, 1)`` or, as the training driver
    feeds it, ``(1, N, ...)``.
    """

    def __init__(self, network: keras.Model, *, loss: str = "mse_ssim", loss_weight: float = 1.0,
                 mse_weight: float = 1.0, ssim_weight: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.loss_name = loss
        self.loss_weight = float(loss_weight)
        self.mse_weight = float(mse_weight)
        self.ssim_weight = float(ssim_weight)

    def content_loss(self, y: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        """``loss_weight ·`` the named content loss of a batch."""
        return self.loss_weight * losses.content_loss(self.loss_name, y, sr, mse_weight=self.mse_weight,
                                                      ssim_weight=self.ssim_weight)

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def training_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {"network": self.optimizer}

    def train_step(self, data):
        x, y = data
        if x.shape.rank == 5:
            x, y = x[0], y[0]
        with tf.GradientTape() as tape:
            sr = self.network(x, training=True)
            loss = self.content_loss(y, sr)
            scaled = self.optimizer.scale_loss(loss / replicas())
        grads = tape.gradient(scaled, self.network.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.network.trainable_variables))
        return {"loss": loss}


class DFGAN(keras.Model):
    """Generator and discriminator trained adversarially: DFGAN, and Pix2Pix with its PatchGAN (``docs/training.md``).

    Per ``train_step`` (one iteration): the discriminator is updated once on
    real GT (label 1) and generated images (label 0) with binary
    cross-entropy, halved; then the generator is updated ``g_updates`` times on
    ``adversarial_weight · BCE(D(G(x)), 1) + loss_weight · content loss``
    (DFGAN: ``0.1 · BCE + MSE + 0.1 · (1 − SSIM)``, 3 updates; Pix2Pix:
    ``BCE + 100 · L1``, 1 update) with the discriminator's weights fixed.
    Each update uses its own batch: ``data`` is ``(x, y)`` of shapes
    ``(1 + g_updates, N, ...)``; a plain ``(N, ...)`` batch is reused for every update.

    Parameters
    ----------
    generator, discriminator
        The two networks. DFGAN's discriminator maps an SR image to a
        probability; a ``conditional`` one (PatchGAN) sees the bicubic-upsampled
        input concatenated with the SR image and outputs per-patch logits
        (``from_logits``), the BCE averaging over patches.
    scale
        The generator's scale (upsamples the condition).

    Notes
    -----
    Both networks run with ``training=True`` in every update (batch
    statistics and dropout, as Pix2Pix trains; DFGAN's networks have neither).
    ``compile(g_optimizer=..., d_optimizer=...)`` before use.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, *, g_updates: int = 3,
                 adversarial_weight: float = 0.1, loss: str = "mse_ssim", loss_weight: float = 1.0,
                 mse_weight: float = 1.0, ssim_weight: float = 0.1, conditional: bool = False,
                 from_logits: bool = False, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.g_updates = int(g_updates)
        self.adversarial_weight = float(adversarial_weight)
        self.loss_name = loss
        self.loss_weight = float(loss_weight)
        self.mse_weight = float(mse_weight)
        self.ssim_weight = float(ssim_weight)
        self.conditional = bool(conditional)
        self.from_logits = bool(from_logits)
        self.upsample = BicubicUpsample(int(scale), name="condition_upsample") if conditional else None

    def judge(self, x: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
        """The discriminator's output for SR-grid ``image`` (conditioned on input ``x`` when ``conditional``)."""
        if self.conditional:
            cond = tf.cast(self.upsample(x), image.dtype)
            image = tf.concat([cond, image], axis=-1)
        return self.discriminator(image, training=True)

    @property
    def network(self) -> keras.Model:
        return self.generator

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def compile(self, g_optimizer=None, d_optimizer=None, **kwargs):
        super().compile(optimizer=g_optimizer, **kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    def training_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {"generator": self.g_optimizer, "discriminator": self.d_optimizer}

    def train_step(self, data):
        x, y = data
        if x.shape.rank == 4:
            x = tf.stack([x] * (1 + self.g_updates))
            y = tf.stack([y] * (1 + self.g_updates))
        n_rep = replicas()
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables

        logits = self.from_logits
        fake = tf.stop_gradient(self.generator(x[0], training=True))
        with tf.GradientTape() as tape:
            real_p = self.judge(x[0], tf.cast(y[0], fake.dtype))
            fake_p = self.judge(x[0], fake)
            # Mean over the concatenated real+fake batch, as the authors' train_on_batch (Pix2Pix: halved D loss).
            d_loss = 0.5 * (_bce(1.0, real_p, logits) + _bce(0.0, fake_p, logits))
            scaled = self.d_optimizer.scale_loss(d_loss / n_rep)
        grads = tape.gradient(scaled, d_vars)
        self.d_optimizer.apply_gradients(zip(grads, d_vars))

        g_total = g_adv = 0.0
        for u in range(1, 1 + self.g_updates):
            with tf.GradientTape() as tape:
                sr = self.generator(x[u], training=True)
                adv = _bce(1.0, self.judge(x[u], sr), logits)
                content = self.loss_weight * losses.content_loss(self.loss_name, y[u], sr, mse_weight=self.mse_weight,
                                                                 ssim_weight=self.ssim_weight)
                g_loss = self.adversarial_weight * adv + content
                scaled = self.g_optimizer.scale_loss(g_loss / n_rep)
            grads = tape.gradient(scaled, g_vars)
            self.g_optimizer.apply_gradients(zip(grads, g_vars))
            g_total += g_loss
            g_adv += adv
        return {"loss": g_total / self.g_updates, "g_adv": g_adv / self.g_updates, "d_loss": d_loss}


def make_optimizer(lr: float, cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """``cfg.optimizer`` at learning rate ``lr``: Adam (``cfg.beta_1``, ``cfg.beta_2``) or SGD with momentum 0.9."""
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=lr, momentum=SGD_MOMENTUM)
    else:
        opt = keras.optimizers.Adam(learning_rate=lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2)
    if cfg.mixed_precision:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def _fourier_attention_in_float32(network: keras.Model) -> None:
    """Under mixed precision, run Fourier channel attention in float32.

    ``tf.signal.fft2d`` has no half-precision kernel, and the spectrum's
    dynamic range (gamma-compressed magnitudes summed over the patch) is what
    float32 is for; the convolutions around it stay in float16.
    """
    from dfcan_tf.nets.layers import FourierChannelAttention

    for layer in network._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, FourierChannelAttention):
            for sub in layer._flatten_layers(include_self=True, recursive=True):
                sub.dtype_policy = "float32"


def build_trainer(cfg: TrainConfig) -> keras.Model:
    """The compiled :class:`DFCANTrainer` or :class:`DFGAN` for ``cfg`` (build inside a strategy scope).

    ``cfg.discriminator`` picks the adversarial pair's discriminator: DFGAN's,
    or a PatchGAN (conditional, logits) for Pix2Pix.
    """
    network = registry.build(cfg.model)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        _fourier_attention_in_float32(network)
    loss = {"loss": cfg.loss, "loss_weight": cfg.loss_weight, "mse_weight": cfg.mse_weight,
            "ssim_weight": cfg.ssim_weight}
    if not cfg.adversarial:
        trainer = DFCANTrainer(network, **loss)
        trainer.compile(optimizer=make_optimizer(cfg.lr, cfg))
    else:
        patchgan = isinstance(cfg.discriminator, PatchGANConfig)
        disc = build_patchgan(cfg.discriminator) if patchgan else build_discriminator(cfg.discriminator)
        trainer = DFGAN(network, disc, g_updates=cfg.g_updates, adversarial_weight=cfg.adversarial_weight,
                        conditional=patchgan, from_logits=patchgan, scale=cfg.model.scale, **loss)
        trainer.compile(g_optimizer=make_optimizer(cfg.lr, cfg), d_optimizer=make_optimizer(cfg.d_lr, cfg))
        trainer.d_optimizer.build(disc.trainable_variables)
    opts = trainer.training_optimizers()
    first = next(iter(opts.values()))
    first.build(network.trainable_variables)
    return trainer


def set_lr(opt: keras.optimizers.Optimizer, value: float) -> None:
    """Set an optimizer's learning rate."""
    opt.learning_rate = value


def get_lr(opt: keras.optimizers.Optimizer) -> float:
    """An optimizer's learning rate as a float."""
    return float(keras.ops.convert_to_numpy(opt.learning_rate))


def load_init_generator(generator: keras.Model, source: str) -> None:
    """Start a DFGAN generator from a run folder's (best, else last) or a file's weights."""
    from dfcan_tf.runs import weights_path

    path = Path(source)
    if path.is_dir():
        path = weights_path(path, "best") if weights_path(path, "best").exists() else weights_path(path, "last")
    if not path.exists():
        raise DfcanError(f"{source}: no weights to start the generator from")
    try:
        generator.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - keras/h5py raise several types on mismatch
        raise DfcanError(f"{path}: cannot start the generator from these weights; the network must have the "
                         f"generator's shape ({type(exc).__name__}: {exc})") from None
