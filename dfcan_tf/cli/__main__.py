"""``python -m dfcan_tf.cli``: the ``dfcan`` command."""

import sys

from dfcan_tf.cli.main import main

sys.exit(main())
