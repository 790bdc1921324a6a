"""``bench all``'s Triton row: the same frames judged in-process and through a real ``tritonserver``
(the bundle's ONNX in Triton's Python backend, lineguard's Triton backend as the client), in
interleaved rounds: what going central costs on this machine.

Usage::

    from lineguard.bench.triton import triton_rounds
    row = triton_rounds(bundle, inspector, frames, find_tritonserver(), workdir, batch=4, rounds=5)
    row.triton_vs_in_process.effect()      # e.g. "0.62x (0.58-0.66)"

Both sides run ``Inspector.analyze`` on batches of ``batch`` frames (bench_line.direct_run): only where
the encoder and decoder run differs (here, or in the server's process over loopback gRPC).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from lineguard.bench.line import BENCH_PRODUCT, LineRun, direct_run
from lineguard.bench.rounds import Spread, ratio_spread
from lineguard.bench.triton_local import python_path, triton_server
from lineguard.export.triton_repository import export_triton_repository
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.scoring.inspector import Inspector


class TritonComparison(BaseModel):
    server: str  # what served: tritonserver version and the model format
    max_batch: int
    frames: int
    rounds: int
    in_process_fps: Spread
    triton_fps: Spread
    in_process_p50_ms: Spread
    triton_p50_ms: Spread
    triton_vs_in_process: Spread  # Triton frames/s over in-process frames/s, per round


def triton_rounds(bundle: Bundle, inspector: Inspector, frames: Sequence[np.ndarray], root: Path, workdir: Path,
                  batch: int = 4, rounds: int = 5) -> TritonComparison:
    """``inspector``: the in-process side, its product (bench_line.BENCH_PRODUCT) enrolled in ``bundle``."""
    repo = workdir / "triton-repo"
    export_triton_repository(bundle.root, repo, model_format="python", max_batch=max(batch, 1), kind="cpu",
                             python_path=python_path(root), overwrite=True)
    with triton_server(root, repo, workdir / "triton.log") as url:
        remote = Inspector(bundle, chain=VisionChain(bundle, backend="triton", triton_url=url))
        remote.analyze(list(frames[:batch]), BENCH_PRODUCT)  # warm-up: the server's sessions are lazy
        runs: dict[str, list[LineRun]] = {"in-process": [], "triton": []}
        sides = {"in-process": inspector, "triton": remote}
        for r in range(rounds):
            for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                runs[name].append(direct_run(sides[name], frames, batch))
    fps = {name: [x.frames_per_s for x in v] for name, v in runs.items()}
    version = next((line for line in (workdir / "triton.log").read_text().splitlines() if "server_version" in line), "")
    return TritonComparison(
        server=f"tritonserver {version.split('|')[2].strip() if version.count('|') >= 3 else '?'}, Python backend "
               "(ONNX Runtime CPU)", max_batch=batch, frames=len(frames), rounds=rounds,
        in_process_fps=Spread.of(fps["in-process"]), triton_fps=Spread.of(fps["triton"]),
        in_process_p50_ms=Spread.of([x.latency_p50_ms for x in runs["in-process"]]),
        triton_p50_ms=Spread.of([x.latency_p50_ms for x in runs["triton"]]),
        triton_vs_in_process=ratio_spread(fps["triton"], fps["in-process"]))
