"""plan_batch: deadline-aware batch formation, proved in simulated time against a known batch latency.

No threads and no clock: ``simulate`` runs one worker on the planner with a batch latency of
``0.02 + 0.05 * size`` seconds (a batch of 8 takes 0.42 s: 19 frames/s at best), the way the batcher does,
and reports when each frame was answered. The scenarios are those of a line: a burst beyond capacity,
sustained 2x and 5x overload, normal load, and what comes right after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from lineguard.runtime.line.batch_latency import BatchLatency, warm_up_sizes
from lineguard.runtime.line.batch_plan import hopeless, plan_batch

DEADLINE = 0.2
MAX_BATCH = 8


def linear(size: int) -> float:
    return 0.02 + 0.05 * size


CAPACITY = MAX_BATCH / linear(MAX_BATCH)  # frames/s at the best batch size


@dataclass(eq=False)
class Frame:
    name: str
    deadline: float
    enqueued: float
    product: str | None = "a"
    units: int = 1


def frame(name: str, deadline: float, enqueued: float = 0.0, product: str | None = "a", units: int = 1) -> Frame:
    return Frame(name, deadline, enqueued, product, units)


def warmed(margin_deviations: float = 2.0) -> BatchLatency:
    """A latency model after the service's warm-up on a machine where batches take ``linear``."""
    latency = BatchLatency(margin_deviations)
    for size in warm_up_sizes(MAX_BATCH):
        latency.observe(size, linear(size))
    return latency


@dataclass
class Outcome:
    judged: dict[str, float] = field(default_factory=dict)  # frame -> when its verdict was ready
    timeouts: dict[str, float] = field(default_factory=dict)  # frame -> when it was answered TIMEOUT
    batches: list[int] = field(default_factory=list)

    def count(self, prefix: str) -> int:
        return sum(name.startswith(prefix) for name in self.judged)


def simulate(arrivals: list[tuple[str, float]], latency: BatchLatency | None = None, deadline_aware: bool = True,
             max_queue_delay: float = 0.005) -> Outcome:
    """One worker, the planner, batches taking ``linear(size)``; every frame's deadline is DEADLINE after it
    arrives. A batched frame is judged if its batch ends by its deadline, else TIMEOUT at the deadline."""
    latency = latency or warmed()
    pending = sorted(arrivals, key=lambda a: a[1])
    queue: list[Frame] = []
    out = Outcome()
    now, i = 0.0, 0
    while i < len(pending) or queue:
        while i < len(pending) and pending[i][1] <= now:
            name, at = pending[i]
            queue.append(Frame(name, at + DEADLINE, at))
            i += 1
        plan = plan_batch(queue, now, latency.predict, MAX_BATCH, max_queue_delay, deadline_aware=deadline_aware,
                          expect=latency.mean)
        for r in plan.doomed:
            out.timeouts[r.name] = now
        gone = {id(r) for r in [*plan.batch, *plan.doomed]}
        queue = [r for r in queue if id(r) not in gone]
        if plan.batch:
            expected_end = plan.busy_until if plan.busy_until is not None else now
            took = linear(len(plan.batch))
            while i < len(pending) and pending[i][1] <= now + took:  # arrivals while the worker is busy
                name, at = pending[i]
                arrived = Frame(name, at + DEADLINE, at)
                if deadline_aware and hopeless([arrived], expected_end, latency.mean):
                    out.timeouts[name] = at  # told on arrival
                else:
                    queue.append(arrived)
                i += 1
            latency.observe(len(plan.batch), took)
            now += took
            out.batches.append(len(plan.batch))
            for r in plan.batch:
                if now <= r.deadline:
                    out.judged[r.name] = now
                else:
                    out.timeouts[r.name] = r.deadline
            continue
        if plan.doomed:
            continue
        wake = min(pending[i][1] if i < len(pending) else math.inf,
                   plan.wake_at if plan.wake_at is not None else math.inf)
        assert wake < math.inf, "frames queued, nothing due and nothing to wait for"
        now = max(wake, now + 1e-6)
    return out


def stream(prefix: str, rate_fps: float, start: float, seconds: float) -> list[tuple[str, float]]:
    return [(f"{prefix}{k}", start + k / rate_fps) for k in range(int(rate_fps * seconds))]


def burst(count: int, at: float = 0.0) -> list[tuple[str, float]]:
    return [(f"b{k}", at + k * 1e-4) for k in range(count)]  # as fast as the socket loop reads them


def assert_one_answer_each(arrivals: list[tuple[str, float]], out: Outcome) -> None:
    assert not set(out.judged) & set(out.timeouts)
    assert set(out.judged) | set(out.timeouts) == {name for name, _ in arrivals}


def test_a_burst_is_judged_up_to_deadline_times_capacity_and_the_rest_answered_at_once() -> None:
    arrivals = burst(60)
    out = simulate(arrivals)
    ideal = DEADLINE * CAPACITY
    assert_one_answer_each(arrivals, out)
    assert out.count("b") >= 0.6 * ideal
    assert out.batches == [out.count("b")]  # one batch, all of it in time: no inference spent in vain
    assert max(out.timeouts.values()) < 0.01  # the rest were told at once, not at their deadline


def test_without_deadline_awareness_the_same_burst_judges_nothing() -> None:
    arrivals = burst(60)
    out = simulate(arrivals, deadline_aware=False)
    assert_one_answer_each(arrivals, out)
    assert out.count("b") == 0  # every batch of 8 takes 0.42 s, twice the deadline, and the queue stays late


def test_the_first_frame_after_a_burst_is_judged_in_time() -> None:
    after = stream("after", CAPACITY / 2, start=0.1, seconds=2.0)
    out = simulate(burst(60) + after)
    assert all(f"after{k}" in out.judged for k in range(len(after)))


@pytest.mark.parametrize("overload", [2.0, 5.0])
def test_sustained_overload_judges_most_of_capacity_and_recovers_at_once(overload: float) -> None:
    seconds = 5.0
    hot = stream("hot", overload * CAPACITY, start=0.0, seconds=seconds)
    after = stream("after", CAPACITY / 2, start=seconds + 0.1, seconds=2.0)
    out = simulate(hot + after)
    assert_one_answer_each(hot + after, out)
    ideal = CAPACITY * (seconds + DEADLINE)
    assert out.count("hot") >= 0.6 * ideal
    assert all(f"after{k}" in out.judged for k in range(len(after)))
    late = [name for name, at in out.timeouts.items() if name.startswith("hot") and at > dict(hot)[name] + DEADLINE]
    assert late == []  # a frame that was given up was told by its deadline


def test_sustained_overload_without_deadline_awareness_collapses() -> None:
    hot = stream("hot", 2 * CAPACITY, start=0.0, seconds=5.0)
    out = simulate(hot, deadline_aware=False)
    assert [name for name, at in out.judged.items() if at > 0.5] == []  # late after the first batches, for good


def test_below_capacity_every_frame_is_judged() -> None:
    arrivals = stream("f", 0.5 * CAPACITY, start=0.0, seconds=5.0)
    out = simulate(arrivals)
    assert len(out.judged) == len(arrivals) and not out.timeouts


def test_an_urgent_frame_goes_first_when_the_big_batch_still_fits_after_it() -> None:
    latency = warmed(margin_deviations=0.0)  # T(1) 0.07, T(2) 0.12, T(3) 0.17
    urgent = frame("urgent", deadline=0.08)
    fresh = [frame(f"n{k}", deadline=0.30, enqueued=0.1) for k in range(3)]
    plan = plan_batch([urgent, *fresh], 0.0, latency.predict, MAX_BATCH)
    assert plan.batch == [urgent] and plan.doomed == []  # then the three at 0.07 + 0.17 <= 0.30


def test_a_late_queue_serves_the_newest_and_gives_the_late_frames_up_at_once() -> None:
    latency = warmed(margin_deviations=0.0)
    late = [frame(f"old{k}", deadline=0.10) for k in range(3)]  # each would make it alone
    fresh = [frame(f"n{k}", deadline=0.19) for k in range(3)]
    plan = plan_batch([*late, *fresh], 0.0, latency.predict, MAX_BATCH)
    assert [r.name for r in plan.batch] == ["n0", "n1", "n2"]
    assert [r.name for r in plan.doomed] == ["old0", "old1", "old2"]


def test_frames_that_cannot_finish_even_alone_are_doomed_before_anything_else() -> None:
    latency = warmed(margin_deviations=0.0)
    plan = plan_batch([frame("gone", deadline=0.05), frame("ok", deadline=1.0)], 0.0, latency.predict, MAX_BATCH)
    assert [r.name for r in plan.doomed] == ["gone"] and [r.name for r in plan.batch] == ["ok"]


def test_other_products_keep_their_place_and_are_shed_only_if_they_cannot_make_it_after() -> None:
    latency = warmed(margin_deviations=0.0)
    queue = [frame("a0", 1.0), frame("b0", 1.0, product="b"), frame("b1", 0.1, product="b"), frame("a1", 1.0)]
    plan = plan_batch(queue, 0.0, latency.predict, MAX_BATCH, closing=True)
    assert [r.name for r in plan.batch] == ["a0", "a1"]
    assert [r.name for r in plan.doomed] == ["b1"]  # 0.12 + 0.07 > 0.1: cannot make it after this batch


def test_another_free_worker_keeps_the_rest_alive() -> None:
    latency = warmed(margin_deviations=0.0)
    queue = [frame(f"a{k}", 0.2) for k in range(3)] + [frame("b", 0.2, product="b")]
    alone = plan_batch(queue, 0.0, latency.predict, MAX_BATCH, closing=True)
    assert [r.name for r in alone.doomed] == ["b"]
    shared = plan_batch(queue, 0.0, latency.predict, MAX_BATCH, closing=True, next_free=0.0)
    assert shared.doomed == [] and len(shared.batch) == 3


def test_a_lone_frame_waits_for_company_only_while_it_can_afford_to() -> None:
    latency = warmed(margin_deviations=0.0)
    plan = plan_batch([frame("f", deadline=1.0)], 0.0, latency.predict, MAX_BATCH, max_queue_delay=0.005)
    assert plan.batch == [] and plan.wake_at == pytest.approx(0.005)
    tight = plan_batch([frame("f", deadline=0.11)], 0.0, latency.predict, MAX_BATCH, max_queue_delay=0.005)
    assert [r.name for r in tight.batch] == ["f"]  # with one more frame (0.12 s) it would be late


def test_an_unmeasured_model_batches_in_arrival_order_and_sheds_only_the_expired() -> None:
    queue = [frame(f"f{k}", deadline=0.5) for k in range(10)] + [frame("expired", deadline=-0.1)]
    plan = plan_batch(queue, 0.0, lambda size: None, MAX_BATCH)
    assert [r.name for r in plan.batch] == [f"f{k}" for k in range(8)]
    assert [r.name for r in plan.doomed] == ["expired"]


def test_a_model_that_says_nothing_can_ever_make_it_is_probed_not_trusted() -> None:
    latency = BatchLatency(margin_deviations=0.0)
    latency.observe(1, 0.4)  # one slow batch; every frame's whole budget is 0.25 s
    queue = [frame("old", deadline=0.25, enqueued=0.0), frame("new", deadline=0.30, enqueued=0.05)]
    plan = plan_batch(queue, 0.06, latency.predict, MAX_BATCH)
    assert plan.probe and [r.name for r in plan.batch] == ["new"] and [r.name for r in plan.doomed] == ["old"]
    latency.observe(1, 0.4)
    honest = plan_batch([frame("f", deadline=1.0, enqueued=0.0)], 0.7, latency.predict, MAX_BATCH)
    assert not honest.probe and [r.name for r in honest.doomed] == ["f"]  # its budget would have allowed it


def test_plain_dynamic_batching_waits_for_the_queue_delay_and_sheds_nothing() -> None:
    queue = [frame("a0", 0.01), frame("b0", 9.0, product="b"), frame("a1", 9.0)]
    waiting = plan_batch(queue, 0.0, lambda size: 1.0, MAX_BATCH, max_queue_delay=0.005, deadline_aware=False)
    assert waiting.batch == [] and waiting.doomed == [] and waiting.wake_at == pytest.approx(0.005)
    due = plan_batch(queue, 0.005, lambda size: 1.0, MAX_BATCH, max_queue_delay=0.005, deadline_aware=False)
    assert [r.name for r in due.batch] == ["a0", "a1"] and due.doomed == []


def test_a_lone_frame_is_tried_on_the_mean_latency_a_batch_only_with_the_margin() -> None:
    """A noisy machine: the mean says 0.1 s a frame, the margin 0.15 s. A frame with 0.12 s left is still
    worth a try alone (it risks only itself; the alternative is giving it up), never a batch of two."""
    def predict(size: int) -> float:
        return 0.15 * size

    def expect(size: int) -> float:
        return 0.10 * size

    queue = [frame("f0", deadline=0.12, enqueued=-1.0), frame("f1", deadline=0.12, enqueued=-1.0)]
    plan = plan_batch(queue, 0.0, predict, MAX_BATCH, expect=expect)
    assert len(plan.batch) == 1 and len(plan.doomed) == 1
    assert plan.busy_until == pytest.approx(0.10)
    cautious = plan_batch(queue, 0.0, predict, MAX_BATCH)  # the margin for a lone frame too: both given up
    assert cautious.batch == [] and len(cautious.doomed) == 2


def test_when_nothing_could_follow_the_batch_takes_the_frames_with_the_most_slack() -> None:
    latency = warmed(margin_deviations=0.0)  # T(1) 0.07, T(3) 0.17
    burst = [frame(f"b{k}", deadline=0.2 + k * 0.001) for k in range(10)]
    plan = plan_batch(burst, 0.0, latency.predict, MAX_BATCH, closing=True, expect=latency.mean)
    assert [r.name for r in plan.batch] == ["b7", "b8", "b9"]  # 0.17 + 0.07 > 0.209: none could follow
    assert len(plan.doomed) == 7
    spread = [frame("old", deadline=0.2), frame("young", deadline=0.5)]
    plan = plan_batch(spread, 0.0, latency.predict, 1, closing=True, expect=latency.mean)
    assert [r.name for r in plan.batch] == ["old"]  # earliest deadline first: "young" still makes it after


def test_a_frame_inspected_as_tiles_is_planned_at_the_cost_of_its_tiles() -> None:
    """A frame of a product inspected as 2 x 2 tiles costs 4 whole frames: T(4) 0.22 s alone, T(8) 0.42 s
    for two. With 0.3 s to live, two whole frames go in one batch; of two tiled frames one runs and the
    other, which cannot make it after, is given up at once."""
    latency = warmed(margin_deviations=0.0)
    whole = [frame(f"a{k}", deadline=0.3) for k in range(2)]
    plan = plan_batch(whole, 0.0, latency.predict, MAX_BATCH, closing=True, expect=latency.mean)
    assert len(plan.batch) == 2 and plan.doomed == []
    tiled = [frame(f"t{k}", deadline=0.3, product="t", units=4) for k in range(2)]
    plan = plan_batch(tiled, 0.0, latency.predict, MAX_BATCH, closing=True, expect=latency.mean)
    assert len(plan.batch) == 1 and len(plan.doomed) == 1 and plan.busy_until == pytest.approx(0.22)
    # a whole frame queued behind a tiled batch is kept: it still makes it after (0.22 + 0.07 <= 0.3)
    plan = plan_batch([tiled[0], whole[0]], 0.0, latency.predict, MAX_BATCH, closing=True, expect=latency.mean)
    assert plan.batch == [tiled[0]] and plan.doomed == []
    # on arrival behind a busy worker (free at 0.1) a tiled frame is hopeless, a whole one is not
    assert hopeless([tiled[0], whole[0]], 0.1, latency.mean) == [tiled[0]]
    # with 0.2 s left of a longer wait, a lone tiled frame (0.22 s) is doomed where a whole one (0.07 s) runs
    left = [frame("t", deadline=0.2, enqueued=-1.0, product="t", units=4), frame("a", deadline=0.2, enqueued=-1.0)]
    plan = plan_batch(left, 0.0, latency.predict, MAX_BATCH, closing=True, expect=latency.mean)
    assert [r.name for r in plan.doomed] == ["t"] and [r.name for r in plan.batch] == ["a"]
