"""Comparisons that mean something: interleaved rounds, the median with the min-max of every figure and
ratio, and "no measurable difference" where a ratio's spread crosses 1.0.

Usage::

    from lineguard.bench.rounds import Spread, interleaved_rounds, ratio_spread
    per_round = interleaved_rounds({"ort": time_ort, "torch": time_torch}, rounds=7, warmup=2)
    ms = Spread.of(per_round["ort"])                         # median 17.1, low 16.8, high 19.0
    speedup = ratio_spread(per_round["torch"], per_round["ort"])
    speedup.effect()                                         # "3.40x (3.1-3.6)" or "no measurable difference ..."

One pass of A then B says little on a shared machine: a burst of load during either moves the ratio
by more than most effects. Each round here runs every candidate once, the order alternating from round
to round (A, B, then B, A, ...) so that neither always runs first; ratios are taken per round (the two
figures of one round saw the same machine) and summarised over the rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel

MIN_ROUNDS = 5  # below this a min-max says little; `--quick` runs fewer and is for plumbing only
NO_DIFFERENCE = "no measurable difference"


class Spread(BaseModel):
    """A figure over rounds: median and the min-max range."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no rounds to summarise")
        array = np.asarray(values, dtype=np.float64)
        return cls(median=float(np.median(array)), low=float(array.min()), high=float(array.max()),
                   rounds=len(array))

    def crosses(self, level: float = 1.0) -> bool:
        """True when the range includes ``level`` (for a ratio: no measurable difference)."""
        return self.low <= level <= self.high

    def text(self, digits: int = 2, unit: str = "") -> str:
        return f"{self.median:.{digits}f}{unit} ({self.low:.{digits}f}-{self.high:.{digits}f})"

    def effect(self, digits: int = 2) -> str:
        """A ratio as a reader should take it: the median with its range, or "no measurable difference"."""
        if self.crosses(1.0):
            return f"{NO_DIFFERENCE} ({self.low:.{digits}f}-{self.high:.{digits}f}x over {self.rounds} rounds)"
        if self.rounds < MIN_ROUNDS:
            return f"{self.text(digits, 'x')} [{self.rounds} rounds: too few to call an effect]"
        return self.text(digits, "x")

    @property
    def error(self) -> tuple[float, float]:
        """(below, above) the median: what a matplotlib error bar takes."""
        return self.median - self.low, self.high - self.median


def ratio_spread(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """Per-round ratios ``numerators[i] / denominators[i]``, summarised."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators for {len(denominators)} denominators")
    return Spread.of([a / b for a, b in zip(numerators, denominators, strict=True)])


def interleaved_rounds(works: dict[str, Callable[[], float]], rounds: int = MIN_ROUNDS,
                       warmup: int = 1) -> dict[str, list[float]]:
    """Run every work once per round (the order alternating between rounds) after ``warmup`` untimed
    rounds; each work returns its own figure for the round (ms/frame, frames/s, ...)."""
    if rounds < 1:
        raise ValueError("at least one round")
    names = list(works)
    for _ in range(warmup):
        for name in names:
            works[name]()
    figures: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            figures[name].append(float(works[name]()))
    return figures
