"""The TensorRT backend's plumbing on a machine without a GPU (tests/fake_tensorrt.py stands in for
``tensorrt`` and CUDA memory): the first execution slot is made at construction, a profile TensorRT
refuses (RuntimeError, as its binding raises) falls back to ONNX Runtime when the chain is opened,
and the encoder-decoder chain binds the decoder's inputs to the encoder's output buffers, so only the
image goes to the device and only the asked-for outputs come back; the backend describes itself and
close() frees every context, stream and buffer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import MODELS, compute, install, plan_bytes

from lineguard.runtime.bundle import Bundle, EngineRecord
from lineguard.runtime.inference.base import (
    Backend,
    BackendClosedError,
    BackendUnavailableError,
    GpuInfo,
    RunningDevice,
)
from lineguard.runtime.inference.chain_backends import open_chain_backends

ORIN = GpuInfo(name="Orin", compute_capability="8.7", cuda_runtime_version="12.6")


def write_plan(tmp_path: Path, model: str, **kwargs) -> Path:
    path = tmp_path / f"{model}.plan"
    path.write_bytes(plan_bytes(model, **kwargs))
    return path


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, *MODELS["encoder"]["inputs"]["image"])).astype(np.float32)


def test_first_slot_is_made_at_construction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch)
    from lineguard.runtime.inference.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(write_plan(tmp_path, "encoder", profiles=2))
    assert len(backend._slots) == 1  # context, stream and buffers exist before the first frame
    out = backend.run({"image": images(6)})  # beyond max batch 4: two chunks on the one slot
    want = compute("encoder", {"image": images(6)})
    for name in ("s1", "s2"):
        np.testing.assert_allclose(out[name], want[name], rtol=1e-6)
    backend.close()


@pytest.mark.parametrize("fail, message", [("profile", "optimisation profile 0"), ("context", "execution context")])
def test_a_refused_profile_or_context_fails_at_construction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            fail: str, message: str) -> None:
    install(monkeypatch)
    from lineguard.runtime.inference.tensorrt_backend import TensorRTBackend, TensorRTError

    with pytest.raises(TensorRTError, match=message):  # RuntimeError from the binding is turned into ours
        TensorRTBackend(write_plan(tmp_path, "encoder", fail=fail))


def engine_records(bundle: Bundle, tmp_path: Path, fail: str | None) -> None:
    from lineguard.export.tensorrt_engines import record_engines

    folder = bundle.root / "engines" / "orin-sm87-trt10.3.0"
    folder.mkdir(parents=True)
    records = []
    for model, onnx in (("encoder", bundle.manifest.encoder.file), ("decoder", bundle.manifest.decoder.file)):
        file = f"engines/orin-sm87-trt10.3.0/{model}.fp16.b4.plan"
        (bundle.root / file).write_bytes(plan_bytes(model, fail=fail))
        records.append(EngineRecord(
            model=model, file=file, onnx_sha256=bundle.manifest.files[onnx].sha256, precision="fp16", min_batch=1,
            opt_batch=4, max_batch=4, profiles=1, gpu_name="Orin", compute_capability="8.7", tensorrt_version="10.3.0",
            cuda_version="12.6", workspace_mb=1024, built_at="2026-11-30T00:00:00+00:00", parity_max_abs_diff=1e-3,
            parity_relative_diff=1e-3, parity_tolerance=3e-2, parity_passed=True))
    record_engines(bundle, records)


def test_tensorrt_failure_falls_back_to_onnxruntime_at_selection(monkeypatch: pytest.MonkeyPatch, bundle_copy: Path,
                                                                 tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Engines that match this (described) GPU but whose profile TensorRT refuses: ``auto`` runs ONNX
    Runtime and says why; an explicit ``tensorrt`` stops with the reason. Nothing waits for a frame."""
    install(monkeypatch)
    engine_records(Bundle.open(bundle_copy), tmp_path, fail="profile")
    bundle = Bundle.open(bundle_copy)
    device = RunningDevice(gpu=ORIN, tensorrt_version="10.3.0")
    with caplog.at_level(logging.WARNING, logger="lineguard.runtime.inference.chain_backends"):
        models = open_chain_backends(bundle, "auto", device=device)
    assert models.choice.backend == "onnxruntime"
    assert any("optimisation profile" in r for r in models.choice.reasons), models.choice.reasons
    assert models.device_chain is None  # CPU provider: nothing to keep on a device
    with pytest.raises(BackendUnavailableError, match="optimisation profile"):
        open_chain_backends(bundle, "tensorrt", device=device)


def test_working_engines_are_chosen_with_a_device_chain(monkeypatch: pytest.MonkeyPatch, bundle_copy: Path,
                                                        tmp_path: Path) -> None:
    install(monkeypatch)
    engine_records(Bundle.open(bundle_copy), tmp_path, fail=None)
    models = open_chain_backends(Bundle.open(bundle_copy), "auto", device=RunningDevice(gpu=ORIN, tensorrt_version="10.3.0"))
    from lineguard.runtime.inference.tensorrt_backend import TensorRTChain

    assert models.choice.backend == "tensorrt"
    assert isinstance(models.device_chain, TensorRTChain)
    described = models.encoder.describe()
    assert (described.backend, described.precision, described.device, described.max_batch) == ("tensorrt", "fp16",
                                                                                              "Orin", 4)
    assert described.providers == ["TensorRT 10.3.0"] and described.model == "encoder.fp16.b4.plan"
    models.close()
    assert models.encoder._slots == [] and models.decoder._slots == []


def test_chain_keeps_features_on_the_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    device = install(monkeypatch)
    from lineguard.runtime.inference.tensorrt_backend import TensorRTBackend, TensorRTChain

    encoder = TensorRTBackend(write_plan(tmp_path, "encoder"))
    decoder = TensorRTBackend(write_plan(tmp_path, "decoder"))
    chain = TensorRTChain(encoder, decoder)
    batch = images(3, seed=1)
    features = compute("encoder", {"image": batch})
    want = compute("decoder", features)
    device.copies.clear()
    out, timings = chain.run({"image": batch}, ["s1", "prob"])
    assert set(out) == {"s1", "prob"} and set(timings) == {"encoder", "decoder"}
    np.testing.assert_allclose(out["prob"], want["prob"], rtol=1e-6)
    np.testing.assert_allclose(out["s1"], features["s1"], rtol=1e-6)
    up = [n for kind, n in device.copies if kind == "h2d"]
    down = sorted(n for kind, n in device.copies if kind == "d2h")
    assert up == [batch.nbytes]  # the image only: no feature goes back up for the decoder
    assert down == sorted([features["s1"].nbytes, want["prob"].nbytes])  # s2 stays on the device
    # the decoder's inputs are the encoder's output buffers
    enc_slot, dec_slot = encoder._slots[0], decoder._slots[0]
    for name in ("s1", "s2"):
        assert dec_slot.context.addresses[name] == enc_slot.device[name].pointer
    # the same decoder slot still runs on its own buffers when called alone
    np.testing.assert_allclose(decoder.run(features)["prob"], want["prob"], rtol=1e-6)
    assert dec_slot.context.addresses["s1"] == dec_slot.device["s1"].pointer
    # a batch beyond the profile runs in chunks on the same pair of slots
    big = images(7, seed=2)
    out, _ = chain.run({"image": big}, ["prob"])
    np.testing.assert_allclose(out["prob"], compute("decoder", compute("encoder", {"image": big}))["prob"], rtol=1e-6)


def test_chain_refuses_engines_that_do_not_fit_together(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch)
    from lineguard.runtime.inference.tensorrt_backend import TensorRTBackend, TensorRTChain, TensorRTError

    encoder = TensorRTBackend(write_plan(tmp_path, "encoder"))
    with pytest.raises(TensorRTError, match="not encoder outputs"):
        TensorRTChain(encoder, encoder)  # "image" is no encoder output


def test_close_frees_every_slot_and_refuses_to_run_after(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch)
    from lineguard.runtime.inference.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(write_plan(tmp_path, "encoder", profiles=2), precision="fp32")
    assert isinstance(backend, Backend)
    second = backend.acquire()
    first = backend.acquire()  # both profiles now have a slot
    backend.release(first)
    backend.release(second)
    assert backend.describe().summary() == "tensorrt encoder.plan (fp32, max batch 4, 2 profiles) on cuda via TensorRT 10.3.0"
    slots = list(backend._slots)
    backend.close()
    for slot in slots:
        assert slot.context is None and slot.stream.handle is None and not slot.host and not slot.device
    assert backend.engine is None
    backend.close()  # twice is harmless
    with pytest.raises(BackendClosedError, match="closed"):
        backend.run({"image": images(1)})


def test_a_decoder_that_fails_closes_the_encoder_before_falling_back(monkeypatch: pytest.MonkeyPatch,
                                                                      bundle_copy: Path, tmp_path: Path) -> None:
    install(monkeypatch)
    from lineguard.runtime.inference import tensorrt_backend

    engine_records(Bundle.open(bundle_copy), tmp_path, fail=None)
    bundle = Bundle.open(bundle_copy)
    decoder_plan = next(r.file for r in bundle.manifest.engines if r.model == "decoder")
    opened: list = []
    real = tensorrt_backend.TensorRTBackend

    class Recording(real):
        def __init__(self, path: Path, *args, **kwargs) -> None:
            if path == bundle.path(decoder_plan):
                raise tensorrt_backend.TensorRTError("no context for the decoder")
            super().__init__(path, *args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", Recording)
    models = open_chain_backends(bundle, "auto", device=RunningDevice(gpu=ORIN, tensorrt_version="10.3.0"))
    assert models.choice.backend == "onnxruntime"
    assert len(opened) == 1 and opened[0]._slots == [] and opened[0].engine is None
