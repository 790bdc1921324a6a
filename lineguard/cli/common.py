"""What the command modules share: the user-error type, the default bundle, flag names, keys and --budget.

A :class:`CliError` (or one of :func:`user_errors`) is a mistake the user can fix: ``main`` prints it as
``lineguard: error: ...`` and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
    from lineguard.runtime.scoring.inspector import UnknownProductError
    from lineguard.runtime.security.curve import CurveError

    # PermissionError and friends: a key, bundle or output path the user gave that cannot be used
    return (BackendUnavailableError, CliError, BundleError, EnrollmentError, ImageReadError, UnknownProductError, ImageFormatError,
            LineConfigError, ServerError, CameraError, FileExistsError, FileNotFoundError, PanelSettingsError,
            HttpServiceError, CurveError, SigningKeyError, SystemdNotifyError, PermissionError, IsADirectoryError,
            NotADirectoryError)


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


def positive_int(text: str) -> int:
    """argparse type of counts that must be at least 1 (training steps, simulated images)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def budget(text: str) -> float:
    """argparse type of ``--budget``: a false-reject budget in the line config's range (its one owner)."""
    from pydantic import TypeAdapter, ValidationError

    from lineguard.runtime.scoring.calibration import FalseRejectBudget

    try:
        return TypeAdapter(FalseRejectBudget).validate_python(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: " + "; ".join(e["msg"] for e in exc.errors())) from None


def curve_client(args: argparse.Namespace):
    """The client's CURVE settings from ``--curve-client-key``/``--curve-server-key`` (None: plain)."""
    from lineguard.runtime.security.curve import client_config

    return client_config(args.curve_client_key, args.curve_server_key)


def passphrase(args: argparse.Namespace) -> bytes | None:
    """The private key's passphrase from the environment variable ``--passphrase-env`` names."""
    if not args.passphrase_env:
        return None
    value = os.environ.get(args.passphrase_env)
    if not value:
        raise CliError(f"environment variable {args.passphrase_env} (the key's passphrase) is not set")
    return value.encode()


def no_bundle(bundle: Path) -> CliError:
    """The error for a bundle folder that holds no manifest (other than the default, which gets exported)."""
    return CliError(f"no bundle in {bundle}: export one with `lineguard export vision --out {bundle}`")
