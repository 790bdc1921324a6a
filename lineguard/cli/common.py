"""What the command modules share: the user-error type, the default bundle, flag names, keys and --budget.

A :class:`CliError` (or one of :func:`user_errors`) is a mistake the user can fix: ``main`` prints it as
``lineguard: error: ...`` and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

DEFAULT_BUNDLE = Path("bundles/default")


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions ``main`` reports as one readable line (exit 2)."""
    from lineguard.panel.settings import PanelSettingsError
    from lineguard.runtime.bundle import BundleError
    from lineguard.runtime.bundle.signature import SigningKeyError
    from lineguard.runtime.clients.camera import CameraError
    from lineguard.runtime.http.service import HttpServiceError
    from lineguard.runtime.image_io import ImageReadError
    from lineguard.runtime.inference.base import BackendUnavailableError
    from lineguard.runtime.inference.preprocess import ImageFormatError
    from lineguard.runtime.line.assembly import ServerError
    from lineguard.runtime.line.config import LineConfigError
    from lineguard.runtime.line.systemd_notify import SystemdNotifyError
    from lineguard.runtime.scoring.enroll import EnrollmentError
    from lineguard.runtime.scoring.inspector import NonFiniteScoreError, UnknownProductError
    from lineguard.runtime.security.curve import CurveError

    # PermissionError and friends: a key, bundle or output path the user gave that cannot be used
    return (BackendUnavailableError, CliError, BundleError, EnrollmentError, ImageReadError, UnknownProductError, ImageFormatError,
            LineConfigError, ServerError, CameraError, FileExistsError, FileNotFoundError, PanelSettingsError,
            HttpServiceError, CurveError, SigningKeyError, SystemdNotifyError, PermissionError, IsADirectoryError,
            NotADirectoryError, NonFiniteScoreError)


def flag(dest: str) -> str:
    """The option an argparse ``dest`` comes from: ``update_readme`` -> ``--update-readme``."""
    return "--" + dest.replace("_", "-")


def dest(option: str) -> str:
    """The argparse ``dest`` of an option: ``--max-batch`` -> ``max_batch``."""
    return option.removeprefix("--").replace("-", "_")


def stage_list(text: str) -> list[str]:
    """argparse type of a comma-separated list of encoder stage names ("s2,s3"); which stages exist is the
    export's to check."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: name at least one stage, e.g. s2,s3")
    return names


def category_kind(text: str) -> tuple[str, str]:
    """argparse type of ``eval --all --kind``: "CATEGORY=KIND" (e.g. grid=industrial)."""
    category, sep, kind = (part.strip() for part in text.partition("="))
    if not (sep and category and kind):
        raise argparse.ArgumentTypeError(f"{text!r}: expected CATEGORY=KIND, e.g. grid=industrial")
    return category, kind


def tiles_per_side(text: str) -> int | str:
    """argparse type of ``--tiles``: "auto" (chosen from the photos' size at enrolment) or 1..MAX_TILES."""
    if text == "auto":
        return text
    from lineguard.runtime.bundle import MAX_TILES
    from lineguard.runtime.inference.tiling import check_tiles

    try:
        return check_tiles(int(text))  # the runtime's own bound, not a second copy of it
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: auto, or tiles per side 1..{MAX_TILES}") from None


def _number(text: str, kind: type[int] | type[float], *, low: float, low_inclusive: bool = True,
            high: float | None = None, high_inclusive: bool = True) -> int | float:
    """``text`` as a finite ``kind`` in the range, or the argparse error that says which range."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    too_low = value < low if low_inclusive else value <= low
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        lower = f"at least {low:g}" if low_inclusive else f"above {low:g}"
        upper = "" if high is None else f" and {'at most' if high_inclusive else 'below'} {high:g}"
        raise argparse.ArgumentTypeError(f"{text!r}: must be {lower}{upper}")
    return value


def positive_int(text: str) -> int:
    """argparse type of counts that must be at least 1 (shots, frames, rounds, batch sizes, steps)."""
    return int(_number(text, int, low=1))


def non_negative_int(text: str) -> int:
    """argparse type of counts where 0 means none or all, as each option's help says."""
    return int(_number(text, int, low=0))


def positive_float(text: str) -> float:
    """argparse type of durations and rates: finite and above 0."""
    return float(_number(text, float, low=0.0, low_inclusive=False))


def non_negative_float(text: str) -> float:
    """argparse type of rates where 0 means as fast as possible (camera --fps)."""
    return float(_number(text, float, low=0.0))


def fraction(text: str) -> float:
    """argparse type of a share of something: 0 up to (not including) 1."""
    return float(_number(text, float, low=0.0, high=1.0, high_inclusive=False))


def tcp_port(text: str) -> int:
    """argparse type of a TCP port to bind or reach: 1..65535."""
    return int(_number(text, int, low=1, high=65535))


def zmq_endpoint(text: str) -> str:
    """argparse type of a ZeroMQ endpoint to connect to: the line config's schemes, and for tcp:// a host
    and a port (``tcp://host:5555``), so a typo is one line here rather than a ZMQError traceback."""
    from lineguard.runtime.line.config import ENDPOINT_SCHEMES

    if not text.startswith(ENDPOINT_SCHEMES):
        raise argparse.ArgumentTypeError(f"{text!r} is not a ZeroMQ endpoint: {', '.join(ENDPOINT_SCHEMES)}, "
                                         "e.g. tcp://localhost:5555")
    from lineguard.runtime.contract.addresses import tcp_address

    if (address := tcp_address(text)) is not None:
        host, port = address
        if not (host and port.isdigit() and 1 <= int(port) <= 65535):
            raise argparse.ArgumentTypeError(f"{text!r}: a tcp endpoint is tcp://HOST:PORT, e.g. tcp://localhost:5555")
    import zmq

    probe = zmq.Context.instance().socket(zmq.PUSH)
    try:  # ZeroMQ's own parser has the last word (a host with spaces); a host name resolves later, not here
        probe.connect(text)
    except zmq.ZMQError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: ZeroMQ cannot connect to it ({zmq.strerror(exc.errno)})") from None
    finally:
        probe.close(linger=0)
    return text


def output_file(text: str) -> str:
    """argparse type of ``--json OUT``: a file to write (its folders are made), refused now if it is a folder
    rather than after a run of minutes."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: name the JSON file to write, e.g. {Path(text) / 'out.json'}")
    return text


def _validated(annotation: Any, value: object, text: str) -> Any:
    """``value`` checked against a pydantic annotation owned elsewhere (the manifest, the line config), or the
    argparse error carrying pydantic's reasons."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: " + "; ".join(e["msg"] for e in exc.errors())) from None


def input_side(text: str) -> int:
    """argparse type of ``export vision --input-size``: the manifest's range for a side (its one owner), checked
    before minutes of training rather than at the bundle's first open."""
    from lineguard.runtime.bundle.schema import InputSide

    return int(_validated(InputSide, int(_number(text, int, low=1)), text))


def budget(text: str) -> float:
    """argparse type of ``--budget``: a false-reject budget in the line config's range (its one owner)."""
    from lineguard.runtime.scoring.calibration import FalseRejectBudget

    return float(_validated(FalseRejectBudget, text, text))


def curve_client(args: argparse.Namespace):
    """The client's CURVE settings from ``--curve-client-key``/``--curve-server-key`` (None: plain)."""
    from lineguard.runtime.security.curve import client_config

    return client_config(args.curve_client_key, args.curve_server_key)


def passphrase(args: argparse.Namespace) -> bytes | None:
    """The private key's passphrase from the environment variable ``--passphrase-env`` names."""
    if not args.passphrase_env:
        return None
    value = os.environ.get(args.passphrase_env)
    if value is None:
        raise CliError(f"environment variable {args.passphrase_env} (the key's passphrase) is not set")
    if not value:
        raise CliError(f"environment variable {args.passphrase_env} (the key's passphrase) is empty")
    return value.encode()


def no_bundle(bundle: Path) -> CliError:
    """The error for a bundle folder that holds no manifest (other than the default, which gets exported)."""
    return CliError(f"no bundle in {bundle}: export one with `lineguard export vision --out {bundle}`")


def require_bundle(bundle: str | Path) -> None:
    """A bundle the benchmarks can load, or the bundle's own readable error (not a bare errno) before they start."""
    from lineguard.runtime.bundle import Bundle

    if not Path(bundle).exists():
        raise no_bundle(Path(bundle))
    Bundle.open(bundle, verify=False)  # the manifest alone; each benchmark verifies what it loads
