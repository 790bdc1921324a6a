"""BatchLatency: measured means per batch size, the linear fallback, the learnt margin."""

from __future__ import annotations

import pytest

from lineguard.runtime.line.batch_latency import PRIOR_RELATIVE_DEVIATION, BatchLatency, warm_up_sizes


def test_unmeasured_model_predicts_nothing() -> None:
    latency = BatchLatency()
    assert latency.mean(1) is None and latency.predict(4) is None and latency.capacity_fps() is None


def test_unmeasured_sizes_follow_the_line_through_the_measured_ones() -> None:
    latency = BatchLatency(margin_deviations=0.0)
    for size in warm_up_sizes(8):  # 1, 2, 3, 4, 8
        latency.observe(size, 0.02 + 0.05 * size)
    assert warm_up_sizes(8) == [1, 2, 3, 4, 8]
    for size in (2, 3, 5, 6, 7):
        assert latency.mean(size) == pytest.approx(0.02 + 0.05 * size)
    assert latency.capacity_fps() == pytest.approx(8 / 0.42)


def test_one_measured_size_is_pessimistic_for_the_others() -> None:
    latency = BatchLatency(margin_deviations=0.0)
    latency.observe(4, 0.4)
    assert latency.mean(1) == pytest.approx(0.4)  # smaller: as long as the measured size
    assert latency.mean(8) == pytest.approx(0.8)  # larger: proportional


def test_a_bigger_batch_is_never_planned_shorter_than_a_smaller_measured_one() -> None:
    latency = BatchLatency(margin_deviations=0.0)
    latency.observe(1, 0.10)
    latency.observe(2, 0.30)  # noisy measurement
    latency.observe(8, 0.40)
    assert latency.mean(3) >= 0.30


def test_the_mean_follows_a_slower_machine_and_the_margin_grows_with_the_noise() -> None:
    latency = BatchLatency(margin_deviations=2.0)
    latency.observe(1, 0.1)
    assert latency.predict(1) == pytest.approx(0.1 * (1 + 2 * PRIOR_RELATIVE_DEVIATION))
    for _ in range(20):
        latency.observe(1, 0.1)
    steady = latency.predict(1)
    assert steady < 0.1 * (1 + 2 * PRIOR_RELATIVE_DEVIATION)  # no errors: the margin shrinks
    for _ in range(20):
        latency.observe(1, 0.2)
    assert latency.mean(1) == pytest.approx(0.2, rel=0.01)
    for seconds in (0.15, 0.25) * 10:
        latency.observe(1, seconds)
    assert latency.predict(1) - latency.mean(1) > steady - 0.1  # a noisy machine gets a wider margin


def test_bad_observations_are_refused() -> None:
    with pytest.raises(ValueError):
        BatchLatency().observe(0, 0.1)
    with pytest.raises(ValueError):
        BatchLatency(margin_deviations=-1)
