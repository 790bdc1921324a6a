"""The vision chain on ONNX Runtime: preprocessed batch -> stage features + decoder probability map.

Usage::

    chain = VisionChain(bundle)
    out = chain.run(chain.preprocessor(images))
    out.features["s2"].shape        # (B, 40, 28, 28)
    out.decoder_map.shape           # (B, 224, 224), abnormal probability
    VisionChain(bundle, backend="tensorrt")   # or "onnxruntime", "triton" (with triton_url); default "auto"
    VisionChain(bundle, cpu_precision="int8", products=["tile"])   # INT8 encoder where it passed its check
    chain.backend.summary()         # which backend runs the models, and why (inference.selection)
    chain.encoder.describe()        # what runs the encoder: backend, file, providers, precision, device
    chain.run(batch, host_stages=())   # only the map comes back (zero-shot needs no stage on the host)
    chain.run(batch, decoder=chain.decoder_for(entry.decoder))   # a product's own decoder (lineguard adapt)
    chain.run(chain.preprocessor(images, tiles=2), tiles=2)   # at 2x the input size, as 2x2 tiles (.tiling)
    chain.close()                   # sessions, TensorRT contexts or the Triton channel released

On a GPU (TensorRT engines, or ONNX Runtime with the CUDA/TensorRT EP) the features stay on the device
between encoder and decoder (``chain.device_chain``): the image goes up, the map comes back, and so do
the stages few-shot scoring reads on the CPU (``host_stages``, by default the bundle's memory and
statistics stages: s2-s3 of EfficientNet-Lite0, about 37% of the feature bytes). What that saves is the
upload of every stage to the decoder and the download of the stages nobody reads (s1 and s4); the
download of the scoring stages stays until patch scoring runs on the device too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lineguard.runtime.bundle import Bundle, CpuPrecision, DecoderAdaptation, Precision, RequestedBackend
from lineguard.runtime.inference.base import Backend, DeviceChain, concatenate
from lineguard.runtime.inference.chain_backends import open_chain_backends
from lineguard.runtime.inference.ort_backend import OnnxRuntimeBackend, select_providers
from lineguard.runtime.inference.ort_threading import OrtThreading
from lineguard.runtime.inference.preprocess import Preprocessor
from lineguard.runtime.inference.selection import PRECISION_ORDER, BackendChoice
from lineguard.runtime.inference.tiling import check_tiles, from_tiles, to_tiles


@dataclass
class ChainOutput:
    features: dict[str, np.ndarray]  # at least the stages asked for (every stage on the host path)
    decoder_map: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


def run_as_tiles(run: Callable[[np.ndarray], ChainOutput], batch: np.ndarray, tiles: int) -> ChainOutput:
    """``run`` (a chain at its input size) on ``batch`` of ``tiles`` times that size per side: cut into
    tiles, run as one batch, features and map stitched back (:mod:`.tiling`)."""
    if tiles == 1:
        return run(batch)
    out = run(to_tiles(batch, check_tiles(tiles)))
    return ChainOutput(features={name: from_tiles(f, tiles) for name, f in out.features.items()},
                       decoder_map=from_tiles(out.decoder_map, tiles), timings_ms=out.timings_ms)


class VisionChain:
    """Encoder and decoder of one bundle, run back to back on the chosen backend (TensorRT engines,
    ONNX Runtime, or a Triton ensemble that runs both in one call)."""

    def __init__(self, bundle: Bundle, providers: list[str] | None = None, threads: int | OrtThreading | None = None,
                 backend: RequestedBackend = "auto", triton_url: str | None = None, triton_model: str | None = None,
                 engine_cache_dir: Path | None = None, precisions: Sequence[Precision] = PRECISION_ORDER,
                 cpu_precision: CpuPrecision = "fp32", products: Sequence[str] | None = None) -> None:
        manifest = bundle.manifest
        self.bundle = bundle
        self.preprocessor = Preprocessor(manifest.preprocessing)
        self.stage_names = [s.name for s in manifest.encoder.stages]
        scoring = set(manifest.scoring.memory_stages) | set(manifest.scoring.statistics_stages)
        self.host_stages = [name for name in self.stage_names if name in scoring]
        models = open_chain_backends(bundle, backend, providers, threads, triton_url, triton_model, engine_cache_dir,
                                     precisions=precisions, cpu_precision=cpu_precision, products=products)
        self._opened = models
        self.backend: BackendChoice = models.choice
        self.encoder: Backend = models.encoder
        self.decoder: Backend | None = models.decoder
        self.device_chain: DeviceChain | None = models.device_chain
        self.input_name = manifest.encoder.input_name
        self.output_name = manifest.decoder.output_name
        # products' own decoders (``lineguard adapt``) run on ONNX Runtime: CUDA where the chain has it, else
        # the CPU (a TensorRT EP engine per product would take minutes to build at the first frame)
        self._product_providers = [p for p in (providers or select_providers()) if p != "TensorrtExecutionProvider"]
        self._product_threads = threads
        self._product_decoders: dict[str, Backend] = {}

    @property
    def providers(self) -> list[str]:
        """What runs the encoder: ONNX Runtime's providers, the TensorRT version, or the Triton server."""
        return self.encoder.describe().providers

    def close(self) -> None:
        """Release the backends this chain opened (and any put in their place since, e.g. an INT8 encoder)."""
        for backend in (self.decoder, self.encoder, self._opened.decoder, self._opened.encoder,
                        *self._product_decoders.values()):
            if backend is not None:
                backend.close()  # closing twice is harmless (Backend.close)

    def decoder_for(self, adaptation: DecoderAdaptation | None) -> Backend | None:
        """The session of a product's own decoder (None: the shared one), opened once per file checksum."""
        if adaptation is None:
            return None
        sha = self.bundle.manifest.files[adaptation.file].sha256
        backend = self._product_decoders.get(sha)
        if backend is None:
            backend = self._product_decoders[sha] = OnnxRuntimeBackend(
                self.bundle.path(adaptation.file), self._product_providers, self._product_threads)
        return backend

    def run(self, batch: np.ndarray, host_stages: Sequence[str] | None = None,
            decoder: Backend | None = None, tiles: int = 1) -> ChainOutput:
        """``host_stages``: the stage features needed on the host (default: the scoring stages); with a
        device chain only these and the map are copied back, on the host path every stage is there.
        ``decoder``: a product's own decoder (:meth:`decoder_for`) in place of the shared one; it reads
        every stage from the host. ``tiles`` > 1: ``batch`` is ``tiles`` times the input size per side and
        runs as tiles (:mod:`.tiling`); features and map come back stitched, at that size."""
        return run_as_tiles(lambda b: self._run_input_size(b, host_stages, decoder), batch, tiles)

    def _run_input_size(self, batch: np.ndarray, host_stages: Sequence[str] | None,
                        decoder: Backend | None) -> ChainOutput:
        if self.device_chain is not None and decoder is None:
            wanted = self.host_stages if host_stages is None else list(host_stages)
            out, timings = self.device_chain.run({self.input_name: batch}, [*wanted, self.output_name])
            prob = out[self.output_name]
            return ChainOutput(features={name: out[name] for name in wanted},
                               decoder_map=prob[:, 0] if prob.ndim == 4 else prob, timings_ms=timings)
        t0 = time.perf_counter()
        # On a device chain a product's own decoder reads the stages on the host: the encoder alone runs, and
        # the device chain (which would run the shared decoder too) is not used for such a product.
        features = self.encoder.run({self.input_name: batch})
        t1 = time.perf_counter()
        decoder = decoder or self.decoder
        if decoder is None:  # one call ran both (Triton ensemble): its time is reported as encoder time
            prob = features[self.output_name]
        else:
            decoder_inputs = {name: features[name] for name in decoder.input_names}
            prob = decoder.run(decoder_inputs)[self.output_name]
        t2 = time.perf_counter()
        return ChainOutput(
            features={name: features[name] for name in self.stage_names},
            decoder_map=prob[:, 0] if prob.ndim == 4 else prob,
            timings_ms={"encoder": (t1 - t0) * 1e3, "decoder": (t2 - t1) * 1e3},
        )

    def run_chunked(self, batch: np.ndarray, chunk: int = 8, decoder: Backend | None = None,
                    tiles: int = 1) -> ChainOutput:
        """Run a large batch in chunks (enrolment, evaluation) and concatenate."""
        parts = [self.run(batch[i : i + chunk], decoder=decoder, tiles=tiles) for i in range(0, len(batch), chunk)]
        return ChainOutput(features=concatenate([p.features for p in parts]),
                           decoder_map=np.concatenate([p.decoder_map for p in parts]))
