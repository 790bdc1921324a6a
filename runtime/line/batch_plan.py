"""Which frames the next batch takes, and which can no longer make their deadline: deadline-aware batching.

Usage::

    from lineguard.runtime.line.batch_plan import plan_batch

    plan = plan_batch(queue, now, latency.predict, max_batch=8, max_queue_delay=0.005, expect=latency.mean)
    plan.doomed     # answer these TIMEOUT now: no batch can finish them before their deadline
    plan.batch      # run these now, as one batch of one product; empty: plan again at plan.wake_at

A pure function of the queue, the time and the latency model (``predict(units)``: seconds a batch of
``units`` is planned with, margin included, None while unmeasured; ``expect(units)``: the mean, without
margin), so it is tested without threads or clocks. A batch's units are its frames times each frame's
``units``: what one frame costs in frames inspected whole (a product inspected as n x n tiles runs n² encoder
items a frame: lineguard.runtime.inference.tiling), so a tiled product's batches are planned at their own
cost on a line that serves both. A lone frame is planned with the mean and a batch
of several with the margin: a batch that runs late loses all its frames, a lone frame only itself, and
the alternative to trying it is giving it up (or an idle worker). The rules, as deadline-aware serving
systems batch (Clipper's and Nexus's early drop, adapted to one queue):

1. A frame that cannot finish even alone, starting now, is doomed.
2. The head's product (the oldest viable frame's) is batched; the batch size is the largest ``b`` up to
   ``max_batch`` for which ``b`` frames exist that all finish in time: the ``b`` latest deadlines are
   no earlier than ``now + predict(b x the frames' units)`` (the mean for a lone frame). Bigger batches
   are more frames per second, so under overload this judges the most frames.
3. When every viable frame of that product fits such a batch, the batch takes them earliest deadline
   first (the newer ones keep their slack for the next batch), unless no frame could be served after
   it anyway: then it takes those with the most slack (a burst). When some do not (they would make it
   alone, not in a batch that size), a small batch of them goes first if the big one still finishes in
   time after it; otherwise the queue is late: the batch takes the newest frames and the late ones are
   given up, instead of every frame behind them missing its deadline too.
4. When a batch is taken, every other frame that cannot finish alone after the next moment a worker is
   free is doomed as well: TIMEOUT at once, not at its deadline; so is a frame that arrives while the
   workers are busy and cannot finish alone after them (:func:`hopeless`).
5. A batch is due when it is full, when deadlines cap its size, when its oldest frame has waited
   ``max_queue_delay``, when waiting for one more frame would make it late, or while closing.
6. Probe: when nothing is viable only because the model says a lone frame takes longer than a frame's
   whole deadline budget, the newest frame runs alone anyway: the model may be stale (one slow batch),
   and running measures it again, so one bad measurement cannot shut the line out.

``deadline_aware=False`` is Triton's plain dynamic batching: up to ``max_batch`` of the head's product in
arrival order once full or once the oldest has waited ``max_queue_delay``; nothing is shed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Pending(Protocol):
    """What planning reads of a queued frame (``FrameRequest`` has it; times in one clock's seconds)."""

    @property
    def deadline(self) -> float: ...

    @property
    def product(self) -> str | None: ...

    @property
    def enqueued(self) -> float: ...

    @property
    def units(self) -> int: ...  # what the frame costs, in frames inspected whole (tiles per side, squared)


P = TypeVar("P", bound=Pending)
Predict = Callable[[int], "float | None"]


@dataclass
class BatchPlan(Generic[P]):
    batch: list[P] = field(default_factory=list)  # run now as one batch (one product)
    doomed: list[P] = field(default_factory=list)  # answer TIMEOUT now
    wake_at: float | None = None  # nothing due: plan again then (None: when the queue changes)
    probe: bool = False  # the batch is a lone frame the model says cannot make it (see rule 6)
    busy_until: float | None = None  # when the batch is expected to end (as planned)


def plan_batch(queue: Sequence[P], now: float, predict: Predict, max_batch: int, max_queue_delay: float = 0.0,
               next_free: float | None = None, closing: bool = False, deadline_aware: bool = True,
               expect: Predict | None = None) -> BatchPlan[P]:
    """Plan the next batch for a worker free at ``now``. ``queue`` is in arrival order; ``next_free``: when
    the soonest of the other workers is free (None: there is no other worker); ``expect``: the mean
    latency a lone frame is planned with (default: ``predict``)."""
    if not queue:
        return BatchPlan()
    if not deadline_aware:
        return _fifo(queue, now, max_batch, max_queue_delay, closing)

    def alone(r: P) -> float:  # a lone frame: planned with the mean
        return (expect or predict)(r.units) or 0.0

    viable = [r for r in queue if r.deadline >= now + alone(r)]
    doomed = [r for r in queue if r.deadline < now + alone(r)]
    if not viable:
        probe = _probe(doomed, now, alone)
        if probe is None:
            return BatchPlan(doomed=doomed)
        return BatchPlan(batch=[probe], doomed=[r for r in doomed if r is not probe], probe=True,
                         busy_until=now + alone(probe))

    head = viable[0]
    solo = alone(head)

    def cost(size: int) -> float:  # ``size`` frames of the head's product
        return solo if size == 1 else predict(size * head.units) or 0.0

    same = sorted((r for r in viable if r.product == head.product), key=lambda r: r.deadline)
    n = len(same)
    size = next(b for b in range(min(max_batch, n), 0, -1) if same[n - b].deadline >= now + cost(b))
    cut = now + cost(size)
    late = [r for r in same if r.deadline < cut]
    eligible = same[len(late):]
    if late:
        batch = _late_first(late, eligible[-size:], now, cost, max_batch) or eligible[-size:]
    else:
        then = now + cost(size) if next_free is None else min(now + cost(size), max(now, next_free))
        batch = eligible[:size] if same[-1].deadline >= then + solo else eligible[-size:]

    oldest = min(r.enqueued for r in batch)
    earliest_deadline = min(r.deadline for r in batch)
    due = (closing or n >= max_batch or size < n or now >= oldest + max_queue_delay
           or now + cost(len(batch) + 1) > earliest_deadline)
    if not due:
        return BatchPlan(doomed=doomed, wake_at=min(oldest + max_queue_delay,
                                                    earliest_deadline - cost(len(batch) + 1)))
    busy_until = now + cost(len(batch))
    free = busy_until if next_free is None else min(busy_until, max(now, next_free))
    taken = {id(r) for r in batch}
    doomed += [r for r in viable if id(r) not in taken and r.deadline < free + alone(r)]
    return BatchPlan(batch=batch, doomed=doomed, busy_until=busy_until)


def hopeless(queue: Sequence[P], free_at: float, expect: Predict) -> list[P]:
    """Queued frames that cannot finish even alone (at the mean latency ``expect(units)``) once a worker is
    free at ``free_at``: rule 4 for frames that arrive while every worker is busy (the batcher checks them
    on arrival, not at the next plan). Frames whose whole budget the model says a lone frame exceeds are
    left to planning (rule 6)."""
    def alone(r: P) -> float:
        return expect(r.units) or 0.0

    return [r for r in queue if r.deadline < free_at + alone(r) and r.deadline - r.enqueued >= alone(r)]


def _late_first(late: list[P], big: list[P], now: float, cost: Callable[[int], float], max_batch: int) -> list[P] | None:
    """The largest group of late frames that finishes in time now and still leaves ``big`` in time after."""
    need = min(r.deadline for r in big)
    for m in range(min(max_batch, len(late)), 0, -1):
        first = late[-m:]  # the late frames with the most time left
        if first[0].deadline >= now + cost(m) and now + cost(m) + cost(len(big)) <= need:
            return first
    return None


def _probe(doomed: list[P], now: float, alone: Callable[[P], float]) -> P | None:
    """The newest unexpired frame whose whole budget the model says a lone frame exceeds (rule 6)."""
    suspect = [r for r in doomed if r.deadline > now and r.deadline - r.enqueued < alone(r)]
    return max(suspect, key=lambda r: r.deadline, default=None)


def _fifo(queue: Sequence[P], now: float, max_batch: int, max_queue_delay: float, closing: bool) -> BatchPlan[P]:
    head = queue[0]
    same = [r for r in queue if r.product == head.product][:max_batch]
    due_at = head.enqueued + max_queue_delay
    if closing or len(same) >= max_batch or now >= due_at:
        return BatchPlan(batch=same)
    return BatchPlan(wake_at=due_at)
