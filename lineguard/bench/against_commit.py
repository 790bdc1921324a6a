"""Whole-inspection speed of this checkout against an older commit's, measured in one run.

A speed-up claimed against an earlier version ("1.5x over 48d742e's FP32 path") means something only
when both run on the same machine, in the same minutes, on the same frames and settings. This runs the
older commit's own code (its tree from ``git archive``, its own exported bundle) and this checkout's in
separate worker processes (lineguard.bench.inspection_worker) and times them in interleaved rounds
(lineguard.bench.rounds): batch 1, the same thread count, ``Inspector.analyze`` of one frame, the
product enrolled from the same four shots. This checkout ("checkout": the working tree as it is) runs
twice: FP32, and with its CPU INT8 encoder.

Usage::

    python -m lineguard.bench.against_commit 48d742e --out artifacts/bench-baseline   # ~10 min, first run
                                                                                      # exports the old bundle
    report = json.load(open("artifacts/bench-baseline/report.json"))

Frames: the bench's texture part at its size (256 px), and the same part at a camera's resolution
(1024x1280, upscaled), where the preprocessing counts; both are normal parts (an OK verdict, as most of a
line's frames are). The INT8 encoder is checked against FP32 as ``lineguard export int8`` checks a product
(every verdict equal, image AUROC not lower) on held-out parts of the bench product, 15 normal and 15 with
a defect painted by lineguard.evaluation.defect_painters; on real products that check is `make int8-checks`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score

from lineguard.bench.inspection_worker import Judged, JudgeFrames, Ready, TimeFrames, Timing, WorkerConfig
from lineguard.bench.rounds import Spread, interleaved_rounds, ratio_spread
from lineguard.evaluation.defect_painters import DEFECT_TYPES, make_defect
from lineguard.export.cpu_int8 import AUROC_TOLERANCE
from lineguard.export.textures import texture_variants

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("inspection_worker.py")
FRAMES = ("bench", "camera")
CHECKOUT = "checkout"  # this working tree as it is, uncommitted changes included


Reply = TypeVar("Reply", bound=BaseModel)


class Candidate(BaseModel):
    name: str
    code: str  # the commit, or CHECKOUT
    bundle: str
    int8: bool = False


class FrameRun(BaseModel):
    frame: str
    shape: tuple[int, ...]
    ms_per_frame: dict[str, Spread]  # candidate -> whole inspection ms/frame over the rounds
    speedup: dict[str, Spread]  # candidate -> baseline ms / candidate ms, per round


class AgainstCommitReport(BaseModel):
    baseline: str
    threads: int
    rounds: int
    calls_per_round: int
    candidates: list[Candidate]
    runs: list[FrameRun]
    held_out: int  # held-out frames of the bench product: normal parts, then parts with painted defects
    held_out_defective: int
    int8_verdicts_equal: float  # share of held-out frames whose INT8 verdict equals FP32's (this checkout)
    image_auroc_fp32: float
    image_auroc_int8: float
    int8_passes: bool  # as `lineguard export int8` decides: every verdict equal, AUROC not lower


def _package_dirs(pyproject: str) -> dict[str, str]:
    """[tool.setuptools.package-dir] of a pyproject (a regex: tomllib is Python >= 3.11, we support 3.10)."""
    section = pyproject.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^"([\w.]+)"\s*=\s*"([^"]+)"', section, re.MULTILINE))


def _checkout(rev: str, cache: Path) -> Path:
    """The commit's tree plus an import shim that maps its package-dir as its pyproject does."""
    tree = cache / "src"
    if not tree.exists():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
        tree.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
    shim = cache / "py"
    if not shim.exists():
        dirs = _package_dirs((tree / "pyproject.toml").read_text())
        (shim / "lineguard").mkdir(parents=True)
        for item in (tree / dirs["lineguard"]).iterdir():
            (shim / "lineguard" / item.name).symlink_to(item)
        for package, folder in dirs.items():
            if package != "lineguard":
                (shim / package.replace(".", "/")).symlink_to(tree / folder)
    return shim


def _old_bundle(shim: Path, cache: Path) -> Path:
    bundle = cache / "bundle"
    if not (bundle / "manifest.json").exists():
        code = ("import sys; from lineguard.cli import main; "
                f"sys.exit(main(['export', 'vision', '--out', {str(bundle)!r}, '--overwrite']))")
        subprocess.run([sys.executable, "-c", code], check=True, env=_env(shim), cwd=shim)
    return bundle


def _env(shim: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if shim is not None:  # ahead of this checkout's editable install
        env["PYTHONPATH"] = str(shim)
    return env


class _Worker:
    def __init__(self, candidate: Candidate, shim: Path | None, frames: Path, threads: int) -> None:
        config = WorkerConfig(bundle=candidate.bundle, frames=str(frames), threads=threads, int8=candidate.int8)
        self.process = subprocess.Popen([sys.executable, str(WORKER), config.model_dump_json()],
                                        env=_env(shim), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=shim or REPO)
        try:
            self.ask(None, Ready)
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise

    def ask(self, request: BaseModel | None, reply: type[Reply]) -> Reply:
        assert self.process.stdin and self.process.stdout
        if request is not None:
            self.process.stdin.write(request.model_dump_json() + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"inspection worker exited with {self.process.wait()}")
        return reply.model_validate_json(line)

    def close(self) -> None:
        """EOF on stdin ends the worker; one that does not end within a minute is killed."""
        if self.process.stdin:
            with contextlib.suppress(OSError):  # a worker that already died has a broken pipe
                self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _painted(bgr: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A colour part with a painted defect: the painters work on grey photos, so the grey change is added
    to every channel."""
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    change = make_defect(grey, kind, rng)[0].astype(np.int16) - grey
    return np.clip(bgr.astype(np.int16) + change[:, :, None], 0, 255).astype(np.uint8)


def _frames(path: Path) -> Path:
    """Shots, INT8 calibration, the timed frame (and it at camera size), and a held-out set: 15 normal parts
    and 15 others with a defect from lineguard.evaluation.defect_painters (not the decoder's synthesizer)."""
    normals = texture_variants("weave", 39, seed=11)
    rng = np.random.default_rng(5)
    defective = [_painted(image, DEFECT_TYPES[i % len(DEFECT_TYPES)], rng) for i, image in enumerate(normals[24:])]
    np.savez(path, shots=np.stack(normals[:4]), int8_calibration=np.stack(normals[4:8]), bench=normals[8],
             held_out=np.stack(normals[9:24] + defective),
             camera=cv2.resize(normals[8], (1280, 1024), interpolation=cv2.INTER_CUBIC))
    return path


def against_commit(rev: str, out: Path, rounds: int = 9, calls: int = 20, threads: int = 2,
                   bundle: Path = REPO / "bundles" / "default", baseline_bundle: Path | None = None,
                   ) -> AgainstCommitReport:
    """``baseline_bundle``: a bundle the commit's code reads (default: exported by that code, once, into
    ``out/REV/bundle``)."""
    new_bundle = bundle
    if not (new_bundle / "manifest.json").exists():  # before minutes of exporting the commit's bundle
        raise SystemExit(f"{new_bundle} is missing: run `make demo` (or `lineguard export vision`) first")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    cache = out / commit[:12]  # by commit, not by name: a branch or HEAD that moved gets a fresh tree
    cache.mkdir(parents=True, exist_ok=True)
    shim = _checkout(commit, cache)
    old_bundle = baseline_bundle or _old_bundle(shim, cache)
    frames = _frames(out / "frames.npz")
    candidates = [Candidate(name=f"{rev} fp32", code=rev, bundle=str(old_bundle)),
                  Candidate(name="checkout fp32", code=CHECKOUT, bundle=str(new_bundle)),
                  Candidate(name="checkout int8 encoder", code=CHECKOUT, bundle=str(new_bundle), int8=True)]
    workers: dict[str, _Worker] = {}
    try:
        for c in candidates:  # inside the try: a worker that fails to start closes the ones already running
            workers[c.name] = _Worker(c, None if c.code == CHECKOUT else shim, frames, threads)
        fp32 = workers["checkout fp32"].ask(JudgeFrames(frames="held_out"), Judged)
        int8 = workers["checkout int8 encoder"].ask(JudgeFrames(frames="held_out"), Judged)
        runs = []
        with np.load(frames, allow_pickle=False) as stored:
            shapes = {name: stored[name].shape for name in FRAMES}
        for frame in FRAMES:
            ms = interleaved_rounds({name: (lambda w=w, frame=frame: w.ask(TimeFrames(calls=calls, frame=frame), Timing).ms_per_frame)
                                     for name, w in workers.items()}, rounds=rounds, warmup=1)
            base = ms[candidates[0].name]
            runs.append(FrameRun(frame=frame, shape=shapes[frame],
                                 ms_per_frame={name: Spread.of(v) for name, v in ms.items()},
                                 speedup={name: ratio_spread(base, v) for name, v in ms.items() if v is not base}))
    finally:
        for w in workers.values():
            w.close()
    return AgainstCommitReport(baseline=rev, threads=threads, rounds=rounds, calls_per_round=calls,
                               candidates=candidates, runs=runs, **_int8_check(fp32, int8))


def _int8_check(fp32: Judged, int8: Judged) -> dict[str, object]:
    """`lineguard export int8`'s acceptance rule on the held-out frames (15 normal, then 15 defective)."""
    labels = [0] * (len(fp32.ng) // 2) + [1] * (len(fp32.ng) - len(fp32.ng) // 2)
    equal = sum(a == b for a, b in zip(fp32.ng, int8.ng, strict=True)) / len(labels)
    auroc_fp32, auroc_int8 = roc_auc_score(labels, fp32.score), roc_auc_score(labels, int8.score)
    return {"held_out": labels.count(0), "held_out_defective": labels.count(1), "int8_verdicts_equal": equal,
            "image_auroc_fp32": auroc_fp32, "image_auroc_int8": auroc_int8,
            "int8_passes": equal == 1.0 and auroc_int8 >= auroc_fp32 - AUROC_TOLERANCE}


def markdown(report: AgainstCommitReport) -> str:
    lines = [f"Whole inspection at batch 1, {report.threads} threads, {report.rounds} interleaved rounds of "
             f"{report.calls_per_round} frames; ms/frame median (min-max), speed-up over {report.baseline} per round.",
             "", "| frame | candidate | ms/frame | over " + report.baseline + " |", "|---|---|---|---|"]
    for run in report.runs:
        size = "x".join(str(s) for s in run.shape[:2])
        for name, ms in run.ms_per_frame.items():
            effect = run.speedup[name].effect() if name in run.speedup else "baseline"
            lines.append(f"| {run.frame} {size} | {name} | {ms.text(1)} | {effect} |")
    lines.append(f"\nThe checkout's INT8 encoder on {report.held_out} normal and {report.held_out_defective} defective "
                 f"held-out parts of the bench product: verdicts {report.int8_verdicts_equal:.0%} equal to FP32's, image "
                 f"AUROC {report.image_auroc_int8:.3f} vs {report.image_auroc_fp32:.3f}: "
                 f"{'passes' if report.int8_passes else 'fails'} `export int8`'s check")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", nargs="?", default="48d742e")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench-baseline")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20, help="frames per candidate per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "default", help="this checkout's bundle")
    parser.add_argument("--baseline-bundle", type=Path, help="a bundle the commit's code reads (default: export one)")
    args = parser.parse_args(argv)
    report = against_commit(args.rev, args.out, args.rounds, args.calls, args.threads, args.bundle,
                            args.baseline_bundle)
    (args.out / "report.json").write_text(report.model_dump_json(indent=2))
    (args.out / "report.md").write_text(markdown(report) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
