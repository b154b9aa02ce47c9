"""Comparison networks of the DFCAN paper (SRCNN, EDSR, RCAN, CARE U-Net, scU-Net, Pix2Pix) as Keras builders."""
