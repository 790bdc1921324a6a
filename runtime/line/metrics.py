"""Prometheus metrics of one line service, in the formats operations tools already read.

Usage::

    metrics = LineMetrics(server)            # its own CollectorRegistry: several servers never collide
    metrics.observe_verdict(verdict)         # the server calls this for every verdict it delivers
    metrics.observe_explanation(reply)       # ... and for every final/error explanation reply
    generate_latest(metrics.registry)        # text exposition format (what GET /metrics returns)

Counts (frames, verdicts by class, errors by code, drops, queue depth) are read from the server's own
counters at scrape time (a custom collector over ``LineServer.heartbeat()``), so the heartbeat and
``/metrics`` can never disagree (the calibration-drift gauges too). Latencies are histograms observed as verdicts leave the service:
one series per stage of ``Verdict.latency_ms`` (decode, preprocess, encoder, decoder, scoring, total).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lineguard.runtime.contract import ExplainReply, Heartbeat, Verdict

# Seconds. Inference stages on a CPU take milliseconds to a few hundred; the deadline is ~0.2 s.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0)
EXPLANATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0)
STAGES = ("decode", "preprocess", "encoder", "decoder", "scoring", "total")
# Heartbeat fields exported as counters (monotonic within one boot), with their help text.
HEARTBEAT_COUNTERS = {
    "frames_in": ("lineguard_frames_received", "Messages read from the frames and inspect sockets"),
    "verdicts_out": ("lineguard_verdicts_published", "Verdicts published on the verdicts socket"),
    "replies_out": ("lineguard_inspect_replies", "Replies sent to inspect requests"),
    "dropped": ("lineguard_frames_dropped", "Frames too broken to address: counted, not answered"),
    "archive_failures": ("lineguard_archive_failures", "Archive writes that failed (disk full, read-only)"),
    "worker_restarts": ("lineguard_worker_restarts", "Inference workers replaced after a fatal fault"),
    "auth_denied": ("lineguard_auth_denied", "Connections refused by the CURVE allow-list"),
    "camera_denied": ("lineguard_camera_denied", "Frames refused CAMERA_NOT_ALLOWED: the sender's key may not "
                      "speak for their camera"),
}
HEARTBEAT_GAUGES = {
    "queue_depth": ("lineguard_queue_depth", "Frames waiting for an inference worker"),
    "in_flight": ("lineguard_in_flight", "Frames being inferred now"),
    "uptime_s": ("lineguard_uptime_seconds", "Seconds since this boot started"),
}


class HeartbeatCollector(Collector):
    """Counters and gauges read from a heartbeat snapshot at scrape time."""

    def __init__(self, snapshot: Callable[[], Heartbeat]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        beat = self.snapshot()
        labels = ["line", "boot_id"]
        ids = [beat.line, beat.boot_id]
        ready = GaugeMetricFamily("lineguard_ready", "1 when the models are loaded and the sockets bound",
                                  labels=labels)
        ready.add_metric(ids, float(beat.ready and not beat.draining))
        yield ready
        for field, (name, help_text) in HEARTBEAT_COUNTERS.items():
            value = getattr(beat, field, None)
            if value is None:  # a field this version of the heartbeat does not have
                continue
            family = CounterMetricFamily(name, help_text, labels=labels)
            family.add_metric(ids, float(value))
            yield family
        for field, (name, help_text) in HEARTBEAT_GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=labels)
            family.add_metric(ids, float(getattr(beat, field)))
            yield family
        verdicts = CounterMetricFamily("lineguard_verdicts", "Verdicts delivered, by class",
                                       labels=[*labels, "verdict"])
        for cls in ("OK", "NG", "ERROR", "TIMEOUT"):  # every class present from the first scrape
            verdicts.add_metric([*ids, cls], float(beat.verdicts.get(cls, 0)))
        yield verdicts
        errors = CounterMetricFamily("lineguard_errors", "ERROR verdicts and refusals, by error code (TIMEOUT verdicts "
                                     "carry no code: lineguard_verdicts{verdict=\"TIMEOUT\"})",
                                     labels=[*labels, "code"])
        for code, count in sorted(beat.errors.items()):
            errors.add_metric([*ids, code], float(count))
        yield errors
        yield from drift_families(beat, labels, ids)


DRIFT_GAUGES = {  # per camera and product, over the calibration-drift window (lineguard.runtime.line.drift_monitor)
    "reject_rate": ("lineguard_drift_reject_rate", "NG share of the recent decided verdicts (compare to the budget)"),
    "verdicts": ("lineguard_drift_window_verdicts", "Decided verdicts in the drift window"),
    "ks_statistic": ("lineguard_drift_pvalue_ks_statistic", "Kolmogorov-Smirnov distance of the recent p-values "
                     "from U(0, 1): near 0 while calibrated"),
    "alarm": ("lineguard_drift_alarm", "1 while the reject rate runs well above the false-reject budget"),
}


def drift_families(beat: Heartbeat, labels: list[str], ids: list[str]) -> Iterator[Metric]:
    """The heartbeat's drift windows as gauges labelled by camera and product."""
    windows = getattr(beat, "drift", [])
    for field, (name, help_text) in DRIFT_GAUGES.items():
        family = GaugeMetricFamily(name, help_text, labels=[*labels, "camera", "product"])
        for window in windows:
            value = getattr(window, field)
            if value is not None:
                family.add_metric([*ids, window.camera_id, window.product], float(value))
        yield family


class LineMetrics:
    """Everything ``/metrics`` shows for one line service."""

    def __init__(self, snapshot: Callable[[], Heartbeat], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(HeartbeatCollector(snapshot))
        self.stage_latency = Histogram(
            "lineguard_stage_latency_seconds", "Time spent per stage of an inspected frame (receipt to verdict "
            "for 'total', which also covers ERROR and TIMEOUT verdicts)", ["stage"], buckets=STAGE_BUCKETS,
            registry=self.registry)
        self.explanation_latency = Histogram(
            "lineguard_explanation_seconds", "Explanation timings: 'first_token' and 'total'", ["phase"],
            buckets=EXPLANATION_BUCKETS, registry=self.registry)
        self.explanations = Counter(
            "lineguard_explanations", "Explanation requests answered, by outcome (final, cancelled, or the "
            "error code)",
            ["outcome"], registry=self.registry)
        for stage in STAGES:  # series exist (at zero) before the first frame, so dashboards are not empty
            self.stage_latency.labels(stage)

    def observe_verdict(self, verdict: Verdict) -> None:
        latency = verdict.latency_ms
        self.stage_latency.labels("total").observe(latency.total / 1e3)
        if verdict.verdict in ("OK", "NG"):  # only inferred frames went through every stage
            for stage in STAGES[:-1]:
                self.stage_latency.labels(stage).observe(getattr(latency, stage) / 1e3)

    def observe_explanation(self, reply: ExplainReply) -> None:
        if reply.type == "chunk":
            return
        if reply.type == "error":
            self.explanations.labels(reply.error.code if reply.error else "UNKNOWN").inc()
            return
        if reply.finish_reason == "cancelled":  # stopped by its client: not an answer's latency
            self.explanations.labels("cancelled").inc()
            return
        self.explanations.labels("final").inc()
        if reply.time_to_first_token_ms is not None:
            self.explanation_latency.labels("first_token").observe(reply.time_to_first_token_ms / 1e3)
        if reply.total_ms is not None:
            self.explanation_latency.labels("total").observe(reply.total_ms / 1e3)
