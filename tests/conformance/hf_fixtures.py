"""Tiny but real Hugging Face checkpoints and transformers-side references.

Shared by the conformance tests (model, quantize, ...). Every model is made by
transformers itself (``save_pretrained``, safetensors) from a fixed seed, so a
checkpoint is reproducible and loads in any HF-compatible tool.

    from hf_fixtures import make_tiny_model, hf_logits, hf_perplexity
    path = make_tiny_model("qwen3", tmp_path / "q3", dtype="bfloat16")

Variants (``VARIANTS``): each stresses one feature of the block forward.
  llama        GQA (4 heads, 2 kv heads), untied lm_head
  llama-tied   tie_word_embeddings=True (no lm_head.weight in the file)
  llama3       rope_type llama3 (original context 32 so every band is hit),
               rope_theta 500000, attention_bias and mlp_bias
  llama-yarn   rope_type yarn (factor 8, original context 64, beta 16/2: cos/sin scaled by 1.21)
  mistral      sliding_window=16 (shorter than the test sequences), 6/2 heads
  qwen2        q/k/v bias, tied embeddings
  qwen3        q/k RMSNorm per head, head_dim 32 != hidden/heads
  phi3         fused qkv_proj and gate_up_proj, partial rotary (0.5 of head_dim), sliding_window 16
  gemma2       (1+w) norms, sandwich norms, GeGLU-tanh, attention and logit soft-capping
               (low caps so they bite), query_pre_attn_scalar 24, sliding layer 0 (window 16), untied head
  gemma3       gemma2 without soft-caps, (1+w) q/k norms per head, sliding layers 0-2 with
               their own RoPE theta, full layer 3 with linear RoPE scaling, tied head
MoE (8 experts, top-2 unless noted; expert width 48 != dense width 160):
  mixtral      block_sparse_moe.experts.N.w1/w2/w3, always renormalised top-k, sliding window 16
  qwen2-moe    shared expert with sigmoid gate, layer 1 dense (mlp_only_layers), tied embeddings
  qwen3-moe    norm_topk_prob, top-3, every second layer sparse (decoder_sparse_step 2), 4 layers
  olmoe        q/k norm over the whole projection, clip_qkv
  deepseek-v3  MLA (q_lora_rank 48, kv_lora_rank 32, nope 16 / rope 8 / v 20 per head: widths
               a group of 16 divides, all different), interleaved RoPE,
               layer 0 dense (first_k_dense_replace 1), 12 experts in
               4 groups (topk_group 2), top-3, 2 shared experts, routed_scaling_factor 2.5,
               a nonzero e_score_correction_bias, 3 layers
  deepseek-v3-noq  the same with q_lora_rank null (a plain q_proj) and rotate_half RoPE
  deepseek-v3-yarn  deepseek-v3 with YaRN RoPE (factor 4, mscale 0.707, mscale_all_dim 1)
Norm weights and biases are randomized too (HF initializes them to 1 and 0,
which would hide a missing norm weight or bias).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

_COMMON = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=320, max_position_embeddings=256,
               rms_norm_eps=1e-5, initializer_range=0.1, tie_word_embeddings=False)

VARIANTS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", {
        "attention_bias": True, "mlp_bias": True,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 32}}),
    "llama-yarn": ("LlamaConfig", "LlamaForCausalLM", {
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                            "original_max_position_embeddings": 64, "beta_fast": 16, "beta_slow": 2}}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {
        "hidden_size": 96, "num_attention_heads": 6, "num_key_value_heads": 2, "sliding_window": 16}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 32}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {
        "sliding_window": 16, "pad_token_id": 0, "eos_token_id": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {
        "head_dim": 24, "query_pre_attn_scalar": 24, "sliding_window": 16, "attn_logit_softcapping": 2.0,
        "final_logit_softcapping": 3.0, "tie_word_embeddings": False}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {
        "head_dim": 24, "query_pre_attn_scalar": 20, "sliding_window": 16, "num_hidden_layers": 4,
        "sliding_window_pattern": 4, "tie_word_embeddings": True,
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                            "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0}}}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {
        "intermediate_size": 48, "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": 16}),
    "qwen2-moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {
        "moe_intermediate_size": 48, "shared_expert_intermediate_size": 80, "num_experts": 8,
        "num_experts_per_tok": 2, "mlp_only_layers": [1], "tie_word_embeddings": True}),
    "qwen3-moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", {
        "moe_intermediate_size": 48, "num_experts": 8, "num_experts_per_tok": 3, "norm_topk_prob": True,
        "decoder_sparse_step": 2, "num_hidden_layers": 4, "head_dim": 32}),
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", {
        "intermediate_size": 48, "num_experts": 8, "num_experts_per_tok": 2, "clip_qkv": 3.0}),
}

_DEEPSEEK = {"moe_intermediate_size": 48, "n_routed_experts": 12, "n_shared_experts": 2, "num_experts_per_tok": 3,
             "n_group": 4, "topk_group": 2, "first_k_dense_replace": 1, "routed_scaling_factor": 2.5,
             "norm_topk_prob": True, "num_hidden_layers": 3, "num_key_value_heads": 4, "kv_lora_rank": 32,
             "q_lora_rank": 48, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 20,
             "rope_interleave": True}
VARIANTS["deepseek-v3"] = ("DeepseekV3Config", "DeepseekV3ForCausalLM", _DEEPSEEK)
VARIANTS["deepseek-v3-noq"] = ("DeepseekV3Config", "DeepseekV3ForCausalLM",
                               dict(_DEEPSEEK, q_lora_rank=None, rope_interleave=False))
# YaRN over a correction range that ramps (dims 0-2 of 4), mscale != mscale_all_dim
# so cos/sin are scaled too, and the scores by mscale_all_dim's mscale^2.
VARIANTS["deepseek-v3-yarn"] = ("DeepseekV3Config", "DeepseekV3ForCausalLM", dict(
    _DEEPSEEK, rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                "original_max_position_embeddings": 256, "beta_fast": 32, "beta_slow": 1,
                                "mscale": 0.707, "mscale_all_dim": 1.0}))

MOE_VARIANTS = ("mixtral", "qwen2-moe", "qwen3-moe", "olmoe", "deepseek-v3", "deepseek-v3-noq")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_tiny_model(arch: str, out_dir, dtype: str = "float32", seed: int = 0, **overrides) -> Path:
    """Writes a random tiny checkpoint of `arch` (a VARIANTS key) to `out_dir`.

    `overrides` go into the config (e.g. num_hidden_layers=4). Returns out_dir.
    """
    import transformers

    config_name, model_name, extra = VARIANTS[arch]
    kwargs = dict(_COMMON)
    kwargs.update(extra)
    kwargs.update(overrides)
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                base = 1.0 if name.endswith("norm.weight") else 0.0
                param.copy_(base + 0.2 * torch.randn_like(param))
        # DeepSeek's score-correction bias is a buffer that init leaves at zero.
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(0.2 * torch.randn_like(buffer))
    model = model.to(DTYPES[dtype]).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def load_hf_model(model_dir, dtype: str | None = None):
    """AutoModelForCausalLM on CPU in `dtype` (default: the checkpoint's), sdpa attention
    (eager for Gemma-2, whose soft-capped attention sdpa cannot run)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = AutoConfig.from_pretrained(str(model_dir)).model_type
    kwargs = {"attn_implementation": "eager" if model_type == "gemma2" else "sdpa"}
    kwargs["dtype"] = DTYPES[dtype] if dtype else "auto"
    return AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs).eval()


@torch.no_grad()
def hf_logits(model_dir, ids, dtype: str | None = None, model=None) -> torch.Tensor:
    """float32 logits [rows, T, vocab] of transformers for `ids` [rows, T]."""
    model = model or load_hf_model(model_dir, dtype)
    ids = torch.as_tensor(ids, dtype=torch.long)
    return model(input_ids=ids).logits.float()


@torch.no_grad()
def hf_perplexity(model_dir, ids, seqlen: int, dtype: str | None = None, max_windows: int = 0,
                  model=None) -> dict:
    """The GPTQ paper's perplexity: n = len(ids) // seqlen windows, each scored alone."""
    model = model or load_hf_model(model_dir, dtype)
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    n_windows = ids.numel() // seqlen
    if max_windows:
        n_windows = min(n_windows, max_windows)
    nll_sum = 0.0
    for window in range(n_windows):
        batch = ids[window * seqlen:(window + 1) * seqlen].unsqueeze(0)
        logits = model(input_ids=batch).logits.float()[0, :-1]
        nll_sum += torch.nn.functional.cross_entropy(logits, batch[0, 1:], reduction="sum").item()
    mean_nll = nll_sum / (n_windows * (seqlen - 1))
    return {"ppl": float(torch.tensor(mean_nll).exp()), "mean_nll": mean_nll, "n_windows": n_windows}


def write_ids(path, ids) -> Path:
    """Writes ids as a JSON list (flat, or a list of rows) for --tokens / the tools."""
    path = Path(path)
    path.write_text(json.dumps(torch.as_tensor(ids).tolist()))
    return path


def random_ids(rows: int, tokens: int, vocab: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (rows, tokens), generator=generator)
