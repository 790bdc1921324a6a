"""``lineguard eval`` on a generated MVTec-AD-style folder."""

from __future__ import annotations

import json
from pathlib import Path

from lineguard.cli import main
from lineguard.export.sample_data import write_category


def test_eval_writes_the_report(bundle_dir: Path, tmp_path: Path) -> None:
    write_category(tmp_path / "data", "cells", family="cells", seed=4, train=6, test_good=8, test_defect=8)
    out = tmp_path / "eval.json"
    assert main(["eval", str(bundle_dir), "--data", str(tmp_path / "data"), "--category", "cells",
                 "--shots", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"image_auroc", "pixel_auroc", "accuracy", "n_images", "ms_per_image"}
    assert report["n_images"] == 16
    assert report["image_auroc"] > 0.8
    assert report["pixel_auroc"] > 0.8
    assert report["accuracy"] > 0.6
    assert "products" not in json.loads((bundle_dir / "manifest.json").read_text()) or \
        "cells" not in json.loads((bundle_dir / "manifest.json").read_text())["products"]
