"""``python -m dfcan_tf.napari [IMAGE ...]``: napari with the dfcan_tf widget docked (``docs/napari.md``).

TensorFlow is imported before napari creates its OpenGL canvas: the other
order crashes (TensorFlow's and the OpenGL driver's LLVM collide; the widget module also asks Mesa's
software OpenGL for its LLVM-free rasteriser), and at exit
the process skips C++ static destructors for the same reason.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Open napari (with the files in ``argv``, if any) and dock :class:`~dfcan_tf.napari.widget.DfcanWidget`."""
    import napari
    import tensorflow  # noqa: F401 -- before napari's OpenGL canvas, see the module docstring

    from dfcan_tf.napari.widget import (
        DfcanWidget,  # sets the software OpenGL driver before the canvas exists
    )

    files = list(sys.argv[1:] if argv is None else argv)
    viewer = napari.Viewer()
    if files:
        viewer.open(files)
    viewer.window.add_dock_widget(DfcanWidget(viewer), name="DFCAN super-resolution")
    napari.run()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
