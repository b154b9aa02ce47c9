"""dfcan_tf: DFCAN and DFGAN (Qiao et al., Nature Methods 2021) for TensorFlow 2 / Keras 3.

The flow a reader can follow: :mod:`dfcan_tf.config` (typed configuration) →
:mod:`dfcan_tf.data.files`, :mod:`dfcan_tf.data.simulate`, :mod:`dfcan_tf.data.patches`,
:mod:`dfcan_tf.data.pipeline` (data) → :mod:`dfcan_tf.nets.layers`, :mod:`dfcan_tf.nets.dfcan`
(networks) → :mod:`dfcan_tf.training.loop` (run folder) → :mod:`dfcan_tf.inference.predict`
(tiled prediction) → :mod:`dfcan_tf.evaluation.metrics`, :mod:`dfcan_tf.evaluation.evaluate` →
:mod:`dfcan_tf.export.run`. :mod:`dfcan_tf.cli` is the ``dfcan`` command.
"""

__version__ = "0.1.0"
