"""The ``dfcan`` command: one entry point, one subcommand per pipeline stage.

Each subcommand lives in the module that holds its public function; that module
exposes ``add_arguments(parser)`` and ``run_from_args(args) -> int``. Modules are
imported only when their subcommand runs, so ``dfcan --help`` is fast and a
subcommand never pays for TensorFlow it does not use.

User mistakes raise :class:`dfcan_tf.errors.DfcanError`; they are printed as
``dfcan <command>: error: <message>`` with exit status 2 and no traceback. So is
a missing TensorFlow (it is an extra: ``dfcan_tf[cpu]`` or ``dfcan_tf[gpu]``).

Every subcommand's help shows each flag's default (:class:`HelpFormatter`);
an old spelling of a renamed flag stays accepted through :class:`DeprecatedAlias`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

TF_MISSING = "TensorFlow is not installed: pip install 'dfcan_tf[cpu]' (or '[gpu]' on a CUDA machine)"

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dfcan_tf.cli.demo", "run the end-to-end job on embedded defaults"),
    "info": ("dfcan_tf.cli.info", "build a model and print its summary and parameter count"),
    "simulate": ("dfcan_tf.cli.simulate", "simulate BioSR-like SIM data in BioSR's layout"),
    "patches": ("dfcan_tf.cli.patches", "cut training/validation patch pairs from BioSR-layout data"),
    "train": ("dfcan_tf.cli.train", "train DFCAN, DFGAN or another registered network into a run folder"),
    "sim-reconstruct": ("dfcan_tf.cli.sim_reconstruct", "conventional SIM reconstruction (linear 2x, nonlinear 3x) of raw frames"),
    "predict": ("dfcan_tf.cli.predict", "super-resolve images with a run folder"),
    "evaluate": ("dfcan_tf.cli.evaluate", "evaluate a run folder on a BioSR-layout test set"),
    "assess": ("dfcan_tf.cli.assess", "assessment matrix: networks vs conventional SIM per specimen and signal level"),
    "qc": ("dfcan_tf.cli.qc", "forward-consistency QC map: which parts of an SR image agree with the measured input"),
    "export": ("dfcan_tf.cli.export", "export a run folder to ONNX, TFLite, SavedModel or bioimage.io"),
    "import-weights": ("dfcan_tf.cli.import_weights", "write a run folder from the authors' Keras 2 weights (weights.best)"),
    "benchmark": ("dfcan_tf.cli.benchmark", "print speed figures (data, train, predict, sgemm)"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Appends `` (default: X)`` to a flag's help when it has a default worth showing.

    Shown: any default but None, False and ``SUPPRESS``, unless the help already
    says "default" (a help that explains a computed or conditional default).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not text or text == argparse.SUPPRESS or default is None or default is False
                or default == argparse.SUPPRESS or "default" in text.lower()
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class DeprecatedAlias(argparse.Action):
    """A renamed flag's old spelling: hidden from the help, stores into the new flag, says so on stderr.

    ``parser.add_argument("--weights", action=DeprecatedAlias, new="--which", dest="which", choices=...)``.
    """

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        kwargs.setdefault("default", argparse.SUPPRESS)
        kwargs["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _is_tensorflow(exc: ModuleNotFoundError) -> bool:
    return exc.name is not None and (exc.name == "tensorflow" or exc.name.startswith("tensorflow."))


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    from dfcan_tf import __version__

    parser = argparse.ArgumentParser(
        prog="dfcan",
        description="DFCAN / DFGAN super-resolution microscopy (TensorFlow 2 / Keras 3).",
    )
    parser.add_argument("--version", action="version", version=f"dfcan_tf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dfcan`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Parse the command name first, then let its module add its own arguments.
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        from dfcan_tf.cli import tf_import
        from dfcan_tf.errors import DfcanError

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        tf_import.install()  # TensorFlow's start-up banner obeys TF_CPP_MIN_LOG_LEVEL too
        parser = build_parser()
        if command in SUBCOMMANDS:
            module = importlib.import_module(SUBCOMMANDS[command][0])
            sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            module.add_arguments(sub_action.choices[command])
        args = parser.parse_args(argv)
        command = args.command
        module = importlib.import_module(args._module)
        try:
            return int(module.run_from_args(args) or 0)
        except DfcanError as exc:
            print(f"dfcan {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except ModuleNotFoundError as exc:
            if not _is_tensorflow(exc):
                raise
            print(f"dfcan {args.command}: error: {TF_MISSING}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        # Anywhere, including while TensorFlow is being imported or a model built: one line, no traceback.
        prog = f"dfcan {command}" if command in SUBCOMMANDS else "dfcan"
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
