"""What a TensorFlow command prints: no start-up banner (at most once), no Grappler error, export's stage lines.

One subprocess, as a user runs ``dfcan``: a one-step tiny DFGAN training (the
Grappler remapper used to fail on its discriminator's Conv2D+BiasAdd+LeakyReLU
and log ``remapper failed``), then an ONNX export of that run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

from dfcan_tf.cli.tf_import import ABSL_NOTICE, keep_line

TINY = ["--width", "8", "--n-groups", "1", "--n-blocks", "1", "--size-psc", "16", "--reduction", "4"]


def test_keep_line_applies_the_log_level_to_absl_lines():
    info = ("I0000 00:00:1795682079.360225   10732 port.cc:153] oneDNN custom operations are on. You may see "
            "slightly different numerical results\n")
    error = "E0000 00:00:1795682239.539924   11556 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT\n"
    warning = "W1126 08:27:36.123456   42 cuda_dnn.cc:8] something\n"
    assert keep_line(info, 0) and not keep_line(info, 1) and not keep_line(info, 2)
    assert keep_line(warning, 1) and not keep_line(warning, 2)
    assert keep_line(error, 2) and not keep_line(error, 3)
    assert keep_line(ABSL_NOTICE + "\n", 0) and not keep_line(ABSL_NOTICE + "\n", 2)
    for other in ("Traceback (most recent call last):\n", "/x.py:3: UserWarning: careful\n", "I0000 plain text\n"):
        assert keep_line(other, 3)


def test_tf_command_prints_no_banner_no_remapper_error_and_export_stages(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((6, 16, 16, 1), dtype=np.float32)
    y = rng.random((6, 32, 32, 1), dtype=np.float32)
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=x, y_train=y, x_val=x[:2], y_val=y[:2])
    run, onnx = tmp_path / "gan", tmp_path / "gan.onnx"
    code = (
        "import sys\nfrom dfcan_tf.cli import main\n"
        f"rc = main(['train', '--mode', 'dfgan', '--data', {str(npz)!r}, '--run', {str(run)!r}, *{TINY!r}, "
        "'--patch-size', '16', '--batch-size', '2', '--steps', '1', '--validate-every', '1', '--no-progress'])\n"
        "assert rc == 0, rc\n"
        f"sys.exit(main(['export', {str(run)!r}, '-o', {str(onnx)!r}, '--verify-sizes', '32', '45']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the CLI's own default (2)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert err.count("oneDNN custom operations are on") <= 1, err
    assert ABSL_NOTICE not in err, err
    assert "remapper failed" not in err, err
    stages = [line for line in proc.stdout.splitlines() if re.match(r"\[\d/4\] ", line)]
    assert [s[:5] for s in stages] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"], proc.stdout
    assert "converting to ONNX (opset 17)" in stages[1]
    diff = float(re.search(r"max \|diff\| (\S+) <= tolerance", stages[2]).group(1))
    assert "verified against Keras on 6 images (2 simulated) at 32x32, 45x45" in stages[2] and 0 <= diff < 1e-4
    assert stages[3].startswith(f"[4/4] wrote {onnx}") and onnx.is_file()
