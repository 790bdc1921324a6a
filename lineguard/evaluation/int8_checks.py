"""Where the CPU INT8 encoder earns its place: ``lineguard export int8``'s check on every category of the
evaluation suite (the README's int8 table).

Usage::

    python -m lineguard.evaluation.int8_checks bundles/default --update-readme     # `make int8-checks`
    rows = check_categories("bundles/default")        # one Int8Row per category

For each category (realdev's real photos, then the scikit-image textures; lineguard.evaluation.suite) a
scratch copy of the bundle enrols the product as ``lineguard enroll --shots 4`` would (seed 0: 4 shots, the
other train/good images calibrate), then ``export_int8`` quantises the encoder on the category's
train/good images and compares FP32 and INT8 on all of its test images. A product may use INT8 only when
every verdict is equal and the image AUROC does not drop (export/cpu_int8.py). The table between the
README's ``int8-table`` markers is rewritten from this one run, never edited by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from lineguard.evaluation.readme_tables import publish_table, readme_lacks_markers
from lineguard.evaluation.suite import default_roots
from lineguard.export.cpu_int8 import export_int8
from lineguard.runtime.bundle import Bundle, PrecisionCheck
from lineguard.runtime.image_io import image_paths, read_images, split_normals
from lineguard.runtime.scoring.enroll import enroll_product

TABLE = "int8-table"
SHOTS = 4


class Int8Row(BaseModel):
    category: str
    kind: str
    calibration_images: int  # train/good images the INT8 ranges were taken from
    feature_relative_diff: float  # max over stages of max |INT8 - FP32| / max |FP32|, one held-out normal
    check: PrecisionCheck


class Int8Report(BaseModel):
    rows: list[Int8Row]
    notes: list[str]


def check_category(bundle_dir: str | Path, data_root: str | Path, category: str, kind: str) -> Int8Row:
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-int8-") as bundle:
        shots, calibration = split_normals(image_paths(Path(data_root) / category / "train" / "good"), SHOTS, 0)
        enroll_product(bundle, category, read_images(shots), calibration_images=read_images(calibration), seed=0)
        record = export_int8(bundle.root, category, data_root, category)
        return Int8Row(category=category, kind=kind, calibration_images=record.calibration_images,
                       feature_relative_diff=record.feature_relative_diff, check=record.checks[category])


def check_categories(bundle_dir: str | Path, realdev: str | Path | None = None) -> tuple[list[Int8Row], list[str]]:
    roots, notes = default_roots(realdev)
    return [check_category(bundle_dir, root, category, kind) for root, category, kind in roots], notes


def _auroc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(rows: Sequence[Int8Row], notes: Sequence[str] = ()) -> str:
    lines = ["| category | kind | test images | verdicts equal to FP32 | image AUROC INT8 / FP32 | INT8 allowed |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        c = r.check
        lines.append(f"| {r.category} | {r.kind} | {c.n_images} | {c.verdict_agreement:.0%} | "
                     f"{_auroc(c.image_auroc)} / {_auroc(c.image_auroc_fp32)} | {'yes' if c.passed else 'no'} |")
    passed = sum(r.check.passed for r in rows)
    lines.append(f"\nINT8 passes its check on {passed} of {len(rows)} categories (K={SHOTS}, seed 0); "
                 "a line runs it only for products that passed (`inference.cpu_precision: int8`).")
    lines += [f"\n- {note}" for note in notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lineguard.evaluation.int8_checks", description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--realdev", help="default $LINEGUARD_REALDEV or ../shared/realdev")
    parser.add_argument("--json", default="artifacts/eval/int8-checks.json")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    if args.update_readme and readme_lacks_markers(TABLE):
        parser.error(f"README.md lacks the {TABLE} markers")
    rows, notes = check_categories(args.bundle, args.realdev)
    publish_table(render(rows, notes), Int8Report(rows=rows, notes=notes), args.json, TABLE, args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
