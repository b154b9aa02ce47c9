"""``dfcan info``: build a registered network and print its parameter count (and, on request, its summary)."""

from __future__ import annotations

import argparse

from dfcan_tf.nets import registry

DISCRIMINATORS = ("dfgan_discriminator", "patchgan")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan info`` flags on ``parser``."""
    parser.add_argument("--architecture", choices=[*registry.names(), *DISCRIMINATORS], default="dfcan",
                        help="network to build")
    parser.add_argument("--input-channels", type=int, default=1,
                        help="input channels: 1 wide-field, 9 linear SIM, 25 nonlinear SIM")
    parser.add_argument("--scale", type=int, default=2, help="upsampling factor")
    parser.add_argument("--summary", action="store_true", help="print the full Keras summary")
    parser.add_argument("--receptive-field", action="store_true",
                        help="also measure the receptive field with an impulse (slower for large networks)")


def run_from_args(args: argparse.Namespace) -> int:
    if args.architecture == "dfgan_discriminator":
        from dfcan_tf.nets.discriminators import (
            DiscriminatorConfig,
            build_discriminator,
        )

        model = build_discriminator(DiscriminatorConfig())
    elif args.architecture == "patchgan":
        from dfcan_tf.nets.pix2pix import PatchGANConfig, build

        model = build(PatchGANConfig(architecture="patchgan", input_channels=args.input_channels,
                                     scale=args.scale))
    else:
        config = registry.make_config(args.architecture, args.input_channels, args.scale)
        model = registry.build(config)
    if args.summary:
        model.summary()
    print(f"{model.name}: {model.count_params():,} parameters")
    if args.receptive_field and args.architecture not in DISCRIMINATORS:
        print(f"receptive field: {registry.receptive_field(config)} input pixels on each side (measured)")
    return 0
