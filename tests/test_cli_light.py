"""The CLI's shape: every command's ``--help`` is light (no TensorFlow, < 2 s of imports), every flag has a help
text with its default shown once, one spelling per flag, and a missing TensorFlow is one line, not a traceback."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys

import pytest

from dfcan_tf.cli.main import SUBCOMMANDS, DeprecatedAlias, HelpFormatter, build_parser

COMMANDS = list(SUBCOMMANDS)

_SCRIPT = """
import sys
from dfcan_tf.cli import main
try:
    main([{cmd!r}, "--help"])
except SystemExit as exc:
    code = exc.code
print("RESULT", code, "tensorflow" in sys.modules, "keras" in sys.modules)
"""
IMPORT_BUDGET_S = 2.0
_IMPORTTIME = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser with its flags registered, as ``dfcan COMMAND`` builds it."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        importlib.import_module(SUBCOMMANDS[name][0]).add_arguments(sub.choices[name])
    return dict(sub.choices)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_is_light(cmd):
    """No TensorFlow or Keras, and the imports (top-level cumulative, ``-X importtime``) take under 2 s."""
    proc = _run(_SCRIPT.format(cmd=cmd), "-X", "importtime")
    result = proc.stdout.strip().splitlines()[-1].split()
    assert result == ["RESULT", "0", "False", "False"], proc.stdout[-500:]
    assert "usage: dfcan " + cmd in proc.stdout
    top = [int(m.group(1)) for m in map(_IMPORTTIME.match, proc.stderr.splitlines()) if m]
    assert top, proc.stderr[-500:]
    total = sum(int(m.group(1)) for m in map(_IMPORTTIME.match, proc.stderr.splitlines())
                if m and not m.group(2).startswith(" ")) / 1e6
    assert 0 < total < IMPORT_BUDGET_S, f"dfcan {cmd} --help spent {total:.2f} s importing"


def test_every_flag_has_a_help_text_and_its_default_shown_once():
    parsers = _parsers()
    assert set(parsers) == set(COMMANDS) and {"train", "qc", "export", "info", "import-weights"} <= set(parsers)
    for name, parser in parsers.items():
        assert parser.formatter_class is HelpFormatter, name
        formatter = parser._get_formatter()
        visible = {a.dest for a in parser._actions if a.help != argparse.SUPPRESS}
        for action in parser._actions:
            flag = "/".join(action.option_strings) or action.dest
            if isinstance(action, DeprecatedAlias):  # hidden old spelling of a visible flag
                assert action.dest in visible and action.new.split("/")[-1] in parser._option_string_actions, (name, flag)
                continue
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, \
                f"dfcan {name} {flag}: no help text"
            text = formatter._get_help_string(action) % {"default": action.default, "prog": parser.prog}
            assert text.lower().count("default") <= 1 or "(default: " not in text, (name, flag, text)
            shown = action.default not in (None, False, argparse.SUPPRESS) and not isinstance(
                action, argparse._HelpAction)
            if shown:
                assert "default" in text.lower(), f"dfcan {name} {flag}: default {action.default!r} not shown"
        parser.format_help()  # every help string formats


def test_formatter_appends_the_default_unless_the_help_gives_it():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="side")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 150], help="sides")
    parser.add_argument("--rate", default="5%", help="rate")
    parser.add_argument("--tile", default=None, help="tile side (default: whole image)")
    parser.add_argument("--flag", action="store_true", help="a switch")
    parser.add_argument("--which", default="best", help="weights (default: best)")
    text = " ".join(parser.format_help().split())
    assert "side (default: 128)" in text and "sides (default: 64 150)" in text and "rate (default: 5%)" in text
    assert "tile side (default: whole image)" in text and "a switch" in text and "switch (default" not in text
    assert text.count("(default: best)") == 1


def test_one_spelling_per_flag():
    """--levels selects levels, --which picks weights, -o/--output is the output: the same in every command."""
    parsers = _parsers()
    for name, parser in parsers.items():
        opts = parser._option_string_actions
        if "--levels" in opts:
            assert opts["--levels"].type is None, f"dfcan {name} --levels must take a spec like 1-3"
        if "--which" in opts:
            assert tuple(opts["--which"].choices) == ("best", "last") and opts["--which"].default == "best"
        if "--output" in opts:
            assert "-o" in opts and opts["-o"] is opts["--output"], name
    for name in ("predict", "evaluate", "assess", "export"):
        assert "--which" in parsers[name]._option_string_actions, name
    for name in ("demo", "predict", "evaluate", "assess", "qc", "export", "sim-reconstruct"):
        assert "--output" in parsers[name]._option_string_actions, name
    # Old spellings still work, hidden from the help, with a note on stderr.
    export = parsers["export"]
    assert export.parse_args(["run", "--weights", "last"]).which == "last"
    assert export.parse_args(["run"]).which == "best" and "--weights" not in export.format_help()
    demo = parsers["demo"]
    assert demo.parse_args(["--out", "x"]).output == "x" and demo.parse_args([]).output == "demo_output"
    assert "--out " not in demo.format_help()
    assert parsers["simulate"].parse_args(["out", "--levels", "1-3"]).levels == "1-3"


def test_deprecated_alias_says_so(capsys):
    parser = argparse.ArgumentParser(prog="dfcan export")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="weights")
    parser.add_argument("--weights", action=DeprecatedAlias, new="--which", dest="which", choices=("best", "last"))
    assert parser.parse_args(["--weights", "last"]).which == "last"
    assert "dfcan export: warning: --weights is deprecated; use --which" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--weights", "worst"])


def test_missing_tensorflow_is_one_line():
    """A command that needs TensorFlow says how to install it; one that does not still runs."""
    code = ("import sys, tempfile; sys.modules['tensorflow'] = None\n"
            "from dfcan_tf.cli import main\n"
            "print('INFO', main(['info', '--architecture', 'srcnn']))\n"
            "print('SIM', main(['simulate', tempfile.mkdtemp() + '/s', '--specimens', 'CCPs', '--cells', '1', "
            "'--levels', '9', '--size', '32', '--no-progress']))\n")
    proc = _run(code)
    assert "INFO 2" in proc.stdout and "SIM 0" in proc.stdout, proc.stdout
    assert proc.stderr.strip().splitlines() == [
        "dfcan info: error: TensorFlow is not installed: pip install 'dfcan_tf[cpu]' (or '[gpu]' on a CUDA machine)"]


def test_optics_import_without_the_dataset_module():
    out = _run("import sys; import dfcan_tf.data.simulate.optics as o; "
               "print(o.detection_cutoff(1.3, 525.0), 'dfcan_tf.data.simulate.dataset' in sys.modules, "
               "'dfcan_tf.data.files' in sys.modules)").stdout
    value, dataset, files = out.split()
    assert float(value) == pytest.approx(2 * 1.3 / 525.0)
    assert (dataset, files) == ("False", "False")
    # The package still re-exports the dataset names (loaded on first use).
    out = _run("from dfcan_tf.data.simulate import SPECIMENS, N_LEVELS, simulate_dataset, SimulatedCell; "
               "from dfcan_tf.cli import simulate as cli; "
               "print(SPECIMENS == cli.SPECIMENS, N_LEVELS == cli.N_LEVELS, callable(simulate_dataset))").stdout
    assert out.split() == ["True", "True", "True"]


def test_cli_constants_agree_with_the_library():
    from dfcan_tf.cli import predict as cli_predict
    from dfcan_tf.cli import sim_reconstruct as cli_sim
    from dfcan_tf.inference import predict
    from dfcan_tf.sim import reconstruct

    assert cli_predict.BACKENDS == predict.BACKENDS
    assert cli_predict.DEFAULT_TILE_SIZE == predict.DEFAULT_TILE_SIZE
    assert cli_predict.WHOLE_IMAGE_SIDE ** 2 == predict.WHOLE_IMAGE_MAX_PIXELS
    assert cli_sim.APODISATIONS == reconstruct.APODISATIONS and cli_sim.DEFAULT_WIENER == reconstruct.DEFAULT_WIENER
