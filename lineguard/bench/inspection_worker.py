"""One side of ``lineguard.bench.against_commit``: times the whole inspection in its own process.

Run by the comparison, never imported by it for inspection: the process imports whichever lineguard its
PYTHONPATH gives it (this checkout, or an older commit's tree), so this file uses only what every version
has (``Bundle.scratch_copy``, ``enroll_product``, ``Inspector.analyze``) and numpy + pydantic at the top.
Its messages are the pydantic models below (the comparison imports them from this file), one JSON
object a line:

    argv[1]  WorkerConfig                       (bundle, frames .npz, threads, int8)
    stdin    TimeFrames(calls=20, frame="bench")      ->  stdout Timing(ms_per_frame=31.2)
    stdin    JudgeFrames(frames="held_out")           ->  stdout Judged(ng=[False, True, ...], score=[...])
    stdin    EOF                                      ->  exit
"""

from __future__ import annotations

import os
import sys

# Run as a script, Python puts this file's folder (lineguard/bench) first on sys.path, where its modules
# (triton.py, load.py, ...) would shadow top-level packages: dropped (``python -P`` would need Python 3.11).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import time  # noqa: E402
from typing import Annotated, Literal  # noqa: E402

import numpy as np  # noqa: E402
from pydantic import BaseModel, Field, TypeAdapter  # noqa: E402


class WorkerConfig(BaseModel):
    bundle: str
    frames: str  # .npz: shots, int8_calibration, and the frames asked for by name
    threads: int
    int8: bool = False  # this checkout only: the encoder quantised to INT8 on the shots + int8_calibration


class Ready(BaseModel):
    ready: Literal[True] = True


class TimeFrames(BaseModel):
    kind: Literal["time"] = "time"
    calls: int = Field(gt=0)
    frame: str


class JudgeFrames(BaseModel):
    kind: Literal["judge"] = "judge"
    frames: str


class Timing(BaseModel):
    ms_per_frame: float


class Judged(BaseModel):
    ng: list[bool]
    score: list[float]


REQUEST: TypeAdapter[TimeFrames | JudgeFrames] = TypeAdapter(
    Annotated[TimeFrames | JudgeFrames, Field(discriminator="kind")])

PRODUCT = "bench-weave"


def _imports():  # noqa: ANN202 - module paths moved between versions (runtime/ became sub-packages)
    from lineguard.runtime.bundle import Bundle
    try:
        from lineguard.runtime.scoring.enroll import enroll_product
        from lineguard.runtime.scoring.inspector import Inspector
    except ImportError:
        from lineguard.runtime.enroll import enroll_product
        from lineguard.runtime.inspector import Inspector
    return Bundle, enroll_product, Inspector


def main() -> int:
    config = WorkerConfig.model_validate_json(sys.argv[1])
    frames = dict(np.load(config.frames, allow_pickle=False))
    Bundle, enroll_product, Inspector = _imports()
    with Bundle.scratch_copy(config.bundle, prefix="lineguard-versus-") as bundle:
        inspector = Inspector(bundle, threads=config.threads)
        enroll_product(bundle, PRODUCT, list(frames["shots"]), chain=inspector.chain)
        if config.int8:
            from lineguard.export.cpu_int8 import quantize_encoder
            from lineguard.runtime.inference.chain import VisionChain
            from lineguard.runtime.inference.ort_backend import OnnxRuntimeBackend

            record = quantize_encoder(bundle, list(frames["shots"]) + list(frames["int8_calibration"]))
            chain = VisionChain(bundle, providers=["CPUExecutionProvider"], threads=config.threads)  # INT8: CPU only
            chain.encoder = OnnxRuntimeBackend(bundle.path(record.file), threads=config.threads)
            inspector = Inspector(bundle, chain=chain)
        print(Ready().model_dump_json(), flush=True)
        for line in sys.stdin:
            request = REQUEST.validate_json(line)
            if isinstance(request, JudgeFrames):
                found = inspector.analyze(list(frames[request.frames]), PRODUCT)
                reply: BaseModel = Judged(ng=[i.verdict.verdict == "NG" for i in found],
                                          score=[float(i.verdict.score) for i in found])
            else:
                image = [frames[request.frame]]
                start = time.perf_counter()
                for _ in range(request.calls):
                    inspector.analyze(image, PRODUCT)
                reply = Timing(ms_per_frame=(time.perf_counter() - start) * 1e3 / request.calls)
            print(reply.model_dump_json(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
