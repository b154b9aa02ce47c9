"""Every command's ``--help`` stays light (no TensorFlow); the optics import without the dataset writer."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ["simulate", "patches", "predict", "evaluate", "benchmark", "assess", "sim-reconstruct", "demo"]

_SCRIPT = """
import sys
from dfcan_tf.cli import main
try:
    main([{cmd!r}, "--help"])
except SystemExit as exc:
    code = exc.code
print("RESULT", code, "tensorflow" in sys.modules, "keras" in sys.modules)
"""


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_does_not_import_tensorflow(cmd):
    out = _run(_SCRIPT.format(cmd=cmd))
    result = out.strip().splitlines()[-1].split()
    assert result == ["RESULT", "0", "False", "False"], out[-500:]
    assert "usage: dfcan " + cmd in out


def test_optics_import_without_the_dataset_module():
    out = _run("import sys; import dfcan_tf.data.simulate.optics as o; "
               "print(o.detection_cutoff(1.3, 525.0), 'dfcan_tf.data.simulate.dataset' in sys.modules, "
               "'dfcan_tf.data.files' in sys.modules)")
    value, dataset, files = out.split()
    assert float(value) == pytest.approx(2 * 1.3 / 525.0)
    assert (dataset, files) == ("False", "False")
    # The package still re-exports the dataset names (loaded on first use).
    out = _run("from dfcan_tf.data.simulate import SPECIMENS, simulate_dataset, SimulatedCell; "
               "from dfcan_tf.cli.simulate import SPECIMENS as CLI; print(SPECIMENS == CLI, callable(simulate_dataset))")
    assert out.split() == ["True", "True"]


def test_cli_constants_agree_with_the_library():
    from dfcan_tf.cli import predict as cli_predict
    from dfcan_tf.inference import predict

    assert cli_predict.BACKENDS == predict.BACKENDS
    assert cli_predict.DEFAULT_TILE_SIZE == predict.DEFAULT_TILE_SIZE
    assert cli_predict.WHOLE_IMAGE_SIDE ** 2 == predict.WHOLE_IMAGE_MAX_PIXELS
