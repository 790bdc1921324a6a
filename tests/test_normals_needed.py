"""lineguard.evaluation.normals_needed: one eval per calibration size, false rejects counted (no model)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import lineguard.evaluation.data as data
from lineguard.evaluation import normals_needed
from lineguard.evaluation.normals_needed import measure, render


class FakeEvalReport(BaseModel):
    category: str
    image_auroc: float
    pixel_auroc: float | None = None
    accuracy: float = 0.5
    false_reject_rate: float
    miss_rate: float
    n_images: int
    n_test_normals: int
    ms_per_image: float = 10.0
    calibration_status: str
    observed_false_reject: dict[str, float]


CALLS: list[tuple[str, int, int]] = []


def fake_evaluate(bundle_dir, data_root, category, shots, seed=0, calib=None):
    """More calibration normals: the rank test decides and fewer defects pass (as measured on the textures)."""
    CALLS.append((category, seed, calib))
    if category == "broken":
        raise RuntimeError("no train/good images")
    rejected = {20: 0, 120: 1 + seed}[calib]          # of 100 test normals
    miss = {20: 0.5, 120: 0.2}[calib] + (0.1 if category == "grass" else 0.0)
    return FakeEvalReport(category=category, image_auroc=0.9, false_reject_rate=rejected / 100, miss_rate=miss,
                          n_images=148, n_test_normals=100, calibration_status="tail" if calib < 99 else "conformal",
                          observed_false_reject={"0.01": rejected / 100, "0.05": 0.04, "0.1": 0.09 + seed / 100})


@pytest.fixture
def fake_set(monkeypatch):
    built = {}

    def ensure(root, seed=0, n_train=24, n_test_good=16, n_test_defect_per_type=8):
        built.update(root=str(root), n_train=n_train, n_test_good=n_test_good)
        return list(built.get("categories", ["brick", "grass"]))

    monkeypatch.setattr(data, "ensure_texture_set", ensure)
    CALLS.clear()
    return built


def test_every_category_and_draw_is_evaluated_at_every_size(fake_set) -> None:
    report = measure("bundles/default", sizes=(20, 120), texture_root="/tmp/tex", evaluate_fn=fake_evaluate)
    assert fake_set == {"root": "/tmp/tex", "n_train": 4 + 120, "n_test_good": 100}
    assert sorted(CALLS) == sorted((c, s, n) for n in (20, 120) for c in ("brick", "grass") for s in (0, 1))
    few, many = report.sizes
    assert (few.calibration_normals, many.calibration_normals) == (20, 120)
    assert few.decided_by() == "tail" and many.decided_by() == "conformal"
    assert few.false_rejects() == (0, 400)
    assert many.false_rejects() == (1 + 2 + 1 + 2, 400)               # counted from rate x test normals
    assert many.observed(0.10) == pytest.approx(0.095)
    assert many.mean("miss_rate") == pytest.approx((0.2 + 0.3) / 2)
    assert many.mean("balanced_accuracy") == pytest.approx(((1 - 0.015) + (1 - 0.2) + (1 - 0.015) + (1 - 0.3)) / 4)


def test_the_table_says_what_each_size_buys(fake_set) -> None:
    report = measure("bundles/default", sizes=(20, 120), texture_root="/tmp/tex", evaluate_fn=fake_evaluate)
    table = render(report)
    assert "Regenerate with `make eval-normals`" in table
    assert "| 20 | tail | 0 of 400 (0.0%) | 0.04 | 0.10 | 0.90 | 0.55 | 0.72 |" in table
    assert "| 120 | conformal | 6 of 400 (1.5%) | 0.04 | 0.10 | 0.90 | 0.25 | 0.87 |" in table
    assert "| 120 | 0.20 | 0.30 |" in table                          # misses by category


def test_a_failed_run_leaves_no_table(fake_set) -> None:
    fake_set["categories"] = ["brick", "broken"]
    with pytest.raises(RuntimeError, match="runs failed at 20 calibration normals"):
        measure("bundles/default", sizes=(20,), evaluate_fn=fake_evaluate)


def test_the_command_refuses_a_folder_without_a_bundle(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        normals_needed.main([str(tmp_path)])
    assert "holds no bundle" in capsys.readouterr().err
