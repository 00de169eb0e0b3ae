"""GGUF tokenizer metadata: gptq::gguf::read_gguf_vocab against llama.cpp's own
convert_hf_to_gguf.py on real tokenizers.

Each case puts a real tokenizer into a tiny transformers-made model directory
(vocab_size matching the tokenizer, or larger so the converter pads), runs the
converter (--outtype f32), reads its file with gguf-py's GGUFReader and
compares every tokenizer.* key it wrote with gptq_tool_gguf_vocab_dump's JSON:
the same keys, the same values (scores as float32, bit for bit).

Cases: SentencePiece (stories260k's tokenizer.model, Llama-2's), Llama-2's
tokenizer.json alone (the converter's LlamaHfVocab path), GPT-2's byte-level BPE
(saved by transformers' GPT2TokenizerFast) under Llama and Qwen2, and a
Qwen2-style tokenizer (Qwen2TokenizerFast over GPT-2's vocabulary, with chat
special tokens, a user-defined token and a chat template) under Qwen3. The
converter refuses that last one: it names the pre-tokenizer by hashing a
tokenization and this vocabulary/pre-tokenizer pair is in none of its known
hashes. The test checks that refusal, then converts again with the unknown-hash
error turned into a placeholder and compares every other key; our
tokenizer.ggml.pre, decided from tokenizer.json's structure, must be "qwen2".

Needs GPTQ_LLAMA_CPP_DIR (llama.cpp's tree: convert_hf_to_gguf.py, gguf-py/),
sentencepiece in the oracle venv, and ../shared/data; skips without them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_fixtures import make_tiny_model
from model_driver import shared_data, tool

LLAMA_CPP = Path(os.environ.get("GPTQ_LLAMA_CPP_DIR", ""))
if not os.environ.get("GPTQ_LLAMA_CPP_DIR") or not (LLAMA_CPP / "convert_hf_to_gguf.py").is_file():
    pytest.skip("GPTQ_LLAMA_CPP_DIR not set or has no convert_hf_to_gguf.py (llama.cpp's tree)",
                allow_module_level=True)
pytest.importorskip("sentencepiece", reason="sentencepiece (scripts/requirements-oracles.txt) not installed")
sys.path.insert(0, str(LLAMA_CPP / "gguf-py"))
import gguf  # noqa: E402

UNRECOGNIZED_PRE = "<pre-tokenizer hash not recognized>"

# Runs convert_hf_to_gguf.py; with --tolerate-unknown-pre an unknown
# pre-tokenizer hash yields UNRECOGNIZED_PRE instead of NotImplementedError, so
# the rest of the vocabulary can still be compared.
_CONVERTER = r"""
import runpy, sys
llama_cpp, tolerate = sys.argv[1], sys.argv[2] == "1"
sys.argv = [llama_cpp + "/convert_hf_to_gguf.py"] + sys.argv[3:]
sys.path[:0] = [llama_cpp + "/gguf-py", llama_cpp]
if tolerate:
    from conversion.base import TextModel
    original = TextModel.get_vocab_base_pre
    def tolerant(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            return %r
    TextModel.get_vocab_base_pre = tolerant
runpy.run_path(sys.argv[0], run_name="__main__")
""" % UNRECOGNIZED_PRE


def run_converter(model_dir: Path, out_file: Path, tolerate_unknown_pre=False) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_LOCAL_GGUF="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", _CONVERTER, str(LLAMA_CPP), "1" if tolerate_unknown_pre else "0",
                           str(model_dir), "--outtype", "f32", "--outfile", str(out_file)],
                          capture_output=True, text=True, timeout=900, env=env)


def converter_keys(gguf_file: Path) -> dict:
    reader = gguf.GGUFReader(str(gguf_file))
    return {name: field.contents() for name, field in reader.fields.items() if name.startswith("tokenizer.")}


def our_keys(model_dir: Path, vocab_size: int) -> dict:
    proc = subprocess.run([str(tool("gguf_vocab_dump")), str(model_dir), str(vocab_size)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_same_vocab(ours: dict, theirs: dict, skip=()):
    assert sorted(k for k in ours if k not in skip) == sorted(k for k in theirs if k not in skip)
    for key, expected in theirs.items():
        if key in skip:
            continue
        got = ours[key]
        if key == "tokenizer.ggml.scores":
            np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(expected, np.float32), err_msg=key)
        elif isinstance(expected, list):
            assert len(got) == len(expected), key
            mismatches = [(index, got[index], expected[index]) for index in range(len(got)) if got[index] != expected[index]]
            assert not mismatches, f"{key}: {len(mismatches)} differ, first {mismatches[:5]}"
        else:
            assert got == expected, key


def model_dir_with(tmp_path: Path, name: str, arch: str, vocab_size: int, files=()) -> Path:
    out = make_tiny_model(arch, tmp_path / name, vocab_size=vocab_size, num_hidden_layers=1)
    for source in files:
        shutil.copy(source, out / Path(source).name)
    return out


def check_against_converter(model_dir: Path, vocab_size: int, tmp_path: Path) -> dict:
    out_file = tmp_path / (model_dir.name + ".gguf")
    proc = run_converter(model_dir, out_file)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ours, theirs = our_keys(model_dir, vocab_size), converter_keys(out_file)
    assert_same_vocab(ours, theirs)
    return ours


def test_sentencepiece_stories260k(tmp_path):
    src = shared_data() / "stories260k-hf"
    model = model_dir_with(tmp_path, "stories", "llama", 512, [src / name for name in (
        "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")])
    ours = check_against_converter(model, 512, tmp_path)
    assert ours["tokenizer.ggml.model"] == "llama" and ours["tokenizer.ggml.add_bos_token"] is True


def test_sentencepiece_llama2_padded(tmp_path):
    src = shared_data() / "tok-llama2"
    # 32,064 rows: the converter pads ids past the 32,000 pieces with [PAD<id>].
    model = model_dir_with(tmp_path, "llama2", "llama", 32064, [src / "tokenizer.model", src / "tokenizer.json"])
    ours = check_against_converter(model, 32064, tmp_path)
    assert ours["tokenizer.ggml.tokens"][-1] == "[PAD32063]" and ours["tokenizer.ggml.token_type"][-1] == 5


def test_llama2_tokenizer_json_only(tmp_path):
    # tok-llama2's own tokenizer.json holds merges with bare spaces that the
    # tokenizers library refuses to load, so transformers converts Llama-2's
    # tokenizer.model to a tokenizer.json (byte-fallback BPE, Sequence decoder),
    # and the directory gets no tokenizer.model: the converter's LlamaHfVocab path.
    from transformers import LlamaTokenizerFast

    spm_dir = tmp_path / "spm"
    spm_dir.mkdir()
    shutil.copy(shared_data() / "tok-llama2" / "tokenizer.model", spm_dir)
    model = model_dir_with(tmp_path, "llama2hf", "llama", 32000)
    LlamaTokenizerFast.from_pretrained(str(spm_dir)).save_pretrained(str(model))
    (model / "tokenizer.model").unlink(missing_ok=True)
    ours = check_against_converter(model, 32000, tmp_path)
    assert ours["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.merges" not in ours


def _save_gpt2_tokenizer(out: Path, cls_name: str, **extra):
    import transformers

    tokenizer = getattr(transformers, cls_name).from_pretrained(str(shared_data() / "tok-gpt2"), **extra)
    tokenizer.save_pretrained(str(out))
    return tokenizer


# Not under Qwen2/Qwen3: transformers 5 loads any tokenizer there as its own
# Qwen2Tokenizer (Qwen2's pre-tokenizer whatever tokenizer.json says), so the
# converter would hash Qwen2's splitting of GPT-2's vocabulary.
@pytest.mark.parametrize("arch,vocab_size", [("llama", 50260), ("mistral", 50257)])
def test_gpt2_byte_level(tmp_path, arch, vocab_size):
    model = model_dir_with(tmp_path, f"gpt2-{arch}", arch, vocab_size)
    _save_gpt2_tokenizer(model, "GPT2TokenizerFast")
    ours = check_against_converter(model, vocab_size, tmp_path)
    assert ours["tokenizer.ggml.pre"] == "gpt-2" and len(ours["tokenizer.ggml.merges"]) == 50000


def test_qwen2_style_refused_by_converter_hash(tmp_path):
    vocab_size = 50272
    model = model_dir_with(tmp_path, "qwen2-style", "qwen3", vocab_size)
    tokenizer = _save_gpt2_tokenizer(model, "Qwen2TokenizerFast")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.add_tokens(["<tool>"])  # not special: USER_DEFINED
    tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    tokenizer.save_pretrained(str(model))

    refused = run_converter(model, tmp_path / "refused.gguf")
    assert refused.returncode != 0 and "BPE pre-tokenizer was not recognized" in refused.stderr, refused.stderr[-2000:]

    out_file = tmp_path / "qwen2-style.gguf"
    proc = run_converter(model, out_file, tolerate_unknown_pre=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    theirs, ours = converter_keys(out_file), our_keys(model, vocab_size)
    assert theirs["tokenizer.ggml.pre"] == UNRECOGNIZED_PRE
    assert_same_vocab(ours, theirs, skip=("tokenizer.ggml.pre",))
    assert ours["tokenizer.ggml.pre"] == "qwen2"
    types = ours["tokenizer.ggml.token_type"]
    ids = {token: index for index, token in enumerate(ours["tokenizer.ggml.tokens"])}
    assert types[ids["<|im_end|>"]] == 3 and types[ids["<tool>"]] == 4 and types[-1] == 5
    assert "tokenizer.chat_template" in ours


def test_unknown_pre_tokenizer_is_refused_by_name(tmp_path):
    model = model_dir_with(tmp_path, "odd-pre", "qwen2", 50257)
    _save_gpt2_tokenizer(model, "GPT2TokenizerFast")
    tokenizer_json = json.loads((model / "tokenizer.json").read_text())
    tokenizer_json["pre_tokenizer"]["add_prefix_space"] = True
    (model / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    proc = subprocess.run([str(tool("gguf_vocab_dump")), str(model), "50257"], capture_output=True, text=True)
    assert proc.returncode == 2 and "tokenizer.json" in proc.stderr and "pre-tokenizer" in proc.stderr, proc.stderr
