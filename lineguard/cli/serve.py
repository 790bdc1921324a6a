"""``lineguard serve``: run the line service, its config layered from YAML and flags.

Layering: every serve flag defaults to None; the flags given replace their one field of the line config
(``--max-batch`` -> ``batching.max_batch``) over the file of ``--config``, or over the defaults without
one (loopback binds, line ``line1``). The result is validated as one config
(lineguard.runtime.line.config.layer_config), so a bad flag value is refused like a bad YAML value, with
the field and the flag named. ``--http-port -1`` turns the HTTP port off; any other port turns it on.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from lineguard.cli.common import dest

if TYPE_CHECKING:
    from lineguard.runtime.line.config import LineConfig
    from lineguard.runtime.line.server import LineServer

ADHOC_LINE = "line1"  # the line's name without --config and --line
HTTP_OFF = -1  # --http-port -1: no HTTP port

# flag -> (the line config field it overrides, argparse type, metavar, help); parser.py adds them in this order
FLAGS: dict[str, tuple[str, type, str | None, str]] = {
    "--line": ("line", str, "NAME", "line name, part of every verdict topic"),
    "--frames": ("endpoints.frames", str, None, "PULL: cameras push frames here"),
    "--verdicts": ("endpoints.verdicts", str, None, "PUB: verdicts and heartbeats"),
    "--inspect": ("endpoints.inspect", str, None, "ROUTER: one frame in, one verdict back"),
    "--explanations": ("endpoints.explanations", str, None, "ROUTER: questions about archived frames"),
    "--deadline-ms": ("deadline_ms", float, None, "receipt to verdict; later verdicts are TIMEOUT"),
    "--max-batch": ("batching.max_batch", int, None, "largest batch of same-product frames"),
    "--max-queue-delay-ms": ("batching.max_queue_delay_ms", float, None, "longest wait for a batch to fill"),
    "--archive": ("archive.dir", str, "DIR", "keep NG frames with their maps here"),
    "--http-host": ("http.host", str, None, "health/metrics/archive HTTP interface"),
    "--http-port": ("http.port", int, None, f"health/metrics HTTP port ({HTTP_OFF}: off)"),
    "--http-token-file": ("http.token_file", str, "FILE", "bearer token /api/frames needs (beyond loopback)"),
    "--backend": ("inference.backend", str, None, "inference backend"),
    "--triton-url": ("inference.triton_url", str, "HOST:PORT", "Triton gRPC endpoint for --backend triton"),
}

DESCRIPTION = (f"Flags override the line config field each names: without --config they layer over the "
               f"defaults (loopback binds, line {ADHOC_LINE}); with --config LINE.yaml over that file, whose other "
               "fields stay. The result is validated as one config: a bad flag value is refused like a bad YAML value.")


def serve_overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The given serve flags as line config overrides (dotted field -> value) and where each came from."""
    overrides: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for option, (field, *_) in FLAGS.items():
        value = getattr(args, dest(option))
        if value is None:
            continue
        if option == "--http-port":
            fields = {"http.enabled": False} if value == HTTP_OFF else {"http.port": value, "http.enabled": True}
        else:
            fields = {field: value}
        overrides.update(fields)
        origins.update(dict.fromkeys(fields, option))
    if args.config is None:
        overrides.setdefault("line", ADHOC_LINE)
    return overrides, origins


def serve_config(args: argparse.Namespace) -> LineConfig:
    """The line config ``serve`` runs: ``--config`` (or the defaults) with the given flags on top, validated."""
    from lineguard.runtime.line.config import layer_config

    overrides, origins = serve_overrides(args)
    return layer_config(args.config, overrides, origins)


def cmd_serve(args: argparse.Namespace) -> int:
    from lineguard.runtime.http.service import RuntimeHttpService
    from lineguard.runtime.line.server import LineServer

    config = serve_config(args)
    # The HTTP port comes up first: /healthz answers and /readyz says 503 while the bundle loads.
    http = RuntimeHttpService(config.http, allow_open=config.security.insecure).start() if config.http.enabled else None
    if http is not None:
        print(f"health and metrics on {http.url} (/healthz /readyz /metrics)", file=sys.stderr)
    try:
        server = LineServer.from_bundle(args.bundle, config)
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
    print(f"starting line {config.line!r} from bundle {server.bundle_id}: warming up, then binding", file=sys.stderr)
    _announce_when_serving(server)
    from lineguard.runtime.line.systemd_notify import SystemdNotifier, WatchdogLoop

    watchdog = WatchdogLoop(SystemdNotifier.from_environment(), healthy=lambda: server.ready and server.loop_turning(),
                            status=f"serving line {config.line}").start()  # no-op outside systemd Type=notify
    try:
        server.run()
    finally:
        watchdog.stop()
    return 0


def _announce_when_serving(server: LineServer) -> None:
    """Say where the line serves once its sockets are bound (the addresses they got: ``*`` ports resolved),
    not before: a warm-up or a bind that fails must not follow a "serving" line."""
    import threading

    def announce() -> None:
        server.life.started.wait()
        e = server.endpoints
        print(f"serving line {server.config.line!r}: frames {e.frames}, verdicts {e.verdicts}, inspect {e.inspect}"
              f"{f', explanations {e.explanations}' if server.explanations is not None else ''} "
              "(Ctrl-C or SIGTERM drains and stops)", file=sys.stderr, flush=True)

    threading.Thread(target=announce, name="announce-serving", daemon=True).start()
