"""Which ONNX graph ONNX Runtime runs on the CPU per model: FP32, or a reduced-precision one that has
earned its place for every product the line serves.

Usage::

    from lineguard.runtime.inference.cpu_precision import choose_cpu_models
    files, reasons = choose_cpu_models(bundle, "int8", products=["tile"])
    files      # {"encoder": "encoder.int8.onnx", "decoder": "decoder.onnx"}
    reasons    # ["encoder int8: checked for tile (verdicts 24/24 equal, AUROC 0.97 vs 0.97)"]

A reduced-precision graph is used only when it was quantised from the bundle's current FP32 graph and
``lineguard export int8`` checked it on each product with the memory that product has now (all
verdicts equal to FP32's, image AUROC not lower). Anything else runs FP32 and says why.
"""

from __future__ import annotations

from collections.abc import Sequence

from lineguard.runtime.bundle import Bundle, CpuModelRecord, CpuPrecision
from lineguard.runtime.inference.base import CHAIN_MODELS


def why_not(bundle: Bundle, record: CpuModelRecord, products: Sequence[str]) -> str | None:
    """Why this record cannot serve these products, or None when it can."""
    manifest = bundle.manifest
    source = manifest.encoder.file if record.model == "encoder" else manifest.decoder.file
    label = f"{record.model} {record.precision} ({record.file})"
    if source not in manifest.files or manifest.files[source].sha256 != record.onnx_sha256:
        return f"{label}: quantised from another {record.model} graph than the bundle's"
    if not products:
        return f"{label}: no enrolled product to have checked it on"
    for product in products:
        check = record.checks.get(product)
        if check is None:
            return f"{label}: never checked on {product} (lineguard export int8 ... --product {product})"
        if not check.passed:
            return (f"{label}: failed its check on {product} (verdicts {check.verdict_agreement:.0%} equal, AUROC "
                    f"{check.image_auroc} vs FP32 {check.image_auroc_fp32})")
        entry = manifest.products.get(product)
        memory = manifest.files.get(entry.memory_file) if entry is not None else None
        if memory is None or memory.sha256 != check.memory_sha256:
            return f"{label}: {product} was re-enrolled since its check: check it again"
    return None


def choose_cpu_models(bundle: Bundle, precision: CpuPrecision,
                      products: Sequence[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Per chain model, the ONNX file to run, and why each reduced-precision one was taken or passed
    over. ``products``: those the line serves (None: every enrolled product)."""
    manifest = bundle.manifest
    files = {"encoder": manifest.encoder.file, "decoder": manifest.decoder.file}
    if precision == "fp32":
        return files, []
    served = list(products) if products else list(manifest.products)
    reasons: list[str] = []
    for model in CHAIN_MODELS:
        records = [r for r in manifest.cpu_models if r.model == model and r.precision == precision]
        if not records:
            if model == "encoder":
                reasons.append(f"no {precision} {model} in the bundle (lineguard export int8): FP32")
            continue
        record = records[-1]
        why = why_not(bundle, record, served)
        if why is None:
            files[model] = record.file
            reasons.append(f"{model} {precision}: checked on {', '.join(served)}")
        else:
            reasons.append(f"{why}: FP32")
    return files, reasons
