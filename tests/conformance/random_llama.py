"""Random bf16 Llama checkpoints written straight with safetensors (no
transformers model is built, so gigabyte checkpoints take seconds): for
memory and speed measurements, where the weights' values do not matter."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def make_random_llama(out: Path, layers: int, hidden: int, inter: int, vocab: int, seed: int = 0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)

    def weight(*shape):
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)

    tensors = {"model.embed_tokens.weight": weight(vocab, hidden), "lm_head.weight": weight(vocab, hidden),
               "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[prefix + f"self_attn.{name}.weight"] = weight(hidden, hidden)
        tensors[prefix + "mlp.gate_proj.weight"] = weight(inter, hidden)
        tensors[prefix + "mlp.up_proj.weight"] = weight(inter, hidden)
        tensors[prefix + "mlp.down_proj.weight"] = weight(hidden, inter)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[prefix + f"{norm}.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": hidden // 128,
        "num_key_value_heads": hidden // 128, "head_dim": 128, "vocab_size": vocab, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
        "tie_word_embeddings": False, "hidden_act": "silu"}, indent=2))
    return out
