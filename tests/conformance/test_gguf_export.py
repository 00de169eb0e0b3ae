"""The whole GGUF file against llama.cpp's convert_hf_to_gguf.py.

For each case a tiny transformers-made checkpoint (hf_fixtures.make_tiny_model)
gets stories260k's SentencePiece tokenizer, then is written twice: by the
converter (--outtype f32 / f16 / bf16) and by gptq_tool_gguf_export, which runs
gguf::plan_gguf_model + write_gguf_model (the mapping `quantize --format gguf`
uses) with a plain cast as its encoder. gguf-py's GGUFReader reads both; they
must hold the same KV keys with the same types and values, and the same
tensors in the same order with the same names, shapes, ggml types and bytes
(the Q/K rows permuted for llama.cpp's rope as LlamaModel.permute does it).

Keys that legitimately differ (DIFFERENT_VALUE) are listed below with why.

Cases: Llama (GQA, untied head), Llama tied, Llama-3 rope (the generated
rope_freqs tensor, attention/mlp biases), Llama with YaRN, Mistral, Qwen2 (q/k/v
biases, tied), Qwen3 (q/k norms, head_dim != hidden/heads); f16 and bf16 for
Llama and Qwen3; a Llama saved in several safetensors shards (the converter's
tensor order across shards).

Needs GPTQ_LLAMA_CPP_DIR (convert_hf_to_gguf.py, gguf-py/), sentencepiece in
the oracle venv and ../shared/data/stories260k-hf; skips with the reason
without them.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hf_fixtures import make_tiny_model
from model_driver import shared_data, tool
import llama_cpp_peer as lcpp


LLAMA_CPP = lcpp.require(built=False)
pytest.importorskip("sentencepiece", reason="sentencepiece (scripts/requirements-oracles.txt) not installed")
gguf = lcpp.gguf()

# Keys both files hold whose values legitimately differ.
DIFFERENT_VALUE = {
    # The converter derives the name from config.json's _name_or_path or the
    # directory and title-cases it; we write the model directory's name.
    "general.name",
}
# Keys only the converter writes, and why we do not.
ONLY_CONVERTER = {
    # A guess from the parameter count ("1.4M"); llama.cpp only displays it.
    "general.size_label",
}
FLOAT_TYPES = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)
# Keys only we write: none.
ONLY_OURS: set[str] = set()

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
VOCAB_SIZE = 512  # stories260k's SentencePiece vocabulary


def tiny_model(tmp_path: Path, arch: str, shards: bool = False, **overrides) -> Path:
    src = shared_data() / "stories260k-hf"
    if not (src / "tokenizer.model").is_file():
        pytest.skip(f"{src} has no tokenizer.model")
    overrides = {"num_hidden_layers": 3, **overrides}
    out = make_tiny_model(arch, tmp_path / arch, vocab_size=VOCAB_SIZE, **overrides)
    if shards:
        # Re-saved in shards of ~40 kB: the converter walks shard after shard.
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(out)
        sharded = tmp_path / (arch + "-sharded")
        model.save_pretrained(sharded, max_shard_size="40KB")
        assert len(list(sharded.glob("*.safetensors"))) > 2
        out = sharded
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, out / name)
    return out


def run_converter(model_dir: Path, out_file: Path, outtype: str) -> None:
    lcpp.convert_hf_in_process(model_dir, out_file, outtype)


def run_ours(model_dir: Path, out_file: Path, outtype: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("gguf_export")), str(model_dir), str(out_file), outtype],
                          capture_output=True, text=True, timeout=600)


def kvs(reader) -> dict:
    """key -> (GGUF value types, contents); GGUF.* are the header fields, not KVs."""
    return {name: (tuple(int(t) for t in field.types), field.contents())
            for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def same_value(ours, theirs) -> bool:
    if isinstance(theirs, float):
        return np.float32(ours) == np.float32(theirs)
    if isinstance(theirs, list) and theirs and isinstance(theirs[0], float):
        return np.array_equal(np.asarray(ours, np.float32), np.asarray(theirs, np.float32))
    return ours == theirs


def compare_files(ours_path: Path, theirs_path: Path, converter_order: bool = True) -> None:
    """converter_order=False compares against llama-quantize, which writes the
    tensors in its loader's order (non-layer tensors by name, then each layer's
    by name), moves general.file_type to the end, and rounds a few values the
    other way where a value sits on a rounding tie (its float sums differ from
    ours in the last bit): there quantized tensors must decode to the same
    values for all but 1 % of the weights (measured: 0.02-0.6 %)."""
    ours, theirs = gguf.GGUFReader(str(ours_path)), gguf.GGUFReader(str(theirs_path))
    ours_kv, theirs_kv = kvs(ours), kvs(theirs)
    assert set(ours_kv) - set(theirs_kv) == ONLY_OURS, sorted(set(ours_kv) - set(theirs_kv))
    assert set(theirs_kv) - set(ours_kv) == ONLY_CONVERTER, sorted(set(theirs_kv) - set(ours_kv))
    wrong = []
    for key in sorted(set(ours_kv) & set(theirs_kv)):
        (our_types, our_value), (their_types, their_value) = ours_kv[key], theirs_kv[key]
        if our_types != their_types:
            wrong.append(f"{key}: value type {our_types}, converter {their_types}")
        elif key not in DIFFERENT_VALUE and not same_value(our_value, their_value):
            shown = (lambda v: v if not isinstance(v, list) else f"list[{len(v)}] {v[:4]}...")
            wrong.append(f"{key}: {shown(our_value)!r}, converter {shown(their_value)!r}")
    assert not wrong, "\n".join(wrong)
    # llama.cpp does not care about the KV order, but keeping the converter's makes files diff
    # cleanly (llama-quantize moves general.file_type to the end: not compared there).
    if converter_order:
        assert [k for k in ours_kv if k not in ONLY_OURS] == [k for k in theirs_kv if k not in ONLY_CONVERTER]
        assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    else:
        assert sorted(t.name for t in ours.tensors) == sorted(t.name for t in theirs.tensors)
    our_tensors = {t.name: t for t in ours.tensors}
    for their_tensor in theirs.tensors:
        name = their_tensor.name
        our_tensor = our_tensors[name]
        assert our_tensor.tensor_type == their_tensor.tensor_type, (name, our_tensor.tensor_type,
                                                                    their_tensor.tensor_type)
        assert our_tensor.shape.tolist() == their_tensor.shape.tolist(), name
        if converter_order or our_tensor.tensor_type in FLOAT_TYPES:
            assert our_tensor.data.tobytes() == their_tensor.data.tobytes(), f"{name}: bytes differ"
            continue
        our_values = gguf.dequantize(our_tensor.data, our_tensor.tensor_type)
        their_values = gguf.dequantize(their_tensor.data, their_tensor.tensor_type)
        differing = float(np.mean(our_values != their_values))
        assert differing <= 0.01, f"{name}: {differing:.2%} of the values decode differently"
    assert ours.alignment == theirs.alignment == 32


# Rope scalings the converter writes keys for, beyond the fixtures' own.
LINEAR = {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}
YARN_BARE = {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                 "original_max_position_embeddings": 64}}
YARN_FULL = {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                 "original_max_position_embeddings": 64, "attention_factor": 1.5,
                                 "beta_fast": 24.0, "beta_slow": 1.5}}

CASES = [
    ("llama", "f32", {}), ("llama-tied", "f32", {}), ("llama3", "f32", {}), ("llama-yarn", "f32", {}),
    ("mistral", "f32", {}), ("qwen2", "f32", {}), ("qwen3", "f32", {}),
    ("llama", "f16", {}), ("qwen3", "f16", {}), ("llama", "bf16", {}), ("qwen2", "bf16", {}),
    ("llama", "f32", LINEAR), ("qwen3", "f32", YARN_BARE), ("qwen2", "f32", YARN_FULL),
]
CASE_IDS = [f"{arch}-{outtype}" + (f"-{overrides['rope_parameters']['rope_type']}{index}" if overrides else "")
            for index, (arch, outtype, overrides) in enumerate(CASES)]


@pytest.mark.parametrize("arch,outtype,overrides", CASES, ids=CASE_IDS)
def test_same_file_as_the_converter(tmp_path, arch, outtype, overrides):
    model_dir = tiny_model(tmp_path, arch, **overrides)
    theirs, ours = tmp_path / "converter.gguf", tmp_path / "ours.gguf"
    run_converter(model_dir, theirs, outtype)
    proc = run_ours(model_dir, ours, outtype)
    assert proc.returncode == 0, proc.stderr
    compare_files(ours, theirs)


def test_sharded_checkpoint_keeps_the_converters_tensor_order(tmp_path):
    model_dir = tiny_model(tmp_path, "llama", shards=True)
    theirs, ours = tmp_path / "converter.gguf", tmp_path / "ours.gguf"
    run_converter(model_dir, theirs, "f32")
    assert run_ours(model_dir, ours, "f32").returncode == 0
    compare_files(ours, theirs)


# Our file type -> llama-quantize's name for it.
QUANTIZE_NAMES = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q8_0": "Q8_0", "q4_k": "Q4_K_S", "q5_k": "Q5_K_S",
                  "q6_k": "Q6_K", "q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M"}
# K-quant rows need whole 256-value super-blocks; 8 layers give use_more_bits
# a pattern (layers 0, 3, 6, 7) rather than "the last one".
K_SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
QUANT_CASES = ([("llama", name, K_SHAPE) for name in QUANTIZE_NAMES] +
               # tied head (token_embd takes output's Q6_K), q/k/v biases stay F32
               [("qwen2", "q4_k_m", K_SHAPE), ("qwen3", "q5_k_m", dict(K_SHAPE, head_dim=64)),
                # 64/160-wide rows: Q6_K falls back to Q8_0 (q6_k), output to Q8_0 (q4_0)
                ("qwen2", "q6_k", {}), ("mistral", "q4_0", {})])


@pytest.mark.parametrize("arch,file_type,shape", QUANT_CASES,
                         ids=[f"{arch}-{ft}-{'k' if shape else 'narrow'}" for arch, ft, shape in QUANT_CASES])
def test_quantized_types_as_llama_quantize(tmp_path, arch, file_type, shape):
    """llama-quantize (no imatrix) of the converter's f32 file against our plan's
    types with each tensor rounded to nearest on its type: same KVs (but for
    the listed ones), names, order, shapes, ggml types, and bytes."""
    if not lcpp.available():
        pytest.skip(f"llama-quantize unavailable: {lcpp.unavailable_reason()}")
    model_dir = tiny_model(tmp_path, arch, num_hidden_layers=8 if shape else 3, **shape)
    f32 = tmp_path / "converter-f32.gguf"
    run_converter(model_dir, f32, "f32")
    theirs = lcpp.quantize(f32, tmp_path / "llama-quantize.gguf", QUANTIZE_NAMES[file_type])
    ours = tmp_path / "ours.gguf"
    proc = run_ours(model_dir, ours, file_type)
    assert proc.returncode == 0, proc.stderr
    compare_files(ours, theirs, converter_order=False)


def test_existing_output_and_unsupported_family_exit_2(tmp_path):
    model_dir = tiny_model(tmp_path, "llama")
    existing = tmp_path / "taken.gguf"
    existing.write_bytes(b"keep")
    proc = run_ours(model_dir, existing, "f32")
    assert proc.returncode == 2 and "already exists" in proc.stderr and str(existing) in proc.stderr
    assert existing.read_bytes() == b"keep"
    phi = make_tiny_model("phi3", tmp_path / "phi3", num_hidden_layers=1)
    proc = run_ours(phi, tmp_path / "phi.gguf", "f32")
    assert proc.returncode == 2 and "Phi3ForCausalLM" in proc.stderr and "config.json" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama", "phi3", "taken.gguf"]
