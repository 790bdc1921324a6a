"""ONNX Runtime's CPU threading per deployment: spinning off by default (the LLM, other workers and the
scoring share the cores), thread counts that leave the LLM its threads, pinning from the line config,
and `serve` saying what it chose and why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lineguard.runtime.inference.ort_backend import OnnxRuntimeBackend
from lineguard.runtime.inference.ort_threading import OrtThreading, choose_threading
from lineguard.runtime.line.config import LineConfig, LineConfigError, threading_for_line


def test_defaults_leave_the_llm_its_threads_and_never_spin() -> None:
    alone = choose_threading([0, 1])
    assert alone.intra_op_threads == 2 and not alone.allow_spinning
    assert "scoring" in alone.reason
    shared = choose_threading([0, 1, 2, 3], llm_threads=1, workers=2)
    assert shared.intra_op_threads == 3 and not shared.allow_spinning
    assert "explanation LLM (1 thread)" in shared.reason and "2 inference workers" in shared.reason
    assert choose_threading([0], llm_threads=2).intra_op_threads == 1  # never zero


def test_line_config_wins_and_says_so() -> None:
    chosen = choose_threading([0, 1], intra_op_threads=4, allow_spinning=True)
    assert (chosen.intra_op_threads, chosen.allow_spinning) == (4, True)
    assert "from the line config" in chosen.summary()


def test_pinned_threads_use_onnxruntime_affinity_format() -> None:
    pinned = choose_threading([2, 3, 5], pin=True)
    assert pinned.intra_op_threads == 3
    assert pinned.affinities == "4;6"  # pool threads 2..n on cores 3 and 5 (ids from 1); the caller is not pinned
    assert OrtThreading(intra_op_threads=1, cores=(2,)).affinities is None
    assert "on cores [2, 3, 5]" in pinned.summary()


def test_serve_threading_follows_the_line_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import lineguard.runtime.line.config as config_module

    monkeypatch.setattr(config_module, "usable_cores", lambda: [0, 1, 2, 3])  # a 4-core box
    config = LineConfig(line="t", explanations={"threads": 1}, batching={"workers": 2},
                        inference={"cpu_cores": [0, 1, 2]})
    with_llm = threading_for_line(config, has_llm=True)
    assert with_llm.intra_op_threads == 2 and with_llm.cores == (0, 1, 2) and not with_llm.allow_spinning
    assert threading_for_line(config, has_llm=False).intra_op_threads == 3
    off = LineConfig(line="t", explanations={"enabled": False})
    assert "LLM" not in threading_for_line(off, has_llm=True).reason
    with pytest.raises(LineConfigError, match="inference.intra_op_threads"):
        LineConfig(line="t", inference={"intra_op_threads": 0})
    with pytest.raises(LineConfigError, match=r"inference.cpu_cores: CPUs \[7, 9\] are not available to this "
                                              r"process \(available: \[0, 1, 2, 3\]\)"):
        threading_for_line(LineConfig(line="t", inference={"cpu_cores": [1, 7, 9]}), has_llm=False)


def test_sessions_get_the_chosen_options(bundle_dir: Path) -> None:
    from lineguard.runtime.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    backend = OnnxRuntimeBackend(bundle.path(bundle.manifest.encoder.file), ["CPUExecutionProvider"],
                                 OrtThreading(intra_op_threads=2, allow_spinning=False, cores=(0, 1)))
    assert backend.session.get_session_options().intra_op_num_threads == 2
    assert backend.threading.affinities == "2"


def test_serve_logs_its_threading_choice(bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lineguard.runtime.line.server import LineServer

    with caplog.at_level(logging.INFO, logger="lineguard.runtime.line.server"):
        server = LineServer.from_bundle(bundle_dir, LineConfig(line="t", inference={"backend": "onnxruntime"}))
    assert "onnxruntime 1 intra-op thread" in caplog.text or "intra-op threads" in caplog.text
    assert "spinning off because" in caplog.text
    # what `lineguard serve` prints beside the backend line: the sessions' own choice
    assert "spinning off because" in server.inspector.chain.encoder.threading.summary()
