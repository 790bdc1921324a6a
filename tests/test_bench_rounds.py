"""Interleaved rounds and spreads: what `bench` reports for every comparison."""

from __future__ import annotations

import itertools

import pytest

from lineguard.bench.rounds import NO_DIFFERENCE, Spread, interleaved_rounds, ratio_spread


def test_rounds_alternate_order_after_warmup() -> None:
    calls: list[str] = []
    counter = itertools.count()

    def work(name: str):
        def run() -> float:
            calls.append(name)
            return float(next(counter))
        return run

    figures = interleaved_rounds({"a": work("a"), "b": work("b")}, rounds=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then A,B / B,A / ...
    assert len(figures["a"]) == len(figures["b"]) == 4


def test_spread_and_ratio_labels() -> None:
    spread = Spread.of([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (spread.median, spread.low, spread.high, spread.rounds) == (3.0, 1.0, 5.0, 5)
    assert spread.error == (2.0, 2.0)
    clear = ratio_spread([30, 33, 36, 31, 35], [10, 10, 11, 10, 10])
    assert not clear.crosses() and clear.effect().startswith("3.")
    noise = ratio_spread([9.5, 10.4, 10.0, 9.8, 10.6], [10, 10, 10, 10, 10])
    assert noise.crosses() and noise.effect().startswith(NO_DIFFERENCE)
    with pytest.raises(ValueError):
        ratio_spread([1.0], [1.0, 2.0])
