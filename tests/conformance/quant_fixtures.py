"""Helpers for the quantize conformance tests: run `gptq-quant quantize/rtn`,
read a GPTQ v1 checkpoint back into float weights (an independent unpacker
written from the format description), train a tiny Llama briefly, score
perplexity with transformers on any set of weights, and load a checkpoint in
GPTQModel (in a fresh interpreter)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hf_fixtures import hf_perplexity, load_hf_model
from model_driver import run_cli, shared_data

# v1 stores packed (zero - 1); GPTQModel subtracts this word from each packed
# zero word, so we add it back before unpacking.
_V1_ZERO_WORD = {2: 0x55555555, 4: 0x11111111, 8: 0x01010101}


def quantize(model_dir, out_dir, *args, method="quantize", check=True):
    proc = run_cli(method, "--model", model_dir, "--output", out_dir, "--device", "cpu", *args)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _unpack_rows(words: np.ndarray, bits: int) -> np.ndarray:
    """int32 [rows, n_words] -> codes [rows, n_words * 32 / bits] (bit-stream order)."""
    per_word = 32 // bits
    words = words.astype(np.uint32)
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)
    codes = (words[..., None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(words.shape[0], -1).astype(np.int64)


def module_bits(qweight, g_idx) -> int:
    """Bits of one packed linear from its shapes: qweight [in * bits / 32, out]."""
    return int(qweight.shape[0]) * 32 // int(len(g_idx))


def dequantize_checkpoint(out_dir) -> dict:
    """Every tensor of a GPTQ v1 checkpoint, with each quantized linear's
    "<prefix>.weight" rebuilt as float32 (code - zero[g_idx]) * scale[g_idx].
    Each linear's bits come from its own shapes (qweight rows x 32 / in
    features), so mixed-precision checkpoints read back without trusting
    quantization_config."""
    out_dir = Path(out_dir)
    tensors = {}
    for shard in sorted(out_dir.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    state = {}
    for name, tensor in tensors.items():
        if name.endswith(".qweight"):
            prefix = name[: -len(".qweight")]
            qweight = tensors[name].numpy()
            qzeros = tensors[prefix + ".qzeros"].numpy().astype(np.uint32)
            scales = tensors[prefix + ".scales"].float().numpy()
            g_idx = tensors[prefix + ".g_idx"].numpy().astype(np.int64)
            bits = module_bits(qweight, g_idx)
            assert bits in _V1_ZERO_WORD, f"{prefix}: this reader handles 2/4/8 bits, found {bits}"
            codes = _unpack_rows(qweight.T.copy(), bits)  # [out, in]
            zero_words = (qzeros.astype(np.uint64) + _V1_ZERO_WORD[bits]) % (1 << 32)
            zeros = _unpack_rows(zero_words.astype(np.uint32).view(np.int32), bits)  # [G, out]
            weight = (codes - zeros[g_idx].T) * scales[g_idx].T
            state[prefix + ".weight"] = torch.from_numpy(weight.astype(np.float32))
        elif not name.endswith((".qzeros", ".scales", ".g_idx")):
            state[name] = tensors[name].float()
    return state


def perplexity(model_dir, ids, seqlen, state=None, max_windows=0) -> float:
    """transformers' perplexity of `model_dir`'s architecture with `state` loaded."""
    model = load_hf_model(model_dir, "float32")
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        assert all("rotary" in name for name in missing), missing
    return hf_perplexity(model_dir, ids, seqlen=seqlen, model=model, max_windows=max_windows)["ppl"]


def stories_text() -> str:
    return (shared_data() / "tinystories-valid" / "tinystories_val.txt").read_text()


def stories_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(shared_data() / "stories260k-hf" / "tokenizer.json"))


def encode(text: str) -> list[int]:
    return stories_tokenizer().encode(text, add_special_tokens=False).ids


def windows(ids, n_samples, seqlen, seed=0) -> list[list[int]]:
    """Random windows (start in [0, n - seqlen)) as a JSON-ready list of lists."""
    generator = np.random.default_rng(seed)
    starts = generator.integers(0, len(ids) - seqlen, size=n_samples)
    return [list(map(int, ids[start:start + seqlen])) for start in starts]


def train_tiny_llama(out_dir, ids, steps=300, seed=0, hidden=64, intermediate=128, layers=2) -> Path:
    """A small Llama with the stories260K tokenizer trained briefly on `ids`
    (about half a minute on 2 CPU cores); saved with its tokenizer files."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=512, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    data = torch.tensor(ids, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    seqlen, batch = 128, 16
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - seqlen - 1, (batch,), generator=generator)
        x = torch.stack([data[s:s + seqlen] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    source = shared_data() / "stories260k-hf"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
        shutil.copy(source / name, out_dir / name)
    return out_dir


def save_word_tokenizer(model_dir: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0")
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(words), unk_token="t0").save_pretrained(model_dir)


def gptqmodel_logits(model_dir: Path, ids_file: Path, out_file: Path) -> np.ndarray:
    """GPTQModel.load(backend="torch", fp16) logits, in a fresh interpreter:
    GPTQModel swaps transformers' fused MoE blocks for per-expert linears when
    imported, and a process that already built a MoE model from transformers
    (the fixture) loads some experts uninitialized (NaN logits, seen here)."""
    script = (
        "import json, sys, numpy, torch\n"
        "from gptqmodel import GPTQModel\n"
        "model = GPTQModel.load(sys.argv[1], device='cpu', backend='torch', dtype=torch.float16)\n"
        "ids = torch.tensor(json.load(open(sys.argv[2])))\n"
        "with torch.no_grad():\n"
        "    numpy.save(sys.argv[3], model.model(input_ids=ids).logits.float().numpy())\n")
    env = dict(os.environ, GPTQMODEL_CPU_WORKERS=os.environ.get("GPTQMODEL_CPU_WORKERS", "2"))
    proc = subprocess.run([sys.executable, "-c", script, str(model_dir), str(ids_file), str(out_file)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return np.load(out_file)


def unpacked_codes(out_dir, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes [out, in], g_idx [in]) of one packed linear, read from the tensors alone."""
    return all_unpacked_codes(out_dir)[prefix]


def all_unpacked_codes(out_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """unpacked_codes of every packed linear of a checkpoint, keyed by its prefix."""
    tensors = {}
    for shard in sorted(Path(out_dir).glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    unpacked = {}
    for name, tensor in tensors.items():
        if name.endswith(".qweight"):
            prefix = name[: -len(".qweight")]
            qweight, g_idx = tensor.numpy(), tensors[prefix + ".g_idx"].numpy().astype(np.int64)
            unpacked[prefix] = _unpack_rows(qweight.T.copy(), module_bits(qweight, g_idx)), g_idx
    return unpacked


def write_dequantized(model_dir: Path, quantized: Path, dest: Path) -> Path:
    """The GPTQ checkpoint's weights, dequantized, as a plain checkpoint with
    the source's config (transformers fuses MoE per-expert tensors on load);
    a quantized lm_head of a tied model stays untied, as the output says."""
    dest.mkdir()
    config = json.loads((model_dir / "config.json").read_text())
    if not json.loads((Path(quantized) / "config.json").read_text()).get("tie_word_embeddings", True):
        config["tie_word_embeddings"] = False
    (dest / "config.json").write_text(json.dumps(config))
    state = {name: tensor.contiguous() for name, tensor in dequantize_checkpoint(quantized).items()}
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest
