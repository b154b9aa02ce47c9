"""Evaluation: image metrics and resolution, evaluation of a run on a test set, the assessment matrix."""
