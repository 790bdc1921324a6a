"""Encoder -> decoder without a host round trip on ONNX Runtime: IO binding hands the encoder's output
OrtValues to the decoder and copies back only the map and the stages few-shot scoring reads. On this
machine the same binding runs on the CPU EP; the gpu-marked tests run it on the CUDA EP and compare the
maps and verdicts with FP32 ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from lineguard.runtime.bundle import Bundle
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.ort_backend import OrtBoundChain
from lineguard.runtime.scoring.inspector import Inspector


def test_scoring_stages_are_what_comes_back(bundle_dir: Path) -> None:
    chain = VisionChain(Bundle.open(bundle_dir), providers=["CPUExecutionProvider"])
    scoring = chain.bundle.manifest.scoring
    assert set(chain.host_stages) == set(scoring.memory_stages) | set(scoring.statistics_stages)
    assert chain.device_chain is None  # CPU provider: the plain path
    assert set(chain.host_stages) < set(chain.stage_names)  # at least one stage never needs the host


def test_io_binding_chain_matches_the_host_path(bundle_dir: Path, weave_parts: list[np.ndarray]) -> None:
    chain = VisionChain(Bundle.open(bundle_dir), providers=["CPUExecutionProvider"])
    batch = chain.preprocessor(weave_parts[:3])
    plain = chain.run(batch)
    chain.device_chain = OrtBoundChain(chain.encoder, chain.decoder, "cpu")
    bound = chain.run(batch)
    assert list(bound.features) == chain.host_stages
    np.testing.assert_allclose(bound.decoder_map, plain.decoder_map, atol=1e-6)
    for name in chain.host_stages:
        np.testing.assert_allclose(bound.features[name], plain.features[name], atol=1e-6)
    assert set(bound.timings_ms) == {"encoder", "decoder"}
    only_map = chain.run(batch, host_stages=())
    assert only_map.features == {} and only_map.decoder_map.shape == plain.decoder_map.shape
    chunked = chain.run_chunked(np.concatenate([batch, batch]), chunk=4)
    assert set(chunked.features) == set(chain.host_stages) and len(chunked.decoder_map) == 6


def test_io_binding_chain_gives_the_same_verdicts(enrolled_dir: Path, weave_parts: list[np.ndarray]) -> None:
    bundle = Bundle.open(enrolled_dir)
    reference = Inspector(bundle, chain=VisionChain(bundle, providers=["CPUExecutionProvider"]))
    bound_chain = VisionChain(bundle, providers=["CPUExecutionProvider"])
    bound_chain.device_chain = OrtBoundChain(bound_chain.encoder, bound_chain.decoder, "cpu")
    bound = Inspector(bundle, chain=bound_chain)
    product = "weave"  # enrolled by the enrolled_dir fixture
    frames = weave_parts[8:12]
    for want, got in zip(reference.analyze(frames, product), bound.analyze(frames, product), strict=True):
        assert got.verdict.verdict == want.verdict.verdict
        assert got.verdict.score == pytest.approx(want.verdict.score, rel=1e-5)
        np.testing.assert_allclose(got.anomaly_map, want.anomaly_map, atol=1e-4)


def test_decoder_needs_encoder_outputs(bundle_dir: Path) -> None:
    chain = VisionChain(Bundle.open(bundle_dir), providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="not encoder outputs"):
        OrtBoundChain(chain.decoder, chain.decoder, "cpu")


@pytest.mark.gpu
def test_cuda_ep_chain_matches_fp32_cpu_and_gives_the_same_verdicts(enrolled_dir: Path,
                                                                    weave_parts: list[np.ndarray]) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu with the CUDA EP is not installed here")
    bundle = Bundle.open(enrolled_dir)
    gpu_chain = VisionChain(bundle, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert isinstance(gpu_chain.device_chain, OrtBoundChain) and gpu_chain.device_chain.device == "cuda"
    cpu_chain = VisionChain(bundle, providers=["CPUExecutionProvider"])
    batch = cpu_chain.preprocessor(weave_parts[:8])
    want, got = cpu_chain.run(batch), gpu_chain.run(batch)
    assert float(np.abs(got.decoder_map - want.decoder_map).max()) < 1e-3
    product = "weave"  # enrolled by the enrolled_dir fixture
    frames = weave_parts[8:16]
    pairs = zip(Inspector(bundle, chain=cpu_chain).analyze(frames, product),
                Inspector(bundle, chain=gpu_chain).analyze(frames, product), strict=True)
    for w, g in pairs:
        assert g.verdict.verdict == w.verdict.verdict
        assert g.verdict.score == pytest.approx(w.verdict.score, rel=1e-2)


def test_zero_shot_asks_for_the_map_alone(bundle_dir: Path, weave_parts: list[np.ndarray]) -> None:
    """Without an enrolled product nothing but the map is needed: a device chain copies nothing else back."""
    chain = VisionChain(Bundle.open(bundle_dir), providers=["CPUExecutionProvider"])
    asked: list = []

    class Recording(OrtBoundChain):
        def run(self, inputs, host_outputs):
            asked.append(list(host_outputs))
            return super().run(inputs, host_outputs)

    chain.device_chain = Recording(chain.encoder, chain.decoder, "cpu")
    verdict = Inspector(chain.bundle, chain=chain).inspect(weave_parts[0], None)
    assert verdict.decided_by == "zero-shot" and asked == [[chain.bundle.manifest.decoder.output_name]]
