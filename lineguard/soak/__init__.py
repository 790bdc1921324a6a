"""A sustained mixed stream against a running line service: one verdict per frame, p99, and whether memory or
open files leak.

Usage::

    from lineguard.soak import SoakPlan, run_soak

    with LineServer(inspector, config) as server:       # or a `lineguard serve` process: pass its pid
        result = run_soak(server.endpoints.frames, server.endpoints.verdicts, good=parts, defects=defect_parts,
                          product="weave", plan=SoakPlan(duration_s=60, cameras=3, fps=4),
                          explanations=server.endpoints.explanations)
    result.missing, result.duplicates          # both 0: exactly one verdict per addressable frame
    result.rss_slope_mb_per_min, result.fds_slope_per_min, result.leak_suspected

Each camera is a thread with its own PUSH socket, sending at ``fps`` a deterministic mix of good raw and
JPEG frames, defective parts, and malformed messages (bad header, truncated JPEG, wrong shape, unknown
product, and messages too broken to name their camera, which the service counts as dropped). With an
``explanations`` endpoint a DEALER asks about frames every ``explain_interval_s``: unknown frames, malformed
and over-long requests, and real NG frames (cancelled after the first chunk, so the LLM never hogs the
cores); every request must get its final or error reply. A SUB collects every verdict and the heartbeats
(their ``dropped`` count).

RSS and open file descriptors of the service's process (``pid``, default this one; psutil) are sampled
throughout. After the warm-up (``warm_fraction`` of the stream: allocators, arenas and caches settle) a
least-squares line through the samples up to the last frame gives the slope, with its standard error, in
MB/min and files/min. A slope beyond its bound sets ``leak_suspected``: by default (:func:`leak_bound`) a
slope that adds more than 2 MB (2 files) over the measured window and at least 2 MB/min (2 files/min), so a
longer soak resolves a smaller leak. A healthy service is flat once warm, while a leak of a few KiB per
frame climbs steadily (``tests/test_soak.py`` injects one and shows the bound catches it). Nothing here
asserts: the caller decides what is acceptable.

- :mod:`.plan`      ``SoakPlan``: duration, cameras, rates, warm-up, bounds
- :mod:`.traffic`   the cameras' mixed frames and the explanation requests
- :mod:`.sampling`  RSS and open files of the service's process
- :mod:`.leaks`     slopes after the warm mark, their bounds, ``memory_bound_mb``
- :mod:`.report`    ``SoakResult`` and how a run is summarised into it
- :mod:`.run`       ``run_soak``: the threads, the verdict collector, the drain
- :mod:`.serve`     ``soak_serve_process`` (``lineguard bench soak``)
"""

from lineguard.soak.leaks import (
    FDS_STEP,
    MIN_FDS_BOUND_PER_MIN,
    MIN_RSS_BOUND_MB_PER_MIN,
    RSS_STEP_MB,
    Slope,
    fit_slope,
    leak_bound,
    memory_bound_mb,
)
from lineguard.soak.plan import SoakPlan
from lineguard.soak.report import SoakResult
from lineguard.soak.run import run_soak
from lineguard.soak.sampling import MIB, RssSample
from lineguard.soak.serve import soak_serve_process
from lineguard.soak.traffic import MIX, painted_defects

__all__ = [
    "FDS_STEP",
    "MIB",
    "MIN_FDS_BOUND_PER_MIN",
    "MIN_RSS_BOUND_MB_PER_MIN",
    "MIX",
    "RSS_STEP_MB",
    "RssSample",
    "Slope",
    "SoakPlan",
    "SoakResult",
    "fit_slope",
    "leak_bound",
    "memory_bound_mb",
    "painted_defects",
    "run_soak",
    "soak_serve_process",
]
