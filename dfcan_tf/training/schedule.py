"""The learning-rate schedule: reduce on plateau of the validation NRMSE (``docs/training.md``).

The rule of Keras' ``ReduceLROnPlateau`` in mode ``"min"`` without cooldown,
as an object whose counters are saved with every checkpoint so that a resumed
run takes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["PlateauSchedule"]


@dataclass
class PlateauSchedule:
    """Multiply the learning rate by ``factor`` after ``patience`` validations without improvement.

    Parameters
    ----------
    factor
        Reduction factor in (0, 1) (0.5 in the paper).
    patience
        Validations without improvement before a reduction.
    min_delta
        An improvement must lower the metric below ``best - min_delta``.
    floor
        The learning rate never goes below this.
    lr
        The current learning rate.
    best, wait
        The best metric so far and the validations since it (the saved counters).
    """

    factor: float
    patience: int
    min_delta: float
    floor: float
    lr: float
    best: float = math.inf
    wait: int = 0

    def update(self, metric: float) -> float:
        """Record one validation's ``metric``; return the learning rate to use from now on."""
        if metric < self.best - self.min_delta:
            self.best = float(metric)
            self.wait = 0
            return self.lr
        self.wait += 1
        if self.wait >= self.patience:
            self.lr = max(self.lr * self.factor, self.floor)
            self.wait = 0
        return self.lr

    def copy(self) -> PlateauSchedule:
        """An independent copy (the loop updates a copy and commits it when the validation completes)."""
        return dataclasses.replace(self)
