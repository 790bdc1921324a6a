"""The bundle's encoder -> decoder ensemble served by NVIDIA Triton, behind the
:class:`~lineguard.runtime.inference.base.Backend` protocol.

Usage::

    backend = TritonBackend("triton.plant.local:8001", "lineguard_3f2a9c1b7d4e", bundle_id="3f2a9c1b7d4e")
    outputs = backend.run({"image": batch})        # s1..s4 and anomaly_prob, one gRPC round trip per max batch
    backend.describe().summary()                    # "triton lineguard_3f2a9c1b7d4e (max batch 8) on triton..."
    backend.close()                                 # the gRPC channel is closed

A plant serves many cameras from one central GPU server: ``lineguard export triton`` writes the model
repository (encoder, decoder and their ensemble, with dynamic batching), each edge runtime keeps
preprocessing, few-shot scoring and verdicts and sends only the preprocessed batch. At start the
backend checks that the server is live, the model ready, and that the served model was exported from
this bundle (the ``lineguard_bundle_id`` parameter in its config): a runtime never scores features of
another model against its enrolled memory. Uses ``tritonclient[grpc]`` (thread-safe: the line
service's inference workers share one client). A batch larger than the served model's
``max_batch_size`` is sent in chunks (:func:`~lineguard.runtime.inference.base.run_in_chunks`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from lineguard.runtime.inference.base import BackendClosedError, BackendDescription, run_in_chunks

log = logging.getLogger(__name__)

BUNDLE_ID_PARAMETER = "lineguard_bundle_id"
DEFAULT_TIMEOUT_S = 10.0


class TritonError(RuntimeError):
    """The Triton server cannot serve this bundle (unreachable, model not ready, another bundle)."""


def default_model_name(bundle_id: str) -> str:
    """The ensemble's name in a repository written by ``lineguard export triton`` for this bundle."""
    return f"lineguard_{bundle_id}"


def _client_module() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise TritonError(f"the triton backend needs tritonclient: pip install 'lineguard[triton]' ({exc})") from exc
    return grpcclient


class TritonBackend:
    """One Triton model (normally the ensemble) reached over gRPC."""

    def __init__(self, url: str, model_name: str, bundle_id: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        grpcclient = _client_module()
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        self._grpc = grpcclient
        self._dtype = np_to_triton_dtype
        self._exception = InferenceServerException
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.client: Any = grpcclient.InferenceServerClient(url)
        try:
            self._check(bundle_id)
        except BaseException:
            self.client.close()  # no half-made backend keeps a gRPC channel open
            raise

    def _check(self, bundle_id: str | None) -> None:
        """The server is live, the model ready and exported from this bundle; reads the model's I/O."""
        url, model_name, timeout_s = self.url, self.model_name, self.timeout_s
        try:
            if not self.client.is_server_live(client_timeout=timeout_s):
                raise TritonError(f"Triton at {url} is not live")
            if not self.client.is_model_ready(model_name, client_timeout=timeout_s):
                raise TritonError(f"model {model_name!r} is not ready on Triton at {url}")
            config = self.client.get_model_config(model_name, client_timeout=timeout_s).config
        except self._exception as exc:
            raise TritonError(f"Triton at {url}: {exc.message() or exc}") from exc
        served = config.parameters[BUNDLE_ID_PARAMETER].string_value if BUNDLE_ID_PARAMETER in config.parameters else None
        if bundle_id is not None and served != bundle_id:
            raise TritonError(f"model {model_name!r} on {url} was exported from bundle {served or 'unknown'}, "
                              f"this runtime has bundle {bundle_id}: export the repository from the same bundle")
        self.input_names = [i.name for i in config.input]
        self.output_names = [o.name for o in config.output]
        self.max_batch = int(config.max_batch_size) or None  # 0: the model does not batch; one call
        self.platform = str(config.platform or config.backend)  # "ensemble", "onnxruntime_onnx", ...
        self.providers = [f"triton {url} {model_name}"]
        log.info("triton model %s at %s: inputs %s, outputs %s, max batch %s", model_name, url,
                 self.input_names, self.output_names, self.max_batch)

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.client is None:
            raise BackendClosedError(f"{self.model_name!r} at {self.url}: the Triton client was closed")
        requests = []
        for name in self.input_names:
            array = inputs[name]  # C-contiguous: run_in_chunks made it so
            request = self._grpc.InferInput(name, list(array.shape), self._dtype(array.dtype))
            request.set_data_from_numpy(array)
            requests.append(request)
        wanted = [self._grpc.InferRequestedOutput(name) for name in self.output_names]
        try:
            result = self.client.infer(self.model_name, requests, outputs=wanted, client_timeout=self.timeout_s)
        except self._exception as exc:
            raise TritonError(f"inference on {self.model_name!r} at {self.url} failed: {exc.message() or exc}") from exc
        return {name: result.as_numpy(name) for name in self.output_names}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise TritonError(f"missing inputs {sorted(missing)} for {self.model_name!r}")
        return run_in_chunks(self._infer, {n: inputs[n] for n in self.input_names}, self.max_batch)

    def describe(self) -> BackendDescription:
        return BackendDescription(backend="triton", model=f"{self.model_name} ({self.platform})",
                                  providers=list(self.providers), device=self.url, max_batch=self.max_batch)

    def close(self) -> None:
        """Close the gRPC channel (another backend on the same server keeps its own)."""
        client, self.client = self.client, None
        if client is not None:
            client.close()
