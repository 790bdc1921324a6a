"""Line configuration: the example loads, defaults match the protocol, and every bad field is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.runtime.line_config import LineConfig, LineConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "line.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(text)
    return path


def test_example_loads() -> None:
    config = LineConfig.from_yaml(EXAMPLE)
    assert config.line == "press3"
    assert config.deadline_for("cam1") == 120 and config.deadline_for("cam0") == 200
    assert config.product_for("cam0", None) == "tile" and config.product_for("cam0", "other") == "other"
    assert config.product_for("cam9", None) is None
    assert config.security.curve is None and config.explanations.max_question_chars == 500


def test_example_curve_block_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("  # curve:", "  curve:").replace("  #   ", "    ")
    config = LineConfig.from_yaml(write(tmp_path, text))
    assert config.security.curve is not None
    assert config.security.curve.allowed_clients_dir == Path("/etc/lineguard/clients")


def test_defaults_follow_the_protocol() -> None:
    config = LineConfig(line="l1")
    assert (config.endpoints.frames, config.endpoints.verdicts, config.endpoints.inspect) == (
        "tcp://*:5555", "tcp://*:5556", "tcp://*:5558")
    assert config.deadline_ms == 200 and config.false_reject_budget == 0.01
    assert (config.batching.max_batch, config.batching.max_queue_delay_ms, config.batching.max_queue) == (8, 5, 64)
    assert config.heartbeat_interval_ms == 1000
    assert config.security.curve is None and config.security.bundle_public_key is None  # security is opt-in


@pytest.mark.parametrize("text, field", [
    ("line: a\nbatching:\n  max_bach: 4\n", "batching.max_bach: unknown field"),
    ("line: a\nbatching:\n  max_batch: 0\n", "batching.max_batch"),
    ("line: a\ndeadline_ms: soon\n", "deadline_ms"),
    ("line: a\ncameras:\n  cam0:\n    deadline_ms: -5\n", "cameras.cam0.deadline_ms"),
    ("line: a\nendpoints:\n  frames: localhost:5555\n", "endpoints.frames"),
    ("line: a\nlimits:\n  max_width: 0\n", "limits.max_width"),
    ("line: a\nfalse_reject_budget: 0.7\n", "false_reject_budget"),
    ("line: a b\n", "line"),
    ("deadline_ms: 100\n", "line: Field required"),
    ("line: a\nhwm:\n  verdicts_snd: 0\n", "hwm.verdicts_snd"),
    ("line: a\nsurprise: 1\n", "surprise: unknown field"),
    ("line: a\nsecurity:\n  curve:\n    server_secret_key_file: s\n", "security.curve.allowed_clients_dir"),
    ("line: a\nsecurity:\n  curv: {}\n", "security.curv: unknown field"),
    ("line: a\nexplanations:\n  max_question_chars: 5000\n", "explanations.max_question_chars"),
])
def test_bad_field_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LineConfigError) as caught:
        LineConfig.from_yaml(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and field in message, message


@pytest.mark.parametrize("text, words", [
    ("line: [unclosed\n", "not valid YAML"),
    ("- line: a\n", "mapping"),
    ("", "mapping"),
])
def test_unusable_file(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(LineConfigError, match=words):
        LineConfig.from_yaml(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LineConfigError, match="cannot read"):
        LineConfig.from_yaml(tmp_path / "nope.yaml")
