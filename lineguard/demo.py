"""``lineguard demo`` / ``make demo``: export the default bundle, enrol a generated product, inspect.

A first-time user sees the whole chain on this machine in a few minutes, with nothing downloaded:
generated "weave" fabric parts, four normal shots enrolled, then normal parts and parts with a defect
pasted into a known 3x3 cell, each printed with its verdict and where the anomaly is.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lineguard.runtime.location import GRID_WORDS

PRODUCT = "weave"
SHOTS = 4
DEFECT_CELLS = ((0, 0), (1, 2), (2, 1))


def make_demo_images(workdir: Path, seed: int = 7) -> tuple[Path, list[tuple[Path, str]]]:
    """Write normals and test parts; returns the normals folder and (test image, expected cell) pairs."""
    from lineguard.export.synthesis import cut_paste_poisson
    from lineguard.export.textures import texture_variants

    normals_dir, test_dir = workdir / "normals", workdir / "parts"
    normals_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    parts = texture_variants(PRODUCT, SHOTS + 3 + len(DEFECT_CELLS), seed)
    foreign = texture_variants("grain", 1, seed + 1)[0]
    for i, img in enumerate(parts[:SHOTS]):
        cv2.imwrite(str(normals_dir / f"normal_{i}.png"), img)
    tests: list[tuple[Path, str]] = []
    for i, img in enumerate(parts[SHOTS : SHOTS + 3]):
        path = test_dir / f"ok_{i}.png"
        cv2.imwrite(str(path), img)
        tests.append((path, "-"))
    rng = np.random.default_rng(seed)
    h, w = parts[0].shape[:2]
    for (row, col), img in zip(DEFECT_CELLS, parts[SHOTS + 3 :], strict=True):
        centre = (int((col + 0.5) * w / 3), int((row + 0.5) * h / 3))
        sample = cut_paste_poisson(img, foreign, rng, 0.11, 0.14, center=centre, opacity=0.5)
        cell = GRID_WORDS[row][col]
        path = test_dir / f"defect_{cell.replace(' ', '_')}.png"
        cv2.imwrite(str(path), sample.image)
        tests.append((path, cell))
    return normals_dir, tests


def run_demo(bundle_dir: Path, workdir: Path) -> int:
    from lineguard.cli import format_verdict
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.enroll import enroll_product
    from lineguard.runtime.image_io import image_paths, read_image, read_images
    from lineguard.runtime.inspector import Inspector

    if not (bundle_dir / "manifest.json").is_file():
        from lineguard.export.vision import export_vision

        print(f"[1/3] exporting the default bundle to {bundle_dir} (trains the decoder, a few minutes) ...")
        export_vision(bundle_dir)
    else:
        print(f"[1/3] using the bundle in {bundle_dir}")
    normals_dir, tests = make_demo_images(workdir)
    bundle = Bundle.open(bundle_dir)
    inspector = Inspector(bundle)
    print(f"[2/3] enrolling product {PRODUCT!r} from {SHOTS} normal images in {normals_dir} ...")
    enroll_product(bundle, PRODUCT, read_images(image_paths(normals_dir)), chain=inspector.chain)
    print(f"[3/3] inspecting {len(tests)} parts (threshold-free, false-reject budget 1%):")
    print("  (each line: part, verdict, score, p-value, where the anomaly is, [where it was put])")
    for path, expected in tests:
        verdict = inspector.inspect(read_image(path), PRODUCT)
        print(f"{format_verdict(path.name, verdict)}   [{expected}]")
    return 0
