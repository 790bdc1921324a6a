"""``lineguard bench ...``: vision (ONNX Runtime vs PyTorch, or one backend vs ONNX Runtime), line, soak, llm
and all (every benchmark: report.json, report.md and plots). Each prints a summary and writes its JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lineguard.cli.common import DEFAULT_BUNDLE, CliError, no_bundle, require_bundle
from lineguard.cli.output import write_json


def cmd_bench_vision(args: argparse.Namespace) -> int:
    require_bundle(args.bundle)
    if args.backend is not None:
        return _bench_backend(args)
    try:
        from lineguard.export.bench_vision import bench_vision
    except ImportError as exc:
        raise CliError(f"bench vision compares against PyTorch: pip install 'lineguard[export]' ({exc})") from exc
    if args.tiles == "auto":
        raise CliError("bench vision --tiles takes a number: its frames are generated, not a product's photos")
    result = bench_vision(args.bundle, batch_sizes=args.batch, rounds=args.rounds, tiles=args.tiles)
    tiled = f", frames as {result.tiles}x{result.tiles} tiles" if result.tiles > 1 else ""
    print(f"medians over {result.rounds} interleaved rounds, (min-max){tiled}")
    for run in result.runs:
        print(f"batch {run.batch_size}: onnxruntime {run.onnxruntime.ms_per_frame:.1f} ms/frame "
              f"({run.onnxruntime.frames_per_s:.1f} fps), pytorch eager {run.pytorch_eager.ms_per_frame:.1f} ms/frame "
              f"({run.pytorch_eager.frames_per_s:.1f} fps): {run.speedup_spread.effect()}; whole inspection "
              f"{run.inspection_onnxruntime.ms_per_frame:.1f} vs {run.inspection_pytorch_eager.ms_per_frame:.1f} ms/frame "
              f"({run.inspection_speedup_spread.effect()}); stages "
              + ", ".join(f"{stage} {spread.median:.2f}" for stage, spread in run.stages_ms.items()) + " ms/frame")
        if run.tiled_cost is not None:
            print(f"  as {result.tiles}x{result.tiles} tiles vs whole: {run.inspection_onnxruntime.ms_per_frame:.1f} vs "
                  f"{run.inspection_onnxruntime_whole.ms_per_frame:.1f} ms/frame, {run.tiled_cost.effect()}")
    for p in result.preprocess:
        print(f"preprocessing {p.batch_size} x {p.frame_shape}: {p.fused_ms_per_frame.median:.2f} ms/frame, "
              f"replaced path {p.reference_ms_per_frame.median:.2f}: {p.speedup.effect()}")
    write_json(args.json, result.model_dump_json(indent=2))
    return 0


def _bench_backend(args: argparse.Namespace) -> int:
    from lineguard.bench.backends import bench_backends

    result = bench_backends(args.bundle, args.backend, batch_sizes=args.batch, rounds=args.rounds,
                            triton_url=args.triton_url)
    print(f"candidate {result.candidate} ({result.selection}); reference {result.reference}")
    for run in result.runs:
        print(f"batch {run.batch_size}: {run.candidate.ms_per_frame:.2f} ms/frame ({run.candidate.frames_per_s:.1f} fps) "
              f"vs {run.reference.ms_per_frame:.2f} ms/frame ({run.reference.frames_per_s:.1f} fps): "
              f"{run.speedup_spread.effect() if run.speedup_spread else f'{run.speedup:.2f}x'}; "
              f"map max abs diff {run.max_abs_diff_map:.2g}")
    write_json(args.json, result.model_dump_json(indent=2))
    return 0


def cmd_bench_line(args: argparse.Namespace) -> int:
    require_bundle(args.bundle)
    from lineguard.bench.burst import describe
    from lineguard.bench.line import bench_line

    try:
        result = bench_line(args.bundle, frames=args.frames, batch_sizes=args.batch,
                            with_explanations=args.with_explanations, with_curve=args.curve,
                            burst=args.burst, overload_factors=args.overload, rounds=args.rounds)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(f"medians over {result.rounds} interleaved rounds; ratios with their min-max")
    for run in result.runs:
        print(f"{run.mode:<7} max_batch {run.max_batch}: {run.frames_per_s:6.1f} frames/s, "
              f"latency p50 {run.latency_p50_ms:6.1f} ms, p99 {run.latency_p99_ms:6.1f} ms")
    spreads = result.zeromq_vs_direct_spread or {}
    print("zeromq / direct throughput: " + ", ".join(
        f"batch {b}: {spreads[b].effect() if b in spreads else f'{r:.2f}'}" for b, r in result.zeromq_vs_direct.items()))
    if result.microbatch_gain is not None:
        gain = result.microbatch_gain_spread
        print(f"micro-batching gain over batch 1 (zeromq): {gain.effect() if gain else f'{result.microbatch_gain:.2f}x'}")
    if result.p99_with_explanations_ratio is not None:
        p99 = result.p99_with_explanations_spread
        print(f"verdict p99 while explanations stream / without: "
              f"{p99.effect() if p99 else f'{result.p99_with_explanations_ratio:.2f}'}")
    if result.curve_vs_plain is not None:
        print("CURVE / plain throughput: " + ", ".join(f"batch {b}: {r:.2f}" for b, r in result.curve_vs_plain.items()))
    for overload in result.overload:
        print(describe(overload))
    write_json(args.json, result.model_dump_json(indent=2))
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    require_bundle(args.bundle)
    from lineguard.soak import SoakPlan, soak_serve_process

    plan = SoakPlan(duration_s=args.seconds, cameras=args.cameras, fps=args.fps, warm_fraction=args.warm_fraction,
                    drain_timeout_s=60, connect_timeout_s=180)
    result = soak_serve_process(args.bundle, plan, explanations=not args.no_explanations)
    print(f"soak {result.duration_s:.0f} s: {result.verdicts_received}/{result.frames_addressable} verdicts (missing "
          f"{result.missing}, duplicates {result.duplicates}), {result.dropped_counted}/{result.frames_unaddressable} "
          f"unaddressable counted, {result.explanation_requests} explanation requests "
          f"({result.explanations_unanswered} unanswered); inspected p50 {result.latency_p50_ms:.0f} ms, "
          f"p99 {result.latency_p99_ms:.0f} ms")
    print(f"once warm (from {result.warm_at_s:.0f} s): RSS {result.rss_slope_mb_per_min:+.2f} "
          f"± {result.rss_slope_stderr_mb_per_min:.2f} MB/min (bound {result.rss_slope_bound_mb_per_min:.2f}), open files "
          f"{result.fds_slope_per_min if result.fds_slope_per_min is not None else float('nan'):+.2f}/min "
          f"(bound {result.fds_slope_bound_per_min:.2f})" + ("; LEAK: " + "; ".join(result.leak_reasons)
                                                          if result.leak_suspected else "; no leak"))
    write_json(args.json, result.model_dump_json(indent=2))
    failed = result.leak_suspected or result.missing or result.duplicates or result.explanations_unanswered
    return 1 if failed else 0


def cmd_bench_llm(args: argparse.Namespace) -> int:
    require_bundle(args.bundle)
    from lineguard.bench.llm import bench_llm

    try:
        result = bench_llm(args.bundle, rounds=args.rounds, threads=args.threads)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(f"{result.model} ({result.quantization}, {result.threads} threads): loaded in {result.load_s:.1f} s, "
          f"time to first token p50 {result.time_to_first_token_ms_p50:.0f} ms (max {result.time_to_first_token_ms_max:.0f}), "
          f"{result.tokens_per_s:.1f} tokens/s over {result.answers} answers")
    write_json(args.json, result.model_dump_json(indent=2))
    return 0


def cmd_bench_all(args: argparse.Namespace) -> int:
    try:
        from lineguard.bench.report import FULL, QUICK, bench_all
    except ImportError as exc:
        raise CliError("bench all needs the export side (PyTorch reference) and matplotlib: "
                       f"pip install 'lineguard[export,dev]' ({exc})") from exc
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        if bundle != DEFAULT_BUNDLE:
            raise no_bundle(bundle)
        from lineguard.export.llm import export_llm
        from lineguard.export.vision import export_vision

        print(f"exporting the default bundle to {bundle} (trains the decoder, a few minutes) ...", file=sys.stderr)
        export_vision(bundle)
        export_llm(bundle)
    report = bench_all(bundle, args.out, QUICK if args.quick else FULL)
    print(f"wrote {Path(args.out) / 'report.md'} ({len(report.figures)} figures) in {report.wall_s / 60:.1f} min")
    return 0
