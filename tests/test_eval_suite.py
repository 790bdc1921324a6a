"""lineguard.evaluation.suite: means over seeds and kinds, a table equal to the JSON, README markers (no model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

import lineguard.evaluation.suite as suite
from lineguard.evaluation.readme_tables import (
    README_END,
    README_START,
    readme_markers,
    replace_between_markers,
)
from lineguard.evaluation.suite import (
    SuiteReport,
    main_eval_all,
    realdev_roots,
    render_markdown,
    run_suite,
    write_report,
)


class FakeEvalReport(BaseModel):
    """The fields of runtime.evaluation.EvalReport the suite reads, plus ones it must carry along."""

    category: str
    image_auroc: float | None
    pixel_auroc: float | None
    accuracy: float
    false_reject_rate: float
    miss_rate: float
    n_images: int
    ms_per_image: float
    miss_rate_by_type: dict[str, float] = {}
    observed_false_reject: dict[str, float] = {}


NUMBERS = {  # (category, seed) -> image AUROC, pixel AUROC, FRR, miss
    ("pcb", 0): (0.60, 0.80, 0.10, 0.50), ("pcb", 1): (0.70, 0.90, 0.00, 0.30),
    ("cookie", 0): (0.95, None, 0.05, 0.10), ("cookie", 1): (0.91, None, 0.15, 0.20),
    ("brick", 0): (1.00, 0.97, 0.00, 0.125), ("brick", 1): (0.98, 0.99, 0.0625, 0.0),
}


def fake_evaluate(bundle_dir, data_root, category, shots, seed=0):
    if category == "broken":
        raise RuntimeError("no train/good images")
    auroc, pixel, frr, miss = NUMBERS[(category, seed)]
    return FakeEvalReport(category=category, image_auroc=auroc, pixel_auroc=pixel, accuracy=0.5,
                          false_reject_rate=frr, miss_rate=miss, n_images=40, ms_per_image=12.5,
                          miss_rate_by_type={"scratch": miss, "hole": 0.0},
                          observed_false_reject={"0.01": frr})


ROOTS = [("/data/real", "pcb", "industrial"), ("/data/real", "cookie", "industrial"),
         ("/data/tex", "brick", "texture")]


def _suite() -> SuiteReport:
    return run_suite("bundles/default", ROOTS, shots=4, seeds=(0, 1), evaluate_fn=fake_evaluate, log=lambda _: None)


def test_means_over_seeds_and_kinds() -> None:
    report = _suite()
    pcb, cookie, brick = report.categories
    assert pcb.image_auroc == pytest.approx(0.65) and pcb.pixel_auroc == pytest.approx(0.85)
    assert pcb.false_reject_rate == pytest.approx(0.05) and pcb.miss_rate == pytest.approx(0.40)
    assert pcb.balanced_accuracy == pytest.approx(((1 - 0.05) + (1 - 0.40)) / 2)
    assert cookie.pixel_auroc is None
    assert brick.miss_rate_by_type == {"hole": 0.0, "scratch": pytest.approx(0.0625)}
    assert pcb.runs[0].extra["observed_false_reject"] == {"0.01": 0.10}      # unknown fields carried along
    industrial, texture = report.kinds
    assert (industrial.kind, industrial.categories) == ("industrial", ["pcb", "cookie"])
    assert industrial.image_auroc == pytest.approx((0.65 + 0.93) / 2)
    assert industrial.pixel_auroc == pytest.approx(0.85)                   # cookie has no masks
    assert industrial.balanced_accuracy == pytest.approx((pcb.balanced_accuracy + cookie.balanced_accuracy) / 2)
    assert texture.categories == ["brick"] and texture.image_auroc == pytest.approx(0.99)


def _table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] not in ("category", "---"):
            rows[cells[0]] = cells[2:]
    return rows


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def test_table_numbers_equal_the_json(tmp_path: Path) -> None:
    json_path, md_path = write_report(_suite(), tmp_path)
    data = json.loads(json_path.read_text())
    rows = _table_rows(md_path.read_text())
    fields = ("image_auroc", "pixel_auroc", "false_reject_rate", "miss_rate", "balanced_accuracy")
    for c in data["categories"]:
        assert rows[c["category"]] == [_cell(c[f]) for f in fields]
    for k in data["kinds"]:
        assert rows[f"**mean, {k['kind']}** ({len(k['categories'])})"] == [_cell(k[f]) for f in fields]
    assert len(rows) == len(data["categories"]) + len(data["kinds"])
    per_type = re.findall(r"^\| brick \| (\w+) \| ([\d.]+) \|$", md_path.read_text(), re.M)
    assert dict(per_type) == {t: _cell(m) for t, m in data["categories"][2]["miss_rate_by_type"].items()}


def test_a_failing_category_is_recorded_not_fatal() -> None:
    report = run_suite("b", [*ROOTS[:1], ("/x", "broken", "texture")], seeds=(0,), evaluate_fn=fake_evaluate,
                       log=lambda _: None)
    assert [c.category for c in report.categories] == ["pcb"]
    assert report.failures == ["broken seed 0: RuntimeError: no train/good images"]
    assert "- failed: broken seed 0" in render_markdown(report)


def test_readme_markers_are_replaced_and_checked() -> None:
    text = f"# title\n\nintro\n{README_START}\nold | table\n{README_END}\n\nafter\n"
    new = replace_between_markers(text, "| new |\n")
    assert new == f"# title\n\nintro\n{README_START}\n| new |\n{README_END}\n\nafter\n"
    assert replace_between_markers(new, "| newer |") == new.replace("| new |", "| newer |")
    for broken, says in (("no markers", "expected exactly one"), (f"{README_END}\n{README_START}", "comes before"),
                         (f"{README_START}{README_START}{README_END}", "expected exactly one")):
        with pytest.raises(ValueError, match=says):
            replace_between_markers(broken, "x")


def test_a_long_run_checks_both_markers_first(tmp_path: Path) -> None:
    from lineguard.evaluation.readme_tables import readme_lacks_markers, readme_markers

    start, end = readme_markers("x-table")
    readme = tmp_path / "README.md"
    for text, lacks in ((f"{start}\n{end}\n", False), (f"{start}\n", True), (f"{end}\n{start}\n", True), ("", True)):
        readme.write_text(text)
        assert readme_lacks_markers("x-table", readme) is lacks, text


def test_realdev_kinds_come_from_the_table_and_unknown_ones_are_evaluated_apart(tmp_path: Path) -> None:
    for name in ("pcb", "road_crack", "mystery"):
        (tmp_path / name / "test").mkdir(parents=True)
    (tmp_path / "notes").mkdir()  # no test/: not a category
    roots, notes = realdev_roots(tmp_path)
    assert roots == [(str(tmp_path), "mystery", "unlisted"), (str(tmp_path), "pcb", "industrial"),
                     (str(tmp_path), "road_crack", "texture")]
    assert len(notes) == 1 and "mystery" in notes[0] and "--kind mystery=KIND" in notes[0]
    roots, notes = realdev_roots(tmp_path / "missing")
    assert roots == [] and "not found" in notes[0]
    roots, notes = realdev_roots(tmp_path / "notes")  # a folder, but the wrong one: said, not silent
    assert roots == [] and notes == [f"{tmp_path / 'notes'} holds no category folder (CATEGORY/test/): none of it "
                                     "is in this table"]


def test_another_root_declares_its_kinds_in_kinds_json_and_on_the_command_line(tmp_path: Path) -> None:
    """Any MVTec-style root can stand in for realdev: --kind beats kinds.json beats the built-in table."""
    for name in ("grid", "bottle", "pcb", "carpet"):
        (tmp_path / name / "test").mkdir(parents=True)
    (tmp_path / "kinds.json").write_text(json.dumps({"grid": "industrial", "bottle": "texture", "pcb": "board"}))
    roots, notes = realdev_roots(tmp_path, kinds={"bottle": "industrial", "tyre": "industrial"})
    assert {category: kind for _, category, kind in roots} == {
        "bottle": "industrial", "carpet": "unlisted", "grid": "industrial", "pcb": "board"}
    assert any("carpet" in n for n in notes) and any("--kind tyre" in n and "no such category" in n for n in notes)

    (tmp_path / "kinds.json").write_text('["grid", "industrial"]')
    with pytest.raises(ValueError, match="kinds.json: expected a JSON object of category name -> kind"):
        realdev_roots(tmp_path)


def test_the_texture_set_can_be_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "real" / "grid" / "test").mkdir(parents=True)
    monkeypatch.setattr(suite, "texture_roots", lambda cache_dir, seed=0: ([(str(cache_dir), "brick", "texture")], []))
    report = main_eval_all("bundles/default", tmp_path / "out", 4, (0,), realdev=tmp_path / "real",
                           texture_cache=tmp_path / "tex", kinds={"grid": "industrial"}, texture_set=False,
                           evaluate_fn=lambda b, root, category, shots, seed=0: fake_evaluate(b, root, "pcb", shots, seed))
    assert [(c.category, c.kind) for c in report.categories] == [("grid", "industrial")]
    assert [k.kind for k in report.kinds] == ["industrial"]


def test_main_eval_all_writes_the_readme_only_when_every_run_succeeded(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"text\n{README_START}\nstale\n{README_END}\n")
    realdev = tmp_path / "realdev"
    for name in ("pcb", "cookie"):
        (realdev / name / "test").mkdir(parents=True)
    monkeypatch.setattr(suite, "texture_roots", lambda cache_dir, seed=0: ([(str(cache_dir), "brick", "texture")], []))
    run = {"readme": readme, "realdev": realdev, "texture_cache": tmp_path / "tex", "evaluate_fn": fake_evaluate}

    report = main_eval_all("bundles/default", tmp_path / "out", 4, (0, 1), update_readme=True, **run)
    assert [c.category for c in report.categories] == ["cookie", "pcb", "brick"]
    assert readme.read_text() == f"text\n{README_START}\n{render_markdown(report).rstrip()}\n{README_END}\n"
    assert (tmp_path / "out" / "eval.json").is_file() and (tmp_path / "out" / "eval.md").is_file()

    readme.write_text(f"text\n{README_START}\nstale\n{README_END}\n")
    (realdev / "broken" / "test").mkdir(parents=True)
    monkeypatch.setitem(suite.KIND_BY_CATEGORY, "broken", "industrial")
    report = main_eval_all("bundles/default", tmp_path / "out", 4, (0,), update_readme=True, **run)
    assert report.failures and "stale" in readme.read_text()

    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="eval-table:start"):
        main_eval_all("b", tmp_path / "out", update_readme=True, **run)


def test_the_calibration_table_shows_the_budget_as_it_held() -> None:
    """Observed false rejects per budget, the calibration normals and what decided, from the runs' extras."""
    report = _suite()
    for c in report.categories:
        for r in c.runs:
            r.extra.update(n_calibration=16, calibration_status="tail")
    markdown = render_markdown(report)
    rows = re.findall(r"^\| (\w+) \| 16 \| tail \| ([\d.]+) \|$", markdown, re.M)
    assert dict(rows) == {c.category: _cell(c.false_reject_rate) for c in report.categories}


def test_the_table_says_which_categories_were_inspected_as_tiles() -> None:
    report = _suite()
    assert "tiles" not in render_markdown(report)  # none tiled: no line (the tables of small photos)
    pcb = next(c for c in report.categories if c.category == "pcb")
    pcb.runs[0].extra["tiles"], pcb.runs[1].extra["tiles"] = 2, 2
    assert "Inspected as tiles of the input size (enrolment's `--tiles`): pcb (2x2)." in render_markdown(report)


def test_each_table_names_the_command_that_regenerates_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full chain's, the ablations' and the adapted decoders' tables each say how to rebuild them."""
    from lineguard.evaluation.eval_tables import make_target

    assert make_target([]) == "`make eval` " and make_target(["--adapt"]) == "`make eval-adapt` "
    assert make_target(["--without decoder"]) == "`make ablation` " and make_target(["--without x", "--adapt"]) == ""
    assert make_target(["--orientation fixed"]) == "`make ablation` "
    assert make_target(["--tiles 2"]) == "`make eval-tiles` " and make_target(["--tiles 3"]) == ""
    assert make_target(["--without decoder", "--without memory"]) == ""  # `make ablation` leaves out one at a time
    assert make_target([], "bundles/input-320") == "`make eval-resolution` "
    assert make_target([], "bundles/encoder-lite2") == "`make eval-encoders` "
    assert make_target([], "bundles/statistics-s1-s2-s3") == make_target([], "bundles/statistics-s2-s3") == "`make eval-stages` "
    assert make_target(["--adapt"], "bundles/input-320") == "" and make_target([], "bundles/mine") == ""
    monkeypatch.setattr(suite, "texture_roots", lambda cache_dir, seed=0: ([(str(cache_dir), "brick", "texture")], []))
    report = main_eval_all("bundles/default", tmp_path / "out", 4, (0,), realdev=tmp_path / "none",
                           texture_cache=tmp_path / "tex", evaluate_fn=fake_evaluate, flags=["--adapt"])
    assert report.flags == ["--adapt"]
    assert ("Regenerate with `make eval-adapt` (`lineguard eval bundles/default --all --adapt --update-readme`)"
            in render_markdown(report))


def test_suite_module_writes_another_bundles_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m lineguard.evaluation.suite --bundle bundles/input-320 --update-readme` fills that bundle's own
    table and leaves the default's alone; without the table's markers it refuses before evaluating."""
    import lineguard.evaluation.category as category

    calls: list[str] = []

    def evaluate(bundle_dir, data_root, cat, shots, seed=0):
        calls.append(cat)
        return fake_evaluate(bundle_dir, data_root, cat, shots, seed)

    monkeypatch.setattr(category, "evaluate", evaluate)
    monkeypatch.setattr(suite, "texture_roots", lambda cache_dir, seed=0: ([(str(cache_dir), "brick", "texture")], []))
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}\ndefault's\n{README_END}\n")
    argv = ["--bundle", str(tmp_path / "input-320"), "--out", str(tmp_path / "out"), "--seeds", "0",
            "--realdev", str(tmp_path / "none"), "--texture-cache", str(tmp_path / "tex"), "--update-readme",
            "--readme", str(readme)]
    assert suite.main(argv) == 2 and calls == []
    assert "eval-table-input-320:start" in capsys.readouterr().err
    start, end = readme_markers("eval-table-input-320")
    readme.write_text(readme.read_text() + f"{start}\nstale\n{end}\n")
    assert suite.main(argv) == 0 and calls == ["brick"]
    text = readme.read_text()
    assert f"{README_START}\ndefault's\n{README_END}" in text and "stale" not in text
    assert "Regenerate with `make eval-resolution`" in text


def test_the_orientation_ablation_has_its_own_table_and_caption() -> None:
    from lineguard.evaluation.eval_tables import eval_flags, readme_table_name

    assert readme_table_name("bundles/default", orientation="fixed") == "eval-table-orientation-fixed"
    assert readme_table_name("bundles/default", ["memory"], adapt=True) == "eval-table-without-memory-adapt"
    assert eval_flags([], False, "fixed") == ["--orientation fixed"]
    assert readme_table_name("bundles/default", tiles=2) == "eval-table-tiles-2"
    assert readme_table_name("bundles/default", tiles="auto") == "eval-table"
    assert eval_flags([], False, "any", 2) == ["--tiles 2"] and eval_flags([], False, "any", "auto") == []
    assert eval_flags(["memory", "decoder", "memory"], True, "any") == ["--without decoder", "--without memory", "--adapt"]
