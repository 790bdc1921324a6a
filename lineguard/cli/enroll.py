"""``lineguard enroll``, ``adapt`` and ``calibrate``: a product's few-shot memory (with, after ``adapt``, its
own decoder) and its held-out calibration.

Each prints whether the calibration resolves the line's false-reject budget (``--budget``).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from lineguard.cli.common import CliError
from lineguard.cli.output import print_calibration, warn_signature_stale


def cmd_enroll(args: argparse.Namespace) -> int:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.image_io import read_images, split_normals
    from lineguard.runtime.scoring.enroll import enroll_product

    paths = normal_images(args.normals)
    shots, calibration = split_normals(paths, min(args.shots, len(paths)), args.seed)
    bundle = Bundle.open(args.bundle)
    result = enroll_product(bundle, args.product, read_images(shots), calibration_images=read_images(calibration),
                            seed=args.seed, decoder=None if args.shared_decoder else "keep",
                            orientation=args.orientation, tiles=args.tiles)
    entry = bundle.manifest.products[args.product]
    own = entry.decoder
    decoder = f"its own decoder ({own.file}, from `lineguard adapt`)" if own is not None else "the shared decoder"
    turned = ", turned and mirrored too" if args.orientation == "any" else " (orientation fixed)"
    size = "x".join(str(side * entry.tiles) for side in bundle.manifest.preprocessing.input_size)
    tiled = f"; frames inspected at {size} as {entry.tiles}x{entry.tiles} tiles" if entry.tiles > 1 else ""
    asked = f" (--shots {args.shots}, but the folder holds {len(paths)} images)" if args.shots > len(paths) else ""
    print(f"enrolled {args.product!r}: memory from {len(shots)} shot(s){asked}, {result.views_per_shot} views each{turned}{tiled}; "
          f"{len(result.calibration_scores)} held-out calibration image(s); {decoder}")
    print_calibration(result, args.budget)
    warn_signature_stale(args.bundle)
    return 0


def export_adapt(command: str):  # noqa: ANN201 (lineguard.export.adapt: torch, imported only when asked for)
    """``lineguard.export.adapt``, or a readable error where the workstation extra (torch) is missing."""
    try:
        return importlib.import_module("lineguard.export.adapt")
    except ImportError as exc:
        raise CliError(f"{command} trains on the workstation side: pip install 'lineguard[export]' ({exc})") from exc


def cmd_adapt(args: argparse.Namespace) -> int:
    adapt = export_adapt("adapt")
    AdaptError, adapt_product = adapt.AdaptError, adapt.adapt_product
    from lineguard.runtime.scoring.enroll import EnrollmentError

    paths = normal_images(args.normals)
    try:
        result = adapt_product(args.bundle, args.product, paths, shots=args.shots, seed=args.seed, calib=args.calib,
                               steps=args.steps, samples=args.samples, orientation=args.orientation,
                               tiles=args.tiles)
    except (AdaptError, EnrollmentError) as exc:
        raise CliError(str(exc)) from exc
    a = result.adaptation
    print(f"adapted {args.product!r}: its own decoder ({a.file}) fine-tuned for {a.steps} steps on {a.samples} "
          f"anomalies simulated over {len(a.shot_images)} shot(s), final loss {a.final_loss:.3f}, ONNX parity "
          f"{a.parity_max_abs_diff:.2g}; enrolled with it, {result.calibration_images} held-out calibration image(s)")
    print_calibration(result.calibration, args.budget)
    warn_signature_stale(args.bundle)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.image_io import read_images
    from lineguard.runtime.scoring.enroll import calibrate_product

    paths = normal_images(args.normals)
    result, added = calibrate_product(Bundle.open(args.bundle), args.product, read_images(paths))
    print(f"calibrated {args.product!r}: {added} new image(s) of {len(paths)} ({len(paths) - added} already counted or shots); "
          f"{len(result.calibration_scores)} in all; memory unchanged")
    print_calibration(result, args.budget)
    warn_signature_stale(args.bundle)
    return 0


def normal_images(folder: str) -> list[Path]:
    """The images in ``folder``; an empty folder is the user's error."""
    from lineguard.runtime.image_io import image_paths

    paths = image_paths(folder)
    if not paths:
        raise CliError(f"{folder} holds no images")
    return paths
