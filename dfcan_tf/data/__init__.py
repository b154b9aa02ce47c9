"""Data: image files (MRC/TIFF), BioSR discovery, the simulator, patch pairs, the input pipeline, the normaliser."""
