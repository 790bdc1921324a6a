"""Assembling the line service's parts from its config: the inspector, CURVE, the archive, the LLM judge, the
explanation port.

Usage::

    inspector, threads = line_inspector("bundles/default", config)   # on the backend config.inference asks for
    curve = curve_authority(config, context)               # None without security.curve
    archive = frame_archive(config.archive)                # None without archive.dir
    judge = llm_judge(config, inspector)                   # None unless llm_verdict names products
    explanations = explanation_server(config, inspector, archive, context, curve, on_reply=metrics.observe_explanation)

Owns what the line's config asks of the optional parts and the start-up errors they raise
(:class:`ServerError`, with the line's name); the server (lineguard.runtime.line.server) only wires the
results together. Each LLM part runs its model in a process of its own, so explanations never queue ahead
of the judge.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import zmq

from lineguard.runtime.bundle import Bundle
from lineguard.runtime.bundle.signature import SigningKeyError, load_public_key
from lineguard.runtime.contract import ExplainReply
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.ort_threading import OrtThreading
from lineguard.runtime.line.analyze import JudgePolicy
from lineguard.runtime.line.archive import FrameArchive
from lineguard.runtime.line.config import Archive, LineConfig, threading_for_line
from lineguard.runtime.llm.explain_server import ExplanationPortError, ExplanationServer
from lineguard.runtime.llm.grounding import Grounder, GroundingError
from lineguard.runtime.llm.judge import LlmJudge
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker, LlmWorkerError
from lineguard.runtime.scoring.inspector import Inspector
from lineguard.runtime.security.curve import CurveError
from lineguard.runtime.security.curve_auth import CurveAuthority

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The service could not start (bind failed, product not enrolled, warm-up failed)."""


def line_inspector(bundle: str | os.PathLike[str], config: LineConfig) -> tuple[Inspector, OrtThreading]:
    """Open the bundle (its signature checked when the line names a ``security.bundle_public_key``) and run its
    models on the backend ``config.inference`` asks for, with the line's false-reject budget; the inspector,
    and the ONNX Runtime threading chosen for this line (used when that is the backend)."""
    trusted_key = config.security.bundle_public_key
    if trusted_key is not None:  # a bad key path is the line config's fault: say which setting
        try:
            load_public_key(trusted_key)
        except SigningKeyError as exc:
            raise ServerError(f"line {config.line}: security.bundle_public_key: {exc}") from None
    opened = Bundle.open(bundle, trusted_key=trusted_key)
    inference = config.inference
    threads = threading_for_line(config, has_llm=opened.manifest.llm is not None)
    chain = VisionChain(opened, backend=inference.backend, triton_url=inference.triton_url,
                        triton_model=inference.triton_model, engine_cache_dir=inference.engine_cache_dir,
                        precisions=inference.precisions, threads=threads, cpu_precision=inference.cpu_precision,
                        products=config.products or None)
    return Inspector(opened, false_reject_budget=config.false_reject_budget, chain=chain), threads


def curve_authority(config: LineConfig, context: zmq.Context) -> CurveAuthority | None:
    """The ZAP authority of ``security.curve`` on ``context`` (None: CURVE is off)."""
    curve = config.security.curve
    if curve is None:
        return None
    try:
        return CurveAuthority(curve, context)
    except CurveError as exc:
        raise ServerError(f"line {config.line}: security.curve: {exc}") from None


def frame_archive(section: Archive) -> FrameArchive | None:
    """The NG archive ring of the ``archive`` section (None: no ``dir``, nothing is kept)."""
    return FrameArchive(section.dir, section.max_bytes, section.ok_sample_every) if section.dir is not None else None


def llm_judge(config: LineConfig, inspector: Inspector) -> LlmJudge | None:
    """A model process of its own for ``llm_verdict`` products; turns on the inspector's image evidence (the
    judge sees every frame's evidence, never the vision verdict)."""
    if not config.llm_verdict:
        return None
    llm = inspector.bundle.manifest.llm
    if llm is None:
        raise ServerError(f"line {config.line}: llm_verdict needs an LLM in the bundle (lineguard export llm)")
    settings = LlmSettings(n_threads=config.explanations.threads, max_tokens=4, nice=0)
    grounder = line_grounder(config, inspector)
    inspector.image_evidence = True
    try:
        return LlmJudge(LlmWorker(inspector.bundle.path(llm.file), settings).start(), grounder=grounder)
    except LlmWorkerError as exc:
        raise ServerError(f"line {config.line}: {exc}") from None


def line_grounder(config: LineConfig, inspector: Inspector) -> Grounder:
    """``llm.grounding`` of the line with the bundle's prompt learner (soft, both); refused when it has none."""
    try:
        return Grounder.for_bundle(inspector.bundle, config.llm.grounding)
    except GroundingError as exc:
        raise ServerError(f"line {config.line}: llm.grounding {config.llm.grounding}: {exc}") from None


def judge_policy(config: LineConfig, judge: LlmJudge | None) -> JudgePolicy | None:
    """What the batcher asks the judge: the products it decides."""
    return JudgePolicy(judge, frozenset(config.llm_verdict)) if judge is not None else None


def explanation_server(config: LineConfig, inspector: Inspector, archive: FrameArchive | None, context: zmq.Context,
                       curve: CurveAuthority | None, on_reply: Callable[[ExplainReply], None]) -> ExplanationServer | None:
    """The LLM explanation port, started (its own thread, the model in its own process), when the bundle has an
    LLM and ``explanations.enabled``; None otherwise, or without an archive (it explains archived frames)."""
    cfg = config.explanations
    llm = inspector.bundle.manifest.llm
    if not cfg.enabled or llm is None:
        return None
    if archive is None:
        log.warning("explanations need archive.dir (they explain archived frames): port %s not opened",
                    config.endpoints.explanations)
        return None
    settings = LlmSettings(n_ctx=cfg.context_tokens, n_threads=cfg.threads, max_tokens=cfg.max_tokens,
                           max_seconds=cfg.max_seconds)
    grounder = line_grounder(config, inspector)
    try:
        worker = LlmWorker(inspector.bundle.path(llm.file), settings).start()
    except LlmWorkerError as exc:
        raise ServerError(f"line {config.line}: {exc}") from None
    try:
        return ExplanationServer(config.endpoints.explanations, archive, worker, cfg.max_pending, cfg.max_tokens,
                                 context, on_reply=on_reply, max_question_chars=cfg.max_question_chars,
                                 max_request_bytes=cfg.max_request_bytes,
                                 secure=curve.secure if curve is not None else None, grounder=grounder).start()
    except ExplanationPortError as exc:
        raise ServerError(f"line {config.line}: {exc}") from None
