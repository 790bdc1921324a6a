"""The command line: readable errors, verdicts printed, enrol from a folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest
from image_folders import write_normals

from lineguard.cli import main


def test_missing_bundle_is_a_readable_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "nope"), "x.png"]) == 2
    assert "lineguard: error:" in capsys.readouterr().err


def test_enroll_and_inspect_from_folders(bundle_copy: Path, weave_parts, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    normals = write_normals(tmp_path / "normals", weave_parts[:3])
    part = tmp_path / "part.png"
    cv2.imwrite(str(part), weave_parts[12])
    assert main(["enroll", str(bundle_copy), "--product", "weave", "--normals", str(normals), "--shots", "4"]) == 0
    assert "memory from 3 shot(s) (--shots 4, but the folder holds 3 images)" in capsys.readouterr().out
    assert main(["enroll", str(bundle_copy), "--product", "weave", "--normals", str(normals), "--shots", "2"]) == 0
    assert main(["inspect", str(bundle_copy), str(part), "--product", "weave", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    from lineguard.runtime.contract import Verdict

    verdict = Verdict.model_validate_json(line)
    assert verdict.frame_id == "part.png" and verdict.verdict in ("OK", "NG")


def test_unknown_product_and_bad_image(bundle_copy: Path, weave_parts, tmp_path: Path,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    """A bad image among good ones gets an ERROR verdict with the wire's code and the rest are still
    inspected (exit 1); an unknown product is a readable error for the whole command (exit 2)."""
    import numpy as np

    from lineguard.runtime.contract import Verdict

    junk, good, tiny = tmp_path / "junk.png", tmp_path / "ok.png", tmp_path / "tiny.png"
    junk.write_bytes(b"not a png")
    cv2.imwrite(str(good), weave_parts[0])
    cv2.imwrite(str(tiny), np.zeros((4, 4, 3), np.uint8))
    images = [str(p) for p in (junk, good, tmp_path / "gone.png", tiny)]
    assert main(["inspect", str(bundle_copy), *images, "--json"]) == 1
    out, err = capfd.readouterr()
    verdicts = [Verdict.model_validate_json(line) for line in out.strip().splitlines()]
    assert [v.frame_id for v in verdicts] == ["junk.png", "ok.png", "gone.png", "tiny.png"]
    assert [v.error.code if v.error else v.verdict for v in verdicts] == ["BAD_PAYLOAD", verdicts[1].verdict,
                                                                          "BAD_PAYLOAD", "BAD_SHAPE"]
    assert verdicts[1].verdict in ("OK", "NG") and verdicts[1].score is not None
    assert "not a readable image" in verdicts[0].error.message and "gone.png does not exist" in verdicts[2].error.message
    assert "3 of 4 images could not be inspected" in err
    assert "WARN" not in err  # a missing file is said before OpenCV logs a warning to fd 2

    assert main(["inspect", str(bundle_copy), str(junk)]) == 1  # the text form names the code and the reason
    assert re.search(r"junk.png +ERROR BAD_PAYLOAD: .*junk.png is not a readable image", capfd.readouterr().out)
    assert main(["inspect", str(bundle_copy), str(good), "--product", "ghost"]) == 2
    assert "not enrolled" in capfd.readouterr().err


def _fake_eval_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, list[tuple]]:
    """A bundle folder, a README with its markers, a realdev with one category; evaluate and the texture set
    faked (no model is built): returns (bundle, readme, the evaluate calls)."""
    import lineguard.evaluation.category as evaluation
    import lineguard.evaluation.suite as suite

    calls: list[tuple] = []

    def fake_evaluate(bundle_dir, data_root, category, shots, seed=0, calib=None, budget=0.01,
                      verdict_mode="vision", without=(), grounding="text", adapt=False, orientation="any",
                      tiles="auto"):
        assert grounding == "text" and adapt is False  # eval --all passes the CLI's defaults through
        calls.append((category, shots, seed, calib, budget, verdict_mode, *without,
                      *([] if orientation == "any" else [f"orientation {orientation}"]),
                      *([] if tiles == "auto" else [f"tiles {tiles}"])))
        return SimpleNamespace(image_auroc=0.8 + 0.1 * seed, pixel_auroc=None, accuracy=0.75,
                               false_reject_rate=0.05 * seed, miss_rate=0.25, n_images=12, ms_per_image=3.0,
                               miss_rate_by_type={"scratch": 0.25})

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    monkeypatch.setattr(suite, "texture_roots",
                        lambda cache_dir, seed=0: ([(str(cache_dir), "brick", "texture")], []))
    bundle = tmp_path / "default"  # the default bundle's folder name: the README's main table
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (tmp_path / "realdev" / "pcb" / "test").mkdir(parents=True)
    monkeypatch.setenv("LINEGUARD_REALDEV", str(tmp_path / "realdev"))  # the default realdev: no --realdev
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{suite.README_START}\nstale table\n{suite.README_END}\n\nafter\n")
    return bundle, readme, calls


def test_eval_all_writes_the_json_and_the_readme_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lineguard.evaluation.suite import README_END, README_START, SuiteReport, render_markdown

    bundle, readme, calls = _fake_eval_setup(tmp_path, monkeypatch)
    out = tmp_path / "eval"
    assert main(["eval", str(bundle), "--all", "--out", str(out), "--seeds", "0", "1", "--shots", "2",
                 "--budget", "0.05", "--update-readme", "--readme", str(readme),
                 "--texture-cache", str(tmp_path / "tex")]) == 0
    assert sorted(calls) == sorted((c, 2, s, None, 0.05, "vision") for c in ("pcb", "brick") for s in (0, 1))
    report = SuiteReport.model_validate_json((out / "eval.json").read_text())
    assert (report.shots, report.seeds, [c.category for c in report.categories]) == (2, [0, 1], ["pcb", "brick"])
    assert report.categories[0].image_auroc == pytest.approx(0.85)
    assert report.categories[0].false_reject_rate == pytest.approx(0.025)
    assert (out / "eval.md").read_text() == render_markdown(report)
    assert readme.read_text() == (f"# x\n\n{README_START}\n{render_markdown(report).rstrip()}\n{README_END}"
                                  "\n\nafter\n")


def test_eval_all_without_a_family_fills_its_own_ablation_table(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lineguard.evaluation.readme_tables import README_END, README_START, readme_markers

    bundle, readme, calls = _fake_eval_setup(tmp_path, monkeypatch)
    start, end = readme_markers("eval-table-without-decoder")
    readme.write_text(readme.read_text() + f"{start}\nstale\n{end}\n")
    assert main(["eval", str(bundle), "--all", "--out", str(tmp_path / "out"), "--seeds", "0", "--without", "decoder",
                 "--update-readme", "--readme", str(readme),
                 "--texture-cache", str(tmp_path / "tex")]) == 0
    assert {c[-1] for c in calls} == {"decoder"}  # every run enrolled without the decoder
    text = readme.read_text()
    assert f"{start}\nstale\n" not in text and f"{README_START}\nstale table\n{README_END}" in text  # the full table untouched


def test_eval_all_with_a_fixed_orientation_fills_its_own_ablation_table(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from lineguard.evaluation.readme_tables import README_END, README_START, readme_markers

    bundle, readme, calls = _fake_eval_setup(tmp_path, monkeypatch)
    start, end = readme_markers("eval-table-orientation-fixed")
    readme.write_text(readme.read_text() + f"{start}\nstale\n{end}\n")
    assert main(["eval", str(bundle), "--all", "--out", str(tmp_path / "out"), "--seeds", "0", "--orientation",
                 "fixed", "--update-readme", "--readme", str(readme),
                 "--texture-cache", str(tmp_path / "tex")]) == 0
    assert {c[-1] for c in calls} == {"orientation fixed"}  # every run enrolled with the memory as the shots lie
    text = readme.read_text()
    assert f"{start}\nstale\n" not in text and f"{README_START}\nstale table\n{README_END}" in text
    assert "Regenerate with `make ablation` (`lineguard eval" in text and "--orientation fixed --update-readme" in text


def test_eval_all_with_tiles_fills_its_own_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make eval-tiles`: every photo inspected as 2x2 tiles, in eval-table-tiles-2; a bad count is one line."""
    from lineguard.evaluation.readme_tables import readme_markers

    bundle, readme, calls = _fake_eval_setup(tmp_path, monkeypatch)
    start, end = readme_markers("eval-table-tiles-2")
    readme.write_text(readme.read_text() + f"{start}\nstale\n{end}\n")
    common = ["--out", str(tmp_path / "out"), "--seeds", "0", "--update-readme", "--readme", str(readme),
              "--texture-cache", str(tmp_path / "tex")]
    assert main(["eval", str(bundle), "--all", "--tiles", "2", *common]) == 0
    assert {c[-1] for c in calls} == {"tiles 2"}
    text = readme.read_text()
    assert f"{start}\nstale\n" not in text and "Regenerate with `make eval-tiles`" in text and "--tiles 2" in text
    with pytest.raises(SystemExit):
        main(["eval", str(bundle), "--all", "--tiles", "5", *common])


def test_eval_all_of_another_bundle_fills_that_bundles_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`make eval-resolution`: the 320 px bundle's numbers go into eval-table-input-320, never the default's."""
    from lineguard.evaluation.readme_tables import README_END, README_START, readme_markers

    default, readme, calls = _fake_eval_setup(tmp_path, monkeypatch)
    bundle = tmp_path / "input-320"
    default.rename(bundle)
    argv = ["--all", "--out", str(tmp_path / "out"), "--seeds", "0", "--update-readme", "--readme", str(readme),
            "--texture-cache", str(tmp_path / "tex")]
    assert main(["eval", str(bundle), *argv]) == 2  # no table of its own yet: refused before any evaluation
    assert "eval-table-input-320:start" in capsys.readouterr().err and calls == []
    start, end = readme_markers("eval-table-input-320")
    readme.write_text(readme.read_text() + f"{start}\nstale\n{end}\n")
    assert main(["eval", str(bundle), *argv]) == 0
    text = readme.read_text()
    assert f"{start}\nstale\n" not in text and f"{README_START}\nstale table\n{README_END}" in text
    assert f"Regenerate with `make eval-resolution` (`lineguard eval {bundle} --all --update-readme`)" in text
    odd = tmp_path / "my bundle"
    bundle.rename(odd)
    assert main(["eval", str(odd), *argv]) == 2
    assert "cannot name a README table" in capsys.readouterr().err
    argv.remove("--update-readme")  # the folder's name matters only to the README
    assert main(["eval", str(odd), *argv]) == 0


def test_eval_all_and_single_category_options_are_readable_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bundle, readme, calls = _fake_eval_setup(tmp_path, monkeypatch)
    cases = {
        ("eval", str(bundle)): "--data DIR and --category NAME",
        ("eval", str(bundle), "--data", "d"): "--data DIR and --category NAME",
        ("eval", str(bundle), "--all", "--category", "pcb"): "--category cannot go with --all",
        ("eval", str(bundle), "--data", "d", "--category", "c", "--update-readme"): "only go with eval --all",
        ("eval", str(tmp_path / "no-bundle"), "--all"): "no bundle in",
        ("eval", str(bundle), "--data", "d", "--category", "c", "--kind", "c=industrial"): "--kind only go with",
        ("eval", str(bundle), "--data", "d", "--category", "c", "--no-texture-set"): "only go with eval --all",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("lineguard: error:") and message in err, (argv, err)
    with pytest.raises(SystemExit) as exited:
        main(["eval", str(bundle), "--all", "--kind", "grid"])
    assert exited.value.code == 2 and "--kind: 'grid': expected CATEGORY=KIND" in capsys.readouterr().err
    readme.write_text("no markers\n")
    assert main(["eval", str(bundle), "--all", "--update-readme", "--readme", str(readme),
                 "--out", str(tmp_path / "out")]) == 2
    assert "eval-table:start" in capsys.readouterr().err
    assert calls == [] and not (tmp_path / "out").exists()        # refused before any evaluation


def _serve_config(*argv: str):
    from lineguard.cli import build_parser
    from lineguard.cli.serve import serve_config

    return serve_config(build_parser().parse_args(["serve", "bundle", *argv]))


def test_serve_flags_default_to_none_and_layer_over_the_defaults() -> None:
    from lineguard.cli import build_parser
    from lineguard.cli.serve import FLAGS
    from lineguard.runtime.line.config import LineConfig

    args = build_parser().parse_args(["serve", "bundle"])
    assert all(getattr(args, flag[2:].replace("-", "_")) is None for flag in FLAGS)
    assert _serve_config() == LineConfig(line="line1")  # no flags, no file: the defaults (loopback binds)
    config = _serve_config("--line", "p", "--frames", "tcp://127.0.0.1:7000", "--max-batch", "4", "--http-port", "-1",
                           "--archive", "ng", "--backend", "onnxruntime")
    assert (config.line, config.endpoints.frames, config.endpoints.verdicts) == ("p", "tcp://127.0.0.1:7000",
                                                                                 "tcp://127.0.0.1:5556")
    assert (config.batching.max_batch, config.batching.max_queue_delay_ms) == (4, 5.0)
    assert not config.http.enabled and config.archive.dir == Path("ng") and config.inference.backend == "onnxruntime"


def test_serve_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "line.yaml"
    path.write_text("line: press3\ndeadline_ms: 120\nbatching:\n  max_batch: 16\n  max_queue: 32\n"
                    "http:\n  enabled: false\n  port: 9000\ninference:\n  precisions: [fp32]\n")
    assert _serve_config("--config", str(path)).batching.max_batch == 16  # the file alone
    config = _serve_config("--config", str(path), "--max-batch", "2", "--http-port", "9100", "--triton-url", "t:8001",
                           "--backend", "triton")
    assert (config.line, config.deadline_ms) == ("press3", 120)  # not given: the file's (not the flags' defaults)
    assert (config.batching.max_batch, config.batching.max_queue) == (2, 32)
    assert config.http.enabled and config.http.port == 9100
    assert (config.inference.backend, config.inference.triton_url, config.inference.precisions) == (
        "triton", "t:8001", ["fp32"])


def test_a_bad_serve_flag_is_refused_like_a_bad_yaml_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Validated before any bundle is opened: the error names the field and the flag; exit 2."""
    path = tmp_path / "line.yaml"
    path.write_text("line: press3\n")
    cases = {
        ("--max-batch", "0"): "batching.max_batch (--max-batch): Input should be greater than or equal to 1 (got 0)",
        ("--config", str(path), "--deadline-ms", "-5"): f"{path}: deadline_ms (--deadline-ms): Input should be "
                                                         "greater than 0 (got -5.0)",
        ("--http-port", "70000"): "http.port (--http-port): Input should be less than or equal to 65535 (got 70000)",
        ("--backend", "triton"): "inference (--backend): backend triton needs triton_url",
        ("--config", str(path), "--frames", "tcp://0.0.0.0:5555"): "endpoints.frames: tcp://0.0.0.0:5555 binds beyond",
    }
    for flags, message in cases.items():
        assert main(["serve", str(tmp_path / "no-bundle"), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("lineguard: error:") and message in err, (flags, err)
    path.write_text("line: press3\nbatching:\n  max_batch: 0\n")
    assert main(["serve", str(tmp_path / "no-bundle"), "--config", str(path)]) == 2
    assert f"{path}: batching.max_batch: Input should be greater than or equal to 1 (got 0)" in capsys.readouterr().err


def test_budget_flags_take_the_line_config_default_and_range(capsys: pytest.CaptureFixture[str]) -> None:
    from lineguard.cli import build_parser
    from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET

    parser = build_parser()
    for argv in (["inspect", "b", "x.png"], ["enroll", "b", "--product", "p", "--normals", "n"],
                 ["calibrate", "b", "--product", "p", "--normals", "n"], ["eval", "b"]):
        assert parser.parse_args(argv).budget == DEFAULT_FALSE_REJECT_BUDGET
        assert parser.parse_args([*argv, "--budget", "0.05"]).budget == 0.05
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([*argv, "--budget", "0.7"])
        assert exited.value.code == 2 and "argument --budget: '0.7': Input should be less than 0.5" in capsys.readouterr().err


def test_python_m_lineguard_cli_runs_the_command_line() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lineguard.cli", "serve", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "with --config LINE.yaml over that file" in " ".join(result.stdout.split())
    assert "{auto,onnxruntime,tensorrt,triton}" in result.stdout


def test_training_counts_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    from lineguard.cli import build_parser

    parser = build_parser()
    for argv in (["adapt", "b", "--product", "p", "--normals", "n"], ["export", "vision"]):
        for option in ("--steps", "--samples"):
            assert getattr(parser.parse_args([*argv, option, "3"]), option[2:]) == 3
            for bad, says in (("0", "must be at least 1"), ("x", "is not a whole number")):
                with pytest.raises(SystemExit) as exited:
                    parser.parse_args([*argv, option, bad])
                assert exited.value.code == 2 and says in capsys.readouterr().err


def test_statistics_stages_of_an_export_are_checked_before_training(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`export vision --statistics-stages` takes a comma list; a stage the encoder lacks is a readable error
    before any training, and leaves no bundle behind."""
    from lineguard.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["export", "vision", "--statistics-stages", "s1, s2,s3"]).statistics_stages == ["s1", "s2", "s3"]
    assert parser.parse_args(["export", "vision"]).statistics_stages is None  # the export's default (s3)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["export", "vision", "--statistics-stages", ","])
    assert exited.value.code == 2 and "name at least one stage" in capsys.readouterr().err
    out = tmp_path / "b"
    assert main(["export", "vision", "--statistics-stages", "s2,s9", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "statistics stages must be a non-empty subset of s1, s2, s3, s4; got s2, s9" in err
    assert not out.exists()


def test_export_vision_says_which_stages_each_scorer_reads(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """What the export wrote is printed from its manifest, the few-shot scorers' stages included, and the
    stages asked for reach the export."""
    import lineguard.export.vision as vision
    from lineguard.runtime.bundle import Bundle

    asked: list[object] = []

    def export(out, **kwargs):  # noqa: ANN001, ANN003, ANN202 - stands in for the minutes of training
        asked.append(kwargs["statistics_stages"])
        return Bundle.open(bundle_dir)

    monkeypatch.setattr(vision, "export_vision", export)
    assert main(["export", "vision", "--out", "unused"]) == 0
    assert "few-shot scoring: memory on s2, s3, statistics on s3" in capsys.readouterr().out
    assert main(["export", "vision", "--out", "unused", "--statistics-stages", "s2,s3"]) == 0
    assert asked == [vision.DEFAULT_STATISTICS_STAGES, ["s2", "s3"]]


def test_eval_adapt_without_the_workstation_extra_is_a_readable_error(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    import sys

    from lineguard.cli import main

    monkeypatch.setitem(sys.modules, "lineguard.export.adapt", None)  # as where torch is not installed
    assert main(["eval", str(tmp_path), "--data", str(tmp_path), "--category", "c", "--adapt"]) == 2
    assert "eval --adapt trains on the workstation side: pip install 'lineguard[export]'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--all", "--adapt"]) == 2
    assert "eval --adapt trains on the workstation side" in capsys.readouterr().err


def test_eval_all_evaluates_another_root_with_its_declared_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    bundle, _, calls = _fake_eval_setup(tmp_path, monkeypatch)
    root = tmp_path / "mine"
    for name in ("grid", "tyre"):
        (root / name / "test").mkdir(parents=True)
    (root / "kinds.json").write_text('{"grid": "industrial"}')
    out = tmp_path / "out"
    assert main(["eval", str(bundle), "--all", "--realdev", str(root), "--kind", "tyre=industrial",
                 "--no-texture-set", "--seeds", "0", "--out", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert [(c["category"], c["kind"]) for c in report["categories"]] == [("grid", "industrial"), ("tyre", "industrial")]
    assert [c[0] for c in calls] == ["grid", "tyre"]  # no scikit-image texture set
    assert (f"Regenerate with (`lineguard eval {bundle} --all --realdev {root} --kind tyre=industrial "
            "--no-texture-set --update-readme`)") in (out / "eval.md").read_text()  # not `make eval`: other data

    assert main(["eval", str(bundle), "--all", "--realdev", str(root), "--update-readme", "--out", str(out)]) == 2
    assert "--update-readme writes the README's tables of the default data set" in capsys.readouterr().err

    spaced = tmp_path / "my photos"
    root.rename(spaced)
    assert main(["eval", str(bundle), "--all", "--realdev", str(spaced), "--no-texture-set", "--seeds", "0",
                 "--out", str(out)]) == 0
    assert f"--realdev '{spaced}' --no-texture-set --update-readme" in (out / "eval.md").read_text()  # copy-paste safe
    root = spaced
    (root / "kinds.json").write_text("{grid: industrial}")
    assert main(["eval", str(bundle), "--all", "--realdev", str(root), "--out", str(out)]) == 2
    assert "kinds.json: expected a JSON object" in capsys.readouterr().err and len(calls) == 4
