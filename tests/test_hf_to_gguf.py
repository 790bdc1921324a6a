"""HF -> GGUF conversion: tiny random Llama / Qwen2 models give llama.cpp the same logits as transformers.

Tolerance: F32 GGUF vs transformers F32 on CPU is compared with ``max abs diff < 1e-3``. Both run the
same weights in float32; the remaining difference is summation order / fused kernels in ggml (and
llama.cpp's own rope and softmax implementations), which is ~1e-5 on logits of magnitude ~1 for these
tiny models (measured: llama 1.1e-5, qwen2 8.8e-6). llama.cpp's default F16 KV cache alone costs ~1e-2,
so the comparison uses an F32 KV cache. F16 weights are checked against ``5e-2`` (measured ~1.3e-2).
A wrong rope permutation gives differences of order 10 (measured 9.1 without it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lineguard.export.hf_to_gguf import convert_hf_to_gguf, quantize  # noqa: E402
from lineguard.export.llm import LlmExportError  # noqa: E402

F32_TOL = 1e-3
F16_TOL = 5e-2  # F16 weight rounding (rel. 5e-4) on logits of magnitude ~5-8
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "line", "guard", "camera", "defect", "scratch", "dent", "crack", "bottle", "cap", "label", "conveyor", "belt", "inspection", "pass", "fail", "reject", "station", "operator", "alarm", "image", "frame", "pixel", "model", "token"]


def make_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(WORDS, 8)) for _ in range(300)]
    tok.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(folder)
    return fast


def make_model(folder: Path, kind: str) -> tuple[Path, object]:
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    common = dict(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                  rms_norm_eps=1e-6, tie_word_embeddings=False,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    with torch.no_grad():  # random init is tiny (std 0.02); widen it so logits differ visibly
        for p in model.parameters():
            p.mul_(10.0) if p.ndim > 1 else p.add_(0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(folder)
    return folder, model


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def tiny_gguf(root: Path, kind: str) -> tuple[Path, object, Path]:
    """A tiny random ``kind`` (qwen2 / llama) model: its HF folder, the model, and its F32 GGUF beside it."""
    folder, model = make_model(root / "hf", kind)
    return folder, model, convert_hf_to_gguf(folder, root / "model.f32.gguf", outtype="f32", name=f"tiny-{kind}")


def f32_llama(path: Path, n_ctx: int = 64, **kwargs) -> object:
    """llama.cpp on ``path`` with an F32 KV cache: llama.cpp's default F16 cache alone costs ~1e-2 on logits."""
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, verbose=False,
                           type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, **kwargs)


def gguf_logits(path: Path, ids: list[int]) -> np.ndarray:
    llm = f32_llama(path, logits_all=True)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def converted(request, tmp_path_factory):
    folder, model, out = tiny_gguf(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, folder, model, out


def test_metadata(converted) -> None:
    arch, folder, model, out = converted
    reader = gguf.GGUFReader(str(out))

    def field(key):
        f = reader.fields[key]
        return f.contents()

    assert field("general.architecture") == arch
    assert field(f"{arch}.block_count") == 2
    assert field(f"{arch}.embedding_length") == 64
    assert field(f"{arch}.feed_forward_length") == 128
    assert field(f"{arch}.attention.head_count") == 4
    assert field(f"{arch}.attention.head_count_kv") == 2
    assert field(f"{arch}.context_length") == 256
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "gpt-2"
    assert field("tokenizer.chat_template") == TEMPLATE
    assert field("tokenizer.ggml.eos_token_id") == model.config.eos_token_id
    assert len(field("tokenizer.ggml.tokens")) == model.config.vocab_size
    assert len(field("tokenizer.ggml.merges")) > 0
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight"} <= names
    assert ("blk.0.attn_q.bias" in names) == (arch == "qwen2")


def test_logits_match_transformers(converted) -> None:
    arch, folder, model, out = converted
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    ids = tok.encode("the quick brown fox inspects a cracked bottle cap on the conveyor belt")[:24]
    assert len(ids) >= 8
    expected = hf_logits(model, ids)
    got = gguf_logits(out, ids)
    diff = float(np.abs(expected - got).max())
    print(f"{arch}: F32 max abs logit diff {diff:.3g} over {len(ids)} tokens (logit scale {np.abs(expected).max():.3g})")
    assert got.shape == expected.shape
    assert diff < F32_TOL, f"{arch}: max abs diff {diff}"


def test_llama_without_rope_permutation_is_wrong(converted, tmp_path: Path, monkeypatch) -> None:
    """Guard for the q/k row permutation: skipping it must visibly break llama (and only llama)."""
    arch, folder, model, out = converted
    if arch != "llama":
        pytest.skip("qwen2 uses NEOX rope: no permutation")
    import lineguard.export.hf_to_gguf as conv

    monkeypatch.setattr(conv, "permute_rope", lambda w, n_head, n_head_kv=None: w)
    wrong = conv.convert_hf_to_gguf(folder, tmp_path / "unpermuted.gguf", outtype="f32")
    ids = list(range(10, 30))
    diff = float(np.abs(hf_logits(model, ids) - gguf_logits(wrong, ids)).max())
    print(f"llama without rope permutation: max abs logit diff {diff:.3g}")
    assert diff > 100 * F32_TOL, diff


def test_f16_logits_close(converted, tmp_path: Path) -> None:
    arch, folder, model, out = converted
    f16 = convert_hf_to_gguf(folder, tmp_path / "model.f16.gguf", outtype="f16")
    assert f16.stat().st_size < 0.6 * out.stat().st_size
    ids = list(range(10, 30))
    diff = float(np.abs(hf_logits(model, ids) - gguf_logits(f16, ids)).max())
    print(f"{arch}: F16 max abs logit diff {diff:.3g}")
    assert diff < F16_TOL, diff


def test_export_llm_conversion_step(converted, tmp_path: Path) -> None:
    """The step ``export_llm(..., hf_model=...)`` runs (the bundle part is covered by test_gguf_export)."""
    arch, folder, model, out = converted
    if arch != "llama":
        pytest.skip("one conversion through export_llm is enough")
    from lineguard.export.llm import _convert_hf
    from lineguard.runtime.llm.gguf_model import inspect_gguf

    result = _convert_hf(folder, tmp_path, "Q8_0")
    info = inspect_gguf(result)
    assert (info.architecture, info.quantization, info.chat_template) == ("llama", "Q8_0", TEMPLATE)
    assert [p.name for p in tmp_path.iterdir()] == [result.name]  # the F16 intermediate is gone


def test_quantize_q8_loads_and_generates(converted, tmp_path: Path) -> None:
    arch, folder, model, out = converted
    if arch != "qwen2":
        pytest.skip("one quantised model is enough")
    q8 = quantize(out, tmp_path / "model.q8_0.gguf", "Q8_0")
    assert q8.stat().st_size < out.stat().st_size
    assert gguf.GGUFReader(str(q8)).fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    llm = llama_cpp.Llama(model_path=str(q8), n_ctx=64, n_threads=2, verbose=False)
    try:
        result = llm.create_completion("the quick brown", max_tokens=4, temperature=0.0)
        assert result["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_quantize_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(LlmExportError, match="does not exist"):
        quantize(tmp_path / "missing.gguf", tmp_path / "out.gguf", "Q8_0")
    with pytest.raises(LlmExportError, match="qtype"):
        quantize(tmp_path / "missing.gguf", tmp_path / "out.gguf", "Q3_XYZ")


def test_unsupported_architecture(tmp_path: Path) -> None:
    config = transformers.GPT2Config(vocab_size=300, bos_token_id=0, eos_token_id=0, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    with pytest.raises(LlmExportError, match="GPT2LMHeadModel.*LlamaForCausalLM, Qwen2ForCausalLM"):
        convert_hf_to_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_cli_export_llm_from_a_hugging_face_folder(bundle_copy: Path, tmp_path: Path) -> None:
    """`lineguard export llm BUNDLE --hf DIR --quant Q8_0`: converted, quantised, checked, recorded."""
    from lineguard.cli import main
    from lineguard.runtime.bundle import Bundle

    folder, _ = make_model(tmp_path / "hf", "qwen2")
    assert main(["export", "llm", str(bundle_copy), "--hf", str(folder), "--quant", "Q8_0"]) == 0
    spec = Bundle.open(bundle_copy).manifest.llm
    assert spec.architecture == "qwen2" and spec.quantization == "Q8_0" and spec.chat_template
    assert str(folder.resolve()) in spec.source


# --- Llama-1/2 (Vicuna) style SentencePiece vocabulary: tokenizer.ggml.model = "llama" -------------------

SPM_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }} "
                "{% else %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
SPM_TEXTS = ["the quick brown fox jumps over the lazy dog",
             "Camera 3: scratch on bottle cap, défaut 🙂\nreject",
             "two  spaces and a trailing space "]
# Not a leading space: HF's Metaspace skips the dummy prefix when the text already starts with a space,
# SentencePiece / llama.cpp always add it ("  two" -> HF ▁▁two, llama.cpp ▁▁▁two).


def make_llama_spm_model(folder: Path) -> tuple[Path, object, object]:
    """Tiny LlamaForCausalLM with a Llama-2 style fast tokenizer: BPE + byte_fallback, Metaspace, <0xNN>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=450, special_tokens=specials, show_progress=False)
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(WORDS, 8)) for _ in range(300)]
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                       special_tokens=[("<s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.chat_template = SPM_TEMPLATE
    fast.save_pretrained(folder)
    config = transformers.LlamaConfig(vocab_size=len(fast), hidden_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, intermediate_size=128,
                                      max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
                                      bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10.0) if p.ndim > 1 else p.add_(0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(folder)
    return folder, model, transformers.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def spm_converted(tmp_path_factory):
    folder, model, tok = make_llama_spm_model(tmp_path_factory.mktemp("llama_spm") / "hf")
    out = convert_hf_to_gguf(folder, folder.parent / "model.f32.gguf", outtype="f32", name="tiny-vicuna")
    return folder, model, tok, out


def test_spm_metadata(spm_converted) -> None:
    folder, model, tok, out = spm_converted
    fields = gguf.GGUFReader(str(out)).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    scores = fields["tokenizer.ggml.scores"].contents()
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert "tokenizer.ggml.merges" not in fields
    assert len(tokens) == len(types) == len(scores) == model.config.vocab_size
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert types[:3] == [int(gguf.TokenType.UNKNOWN), int(gguf.TokenType.CONTROL), int(gguf.TokenType.CONTROL)]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(types[3:259]) == {int(gguf.TokenType.BYTE)}
    merged = [i for i, t in enumerate(tokens) if len(t) > 1 and i >= 259]
    assert merged and len({scores[i] for i in merged}) == len(merged)  # distinct, merge-rank ordered scores
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is True
    assert fields["tokenizer.ggml.bos_token_id"].contents() == 1
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    assert fields["tokenizer.chat_template"].contents() == SPM_TEMPLATE


def test_spm_tokenization_matches_transformers(spm_converted) -> None:
    folder, model, tok, out = spm_converted
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, n_threads=2, verbose=False, vocab_only=True)
    try:
        for text in SPM_TEXTS:
            expected = tok.encode(text, add_special_tokens=False)
            assert llm.tokenize(text.encode(), add_bos=False) == expected, text
            assert llm.tokenize(text.encode(), add_bos=True) == tok.encode(text), text
            # llama-cpp-python's detokenize keeps the SentencePiece dummy-prefix space that HF strips
            assert llm.detokenize(expected).decode().removeprefix(" ") == tok.decode(expected), text
    finally:
        llm.close()


def test_spm_logits_match_transformers(spm_converted) -> None:
    folder, model, tok, out = spm_converted
    ids = tok.encode(SPM_TEXTS[1])[:24]
    assert len(ids) >= 8
    expected = hf_logits(model, ids)
    got = gguf_logits(out, ids)
    diff = float(np.abs(expected - got).max())
    print(f"llama-spm: F32 max abs logit diff {diff:.3g} over {len(ids)} tokens")
    assert diff < F32_TOL, diff


def test_spm_from_tokenizer_model(spm_converted, tmp_path: Path) -> None:
    """A folder with only tokenizer.model (as Vicuna ships) gives the same vocabulary and tokenization."""
    import shutil

    from transformers.utils import sentencepiece_model_pb2_new as pb2

    folder, model, tok, out = spm_converted
    fields = gguf.GGUFReader(str(out)).fields
    tokens, scores, types = (fields[f"tokenizer.ggml.{k}"].contents() for k in ("tokens", "scores", "token_type"))
    proto = pb2.ModelProto()
    proto.trainer_spec.model_type = 2  # BPE
    proto.normalizer_spec.add_dummy_prefix = True
    for piece, score, kind in zip(tokens, scores, types, strict=True):
        entry = proto.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, kind  # gguf TokenType == sentencepiece Type
    spm_dir = tmp_path / "spm"
    shutil.copytree(folder, spm_dir)
    (spm_dir / "tokenizer.json").unlink()
    (spm_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    result = gguf.GGUFReader(str(convert_hf_to_gguf(spm_dir, tmp_path / "m.gguf", outtype="f32"))).fields
    assert result["tokenizer.ggml.model"].contents() == "llama"
    assert result["tokenizer.ggml.tokens"].contents() == tokens
    assert result["tokenizer.ggml.scores"].contents() == scores
    assert result["tokenizer.ggml.token_type"].contents() == types
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, verbose=False, vocab_only=True)
    try:
        for text in SPM_TEXTS:
            assert llm.tokenize(text.encode(), add_bos=False) == tok.encode(text, add_special_tokens=False), text
    finally:
        llm.close()


def test_spm_unigram_is_refused(tmp_path: Path) -> None:
    """llama.cpp's 'llama' tokenizer merges pairs by score; it cannot reproduce a Unigram segmentation."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path)
    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(LlmExportError, match="Unigram"):
        convert_hf_to_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
