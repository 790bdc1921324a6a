"""Inference: the vision chain (encoder + decoder) on whichever backend the machine has.

One ``Backend`` protocol (:mod:`.base`: ``run`` / ``close`` / ``describe``, with the chunked run for a
batch beyond a model's maximum and the types the layers share: ``GpuInfo``, ``RunningDevice``,
``BackendUnavailableError``, ``CHAIN_MODELS``) and its implementations: ONNX Runtime
(:mod:`.ort_backend`), TensorRT engines (:mod:`.tensorrt_backend`, over the raw CUDA layer in
:mod:`.cuda_runtime`) and a remote Triton server (:mod:`.triton_backend`); the policy that picks one
(:mod:`.selection`), the opening of its choice (:mod:`.chain_backends`) and the chain on top
(:mod:`.chain`), which runs a frame larger than the models' input as tiles of it (:mod:`.tiling`);
preprocessing; CPU precision (FP32 / INT8) and ORT threading. Each layer imports
only those below it (base <- raw CUDA and backends <- selection <- chain_backends <- chain; the
raw layer never imports the policy). Backend and precision names are the bundle's
(``lineguard.runtime.bundle``: ``BackendName``, ``RequestedBackend``, ``Precision``, ``CpuPrecision``,
``ChainModel``). May import ``contract`` and ``bundle``; never scoring, line, llm or anything above.
"""
