"""dfcan_tf: DFCAN and DFGAN (Qiao et al., Nature Methods 2021) for TensorFlow 2 / Keras 3.

The flow a reader can follow: :mod:`dfcan_tf.config` (typed configuration) →
:mod:`dfcan_tf.io`, :mod:`dfcan_tf.simulate`, :mod:`dfcan_tf.patches`,
:mod:`dfcan_tf.pipeline` (data) → :mod:`dfcan_tf.layers`, :mod:`dfcan_tf.models`
(networks) → :mod:`dfcan_tf.train` (run folder) → :mod:`dfcan_tf.predict`
(tiled prediction) → :mod:`dfcan_tf.metrics`, :mod:`dfcan_tf.evaluate` →
:mod:`dfcan_tf.export`. :mod:`dfcan_tf.cli` is the ``dfcan`` command.
"""

__version__ = "0.1.0"
