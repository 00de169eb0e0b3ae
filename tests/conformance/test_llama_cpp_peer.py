"""The llama.cpp peer harness works on a real model: a tiny random Llama made by
transformers, with the stories260K tokenizer, converted to f32 GGUF by
llama.cpp's own convert_hf_to_gguf.py, gives transformers' logits in
llama.cpp; llama-perplexity's number equals the same protocol scored on
our forward's logits; llama-imatrix and llama-quantize write files gguf-py
reads back."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

import llama_cpp_peer as lcpp

lcpp.require()

from hf_fixtures import hf_logits, hf_perplexity, load_hf_model, make_tiny_model, random_ids, write_ids  # noqa: E402
from model_driver import our_logits, our_ppl, shared_data  # noqa: E402

# f32 end to end (f32 GGUF, f32 KV cache, no flash attention): the two sides
# differ only in kernels and summation order. Measured: max |diff| / max(1, max
# |logit|) = 8.4e-7 (AVX2 build); the bound leaves >100x headroom yet is far
# below what a wrong rope layout, norm or Q/K permutation gives (O(1)).
FP32_LOGIT_TOL = 1e-4  # max |llama.cpp - hf| <= 1e-4 * max(1, max |hf|)
# llama-perplexity prints 4 decimals; the like-for-like reference is fp32 noise away.
PPL_REL_TOL = 1e-4
CTX, CHUNKS = 128, 4
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(hf model dir, f32 GGUF): random Llama (GQA 4/2 heads, 2 layers) with vocab 512
    so the stories260K tokenizer fits it."""
    tokenizer_dir = shared_data() / "stories260k-hf"
    if not (tokenizer_dir / "tokenizer.json").exists():
        pytest.skip(f"{tokenizer_dir} not found")
    root = tmp_path_factory.mktemp("tiny")
    model_dir = make_tiny_model("llama", root / "hf", seed=3, vocab_size=512, bos_token_id=1, eos_token_id=2)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, model_dir / name)
    return model_dir, lcpp.convert_hf(model_dir, root / "tiny-f32.gguf")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    text = (shared_data() / "tinystories-valid" / "tinystories_val.txt").read_text()
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(text[:text.index("\n", 6000) + 1])
    return path


def test_gguf_py_reads_the_conversion(tiny):
    from safetensors.numpy import load_file

    model_dir, path = tiny
    reader = lcpp.gguf().GGUFReader(str(path))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 1 + 2 * 9  # embed, output, final norm; 9 per layer
    hf = load_file(str(model_dir / "model.safetensors"))
    for gguf_name, hf_name in [("token_embd.weight", "model.embed_tokens.weight"),
                               ("output.weight", "lm_head.weight"),
                               ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
                               ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight")]:
        data = np.asarray(tensors[gguf_name].data).reshape(hf[hf_name].shape)
        np.testing.assert_array_equal(data, hf[hf_name], err_msg=gguf_name)


def test_tokenizer_matches_transformers(tiny, text_file):
    from transformers import AutoTokenizer

    model_dir, path = tiny
    ids, bos = lcpp.perplexity_ids(path, text_file)
    text = text_file.read_text()[:-1]  # the tool drops one trailing newline
    assert ids == AutoTokenizer.from_pretrained(str(model_dir))(text)["input_ids"]
    assert bos == 1 and ids[0] == 1
    assert len(ids) >= CTX * CHUNKS


def test_logits_match_transformers(tiny, tmp_path):
    model_dir, path = tiny
    model = load_hf_model(model_dir)
    windows = random_ids(rows=3, tokens=48, vocab=512, seed=7)
    windows[0, 0] = 1  # one window starts with BOS, as llama.cpp's tools feed it
    worst = 0.0
    for row, ids in enumerate(windows):
        got = lcpp.logits(path, ids, tmp_path / f"w{row}.npy")
        ref = hf_logits(model_dir, ids[None], model=model)[0].numpy()
        assert got.shape == ref.shape == (48, 512)
        scale = max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(got - ref).max())
        worst = max(worst, diff / scale)
        assert diff <= FP32_LOGIT_TOL * scale, (row, diff, scale)
    print(f"max |llama.cpp - transformers| / max(1, max |logit|) = {worst:.3g}")


def test_perplexity_protocol(tiny, text_file, tmp_path):
    """llama-perplexity == its protocol scored on our forward's logits (like with like);
    gptq-quant benchmark ppl (every token of each window) == transformers on the same
    windows. The two protocols differ, so their values are recorded side by side."""
    model_dir, path = tiny
    theirs = lcpp.perplexity(path, text_file, CTX, CHUNKS)
    assert math.isfinite(theirs) and theirs > 1.0

    ids, bos = lcpp.perplexity_ids(path, text_file)
    windows = lcpp.perplexity_chunks(ids, CTX, CHUNKS, bos)
    assert windows.shape == (CHUNKS, CTX)
    logits = our_logits(model_dir, write_ids(tmp_path / "windows.json", windows), tmp_path / "logits.bin")
    nll = count = 0
    for row in range(CHUNKS):
        chunk_sum, chunk_count = lcpp.chunk_nll(logits[row], windows[row])
        nll += chunk_sum
        count += chunk_count
    assert count == CHUNKS * (CTX - CTX // 2 - 1)
    ours_llama_protocol = math.exp(nll / count)
    assert abs(ours_llama_protocol / theirs - 1) < PPL_REL_TOL, (ours_llama_protocol, theirs)

    flat = write_ids(tmp_path / "flat.json", windows.reshape(-1))
    ours_gptq_protocol = our_ppl(model_dir, "--tokens", flat, "--seqlen", CTX)
    ref = hf_perplexity(model_dir, windows.reshape(-1), seqlen=CTX)
    assert ours_gptq_protocol["n_windows"] == CHUNKS
    assert abs(ours_gptq_protocol["ppl"] / ref["ppl"] - 1) < 1e-3, (ours_gptq_protocol, ref)
    print(f"llama-perplexity {theirs:.4f}; our logits, same protocol {ours_llama_protocol:.4f}; "
          f"gptq-quant benchmark ppl (all {CTX - 1} tokens/window) {ours_gptq_protocol['ppl']:.4f}")


def test_imatrix_and_quantize(tiny, text_file, tmp_path):
    from safetensors.numpy import load_file

    model_dir, path = tiny
    gguf = lcpp.gguf()
    imatrix = lcpp.imatrix(path, text_file, tmp_path / "imatrix.gguf", CTX, CHUNKS)
    names = {t.name for t in gguf.GGUFReader(str(imatrix)).tensors}
    assert "blk.0.ffn_down.weight.in_sum2" in names, sorted(names)[:8]

    plain = lcpp.quantize(path, tmp_path / "q4_0.gguf", "q4_0")
    weighted = lcpp.quantize(path, tmp_path / "q4_0-imatrix.gguf", "Q4_0", imatrix=imatrix)
    want = load_file(str(model_dir / "model.safetensors"))["model.layers.1.mlp.down_proj.weight"]
    deq = {}
    for name, file in (("plain", plain), ("imatrix", weighted)):
        tensor = next(t for t in gguf.GGUFReader(str(file)).tensors if t.name == "blk.1.ffn_down.weight")
        assert tensor.tensor_type == gguf.GGMLQuantizationType.Q4_0
        deq[name] = gguf.dequantize(tensor.data, tensor.tensor_type).reshape(want.shape)
        rel = np.linalg.norm(deq[name] - want) / np.linalg.norm(want)
        assert rel < 0.15, (name, rel)  # 4-bit, 32-wide blocks of Gaussian weights: ~0.1
    assert not np.array_equal(deq["plain"], deq["imatrix"])  # the imatrix was used

    for file in (plain, weighted):
        value = lcpp.perplexity(file, text_file, CTX, CHUNKS)
        assert math.isfinite(value) and value > 1.0
