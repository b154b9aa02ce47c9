"""Devices: the ``tf.distribute`` strategy of a run and which worker this process is (``docs/training.md``).

The global batch is split across replicas; each replica's loss is divided by
the number of replicas (:func:`replicas`) and the Keras optimizer sums the
gradients. Only the chief writes the run folder; other workers write their
checkpoints under ``RUN/.worker-<id>/``.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from dfcan_tf.errors import DfcanError
from dfcan_tf.training.config import STRATEGIES

__all__ = ["make_strategy", "replicas", "worker"]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, else all logical CPUs) or ``multi-worker``.

    ``multi-worker`` is ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        # NCCL is GPU-only; on CPUs reduce through one device.
        return tf.distribute.MirroredStrategy(devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise DfcanError("strategy 'multi-worker' needs the cluster in the TF_CONFIG environment variable "
                             '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                             '"task": {"type": "worker", "index": 0}})')
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise DfcanError(f"TF_CONFIG is not valid JSON ({exc})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise DfcanError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")


def worker(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """(is_chief, task id) of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict()), task_id


def replicas() -> int:
    """Replicas of the strategy in scope (each divides its loss by this)."""
    return tf.distribute.get_strategy().num_replicas_in_sync
