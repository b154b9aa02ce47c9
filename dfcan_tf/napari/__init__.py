"""napari plugin of dfcan_tf: a dock widget that super-resolves image layers (``docs/napari.md``).

Registered with napari through the ``napari.manifest`` entry point
(``napari.yaml`` here); install with ``pip install "dfcan_tf[napari]"``.
The widget is :class:`dfcan_tf.napari.widget.DfcanWidget`; what it computes
lives in :mod:`dfcan_tf.napari._core` (no Qt). Importing this package imports
neither napari nor Qt.
"""
