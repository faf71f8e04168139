"""A paired test of two models on the same validation examples: is the challenger better beyond noise?

Two good MNIST models differ by a few hundredths of a point, well inside the noise of a 20,000-image
validation split; comparing their two summary numbers moves a champion on noise. Here both models
score every validation example, and the decision rests on the per-example differences:
- `val_loss` (and any loss): the paired t-test of per-example losses (20,000 pairs: the mean difference is
  normal to any precision that matters), one-sided, with its confidence interval;
- `val_acc` (and any accuracy): McNemar's exact test on the examples exactly one model gets right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PairedResult:
    """challenger − champion on `metric` (a loss: negative is better; an accuracy: positive is better)."""

    metric: str
    difference: float
    low: float
    high: float
    p_value: float  # one-sided: the chance of a difference at least this good if the two were equal
    examples: int

    def better(self, confidence: float) -> bool:
        return self.p_value < 1 - confidence and (self.difference < 0 if self.is_loss else self.difference > 0)

    @property
    def is_loss(self) -> bool:
        return "loss" in self.metric

    def text(self, confidence: float) -> str:
        return (f"{self.metric} difference {self.difference:+.5f} (challenger − champion), {confidence:.0%} "
                f"interval [{self.low:+.5f}, {self.high:+.5f}], p {self.p_value:.3g}, {self.examples} "
                "validation examples, paired")


def per_example(model: Any, split: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each example's cross-entropy loss and correctness (1/0) under `model` in eval mode."""
    import torch
    from torch import nn

    from trainables.train import EVAL_BATCH_SIZE

    images, labels = split
    model.eval()
    losses, correct = [], []
    with torch.no_grad():
        for start in range(0, len(labels), EVAL_BATCH_SIZE):
            logits = model(images[start:start + EVAL_BATCH_SIZE])
            target = labels[start:start + EVAL_BATCH_SIZE]
            losses.append(nn.functional.cross_entropy(logits, target, reduction="none").double().numpy())
            correct.append((logits.argmax(1) == target).double().numpy())
    return np.concatenate(losses), np.concatenate(correct)


def compare_paired(metric: str, challenger: Any, champion: Any, split: tuple[Any, Any],
                   confidence: float) -> PairedResult:
    """The challenger against the champion on the same examples (see the module's docstring)."""
    from scipy import stats

    loss_a, right_a = per_example(challenger, split)
    loss_b, right_b = per_example(champion, split)
    n = len(loss_a)
    if "acc" in metric:
        diff = right_a - right_b
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        p = float(stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else 1.0
    else:
        diff = loss_a - loss_b
        se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
        p = float(stats.norm.cdf(diff.mean() / se)) if se > 0 else (0.0 if diff.mean() < 0 else 1.0)
    mean = float(diff.mean())
    half = float(stats.norm.ppf(0.5 + confidence / 2) * diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return PairedResult(metric, mean, mean - half, mean + half, p, n)
