"""Scale-out on TensorFlow's engine: mirrored training on two logical CPUs, two workers on 127.0.0.1.

Device configuration must precede TensorFlow's initialisation and a
MultiWorkerMirroredStrategy owns its process, so each case runs in fresh
Python processes.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_train import (
    simulate_pairs,  # tests/ is on sys.path (rootdir-less test modules)
)

TINY_ARGS = ["--width", "8", "--n-groups", "1", "--n-blocks", "1", "--size-psc", "16", "--reduction", "4",
             "--patch-size", "16", "--batch-size", "4", "--steps", "6", "--validate-every", "3",
             "--sample-every", "6", "--validate-patches", "4", "--lr", "1e-3", "--no-progress"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", **extra)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(11)
    xt, yt = simulate_pairs(16, 24, rng, filaments=15)
    xv, yv = simulate_pairs(4, 16, rng, filaments=10)
    path = tmp_path_factory.mktemp("data") / "pairs.npz"
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    return path


def _h5_arrays(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj)) if isinstance(obj, h5py.Dataset)
                     else None)
    return out


MIRRORED = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from dfcan_tf import cli
    from dfcan_tf.nets.dfcan import DFCANConfig
    from dfcan_tf.training.config import TrainConfig
    from dfcan_tf.training.distribute import make_strategy
    from dfcan_tf.training.sources import ArraySource, train_dataset as _train_dataset

    npz, run = sys.argv[1], sys.argv[2]
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync

    # The global batch of a step is split across the replicas, row blocks in replica order.
    with np.load(npz) as f:
        src = ArraySource(f["x_train"], f["y_train"])
    cfg = TrainConfig.dfcan(DFCANConfig.dfcan(1, 2, width=8, n_groups=1, n_blocks=1, size_psc=16, reduction=4),
                            patch_size=16, batch_size=4, steps=3)
    x, y = next(iter(_train_dataset(src, cfg, 1, strategy)))
    parts = strategy.experimental_local_results(x)
    assert len(parts) == 2 and all(tuple(p.shape) == (1, 2, 16, 16, 1) for p in parts), [p.shape for p in parts]
    gx, _ = src.sample(1, slice(0, 4), 4, cfg.seed, 16)
    np.testing.assert_array_equal(np.concatenate([p.numpy()[0] for p in parts]), gx)
    assert {p.device.split("/")[-1] for p in parts} == {"device:CPU:0", "device:CPU:1"}

    sys.exit(cli.main(["train", "--data", npz, "--run", run, "--strategy", "mirrored", *sys.argv[3:]]))
""")


def test_mirrored_on_two_logical_cpus(tmp_path, npz):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(npz), str(run), *TINY_ARGS], env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((run / "weights/last.state.json").read_text())
    assert state["step"] == 6 and state["replicas"] == 2
    doc = json.loads((run / "config.json").read_text())
    assert doc["train"]["strategy"] == "mirrored" and doc["train"]["batch_size"] == 4
    w = _h5_arrays(run / "weights/last.weights.h5")
    assert w and all(np.all(np.isfinite(a)) for a in w.values())
    with open(run / "history.csv") as f:
        assert len(f.read().strip().splitlines()) == 3  # header + validations at steps 3 and 6


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_agree_on_final_weights(tmp_path, npz):
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        cmd = [sys.executable, "-m", "dfcan_tf.cli", "train", "--data", str(npz), "--run", str(run),
               "--strategy", "multi-worker", *TINY_ARGS]
        procs.append(subprocess.Popen(cmd, env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]

    chief, other = run / "weights", run / ".worker-1" / "weights"
    for d in (chief, other):
        state = json.loads((d / "last.state.json").read_text())
        assert state["step"] == 6 and state["replicas"] == 2
    wa, wb = _h5_arrays(chief / "last.weights.h5"), _h5_arrays(other / "last.weights.h5")
    assert wa.keys() == wb.keys() and len(wa) > 4
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    oa, ob = _h5_arrays(chief / "last.optimizer.h5"), _h5_arrays(other / "last.optimizer.h5")
    for k in oa:
        np.testing.assert_array_equal(oa[k], ob[k], err_msg=k)
    # Training moved the weights away from their (shared) initial values; only the chief writes the run folder.
    assert (run / "history.csv").is_file() and not (run / ".worker-1" / "history.csv").exists()
    assert json.loads((run / "config.json").read_text())["train"]["strategy"] == "multi-worker"
