"""Our block-by-block forward gives transformers' logits for every supported
architecture (tiny random checkpoints made by transformers: the dense
families, Phi-3's fused linears, Gemma-2/3's norms, soft-caps and per-layer
RoPE, the MoE families) and for the real trained stories260K model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf_fixtures import MOE_VARIANTS, hf_logits, make_tiny_model, random_ids, write_ids
from model_driver import our_logits, shared_data

# fp32: same math, different kernels: max |ours - hf| <= 1e-4 * max(1, max |hf|).
FP32_LOGIT_TOL = 1e-4
# bf16: both sides round every op to bf16 (8 bits of mantissa, eps 2^-8); kernels
# differ in accumulation order, so a few bf16 ulps of the logit scale over two
# layers: max |ours - hf| <= 8 * 2^-8 * max(1, max |hf|), and the two stay as
# close to the fp32 logits as transformers' own bf16 run does (within 2x + 1 ulp).
BF16_LOGIT_TOL = 8 * 2.0 ** -8

CASES = [("llama", "float32"), ("llama", "bfloat16"), ("llama-tied", "float32"),
         ("llama3", "float32"), ("llama3", "bfloat16"), ("mistral", "float32"),
         ("qwen2", "float32"), ("qwen2", "bfloat16"), ("qwen3", "float32"), ("qwen3", "bfloat16"),
         ("phi3", "float32"), ("phi3", "bfloat16"), ("gemma2", "float32"), ("gemma2", "bfloat16"),
         ("gemma3", "float32"), ("gemma3", "bfloat16")]
# MoE: bf16 too, where a routing flip (a tie broken differently after one
# differently rounded op) would show up as a large logit error.
CASES += [(arch, dtype) for arch in MOE_VARIANTS for dtype in ("float32", "bfloat16")]
CASES += [("llama-yarn", "float32"), ("deepseek-v3-yarn", "float32"), ("deepseek-v3-yarn", "bfloat16")]


@pytest.fixture(scope="module")
def ids_file(tmp_path_factory):
    # 40 tokens: longer than mistral's sliding window (16) and llama3's original context (32).
    ids = random_ids(rows=3, tokens=40, vocab=320, seed=3)
    return ids, write_ids(tmp_path_factory.mktemp("ids") / "ids.json", ids)


@pytest.mark.parametrize("arch,dtype", CASES, ids=[f"{a}-{d}" for a, d in CASES])
def test_logits_match_transformers(arch, dtype, ids_file, tmp_path):
    ids, path = ids_file
    model_dir = make_tiny_model(arch, tmp_path / "model", dtype=dtype, seed=11)
    ours = our_logits(model_dir, path, tmp_path / "logits.bin")
    ref = hf_logits(model_dir, ids).numpy()
    assert ours.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    diff = float(np.abs(ours - ref).max())
    if dtype == "float32":
        assert diff <= FP32_LOGIT_TOL * scale, f"max diff {diff} (scale {scale})"
        return
    assert diff <= BF16_LOGIT_TOL * scale, f"max diff {diff} (scale {scale})"
    exact = hf_logits(model_dir, ids, dtype="float32").numpy()
    ours_err = float(np.abs(ours - exact).max())
    hf_err = float(np.abs(ref - exact).max())
    assert ours_err <= 2 * hf_err + 2.0 ** -8 * scale, f"bf16 error {ours_err} vs transformers' {hf_err}"


def test_tied_checkpoint_has_no_lm_head(tmp_path):
    from safetensors import safe_open

    model_dir = make_tiny_model("llama-tied", tmp_path / "m")
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()


def test_stories260k_matches_golden_and_transformers(tmp_path):
    data = shared_data()
    model_dir = data / "stories260k-hf"
    golden = json.loads((data / "stories260k" / "golden.json").read_text())
    ids = torch.tensor([golden["prompt_ids_with_bos"]])
    ours = our_logits(model_dir, write_ids(tmp_path / "ids.json", ids), tmp_path / "l.bin")
    ref = hf_logits(model_dir, ids).numpy()
    scale = max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(ours - ref).max()) <= FP32_LOGIT_TOL * scale
    probs = torch.softmax(torch.from_numpy(ours[0, -1]).double(), -1)
    for entry in golden["next_token_top10_after_prompt"]:
        assert abs(probs[entry["id"]].item() - entry["p"]) < 1e-5, entry
    top = torch.topk(probs, 10).indices.tolist()
    assert top == [entry["id"] for entry in golden["next_token_top10_after_prompt"]]
