"""Make ``docs/images/napari_widget.png``: the dfcan_tf napari widget after a prediction with the shipped model.

Run under an X server (``xvfb-run -a .venv/bin/python docs/make_napari_screenshot.py``;
see ``docs/napari.md``). The input is a simulated wide-field microtubule image
(:func:`dfcan_tf.data.simulate.simulate_cell`, the sum of 9 raw SIM frames), so
the script needs no data download.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images" / "napari_widget.png"


def main() -> int:
    import imageio.v3 as iio
    import napari
    import tensorflow  # noqa: F401 -- before napari's OpenGL canvas (docs/napari.md#starting-napari)
    from qtpy.QtWidgets import QApplication

    from dfcan_tf.data.files import atomic_path
    from dfcan_tf.data.simulate import simulate_cell
    from dfcan_tf.napari.widget import (
        DfcanWidget,  # sets the LLVM-free software OpenGL before the canvas exists
    )

    cell = simulate_cell("Microtubules", size=128, n_levels=1, seed=3)
    wf = cell.raw[0].astype(np.float32).sum(axis=0)
    viewer = napari.Viewer(show=False)
    viewer.window.resize(1400, 850)
    viewer.add_image(wf, name="wide-field", scale=(0.0626, 0.0626))  # µm per pixel
    widget = DfcanWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DFCAN super-resolution")
    widget.source.value = "shipped model"
    widget.qc.value = widget.qc.enabled
    worker = widget.run()
    if worker is None:
        print(widget.status.value, file=sys.stderr)
        return 1
    done: list[bool] = []
    worker.finished.connect(lambda: done.append(True))
    worker.start()
    while not done:
        QApplication.processEvents()
        time.sleep(0.05)
    QApplication.processEvents()
    if not widget.status.value.startswith("done"):
        print(widget.status.value, file=sys.stderr)
        return 1
    viewer.layers["wide-field"].visible = False
    viewer.layers["wide-field QC (noise units)"].visible = False  # listed, hidden: the result shows
    viewer.layers.selection.active = viewer.layers[1]
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    with atomic_path(OUT) as tmp:
        iio.imwrite(tmp, shot, extension=".png")
    print(f"{OUT}: {shot.shape[1]}x{shot.shape[0]}; {widget.status.value}")
    viewer.close()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip C++ static destructors: TensorFlow's and Mesa's LLVM clash at exit (docs/napari.md)
