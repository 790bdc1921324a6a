"""``lineguard export ...``: the workstation side that builds what a line deploys.

vision (ONNX bundle), llm (GGUF chat model), prompt-learner (soft prompts for that model), trt (TensorRT engines), int8 (CPU INT8 encoder) and triton
(a Triton model repository). Each imports ``lineguard.export`` only when it runs, so an edge install
without the ``[export]`` extra still has every other command.
"""

from __future__ import annotations

import argparse

from lineguard.cli.common import CliError
from lineguard.cli.output import warn_signature_stale


def cmd_export_vision(args: argparse.Namespace) -> int:
    try:
        from lineguard.export.encoders import EncoderError
        from lineguard.export.vision import (
            DEFAULT_STATISTICS_STAGES,
            ExportOptionError,
            ParityError,
            export_vision,
        )
    except ImportError as exc:
        raise CliError(f"export needs the workstation extra: pip install 'lineguard[export]' ({exc})") from exc
    try:
        bundle = export_vision(args.out, encoder_family=args.encoder, weights=args.weights, normals_dirs=args.normals or (),
                               input_size=args.input_size, steps=args.steps, samples=args.samples, seed=args.seed,
                               overwrite=args.overwrite,
                               statistics_stages=args.statistics_stages or DEFAULT_STATISTICS_STAGES)
    except (EncoderError, ExportOptionError, ParityError) as exc:
        raise CliError(str(exc)) from exc
    m = bundle.manifest
    print(f"bundle {m.bundle_id} written to {bundle.root}")
    print(f"  encoder {m.encoder.family}, input {m.preprocessing.input_size}, stages "
          + ", ".join(f"{s.name}:{s.channels}x{s.grid[0]}x{s.grid[1]}" for s in m.encoder.stages))
    print(f"  few-shot scoring: memory on {', '.join(m.scoring.memory_stages)}, statistics on "
          f"{', '.join(m.scoring.statistics_stages)}")
    print(f"  parity vs PyTorch: {m.parity.max_abs_diff} (tolerance {m.parity.tolerance})")
    return 0


def cmd_export_llm(args: argparse.Namespace) -> int:
    from lineguard.export.llm import LlmExportError, export_llm

    try:
        quant = None if args.quant == "F16" else args.quant
        spec = export_llm(args.bundle, gguf_file=args.gguf, hf_model=args.hf, quantization=quant, model=args.model)
    except LlmExportError as exc:
        raise CliError(str(exc)) from exc
    print(f"LLM {spec.name!r} ({spec.architecture}, {spec.quantization}, context {spec.context_length}) "
          f"added to {args.bundle} as {spec.file}")
    warn_signature_stale(args.bundle)
    return 0


def cmd_export_prompt_learner(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        from lineguard.export.prompt_learner_bundle import build_prompt_learner
    except ImportError as exc:
        raise CliError(f"export prompt-learner needs the workstation and llm extras: "
                       f"pip install 'lineguard[export,llm]' ({exc})") from exc
    from lineguard.runtime.bundle import BundleError

    missing = [d for d in args.normals if not Path(d).is_dir()]
    if missing:
        raise CliError(f"no such folder: {', '.join(missing)}")
    try:
        spec = build_prompt_learner(args.bundle, [Path(d) for d in args.normals], frames_per_product=args.frames,
                                    shots=args.shots, steps=args.steps, batch=args.batch, lr=args.lr,
                                    seed=args.seed)
    except (BundleError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    accuracy = "n/a" if spec.heldout_accuracy is None else f"{spec.heldout_accuracy:.0%}"
    print(f"{spec.file}: {spec.n_tokens} soft tokens of {spec.n_embd} for the bundle's LLM, {spec.steps} steps on "
          f"{spec.samples} examples (final loss {spec.final_loss:.3f}), held-out yes/no {accuracy}, ONNX parity "
          f"{spec.parity_max_abs_diff:.1e}; lines use it with llm.grounding: soft or both")
    warn_signature_stale(args.bundle)
    return 0


def cmd_export_trt(args: argparse.Namespace) -> int:
    from lineguard.export.tensorrt_engines import EngineBuildError, export_tensorrt
    from lineguard.runtime.inference.cuda_runtime import CudaError
    from lineguard.runtime.inference.tensorrt_backend import TensorRTError

    if args.calib and not args.int8:
        raise CliError("--calib is for INT8 calibration: add --int8")
    precisions = ["fp32"] + (["fp16"] if args.fp16 else []) + (["int8"] if args.int8 else [])
    try:
        records = export_tensorrt(args.bundle, precisions, max_batch=args.max_batch, profiles=args.profiles,
                                  workspace_mb=args.workspace, calib_dir=args.calib)
    except (EngineBuildError, TensorRTError, CudaError, ImportError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    for r in records:
        state = "ok" if r.parity_passed else "FAILED parity: the runtime will not select it"
        print(f"{r.model} {r.precision} batch 1..{r.max_batch} -> {r.file} on {r.gpu_name} (sm {r.compute_capability}, "
              f"TensorRT {r.tensorrt_version}, CUDA {r.cuda_version}); vs ONNX Runtime: max abs diff "
              f"{r.parity_max_abs_diff:.3g}, relative {r.parity_relative_diff:.3g} (tolerance {r.parity_tolerance:g}) {state}")
    warn_signature_stale(args.bundle)
    return 0


def cmd_export_int8(args: argparse.Namespace) -> int:
    try:
        from lineguard.export.cpu_int8 import Int8ExportError, export_int8
    except ImportError as exc:
        raise CliError(f"export int8 needs the workstation extra: pip install 'lineguard[export]' ({exc})") from exc
    try:
        record = export_int8(args.bundle, args.product, args.data, args.category)
    except (Int8ExportError, OSError) as exc:
        raise CliError(str(exc)) from exc
    check = record.checks[args.product]
    state = "passed: lines with inference.cpu_precision int8 use it" if check.passed else "FAILED: never used"
    print(f"{record.file}: INT8 encoder calibrated on {record.calibration_images} normals, features within "
          f"{record.feature_relative_diff:.3g} (relative) of FP32; on {check.n_images} test images of {args.product}: "
          f"verdicts {check.verdict_agreement:.0%} equal to FP32, AUROC {check.image_auroc} vs FP32 "
          f"{check.image_auroc_fp32}, accuracy {check.accuracy:.3f} vs {check.accuracy_fp32:.3f}: {state}")
    warn_signature_stale(args.bundle)
    return 0


def cmd_export_triton(args: argparse.Namespace) -> int:
    from lineguard.export.triton_repository import TritonExportError, export_triton_repository

    try:
        repo = export_triton_repository(args.bundle, args.out, model_format=args.format, precision=args.precision,
                                        max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
                                        instances=args.instances, kind=args.kind, trt_accelerator=args.trt_accelerator,
                                        name=args.name, overwrite=args.overwrite, python_path=args.python_path or ())
    except TritonExportError as exc:
        raise CliError(str(exc)) from exc
    print(f"Triton repository in {repo.root}: ensemble {repo.ensemble} ({repo.encoder} -> {repo.decoder})")
    print(f"  serve it: tritonserver --model-repository={repo.root.resolve()}")
    print("  use it:   lineguard serve BUNDLE --backend triton --triton-url TRITON_HOST:8001")
    return 0
