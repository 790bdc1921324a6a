"""The batcher's analyze step: decode a batch, run the inspector once, ask the LLM judge once, make each verdict.

Usage::

    step = AnalyzeStep(inspector, latency, bundle_id="b1", judge=JudgePolicy(llm_judge, frozenset({"weave"})),
                       cameras=config.cameras)
    step.run(batch, emit)           # emit(Outcome(request, verdict, inspection)) once per live request

Per batch (one product): each request's ``load`` decodes it (a FrameError answers that frame alone with its
code); the inspector analyses the decoded frames in one call (its wall time feeds the latency model); frames
whose deadline has passed by then are answered TIMEOUT at once; for a product the LLM decides
(``llm_verdict``), the judge is asked once for the whole batch, bounded by the earliest deadline among the
frames asked (less :data:`JUDGE_MARGIN_S`), and each answer (None: no clear answer, the vision verdict
stands) goes into its frame's verdict. Every verdict is made once, by ``Inspection.to_verdict``, with its
frame ids, decode time, total latency and TIMEOUT already decided. When inference raises for a batch of
several frames, each is inspected alone, so only the frame that breaks it is answered ERROR (INTERNAL,
BAD_SHAPE; UNKNOWN_PRODUCT for a product not enrolled answers all); a BaseException propagates (the
worker is being torn down: lineguard.runtime.line.batcher answers the batch WORKER_FAILED).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lineguard.runtime.contract import ErrorCode, FrameError, ImageEvidence, Verdict
from lineguard.runtime.inference.preprocess import ImageFormatError
from lineguard.runtime.line.batch_latency import BatchLatency
from lineguard.runtime.line.config import CameraConfig
from lineguard.runtime.line.pending import FrameRequest, error_for, timeout_for
from lineguard.runtime.scoring.inspector import Inspection, UnknownProductError

log = logging.getLogger(__name__)

JUDGE_MARGIN_S = 0.005  # the judge returns this long before the earliest deadline: time to publish


class Analyzer(Protocol):
    """What the batcher needs of an Inspector."""

    def analyze(self, images: Sequence[np.ndarray], product: str | None) -> list[Inspection]: ...

    def frame_units(self, product: str | None) -> int: ...  # a frame's cost in frames inspected whole


class BatchJudge(Protocol):
    """What the batcher needs of the LLM judge (lineguard.runtime.llm.judge.LlmJudge)."""

    def judge_batch(self, requests: Sequence[tuple[ImageEvidence, str]], timeout_s: float) -> list[bool | None]: ...


@dataclass(frozen=True)
class JudgePolicy:
    """The LLM judge and the products whose verdict it decides (the line's ``llm_verdict``)."""

    judge: BatchJudge
    products: frozenset[str]


@dataclass(frozen=True)
class Outcome:
    """A request's verdict, and for an inspected frame the findings behind it (what the archive keeps)."""

    request: FrameRequest
    verdict: Verdict
    inspection: Inspection | None = None


Emit = Callable[[Outcome], None]


class AnalyzeStep:
    def __init__(self, inspector: Analyzer, latency: BatchLatency, bundle_id: str,
                 judge: JudgePolicy | None = None, cameras: Mapping[str, CameraConfig] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inspector = inspector
        self.latency = latency
        self.bundle_id = bundle_id
        self.judge = judge
        self.cameras = dict(cameras or {})  # camera id -> its config (pixel scale: region sizes in mm)
        self._clock = clock

    def run(self, batch: Sequence[FrameRequest], emit: Emit) -> None:
        """Analyse one batch of one product; ``emit`` gets each request's outcome (none for a request already
        answered, e.g. by the deadline watch)."""
        started = self._clock()  # a batch's latency: decoding and inference
        live = self._decode(batch, emit)
        if not live:
            return
        product = live[0][0].product
        frames = self._inspect(live, product, started, emit)
        now = self._clock()
        late = [f for f in frames if now >= f[0].deadline]
        for f in late:  # answered now, not after the judge
            emit(self._outcome(*f, now=now))
        on_time = [f for f in frames if now < f[0].deadline]
        answers = self._ask_judge(on_time, product)
        now = self._clock()
        for f, answer in zip(on_time, answers, strict=True):
            emit(self._outcome(*f, now=now, answer=answer))

    def _inspect(self, live: list[tuple[FrameRequest, np.ndarray, float]], product: str | None, started: float | None,
                 emit: Emit) -> list[tuple[FrameRequest, float, Inspection]]:
        """The decoded frames inspected in one call: (request, decode ms, findings) for each. A call that fails
        for several frames is made again for each frame alone, so a frame that breaks inference (one the
        inspector cannot take, a bug) is answered ERROR alone and its batch mates still get their verdicts;
        ``started`` is None for those calls, which do not feed the latency model."""
        units = self.inspector.frame_units(product)  # as analyze runs it (a re-enrolment may have changed it)
        try:
            results = self.inspector.analyze([image for _, image, _ in live], product)
            if len(results) != len(live):
                raise RuntimeError(f"analyze returned {len(results)} results for {len(live)} images")
        except UnknownProductError as exc:
            for r, _, _ in live:
                emit(Outcome(r, error_for(r, ErrorCode.UNKNOWN_PRODUCT, str(exc), self.bundle_id, self._clock())))
            return []
        except Exception as exc:
            if len(live) > 1:
                log.warning("inference failed for a batch of %d %s frames (%r): each frame inspected alone",
                            len(live), product, exc)
                return [frame for one in live for frame in self._inspect([one], product, None, emit)]
            (r, _, _), = live
            if isinstance(exc, ImageFormatError):  # a frame the admission checks let through (a bug)
                emit(Outcome(r, error_for(r, ErrorCode.BAD_SHAPE, str(exc), self.bundle_id, self._clock())))
                return []
            log.exception("inference failed for %s frame %s/%s", product, r.camera_id, r.frame_id)
            emit(Outcome(r, error_for(r, ErrorCode.INTERNAL, f"inference failed: {exc!r}", self.bundle_id,
                                      self._clock())))
            return []
        if started is not None:
            self.latency.observe(len(live) * units, self._clock() - started)
        return [(r, decode_ms, result) for (r, _, decode_ms), result in zip(live, results, strict=True)]

    def _decode(self, batch: Sequence[FrameRequest], emit: Emit) -> list[tuple[FrameRequest, np.ndarray, float]]:
        """The decoded frames with their decode time (ms); a frame that cannot be decoded is answered here."""
        live: list[tuple[FrameRequest, np.ndarray, float]] = []
        for r in batch:
            if r.done:  # the deadline watch answered it already
                continue
            if self._clock() >= r.deadline:
                emit(Outcome(r, timeout_for(r, self.bundle_id, self._clock(), "deadline passed in the queue")))
                continue
            t0 = time.perf_counter()
            try:
                image = r.load()
            except FrameError as exc:
                emit(Outcome(r, error_for(r, exc.code, exc.message, self.bundle_id, self._clock())))
                continue
            except Exception as exc:
                emit(Outcome(r, error_for(r, ErrorCode.INTERNAL, f"decode failed: {exc!r}", self.bundle_id,
                                          self._clock())))
                continue
            live.append((r, image, (time.perf_counter() - t0) * 1e3))
        return live

    def _ask_judge(self, frames: list[tuple[FrameRequest, float, Inspection]], product: str | None) -> list[bool | None]:
        """The LLM's answer for each frame (None: not asked, or no clear answer in time): one call for the batch."""
        answers: list[bool | None] = [None] * len(frames)
        policy = self.judge
        if policy is None or product not in policy.products:
            return answers
        asked = [i for i, (r, _, result) in enumerate(frames) if result.evidence is not None and not r.done]
        if not asked:
            return answers
        earliest = min(frames[i][0].deadline for i in asked)
        timeout_s = max(0.0, earliest - self._clock() - JUDGE_MARGIN_S)
        requests = [(evidence, product) for i in asked if (evidence := frames[i][2].evidence) is not None]
        images = [(frames[i][2].anomaly_map, frames[i][2].model_rgb) for i in asked]
        try:
            said = policy.judge.judge_batch(requests, timeout_s=timeout_s, images=images)
        except Exception:  # the vision verdicts stand
            log.exception("the LLM judge failed on a batch of %d %s frames", len(requests), product)
            return answers
        if len(said) != len(asked):
            log.error("the LLM judge gave %d answers for %d frames; the vision verdicts stand", len(said), len(asked))
            return answers
        for i, answer in zip(asked, said, strict=True):
            answers[i] = answer
        return answers

    def _outcome(self, request: FrameRequest, decode_ms: float, result: Inspection, now: float,
                 answer: bool | None = None) -> Outcome:
        camera = self.cameras.get(request.camera_id)
        verdict = result.to_verdict(
            request.camera_id, request.frame_id, decode_ms=decode_ms, total_ms=(now - request.received) * 1e3,
            timed_out=now >= request.deadline, llm_says_anomaly=answer,
            mm_per_pixel=camera.mm_per_pixel if camera is not None else None)
        return Outcome(request, verdict, result)
