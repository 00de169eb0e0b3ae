"""`gptq-quant benchmark ppl` equals a transformers-computed perplexity on the
same windows (GPTQ paper protocol) within 0.1 %."""
from __future__ import annotations

import pytest

from hf_fixtures import hf_perplexity, load_hf_model, make_tiny_model, random_ids, write_ids
from model_driver import our_ppl, shared_data

PPL_REL_TOL = 1e-3  # 0.1 %


def tinystories_prefix(n_chars: int) -> str:
    """Whole lines of the validation text, about n_chars of them."""
    text = (shared_data() / "tinystories-valid" / "tinystories_val.txt").read_text()
    return text[:text.index("\n", n_chars) + 1]


def test_stories260k_tokens(tmp_path):
    from transformers import AutoTokenizer

    model_dir = shared_data() / "stories260k-hf"
    text = tinystories_prefix(40000)
    ids = AutoTokenizer.from_pretrained(str(model_dir))(text)["input_ids"]
    ours = our_ppl(model_dir, "--tokens", write_ids(tmp_path / "ids.json", ids), "--seqlen", 256)
    ref = hf_perplexity(model_dir, ids, seqlen=256)
    assert ours["n_windows"] == ref["n_windows"] == len(ids) // 256
    assert ours["n_tokens"] == len(ids)
    assert abs(ours["ppl"] / ref["ppl"] - 1) < PPL_REL_TOL, (ours, ref)
    assert 1.0 < ours["ppl"] < 20.0  # a trained model on its own domain


def test_stories260k_text_tokenized_by_us(tmp_path):
    from transformers import AutoTokenizer

    model_dir = shared_data() / "stories260k-hf"
    text = tinystories_prefix(20000)
    text_file = tmp_path / "text.txt"
    text_file.write_text(text)
    ids = AutoTokenizer.from_pretrained(str(model_dir))(text)["input_ids"]
    ours = our_ppl(model_dir, "--text", text_file, "--seqlen", 128, "--max-windows", 20)
    ref = hf_perplexity(model_dir, ids, seqlen=128, max_windows=20)
    assert ours["n_tokens"] == len(ids)
    assert ours["n_windows"] == ref["n_windows"] == 20
    assert abs(ours["ppl"] / ref["ppl"] - 1) < PPL_REL_TOL, (ours, ref)


@pytest.mark.parametrize("arch,dtype", [("llama", "float32"), ("qwen3", "bfloat16"), ("mixtral", "float32"),
                                        ("qwen2-moe", "bfloat16"), ("qwen3-moe", "float32"),
                                        ("olmoe", "float32"), ("phi3", "float32"),
                                        ("gemma2", "bfloat16"), ("gemma3", "float32"),
                                        ("deepseek-v3", "bfloat16"), ("deepseek-v3-noq", "float32")])
def test_tiny_model_tokens(arch, dtype, tmp_path):
    model_dir = make_tiny_model(arch, tmp_path / "m", dtype=dtype, seed=5)
    ids = random_ids(1, 64 * 6 + 17, 320, seed=9).flatten()  # tail shorter than a window is dropped
    ours = our_ppl(model_dir, "--tokens", write_ids(tmp_path / "ids.json", ids), "--seqlen", 64)
    model = load_hf_model(model_dir)
    ref = hf_perplexity(model_dir, ids, seqlen=64, model=model)
    assert ours["n_windows"] == 6 and ours["seqlen"] == 64
    assert ours["dtype"] == dtype and ours["device"] == "cpu"
    assert abs(ours["ppl"] / ref["ppl"] - 1) < PPL_REL_TOL, (ours, ref)
    for key in ("tokens_per_s", "load_s", "peak_rss_bytes"):
        assert ours[key] > 0
