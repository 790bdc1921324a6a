"""The calibration-drift alarm: its statistics on simulated streams, and the alarm through a real line
(heartbeat, /metrics, ``lineguard watch``, the panel's board)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import zmq
from line_helpers import LOOPBACK, inspect_frames, until, wait_for, watch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binom

from lineguard.cli import main
from lineguard.panel.board import LineBoard
from lineguard.runtime.clients.watch import WatchEvent, format_event
from lineguard.runtime.contract import (
    HEARTBEAT_TOPIC,
    DriftAlarm,
    Heartbeat,
    Verdict,
    describe_alarm,
    encode_frame,
    new_header,
)
from lineguard.runtime.http.service import RuntimeHttpService
from lineguard.runtime.line.config import HttpEndpoint, LineConfig, LineConfigError
from lineguard.runtime.line.drift_monitor import DriftMonitor, DriftSettings, binomial_tail, critical_count
from lineguard.runtime.line.metrics import LineMetrics
from lineguard.runtime.line.server import LineServer
from lineguard.runtime.scoring.inspector import Inspector

BUDGET = 0.01


def feed(monitor: DriftMonitor, p_values: np.ndarray, camera: str = "cam0", product: str = "tile") -> list[bool]:
    """Record few-shot verdicts decided at the monitor's budget; the alarm state after each."""
    states = []
    for p in p_values:
        monitor.record(camera, product, bool(p < monitor.budget), float(p))
        states.append(monitor.alarmed(camera, product))
    return states


def first_alarm(monitor: DriftMonitor, p_values: np.ndarray, camera: str = "cam0") -> int | None:
    """How many verdicts it took to raise the alarm (None: never)."""
    for i, p in enumerate(p_values):
        monitor.record(camera, "tile", bool(p < monitor.budget), float(p))
        if monitor.alarmed(camera, "tile"):
            return i + 1
    return None


# -- the statistics -----------------------------------------------------------------------------------


def test_critical_count_is_the_exact_binomial_tail() -> None:
    for n in (10, 50, 137, 500, 5000):
        for alpha in (1e-3, 0.05):
            k = critical_count(n, BUDGET, alpha)
            assert binom.sf(k - 1, n, BUDGET) < alpha <= binom.sf(k - 2, n, BUDGET), (n, alpha, k)
            assert binomial_tail(k, n, BUDGET) == pytest.approx(binom.sf(k - 1, n, BUDGET))
    assert binomial_tail(0, 500, BUDGET) == 1.0
    assert critical_count(500, BUDGET, 1e-3) > critical_count(500, BUDGET, 0.05)  # room for hysteresis


def test_a_stream_at_budget_rarely_raises_the_alarm() -> None:
    rng = np.random.default_rng(0)
    settings = DriftSettings(window=500, min_verdicts=50, alpha=1e-3)
    # many independent windows (a camera each), filled from empty as after a start: the alarm is looked at
    # after every verdict from the 50th on, so any false alarm during the fill counts
    cameras, ever, at_end = 300, 0, 0
    monitor = DriftMonitor(BUDGET, settings)
    for c in range(cameras):
        ever += first_alarm(monitor, rng.random(settings.window), camera=f"cam{c}") is not None
        at_end += monitor.alarmed(f"cam{c}", "tile")
    assert ever / cameras <= 0.02, ever  # many looks: a few times alpha (0.5 % measured)
    assert at_end <= 2, at_end
    # the rule on full windows: the share of at-budget windows beyond the critical count stays below alpha
    counts = rng.binomial(settings.window, BUDGET, 200_000)
    assert np.mean(counts >= critical_count(settings.window, BUDGET, settings.alpha)) <= settings.alpha
    # one camera streaming for long at the budget: its sliding window practically never alarms
    monitor = DriftMonitor(BUDGET, settings)
    states = feed(monitor, rng.random(3000))
    raises = sum(1 for before, now in zip([False, *states], states, strict=False) if now and not before)
    assert raises == 0
    assert monitor.snapshot().windows[0].reject_rate < 0.03


def test_ten_times_the_budget_raises_it_within_the_window() -> None:
    settings = DriftSettings(window=500, min_verdicts=50, alpha=1e-3)
    taken = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        monitor = DriftMonitor(BUDGET, settings)
        p_values = rng.random(settings.window) ** 2  # P(p < 0.01) = 0.1: ten times the budget
        taken.append(first_alarm(monitor, p_values))
    assert all(t is not None and t <= settings.window for t in taken), taken
    assert np.median(taken) <= 2 * settings.min_verdicts, taken  # usually right at the minimum window

    snap = monitor.snapshot()
    (alarm,) = snap.alarms
    (window,) = snap.windows
    assert (alarm.camera_id, alarm.product, alarm.budget) == ("cam0", "tile", BUDGET)
    assert alarm.window == window.verdicts and alarm.ng == window.ng and window.alarm
    assert alarm.reject_rate == pytest.approx(window.ng / window.verdicts) and alarm.reject_rate > 5 * BUDGET
    assert alarm.tail_p < settings.alpha
    assert window.p_below_tenth is not None and window.p_below_tenth > 0.2  # p-values piled up near 0
    assert window.ks_statistic is not None and window.ks_statistic > 0.15
    text = describe_alarm(alarm)
    assert "cam0" in text and "tile" in text and "budget 1.0%" in text and f"last {alarm.window} verdicts" in text


def test_hysteresis_clears_once_the_window_has_turned_over() -> None:
    rng = np.random.default_rng(3)
    settings = DriftSettings(window=200, min_verdicts=50, alpha=1e-3, clear_alpha=0.05)
    monitor = DriftMonitor(BUDGET, settings)
    drifted = feed(monitor, rng.random(200) ** 2)
    assert drifted[-1]
    recovered = feed(monitor, rng.random(600))  # back at the budget
    assert recovered[0] and recovered[100]  # the window still holds the drifted verdicts: no flapping
    cleared_at = recovered.index(False)
    assert cleared_at <= settings.window + 50, cleared_at
    assert not any(recovered[cleared_at:])  # cleared once, stays cleared
    assert [w.alarm for w in monitor.snapshot().windows] == [False]


def test_only_calibrated_few_shot_decisions_count() -> None:
    monitor = DriftMonitor(BUDGET, DriftSettings(window=20, min_verdicts=10))

    def v(**fields: object) -> Verdict:
        base = {"frame_id": "f", "camera_id": "cam0", "product": "tile", "verdict": "NG", "decided_by": "few-shot",
                "p_value": 1e-4}
        return Verdict(**{**base, **fields})

    ignored = [v(verdict="ERROR", p_value=None), v(verdict="TIMEOUT", p_value=None),
               v(decided_by="zero-shot", p_value=None, product=""), v(decided_by="llm"), v(p_value=None),
               v(camera_id="")]
    if "calibration" in Verdict.model_fields:
        ignored.append(v(calibration="uncalibrated"))
    for verdict in ignored:
        monitor.observe(verdict)
    assert monitor.snapshot().windows == []
    counted = [v(), v(verdict="OK", p_value=0.4)]
    if "calibration" in Verdict.model_fields:
        counted.append(v(calibration="conformal"))
    for verdict in counted:
        monitor.observe(verdict)
    (window,) = monitor.snapshot().windows
    assert (window.verdicts, window.ng) == (len(counted), len(counted) - 1)


def test_windows_are_per_camera_and_product_and_reset_forgets() -> None:
    monitor = DriftMonitor(BUDGET, DriftSettings(window=20, min_verdicts=10))
    for _ in range(15):
        monitor.record("cam0", "tile", True, 1e-4)
        monitor.record("cam1", "tile", False, 0.5)
        monitor.record("cam0", "gear", False, 0.5)
    snap = monitor.snapshot()
    assert [(w.camera_id, w.product, w.alarm) for w in snap.windows] == [
        ("cam0", "gear", False), ("cam0", "tile", True), ("cam1", "tile", False)]
    assert [(a.camera_id, a.product, a.reject_rate, a.window) for a in snap.alarms] == [("cam0", "tile", 1.0, 15)]
    monitor.reset(product="tile")  # re-calibrated: its windows start over
    assert [(w.camera_id, w.product) for w in monitor.snapshot().windows] == [("cam0", "gear")]

    bounded = DriftMonitor(BUDGET, DriftSettings(window=20, min_verdicts=10, max_windows=3))
    for camera in ("a", "b", "c", "a", "d"):  # camera ids come off the wire: memory stays bounded
        bounded.record(camera, "tile", False, 0.5)
    assert [w.camera_id for w in bounded.snapshot().windows] == ["a", "c", "d"]  # b went longest without one

    off = DriftMonitor(BUDGET, DriftSettings(enabled=False))
    off.observe(Verdict(camera_id="cam0", product="tile", verdict="NG", decided_by="few-shot", p_value=1e-4))
    assert off.snapshot().windows == []


def test_settings_are_checked_and_named_in_the_line_config() -> None:
    assert LineConfig(line="a").drift == DriftSettings()
    with pytest.raises(LineConfigError, match="min_verdicts"):
        LineConfig(line="a", drift={"window": 20, "min_verdicts": 50})
    with pytest.raises(LineConfigError, match="clear_alpha"):
        LineConfig(line="a", drift={"alpha": 0.1, "clear_alpha": 0.05})
    with pytest.raises(LineConfigError, match="drift.windw: unknown field"):
        LineConfig(line="a", drift={"windw": 20})


# -- heartbeat, /metrics, watch, panel without a line ---------------------------------------------------


def drifting_beat(seq: int = 1, alarms: bool = True, boot: str = "boot1") -> Heartbeat:
    monitor = DriftMonitor(BUDGET, DriftSettings(window=20, min_verdicts=10))
    for _ in range(12):
        monitor.record("cam0", "tile", alarms, 1e-4 if alarms else 0.5)
    snap = monitor.snapshot()
    return Heartbeat(line="l1", boot_id=boot, seq=seq, timestamp_ns=0, interval_ms=100, uptime_s=1, ready=True,
                     drift=snap.windows, drift_alarms=snap.alarms)


def metric_values(text: str, name: str) -> dict[tuple[str, str], float]:
    return {(s.labels["camera"], s.labels["product"]): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


def test_heartbeat_carries_alarms_and_metrics_export_them() -> None:
    beat = drifting_beat()
    assert Heartbeat.model_validate_json(beat.model_dump_json()) == beat
    assert [a.camera_id for a in beat.drift_alarms] == ["cam0"]
    text = generate_latest(LineMetrics(lambda: beat).registry).decode()
    assert metric_values(text, "lineguard_drift_alarm") == {("cam0", "tile"): 1.0}
    assert metric_values(text, "lineguard_drift_reject_rate") == {("cam0", "tile"): 1.0}
    assert metric_values(text, "lineguard_drift_window_verdicts") == {("cam0", "tile"): 12.0}
    assert metric_values(text, "lineguard_drift_pvalue_ks_statistic")[("cam0", "tile")] > 0.9
    quiet = generate_latest(LineMetrics(lambda: drifting_beat(alarms=False)).registry).decode()
    assert metric_values(quiet, "lineguard_drift_alarm") == {("cam0", "tile"): 0.0}


def test_watch_prints_a_drift_alarm_line_once_and_its_clearing(capsys: pytest.CaptureFixture[str]) -> None:
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    stop = threading.Event()

    def publish() -> None:  # alarm on for 1 s of heartbeats, then off
        start, seq = time.monotonic(), 0
        while not stop.is_set():
            seq += 1
            beat = drifting_beat(seq, alarms=time.monotonic() - start < 1.0)
            pub.send_multipart([HEARTBEAT_TOPIC, beat.model_dump_json().encode()])
            time.sleep(0.1)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        assert main(["watch", "--connect", endpoint, "--duration", "2.0"]) == 0
    finally:
        stop.set()
        thread.join()
        pub.close()
    lines = capsys.readouterr().out.splitlines()
    drift = [line for line in lines if line.startswith("!! DRIFT: ")]
    assert len(drift) == 1, lines  # printed when raised, not with every heartbeat
    assert "calibration drift on cam0 (tile): reject rate 100.0% over the last 12 verdicts" in drift[0]
    assert "budget 1.0%" in drift[0]
    assert [line for line in lines if line.startswith("!! DRIFT_CLEARED: ")] == [
        "!! DRIFT_CLEARED: calibration drift on cam0 (tile) cleared"]


def test_panel_board_shows_drift_like_its_other_alarms() -> None:
    alarm = drifting_beat().drift_alarms[0]
    board = LineBoard()
    raised = board.apply(WatchEvent("drift", drift=alarm, message=describe_alarm(alarm)), now=10.0)
    cleared = board.apply(WatchEvent("drift_cleared", drift=alarm, message="calibration drift on cam0 (tile) "
                                     "cleared"), now=20.0)
    assert [m.alarm.kind for m in raised + cleared] == ["calibration_drift", "drift_cleared"]
    assert "reject rate 100.0%" in raised[0].alarm.message
    assert [a.kind for a in board.snapshot().alarms] == ["drift_cleared", "calibration_drift"]
    assert format_event(WatchEvent("drift", drift=alarm, message=describe_alarm(alarm))).startswith("!! DRIFT: ")
    assert isinstance(alarm, DriftAlarm)


# -- through a real line --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inspector(enrolled_dir: Path) -> Inspector:
    return Inspector(enrolled_dir)


@pytest.fixture
def drift_line(inspector: Inspector) -> Iterator[LineServer]:
    config = LineConfig(line="d1", endpoints=LOOPBACK, deadline_ms=30_000, heartbeat_interval_ms=100,
                        products=["weave"], drift={"window": 20, "min_verdicts": 10})
    with LineServer(inspector, config) as server:
        yield server


def test_a_camera_rejecting_far_above_budget_raises_the_alarm_on_the_line(
        drift_line: LineServer, weave_parts: list[np.ndarray], ng_weave: np.ndarray) -> None:
    """cam0 sees defective parts only (every verdict NG against a 1 % budget: what drift looks like to the
    line), cam1 normal parts: only cam0 is alarmed, in the heartbeat, on /metrics and for ``watch``."""
    watcher = watch(drift_line)
    normals = [encode_frame(new_header("cam1", f"ok-{i}", "weave"), weave_parts[4 + i % 12]) for i in range(10)]
    assert all(v.decided_by == "few-shot" for v in inspect_frames(drift_line.endpoints.inspect, normals))
    defects = [encode_frame(new_header("cam0", f"ng-{i}", "weave"), ng_weave) for i in range(10)]
    verdicts = inspect_frames(drift_line.endpoints.inspect, defects)
    assert [v.verdict for v in verdicts] == ["NG"] * 10

    events = until(watcher, lambda ev: any(e.kind == "drift" for e in ev), timeout_s=10)
    (event,) = [e for e in events if e.kind == "drift"]
    assert event.drift is not None and (event.drift.camera_id, event.drift.product) == ("cam0", "weave")
    assert event.drift.reject_rate == 1.0 and event.drift.window == 10 and event.drift.budget == BUDGET
    assert format_event(event).startswith("!! DRIFT: calibration drift on cam0 (weave): reject rate 100.0%")
    watcher.close()

    beat = drift_line.heartbeat()
    assert [(a.camera_id, a.product) for a in beat.drift_alarms] == [("cam0", "weave")]
    windows = {w.camera_id: w for w in beat.drift}
    assert windows["cam0"].alarm and not windows["cam1"].alarm and windows["cam1"].verdicts == 10

    with RuntimeHttpService(HttpEndpoint(host="127.0.0.1", port=0)) as http:
        http.attach(drift_line)
        wait_for(lambda: httpx.get(f"{http.url}/readyz").status_code == 200)
        text = httpx.get(f"{http.url}/metrics").text
    assert metric_values(text, "lineguard_drift_alarm") == {("cam0", "weave"): 1.0, ("cam1", "weave"): 0.0}
    assert metric_values(text, "lineguard_drift_reject_rate")[("cam0", "weave")] == 1.0
    assert metric_values(text, "lineguard_drift_window_verdicts")[("cam1", "weave")] == 10.0
    assert ("cam0", "weave") in metric_values(text, "lineguard_drift_pvalue_ks_statistic")
