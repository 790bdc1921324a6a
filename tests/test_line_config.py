"""Line configuration: the example loads, defaults match the protocol, and every bad field is named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lineguard.runtime.line.config import LineConfig, LineConfigError

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


@pytest.mark.parametrize("text, where", [
    ("line: l1\nproducts: [default\nfalse_reject_budget: 0.01\n",
     "line 3, column 20: expected ',' or ']', but got ':' (while parsing a flow sequence at line 2, column 11)"),
    ("line: l1\n  products: x\n", "line 2, column 11: mapping values are not allowed here"),
    ("line: l1\n\tproducts: x\n", "line 2, column 1: found character '\\t' that cannot start any token"),
])
def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path: Path, text: str, where: str) -> None:
    """What an operator who mistyped the file reads: where (1-based, as editors count) and what, on one line."""
    path = write(tmp_path, text)
    with pytest.raises(LineConfigError) as caught:
        LineConfig.from_yaml(path)
    assert str(caught.value) == f"{path}: not valid YAML: {where}"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LineConfigError, match="cannot read"):
        LineConfig.from_yaml(tmp_path / "nope.yaml")


def test_the_false_reject_budget_and_the_backend_names_have_one_owner() -> None:
    from typing import get_args

    from lineguard.runtime.bundle import CpuPrecision, Precision, RequestedBackend
    from lineguard.runtime.line.config import Inference
    from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET

    assert LineConfig(line="a").false_reject_budget == DEFAULT_FALSE_REJECT_BUDGET
    fields = Inference.model_fields
    assert fields["backend"].annotation == RequestedBackend and fields["cpu_precision"].annotation == CpuPrecision
    assert get_args(fields["precisions"].annotation) == (Precision,)


def test_overrides_layer_over_the_file_and_keep_its_other_fields(tmp_path: Path) -> None:
    from lineguard.runtime.line.config import layer_config

    path = write(tmp_path, "line: a\nbatching:\n  max_batch: 16\n  max_queue: 32\ncameras:\n  cam0:\n    product: tile\n"
                           "http:\n  enabled: false\n")
    config = layer_config(path, {"batching.max_batch": 4, "endpoints.frames": "ipc:///tmp/f", "http.enabled": True,
                                 "archive.dir": str(tmp_path / "ng")})
    assert (config.batching.max_batch, config.batching.max_queue) == (4, 32)  # the file's other batching field stays
    assert config.endpoints.frames == "ipc:///tmp/f" and config.endpoints.verdicts == "tcp://127.0.0.1:5556"
    assert config.http.enabled and config.archive.dir == tmp_path / "ng" and config.product_for("cam0", None) == "tile"
    assert layer_config(path) == LineConfig.from_yaml(path)  # no overrides: the file alone
    defaults = layer_config(None, {"line": "b", "deadline_ms": 50.0})  # no file: the model's defaults underneath
    assert (defaults.line, defaults.deadline_ms, defaults.batching.max_batch) == ("b", 50.0, 8)


@pytest.mark.parametrize("overrides, words", [
    ({"batching.max_batch": 0}, "batching.max_batch (--max-batch): Input should be greater than or equal to 1 (got 0)"),
    ({"deadline_ms": -1.0}, "deadline_ms (--deadline-ms): Input should be greater than 0 (got -1.0)"),
    ({"endpoints.frames": "localhost:5555"}, "endpoints.frames (--frames): 'localhost:5555' is not a ZeroMQ endpoint"),
    ({"inference.backend": "triton"}, "inference (--backend): backend triton needs triton_url"),
    ({"endpoints.frames": "tcp://*:5555"}, "endpoints.frames: tcp://*:5555 binds beyond this machine without CURVE"),
    ({"line": "a b"}, "line (--line): String should match pattern"),
])
def test_a_bad_override_fails_like_a_bad_file_value_naming_field_and_flag(tmp_path: Path, overrides: dict,
                                                                          words: str) -> None:
    from lineguard.runtime.line.config import layer_config

    origins = {"batching.max_batch": "--max-batch", "deadline_ms": "--deadline-ms", "endpoints.frames": "--frames",
               "inference.backend": "--backend", "line": "--line"}
    path = write(tmp_path, "line: a\n")
    with pytest.raises(LineConfigError) as caught:
        layer_config(path, overrides, origins)
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value), str(caught.value)
    with pytest.raises(LineConfigError, match=re.escape(words)):  # the same without a file
        layer_config(None, {"line": "a", **overrides}, origins)


def test_the_file_own_errors_stay_named_under_overrides(tmp_path: Path) -> None:
    from lineguard.runtime.line.config import layer_config

    path = write(tmp_path, "line: a\nbatching: 4\nhwm:\n  frames_rcv: 0\n")
    with pytest.raises(LineConfigError, match=re.escape(f"{path}: batching: expected a mapping of fields, got 4, "
                                                        "to override batching.max_batch (--max-batch)")):
        layer_config(path, {"batching.max_batch": 2}, {"batching.max_batch": "--max-batch"})
    with pytest.raises(LineConfigError) as caught:
        layer_config(path, {"deadline_ms": 100.0}, {"deadline_ms": "--deadline-ms"})
    message = str(caught.value)
    assert "hwm.frames_rcv: " in message and "(--" not in message.split("hwm.frames_rcv")[1], message
    with pytest.raises(LineConfigError, match="line: Field required"):
        layer_config(None, {"deadline_ms": 100.0})  # no file and no line name


@pytest.mark.parametrize(("endpoints", "says"), [
    ({"frames": "tcp://127.0.0.1:5555", "verdicts": "tcp://127.0.0.1:5555"},
     "endpoints.frames and endpoints.verdicts both bind tcp port 5555"),
    ({"inspect": "tcp://127.0.0.1:5557"}, "endpoints.inspect and endpoints.explanations both bind tcp port 5557"),
    ({"frames": "tcp://*:6000", "inspect": "tcp://10.0.0.1:6000"}, "endpoints.frames and endpoints.inspect both bind tcp port 6000"),
    ({"frames": "ipc:///run/lg/a", "inspect": "ipc:///run/lg/a"}, "endpoints.frames and endpoints.inspect both bind ipc:///run/lg/a"),
])
def test_two_endpoints_on_one_address_are_refused_by_name(endpoints: dict[str, str], says: str) -> None:
    with pytest.raises(LineConfigError, match=re.escape(says)):
        LineConfig(line="press3", endpoints=endpoints, security="insecure")


@pytest.mark.parametrize(("endpoints", "explanations"), [
    (dict.fromkeys(("frames", "verdicts", "inspect", "explanations"), "tcp://127.0.0.1:*"), True),  # free ports
    ({"frames": "ipc:///run/lg/frames"}, True),
    ({"frames": "tcp://10.0.0.1:5555", "inspect": "tcp://10.0.0.2:5555"}, True),  # one port, two interfaces
    ({"frames": "tcp://127.0.0.1:5557"}, False),  # the explanation port is not opened
])
def test_endpoints_that_can_all_bind_are_fine(endpoints: dict[str, str], explanations: bool) -> None:
    config = LineConfig(line="press3", endpoints=endpoints, explanations={"enabled": explanations}, security="insecure")
    assert config.endpoints.frames == endpoints.get("frames", "tcp://127.0.0.1:5555")
