"""The command line: readable errors, verdicts printed, enrol from a folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from lineguard.cli import main


def test_missing_bundle_is_a_readable_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "nope"), "x.png"]) == 2
    assert "lineguard: error:" in capsys.readouterr().err


def test_enroll_and_inspect_from_folders(bundle_copy: Path, weave_parts, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    normals = tmp_path / "normals"
    normals.mkdir()
    for i, img in enumerate(weave_parts[:3]):
        cv2.imwrite(str(normals / f"{i}.png"), img)
    part = tmp_path / "part.png"
    cv2.imwrite(str(part), weave_parts[12])
    assert main(["enroll", str(bundle_copy), "--product", "weave", "--normals", str(normals), "--shots", "2"]) == 0
    assert main(["inspect", str(bundle_copy), str(part), "--product", "weave", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    from lineguard.runtime.messages import Verdict

    verdict = Verdict.model_validate_json(line)
    assert verdict.frame_id == "part.png" and verdict.verdict in ("OK", "NG")


def test_unknown_product_and_bad_image(bundle_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    assert main(["inspect", str(bundle_copy), str(junk)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    good = tmp_path / "ok.png"
    cv2.imwrite(str(good), (255 * (cv2.imread(str(junk)) is None) * __import__("numpy").ones((32, 32, 3))).astype("uint8"))
    assert main(["inspect", str(bundle_copy), str(good), "--product", "ghost"]) == 2
    assert "not enrolled" in capsys.readouterr().err
