"""Nonsense on the command line is one readable line and exit 2, before anything runs; never a traceback,
and never exit 0 for work that did not happen."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from image_folders import write_normals

from lineguard.cli import build_parser, main

# (argv before the option, option, a good value, bad values with what the error says)
RANGES = [
    (["bench", "vision"], "--rounds", "3", [("0", "must be at least 1"), ("-1", "must be at least 1")]),
    (["bench", "vision"], "--batch", "4", [("0", "must be at least 1"), ("-4", "must be at least 1")]),
    (["bench", "line"], "--frames", "10", [("0", "must be at least 1")]),
    (["bench", "line"], "--burst", "0", [("-1", "must be at least 0")]),
    (["bench", "line"], "--overload", "2.5", [("0", "must be above 0"), ("nan", "is not a finite number")]),
    (["bench", "soak"], "--warm-fraction", "0.3", [("1", "must be at least 0 and below 1"), ("-0.1", "at least 0")]),
    (["bench", "llm"], "--threads", "2", [("0", "must be at least 1")]),
    (["camera", "--source", "d", "--camera-id", "c"], "--fps", "0",
     [("-3", "must be at least 0"), ("inf", "is not a finite number"), ("x", "is not a number")]),
    (["camera", "--source", "d", "--camera-id", "c"], "--count", "5", [("0", "must be at least 1"), ("-1", "at least 1")]),
    (["watch"], "--duration", "1.5", [("-1", "must be above 0")]),
    (["explain", "f1"], "--timeout", "30", [("0", "must be above 0")]),
    (["eval", "b"], "--calib", "0", [("-1", "must be at least 0")]),
    (["eval", "b"], "--shots", "4", [("0", "must be at least 1")]),
    (["enroll", "b", "--product", "p", "--normals", "n"], "--shots", "1", [("0", "must be at least 1")]),
    (["adapt", "b", "--product", "p", "--normals", "n"], "--calib", "3", [("-2", "must be at least 0")]),
    (["panel"], "--port", "8080", [("-1", "must be at least 1 and at most 65535"), ("70000", "at most 65535")]),
    (["panel"], "--verdicts-port", "5556", [("0", "must be at least 1")]),
    (["export", "trt", "b"], "--max-batch", "8", [("0", "must be at least 1")]),
    (["eval", "b", "--budget", "0.01"], "--budget", "0.05", [("nan", "finite number")]),
]


@pytest.mark.parametrize(("argv", "option", "good", "bad"), RANGES, ids=[f"{a[0]}-{o}" for a, o, _, _ in RANGES])
def test_numbers_out_of_range_are_refused_naming_the_option(argv: list[str], option: str, good: str,
                                                            bad: list[tuple[str, str]],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    parsed = getattr(parser.parse_args([*argv, option, good]), option[2:].replace("-", "_"))
    assert parsed == ([float(good)] if option == "--overload" else [int(good)] if option == "--batch"
                      else type(parsed)(good))
    for value, says in bad:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([*argv, option, value])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and f"argument {option}" in err and says in err, (value, err)


@pytest.mark.parametrize("command", [["camera", "--source", "d", "--camera-id", "c"], ["watch"], ["explain", "f1"]])
def test_endpoints_to_connect_to_are_checked(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for good in ("tcp://localhost:5555", "tcp://10.0.0.5:6000", "ipc:///run/lineguard/frames", "tcp://[::1]:5555"):
        assert parser.parse_args([*command, "--connect", good]).connect == good
    for bad, says in (("notanendpoint", "is not a ZeroMQ endpoint"), ("tcp://localhost", "tcp://HOST:PORT"),
                      ("tcp://:5555", "tcp://HOST:PORT"), ("tcp://host:99999", "tcp://HOST:PORT"),
                      ("tcp://bad host!!:5555", "ZeroMQ cannot connect to it (Invalid argument)")):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([*command, "--connect", bad])
        assert exited.value.code == 2 and says in capsys.readouterr().err, bad


def test_a_json_output_that_is_a_folder_is_refused_before_the_run(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["eval", "b", "--json", str(tmp_path / "out.json")]).json == str(tmp_path / "out.json")
    for argv in (["eval", "b"], ["bench", "vision"], ["bench", "line"], ["bench", "llm"], ["eval-explanations", "b"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--json", str(tmp_path)])
        assert "is a folder: name the JSON file to write" in capsys.readouterr().err


def test_a_passphrase_without_signing_and_an_empty_passphrase_are_errors(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KEY_PASS", "secret words")
    assert main(["keys", "create", "cam0", "--out", str(tmp_path), "--passphrase-env", "KEY_PASS"]) == 2
    assert "--passphrase-env encrypts a signing key: add --signing" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written
    monkeypatch.setenv("KEY_PASS", "")
    assert main(["keys", "create", "plant", "--out", str(tmp_path), "--signing", "--passphrase-env", "KEY_PASS"]) == 2
    assert "environment variable KEY_PASS (the key's passphrase) is empty" in capsys.readouterr().err


def test_keys_into_a_file_are_a_readable_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("zmq.auth")
    afile = tmp_path / "keys"
    afile.write_text("not a folder")
    assert main(["keys", "create", "cam0", "--out", str(afile)]) == 2
    assert f"{afile} is a file: keys go into a folder" in capsys.readouterr().err
    assert main(["keys", "init", str(afile)]) == 2
    assert f"{afile} is a file: the line's keys need a folder there" in capsys.readouterr().err


def test_a_file_given_as_the_bundle_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "bundle.zip"
    afile.write_bytes(b"PK")
    assert main(["inspect", str(afile), "x.png"]) == 2
    assert f"bundle folder {afile} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("bench", ["vision", "line", "llm", "soak"])
def test_a_benchmark_of_a_missing_bundle_says_how_to_make_one(bench: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nobundle"
    assert main(["bench", bench, "--bundle", str(missing)]) == 2
    assert f"no bundle in {missing}: export one with `lineguard export vision --out {missing}`" in capsys.readouterr().err


def test_a_camera_whose_frames_all_drop_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2
    import numpy as np

    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    # nothing listens on this port: with ZMQ_IMMEDIATE the PUSH queues nothing and each send times out
    code = main(["camera", "--connect", "tcp://127.0.0.1:1", "--source", str(tmp_path), "--camera-id", "cam0",
                 "--fps", "100"])
    err = capsys.readouterr().err
    assert code == 1 and "sent 0 frames, dropped 2" in err and "no frame reached tcp://127.0.0.1:1" in err


def test_a_camera_id_no_header_can_carry_is_refused_before_any_frame(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["camera", "--source", str(tmp_path), "--camera-id", "c" * 200]) == 2
    assert "cannot go in a frame header: camera_id: String should have at most 128 characters" in capsys.readouterr().err


def test_a_panel_for_a_runtime_that_is_no_host_refuses_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["panel", "--runtime", "bad host!!"]) == 2
    assert "'bad host!!' is not a host name or IP address" in capsys.readouterr().err


def test_enrolling_a_signed_bundle_says_its_signature_is_stale(bundle_copy: Path, weave_parts, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "keys"
    assert main(["keys", "create", "plant", "--out", str(key), "--signing"]) == 0
    assert main(["bundle", "sign", str(bundle_copy), "--key", str(key / "plant.pem")]) == 0
    normals = write_normals(tmp_path / "normals", weave_parts[:3])
    capsys.readouterr()
    assert main(["enroll", str(bundle_copy), "--product", "weave", "--normals", str(normals), "--shots", "2"]) == 0
    assert "manifest.sig no longer matches the changed manifest" in capsys.readouterr().err
    # with the mode of the bundle's other files (mkstemp's 0600 locked out other service users)
    mode = stat.S_IMODE(os.stat(bundle_copy / "manifest.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(bundle_copy / "products" / "weave" / "calibration.json").st_mode)


def test_inspect_answers_a_nan_score_internal_and_exits_1(enrolled_dir: Path, weave_parts, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import cv2
    import numpy as np

    import lineguard.runtime.scoring.inspector as module

    part = tmp_path / "part.png"
    cv2.imwrite(str(part), weave_parts[12])
    monkeypatch.setattr(module, "image_scores", lambda maps: np.full(len(maps), np.nan))
    assert main(["inspect", str(enrolled_dir), str(part), "--product", "weave"]) == 1
    out = capsys.readouterr()
    assert "ERROR INTERNAL: the chain gave 1 of 1 images a non-finite anomaly score" in out.out
    assert "1 of 1 images could not be inspected" in out.err


@pytest.mark.parametrize("heartbeats", [False, True])
def test_watch_json_keeps_stdout_to_json_and_alarms_on_stderr(heartbeats: bool, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """restart and drift events carry the heartbeat that raised them: they are alarms, not heartbeat lines."""
    import json

    import lineguard.runtime.clients.watch as watch_module
    from lineguard.runtime.clients.watch import WatchEvent
    from lineguard.runtime.contract import Heartbeat

    beat = Heartbeat(line="p", boot_id="b2", seq=1, timestamp_ns=0, interval_ms=1000, uptime_s=1, ready=True)
    events = [WatchEvent("heartbeat", heartbeat=beat), WatchEvent("restart", heartbeat=beat, message="new boot b2"),
              WatchEvent("gap", missing=3, message="3 verdicts missed")]

    class FakeWatcher:
        def __init__(self, *args: object, **kwargs: object) -> None: ...
        def __enter__(self) -> FakeWatcher: return self  # noqa: E704
        def __exit__(self, *exc: object) -> None: ...
        def events(self, duration_s: float | None = None) -> list[WatchEvent]: return events  # noqa: E704

    monkeypatch.setattr(watch_module, "VerdictWatcher", FakeWatcher)
    assert main(["watch", "--json", *(["--heartbeats"] if heartbeats else [])]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == (1 if heartbeats else 0) and all(json.loads(line)["boot_id"] == "b2" for line in lines)
    assert "!! RESTART: new boot b2" in err and "!! GAP: 3 verdicts missed" in err


def test_an_input_size_the_manifest_refuses_is_refused_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["export", "vision", "--input-size", "320"]).input_size == 320
    for bad in ("16", "5000"):
        with pytest.raises(SystemExit):
            parser.parse_args(["export", "vision", "--input-size", bad])
        assert "argument --input-size" in capsys.readouterr().err
