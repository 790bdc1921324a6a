"""Output shared by the commands: JSON results written to a file, verdict lines, calibration summaries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lineguard.runtime.bundle import ProductCalibration
    from lineguard.runtime.contract import Verdict


def write_json(path: str | None, payload: str) -> None:
    """Write ``payload`` to ``path`` (folders made), saying so on stderr; nothing without a path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(payload + "\n")
        print(f"wrote {path}", file=sys.stderr)


def format_verdict(name: str, verdict: Verdict) -> str:
    """One line per inspected image: verdict, score, p-value and where the anomaly is (or the error)."""
    if verdict.error is not None or verdict.score is None:
        error = f"{verdict.error.code}: {verdict.error.message}" if verdict.error is not None else "no score"
        return f"{name:<28} {verdict.verdict:<3} {error}"
    where = ", ".join(f"{r.grid} ({r.area_fraction:.1%})" for r in verdict.regions) or "-"
    p = f"p={verdict.p_value:.2g}" if verdict.p_value is not None else "zero-shot"
    return f"{name:<28} {verdict.verdict:<3} score={verdict.score:7.2f} {p:<10} where: {where}"


def print_calibration(calibration: ProductCalibration, budget: float) -> None:
    """Whether a product's calibration resolves the false-reject budget (after enroll or calibrate)."""
    from lineguard.runtime.scoring.product_model import ProductJudge

    print(f"calibration at a {budget:g} false-reject budget: "
          f"{ProductJudge.from_calibration(calibration).describe(budget)}")


def warn_signature_stale(bundle: str | Path) -> None:
    """After a command rewrote a signed bundle's manifest: the signature no longer matches, and a line that
    checks signatures (security.bundle_public_key) refuses the bundle until it is signed again."""
    from lineguard.runtime.bundle.signature import SIGNATURE_NAME

    if (Path(bundle) / SIGNATURE_NAME).is_file():
        print(f"note: {Path(bundle) / SIGNATURE_NAME} no longer matches the changed manifest; a line that checks "
              f"signatures refuses this bundle until it is signed again: lineguard bundle sign {bundle} --key "
              "PRIVATE.pem", file=sys.stderr)
