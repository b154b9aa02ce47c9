"""``dfcan train``: train a registered network into a run folder (``docs/training.md``).

``--architecture`` picks any registered network (default ``dfcan``).
``--recipe own`` (default) trains it with the loss and optimiser of its own
paper (its ``RECIPE``; Pix2Pix adversarially with its PatchGAN),
``--recipe dfcan`` with DFCAN's (MSE + 0.1·(1 − SSIM), Adam 1e-4) for a
like-for-like comparison (``docs/networks.md#training-recipes``); patch size,
batch and steps come from the flags either way. ``--mode dfgan`` trains
DFCAN's generator adversarially. The architecture flags (``--width`` …) apply
to the DFCAN family; ``--net KEY=VALUE`` sets any field of any network's
configuration. TensorFlow is imported only when the command runs.

On a patch folder ``dfcan patches`` wrote, the patch size and the input pixel
size default to what its ``patches.json`` records (``folder_settings``): a
``--patch-size`` larger than the folder's patches, or a ``--pixel-size-nm`` more
than 10 % off the folder's, is refused; a smaller patch size (random crops of
the patches) is accepted with a note (``docs/own-data.md#training-on-your-own-pairs``).
"""

from __future__ import annotations

import argparse
import json
import sys

from dfcan_tf.errors import DfcanError

NORMALIZATIONS = ("minmax", "divide65535")
STRATEGIES = ("default", "mirrored", "multi-worker")
DFCAN_FAMILY = ("dfcan", "dfgan_generator")
# `dfcan train` flags that architecture and recipe are made of (refused with --resume).
ARCHITECTURE_FLAGS = ("architecture", "width", "n_groups", "n_blocks", "size_psc", "reduction", "gamma", "net")
NET_FLAGS = ("width", "n_groups", "n_blocks", "size_psc", "reduction", "gamma")
RESUME_FLAGS = ("resume", "data", "steps", "strategy", "no_progress")
PIXEL_TOLERANCE = 0.10  # an explicit --pixel-size-nm may differ this much from the patch folder's
NET_HELP = {
    "width": "feature channels",
    "n-groups": "residual groups",
    "n-blocks": "Fourier channel-attention blocks per group",
    "size-psc": "side of the resized power spectrum in the attention",
    "reduction": "channel-attention reduction ratio",
}
RECIPE_HELP = {
    "steps": "training iterations",
    "batch-size": "global batch (split across replicas)",
    "patch-size": "input patch side in pixels; from the patch folder's patches.json when not given, else 128",
    "lr": "learning rate of the network (DFGAN: generator)",
    "d-lr": "DFGAN: discriminator learning rate",
    "validate-every": "validation period in iterations",
    "validate-patches": "maximum number of validation patches used",
    "sample-every": "period of the sample figure in iterations",
    "log-every": "period of the TensorBoard training-loss scalars in iterations",
    "plateau-patience": "validations without improvement before the learning rate halves",
    "seed": "seed of the initial weights and of the order of training patches",
    "g-updates": "DFGAN: generator updates per iteration",
}

__all__ = ["add_arguments", "config_from_args", "run_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan train`` flags."""
    parser.add_argument("--data", help="DL-SR patch folder (training_wf/ or training/, training_gt/, validate_wf/ "
                                       "or validate/, validate_gt/; see --task) or an .npz with x_train, y_train, "
                                       "x_val, y_val; with --resume, defaults to the run's own")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="new run folder to create")
    where.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    parser.add_argument("--mode", choices=["dfcan", "dfgan"], default=None,
                        help="dfcan (when not given) trains one network; dfgan trains DFCAN's generator adversarially")
    parser.add_argument("--architecture", default=None, metavar="NAME",
                        help="registered network to train (see dfcan info); default: dfcan")
    parser.add_argument("--recipe", choices=["own", "dfcan"], default=None,
                        help="own (default): the loss and optimiser of the network's own paper; dfcan: "
                             "MSE + 0.1(1-SSIM), Adam 1e-4 for any network (same for dfcan/dfgan_generator)")
    parser.add_argument("--net", action="append", metavar="KEY=VALUE", default=None,
                        help="set a field of the network's configuration (any architecture; JSON values), "
                             "e.g. --net width=32; repeatable")
    parser.add_argument("--config", help="TrainConfig JSON (TrainConfig.to_dict()); flags given override it")
    parser.add_argument("--task", choices=["sisr", "sim"], default=None,
                        help="patch folders: wide-field input (training_wf/) or SIM frames (training/); default: sisr")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                        help="per-patch intensity normalisation; minmax when not given")
    parser.add_argument("--pixel-size-nm", type=float, default=None,
                        help="input pixel size, recorded in the run for prediction; from the patch folder's "
                             "patches.json when not given")
    g = parser.add_argument_group("network, DFCAN family only (defaults: the paper's for --mode)")
    for name, text in NET_HELP.items():
        g.add_argument(f"--{name}", type=int, default=None, help=text)
    g.add_argument("--gamma", type=float, default=None, help="gamma of the power spectrum in the attention")
    t = parser.add_argument_group("recipe (defaults: the paper's for --mode)")
    for name, typ in (("steps", int), ("batch-size", int), ("patch-size", int), ("lr", float), ("d-lr", float),
                      ("validate-every", int), ("validate-patches", int), ("sample-every", int),
                      ("log-every", int), ("plateau-patience", int), ("seed", int), ("g-updates", int)):
        t.add_argument(f"--{name}", type=typ, default=None, help=RECIPE_HELP[name])
    t.add_argument("--init-generator", help="DFGAN: run folder or weights of a DFCAN-shaped net to start from")
    t.add_argument("--strided-discriminator", action="store_true",
                   help="DFGAN: the cheaper discriminator variant striding each block by 2 (not the paper's)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None,
                        help="default: one device; mirrored: all local devices; multi-worker: TF_CONFIG cluster "
                             "(new run: default; --resume: the run's own)")
    parser.add_argument("--precision", choices=("float32", "bf16", "float16"), default=None,
                        help="float32 (new run: default; --resume: the run's own); bf16: mixed bfloat16, for CPUs "
                             "with AVX512-BF16/AMX (dfcan benchmark train lists them) and recent GPUs; float16: mixed "
                             "float16 with loss scaling, for GPUs (docs/training.md#precision)")
    parser.add_argument("--mixed-precision", action="store_true", help="the same as --precision float16")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _net_options(values: list[str] | None) -> dict:
    """``--net KEY=VALUE`` flags as a dict (values read as JSON, else kept as text)."""
    options = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise DfcanError(f"--net {item!r}: expected KEY=VALUE, e.g. --net width=32")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        options[key.strip().replace("-", "_")] = value
    return options


def _model_config(args: argparse.Namespace):
    """The network ``--architecture`` / ``--mode`` and the data describe."""
    from dfcan_tf.nets import registry
    from dfcan_tf.training.sources import data_shape

    name = args.architecture or ("dfgan_generator" if args.mode == "dfgan" else "dfcan")
    arch = registry.get(name)
    if args.mode == "dfgan" and name != "dfgan_generator":
        extra = " (pix2pix trains adversarially with its PatchGAN without --mode)" if arch.adversarial else ""
        raise DfcanError(f"--mode dfgan trains DFCAN's generator adversarially; it cannot train "
                         f"--architecture {name}{extra}. Drop --architecture, or drop --mode dfgan")
    if args.mode == "dfcan" and arch.adversarial:
        trainable = [n for n in registry.names() if not registry.get(n).adversarial]
        raise DfcanError(f"--mode dfcan trains one network without a discriminator; --architecture {name} is "
                         f"trained adversarially: drop --mode, or choose one of {trainable}")
    channels, scale = data_shape(args.data, args.task or "sisr")
    return registry.make_config(name, channels, scale)


def folder_settings(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """Patch size and input pixel size for a new run: the flags, else what the patch folder records.

    A ``--config`` file's ``patch_size`` counts as given. The
    folder's values come from its ``patches.json``
    (:func:`dfcan_tf.training.sources.folder_manifest`); a folder without one
    (or an ``.npz``) leaves both to the flags (patch size: the recipe's 128).

    Returns
    -------
    settings : dict
        ``patch_size`` (None: the recipe's) and ``pixel_size_nm`` (None: unknown).
    notes : list of str
        What was taken from the folder, for the user.

    Raises
    ------
    DfcanError
        ``--patch-size`` larger than the folder's patches, or ``--pixel-size-nm``
        more than 10 % off the folder's.
    """
    from dfcan_tf.config import load_json
    from dfcan_tf.training.sources import folder_manifest

    found = folder_manifest(args.data) if args.data else {}
    where = found.get("path")
    patch = args.patch_size
    if patch is None and args.config:
        doc = load_json(args.config)
        patch = doc.get("patch_size") if isinstance(doc, dict) else None
    flag = "--patch-size" if args.patch_size is not None else f"--config {args.config}: patch_size"
    notes = []
    if "patch_size" in found:
        folder_patch = found["patch_size"]
        if patch is None:
            patch = folder_patch
            notes.append(f"patch size {patch} px (from {where})")
        elif patch > folder_patch:
            raise DfcanError(f"{flag} {patch} is larger than the {folder_patch}-px patches of {args.data} ({where}); "
                             f"give at most {folder_patch}, or cut larger patches with dfcan patches --patch-size")
        elif patch < folder_patch:
            notes.append(f"training on random {patch}-px crops of the {folder_patch}-px patches of {args.data}")
    pixel = args.pixel_size_nm
    if pixel is not None and not pixel > 0:
        raise DfcanError(f"--pixel-size-nm must be a positive number. Received: --pixel-size-nm {pixel}")
    folder_px = found.get("pixel_size_nm")
    if folder_px:
        if pixel is None:
            pixel = folder_px
            notes.append(f"input pixel size {pixel:.4g} nm (from {where})")
        elif abs(pixel / folder_px - 1) > PIXEL_TOLERANCE:
            raise DfcanError(f"--pixel-size-nm {pixel:g} differs by {abs(pixel / folder_px - 1):.0%} from the input "
                             f"pixel size {folder_px:.4g} nm the patches of {args.data} were cut at ({where}); "
                             "drop the flag, or cut patches from images of that pixel size")
    return {"patch_size": patch, "pixel_size_nm": pixel}, notes


def config_from_args(args: argparse.Namespace):
    """The :class:`~dfcan_tf.training.config.TrainConfig` ``dfcan train`` flags describe.

    The data's shape gives the network's input channels and scale; a patch
    folder's ``patches.json`` the patch size when neither ``--patch-size`` nor
    the ``--config`` file gives one (:func:`folder_settings`).
    """
    from dfcan_tf.config import load_json
    from dfcan_tf.nets.discriminators import DiscriminatorConfig
    from dfcan_tf.training.config import TrainConfig, recipe_config

    if args.config:
        for flag, value in (("--architecture", args.architecture), ("--recipe", args.recipe)):
            if value:
                raise DfcanError(f"{flag} cannot be combined with --config {args.config} (its 'model' names the "
                                 f"architecture, its fields the recipe)")
        base = TrainConfig.from_dict(load_json(args.config))
    else:
        base = recipe_config(_model_config(args), args.recipe or "own")
    net = {k: getattr(args, k) for k in NET_FLAGS if getattr(args, k) is not None}
    if net and base.model.architecture not in DFCAN_FAMILY:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in net)
        raise DfcanError(f"{flags}: these flags apply to DFCAN-family networks {DFCAN_FAMILY} only, not to "
                         f"{base.model.architecture}; use --net KEY=VALUE for its fields")
    net.update(_net_options(args.net))
    try:
        model = base.model.replace(**net) if net else base.model
    except (DfcanError, TypeError) as exc:
        raise DfcanError(f"--net: {exc}") from None
    changes = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "d_lr", "validate_every",
                                             "validate_patches", "sample_every", "log_every", "plateau_patience",
                                             "seed", "g_updates", "init_generator") if getattr(args, k) is not None}
    patch = folder_settings(args)[0]["patch_size"]
    if patch is not None:
        changes["patch_size"] = patch
    changes.update(model=model)
    if args.strategy is not None:
        changes["strategy"] = args.strategy
    if args.mixed_precision and args.precision not in (None, "float16"):
        raise DfcanError(f"--mixed-precision means --precision float16; it contradicts --precision {args.precision}")
    if args.precision is not None or args.mixed_precision:
        changes["precision"] = args.precision or "float16"
    if base.mode == "dfgan" and isinstance(base.discriminator, DiscriminatorConfig):
        disc = {**base.discriminator.to_dict(), "input_size": changes.get("patch_size", base.patch_size) * model.scale}
        if args.strided_discriminator:
            disc["downsample"] = True
        changes["discriminator"] = DiscriminatorConfig.from_dict(disc)
    elif args.strided_discriminator:
        raise DfcanError("--strided-discriminator applies to DFGAN's discriminator (--mode dfgan) only")
    return base.replace(**changes)


def _refuse_resume_flags(args: argparse.Namespace) -> None:
    """``--resume`` continues the recorded run: flags that would change it are refused, by name."""
    given = [k for k, v in vars(args).items()
             if not k.startswith("_") and k not in ("command", "run", *RESUME_FLAGS) and v not in (None, False)]
    if not given:
        return
    arch = [f"--{k.replace('_', '-')}" for k in given if k in ARCHITECTURE_FLAGS]
    other = [f"--{k.replace('_', '-')}" for k in given if k not in ARCHITECTURE_FLAGS]
    parts = []
    if arch:
        parts.append(f"the architecture flags {', '.join(arch)} cannot change the network of a run")
    if other:
        parts.append(f"{', '.join(other)} cannot change a run's recorded recipe and data settings")
    raise DfcanError(f"--resume {args.resume}: {'; '.join(parts)}. With --resume only --steps, --strategy, --data "
                     f"and --no-progress may be given; start a new run (--run) to train something else")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan train``; return the exit status.

    Flags are checked against each other and the data before TensorFlow is imported.
    """
    if args.resume:
        _refuse_resume_flags(args)
        from dfcan_tf.runs import read_run_config
        from dfcan_tf.training.config import config_from_doc
        from dfcan_tf.training.loop import train

        doc, _ = read_run_config(args.resume)
        saved = config_from_doc(doc)
        cfg = saved.replace(strategy=args.strategy or saved.strategy,
                            steps=args.steps if args.steps is not None else saved.steps)
        result = train(cfg, args.resume, data=args.data, resume=True, progress=not args.no_progress)
    else:
        if not args.data:
            raise DfcanError("--data is required for a new run")
        settings, notes = folder_settings(args)  # a contradicting flag is refused before TensorFlow loads
        cfg = config_from_args(args)
        for note in notes:
            print(f"dfcan train: {note}", file=sys.stderr)
        from dfcan_tf.training.loop import train

        result = train(cfg, args.run, data=args.data, normalization=args.normalization or "minmax",
                       task=args.task or "sisr",
                       pixel_size_nm=settings["pixel_size_nm"], progress=not args.no_progress)
    weight = "" if cfg.loss_weight == 1.0 else f"{cfg.loss_weight:g}·"
    print(f"{result.run_dir}: {cfg.model.architecture}, recipe {cfg.recipe} ({weight}{cfg.loss}"
          f"{' + adversarial' if cfg.adversarial else ''}, {cfg.optimizer}), step {result.step}, "
          f"best validation NRMSE {result.best_nrmse:.4f} (bicubic {result.bicubic_nrmse:.4f}), lr {result.lr:.2e}")
    return 0

