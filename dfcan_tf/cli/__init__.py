"""The ``dfcan`` command: a thin argparse layer, one module per subcommand (see :mod:`dfcan_tf.cli.main`)."""

from dfcan_tf.cli.main import main

__all__ = ["main"]
