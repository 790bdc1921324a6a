"""One side of ``lineguard.bench.against_commit``: times the whole inspection in its own process.

Run by the comparison, never imported by it: the process imports whichever lineguard its PYTHONPATH
gives it (this checkout, or an older commit's tree), so this file uses only what every version has
(``Bundle.scratch_copy``, ``enroll_product``, ``Inspector.analyze``) and the standard library + numpy at
the top. Protocol, one JSON object a line:

    argv[1]  {"bundle": DIR, "frames": NPZ, "threads": 2, "int8": false}
    stdin    {"calls": 20, "frame": "bench"}  ->  stdout {"ms_per_frame": 31.2}
    stdin    {"verdicts": "held_out"}         ->  stdout {"ng": [false, true, ...], "score": [3.1, 9.4, ...]}
    stdin    EOF                              ->  exit
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

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
    config = json.loads(sys.argv[1])
    frames = dict(np.load(config["frames"], allow_pickle=False))
    Bundle, enroll_product, Inspector = _imports()
    with Bundle.scratch_copy(config["bundle"], prefix="lineguard-versus-") as bundle:
        inspector = Inspector(bundle, threads=config["threads"])
        enroll_product(bundle, PRODUCT, list(frames["shots"]), chain=inspector.chain)
        if config.get("int8"):
            from lineguard.export.cpu_int8 import quantize_encoder
            from lineguard.runtime.inference.chain import VisionChain
            from lineguard.runtime.inference.ort_backend import OnnxRuntimeBackend

            record = quantize_encoder(bundle, list(frames["shots"]) + list(frames["int8_calibration"]))
            chain = VisionChain(bundle, threads=config["threads"])
            chain.encoder = OnnxRuntimeBackend(bundle.path(record.file), threads=config["threads"])
            inspector = Inspector(bundle, chain=chain)
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            if "verdicts" in request:
                found = inspector.analyze(list(frames[request["verdicts"]]), PRODUCT)
                print(json.dumps({"ng": [i.verdict.verdict == "NG" for i in found],
                                  "score": [float(i.verdict.score) for i in found]}), flush=True)
                continue
            image = [frames[request["frame"]]]
            start = time.perf_counter()
            for _ in range(request["calls"]):
                inspector.analyze(image, PRODUCT)
            print(json.dumps({"ms_per_frame": (time.perf_counter() - start) * 1e3 / request["calls"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
