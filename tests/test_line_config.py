"""Line configuration: the example loads, defaults match the protocol, and every bad field is named."""

from __future__ import annotations

import re
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
    assert config.explanations.max_question_chars == 500
    curve = config.security.curve  # the example binds the plant network, so it runs CURVE
    assert curve is not None and not config.security.insecure
    assert curve.allowed_clients_dir == Path("/var/lib/lineguard/keys/clients")
    assert curve.grant_for("panel").endpoints == ["verdicts", "explanations"] and not curve.grant_for("panel").cameras
    assert curve.grant_for("plc").may_claim("cam1") and not curve.grant_for("cam0").may_claim("cam1")
    unlisted = curve.grant_for("cam7")  # not in clients: its own camera; never the LLM's port
    assert unlisted.may_claim("cam7") and not unlisted.may_claim("cam0")
    assert unlisted.endpoints == ["frames", "verdicts", "inspect"]


@pytest.mark.parametrize("text, words", [
    ("line: a\nendpoints:\n  frames: tcp://*:5555\n", "endpoints.frames: tcp://*:5555 binds beyond this machine"),
    ("line: a\nendpoints:\n  inspect: tcp://0.0.0.0:5558\n", "endpoints.inspect"),
    ("line: a\nendpoints:\n  verdicts: tcp://eth0:5556\n", "endpoints.verdicts"),
    ("line: a\nhttp:\n  host: 0.0.0.0\n", "http.host: 0.0.0.0 serves archived part images"),
])
def test_open_binds_need_curve_or_an_explicit_insecure(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(LineConfigError, match=re.escape(words)):
        LineConfig.from_yaml(write(tmp_path, text))
    assert LineConfig.from_yaml(write(tmp_path, text + "security: insecure\n")).security.insecure
    assert LineConfig.from_yaml(write(tmp_path, text + "security:\n  insecure: true\n")).security.insecure


def test_loopback_and_local_endpoints_need_no_curve() -> None:
    local = {"frames": "tcp://127.0.0.1:5555", "verdicts": "tcp://[::1]:5556", "inspect": "ipc:///tmp/lg-inspect",
             "explanations": "tcp://localhost:5557"}
    assert LineConfig(line="a", endpoints=local).security.curve is None
    curve = {"server_secret_key_file": "s.key_secret", "allowed_clients_dir": "clients"}
    config = LineConfig(line="a", endpoints={"frames": "tcp://*:5555"}, security={"curve": curve},
                        http={"host": "0.0.0.0", "token_file": "http.token"})
    assert config.endpoints.frames == "tcp://*:5555" and not config.security.insecure


def test_defaults_follow_the_protocol() -> None:
    config = LineConfig(line="l1")
    assert (config.endpoints.frames, config.endpoints.verdicts, config.endpoints.inspect) == (
        "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5558")  # loopback unless configured
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
