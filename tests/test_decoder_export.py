"""The deployed decoder graph computes the trained decoder's function with a cheaper head (issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from lineguard.export.decoder import AnomalyDecoder
from lineguard.export.onnx_export import export_onnx
from lineguard.runtime.bundle import StageSpec

STAGES = [StageSpec(name="s1", channels=24, stride=4, grid=(28, 28)),
          StageSpec(name="s2", channels=40, stride=8, grid=(14, 14)),
          StageSpec(name="s3", channels=112, stride=16, grid=(7, 7)),
          StageSpec(name="s4", channels=320, stride=32, grid=(4, 4))]


def trained_like_decoder(seed: int = 0) -> AnomalyDecoder:
    """Random weights and biases of a trained decoder's scale (biases matter: the head folds them in)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    normal, abnormal = rng.standard_normal((2, 384)).astype(np.float32)
    decoder = AnomalyDecoder(STAGES, normal, abnormal, input_size=(112, 112))
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return decoder.eval()


def features(batch: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, s.channels, *s.grid, generator=g) for s in STAGES)


def test_factorised_head_equals_the_trained_decoder() -> None:
    decoder = trained_like_decoder()
    feats = features(3)
    with torch.no_grad():
        want, got = decoder(*feats), decoder.for_export()(*feats)
    assert got.shape == want.shape == (3, 1, 112, 112)
    assert float(want.std()) > 1e-3  # a map with structure, not a constant that any head would match
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-4)


def test_exported_graph_matches_the_trained_decoder_in_onnx_runtime(tmp_path: Path) -> None:
    decoder = trained_like_decoder(seed=2)
    feats = features(2, seed=3)
    path = tmp_path / "decoder.onnx"
    export_onnx(decoder.for_export(), feats, path, [s.name for s in STAGES], ["anomaly_prob"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {s.name: f.numpy() for s, f in zip(STAGES, feats, strict=True)})[0]
    with torch.no_grad():
        want = decoder(*feats).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the 384-channel embedding is gone from the graph: no convolution outputs text_dim channels
    widths = [init.dims[0] for init in onnx.load(str(path)).graph.initializer if len(init.dims) == 4]
    assert 384 not in widths
