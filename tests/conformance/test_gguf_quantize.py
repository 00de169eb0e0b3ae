"""`quantize --format gguf` against llama.cpp itself, on a Llama trained on
TinyStories (256 wide, so every K-quant super-block is whole):

- llama.cpp loads every GGUF type we write, and its logits equal transformers'
  on the weights gguf-py decodes from our file (Q/K rows un-permuted), up to
  llama.cpp quantizing activations for its quantized dot products;
- gguf-py's dequantizer and ours agree bit for bit on every tensor of our file;
- quality against the real peer, same fp16 model and same calibration text:
  the KL divergence from the f16 file's next-token distribution of our Q4_0
  below llama-quantize's Q4_0, of our Q4_K_M at or below llama-quantize's
  Q4_K_M made with an imatrix from that text (perplexity by llama-perplexity
  recorded beside it);
- bad input: a family GGUF has no mapping for, an existing output, act-order
  without static groups on the 32-column types: exit 2, one line, nothing left.
The measured table is written to gguf_quality.json in the build directory
(docs/benchmarks.md quotes it)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import llama_cpp_peer as lcpp

lcpp.require()

from hf_fixtures import hf_logits, make_tiny_model  # noqa: E402
from model_driver import run_cli, shared_data, tool  # noqa: E402
from quant_fixtures import encode, stories_text, train_tiny_llama  # noqa: E402

TYPES = ("q4_0", "q4_1", "q8_0", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m")
CTX = 128
CALIB_WINDOWS = 64
EVAL_CHUNKS = 40
# llama.cpp quantizes the activations of every quantized matmul to 8 bits
# (Q8_0 / Q8_K), so its logits on the very weights we decoded differ from an
# fp32 forward by that rounding: measured max |diff| / max(1, max |logit|)
# 2e-3 (q8_0) to 1.2e-2 (q4_k) on this fixture; a wrong permutation, norm or
# tensor swaps the ranking of logits entirely (O(1)).
LOGIT_TOL = 0.05


def _text_files(root: Path) -> tuple[Path, Path]:
    text = stories_text()
    calib = root / "calib.txt"
    calib.write_text(text[:120_000])
    evaluation = root / "eval.txt"
    evaluation.write_text(text[500_000:560_000])
    return calib, evaluation


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(fp16 HF model dir, f16 GGUF by convert_hf_to_gguf.py, calibration text, evaluation text)."""
    if not (shared_data() / "stories260k-hf" / "tokenizer.json").exists():
        pytest.skip(f"{shared_data() / 'stories260k-hf'} not found")
    root = tmp_path_factory.mktemp("gguf")
    text = stories_text()
    fp32_dir = train_tiny_llama(root / "fp32", encode(text[:400_000]), steps=250, seed=1, hidden=256,
                                intermediate=512)
    # Both sides start from the same fp16 weights: llama-quantize from the
    # converter's f16 file, we from this fp16 checkpoint (computing in fp32).
    from transformers import AutoModelForCausalLM
    model16 = root / "fp16"
    AutoModelForCausalLM.from_pretrained(fp32_dir, dtype=torch.float16).save_pretrained(model16)
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (model16 / name).write_bytes((fp32_dir / name).read_bytes())
    f16 = lcpp.convert_hf(model16, root / "f16.gguf", "f16")
    calib, evaluation = _text_files(root)
    return model16, f16, calib, evaluation, root


def ours(trained, gguf_type: str, *extra, name: str | None = None) -> tuple[Path, float]:
    model16, _, calib, _, root = trained
    out = root / f"ours-{name or gguf_type}.gguf"
    if out.exists():
        return out, 0.0
    start = time.perf_counter()
    proc = run_cli("quantize", "--model", model16, "--output", out, "--format", "gguf", "--gguf-type", gguf_type,
                   "--calib", calib, "--nsamples", CALIB_WINDOWS, "--seqlen", CTX, "--dtype", "fp32",
                   "--device", "cpu", *extra)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, time.perf_counter() - start


def unpermute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of convert_hf_to_gguf's LlamaModel.permute on the rows of a Q or K weight."""
    shape = rows.shape
    return rows.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def decoded_state_dict(gguf_path: Path, config: dict) -> dict:
    """The HF state dict whose weights are what gguf-py decodes from the file."""
    gguf = lcpp.gguf()
    reader = gguf.GGUFReader(str(gguf_path))
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_block = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                 "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
    state = {}
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        shape = [int(x) for x in reversed(tensor.shape.tolist())]
        values = np.asarray(values, dtype=np.float32).reshape(shape)
        name = tensor.name
        if name.startswith("blk."):
            _, layer, part, suffix = name.split(".", 3)
            if part == "attn_q":
                values = unpermute(values, config["num_attention_heads"])
            elif part == "attn_k":
                values = unpermute(values, config["num_key_value_heads"])
            state[f"model.layers.{layer}.{per_block[part]}.{suffix}"] = torch.from_numpy(values.copy())
        else:
            state[names[name]] = torch.from_numpy(values.copy())
    return state


def logits_on_state(model_dir: Path, state: dict, ids: torch.Tensor) -> np.ndarray:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(name == "lm_head.weight" for name in missing), (missing, unexpected)
    model.eval()
    with torch.no_grad():
        return model(ids).logits[0].numpy()


@pytest.mark.parametrize("gguf_type", TYPES)
def test_llama_cpp_loads_our_file_and_its_logits_match_the_decoded_weights(trained, gguf_type):
    model16 = trained[0]
    path, _ = ours(trained, gguf_type)
    config = json.loads((model16 / "config.json").read_text())
    ids = encode(stories_text()[600_000:602_000])[:96]
    theirs = lcpp.logits(path, ids)
    ref = logits_on_state(model16, decoded_state_dict(path, config), torch.tensor([ids]))
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(theirs - ref).max()) / scale
    print(f"{gguf_type}: max |llama.cpp - decoded forward| / scale = {err:.2e}")
    assert err <= LOGIT_TOL, err
    # The same next-token choice almost everywhere.
    agree = float(np.mean(theirs.argmax(-1) == ref.argmax(-1)))
    assert agree >= 0.95, agree


@pytest.mark.parametrize("gguf_type", ("q4_0", "q4_k_m"))
def test_our_decoder_equals_gguf_py_on_every_tensor(trained, gguf_type, tmp_path):
    path, _ = ours(trained, gguf_type)
    out = tmp_path / "decoded.safetensors"
    proc = __import__("subprocess").run([str(tool("gguf_dequantize")), str(path), str(out)], capture_output=True,
                                        text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.numpy import load_file
    mine = load_file(str(out))
    gguf = lcpp.gguf()
    reader = gguf.GGUFReader(str(path))
    assert sorted(mine) == sorted(t.name for t in reader.tensors)
    for tensor in reader.tensors:
        theirs = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        np.testing.assert_array_equal(mine[tensor.name].reshape(theirs.shape).view(np.uint32),
                                      theirs.view(np.uint32), err_msg=tensor.name)


KLD_WINDOWS = 8


def log_probs(path: Path, windows: list[list[int]]) -> np.ndarray:
    """llama.cpp's log-softmax at every position of each window, stacked."""
    out = []
    for window in windows:
        logits = lcpp.logits(path, window).astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        out.append(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))
    return np.concatenate(out)


def test_quality_against_llama_quantize(trained):
    """Perplexity by llama-perplexity (recorded; at this scale 4-bit moves it by less than its own noise: the
    imatrix Q4_K_M scores below f16 itself), and the mean KL divergence of each file's next-token distribution
    from the f16 file's, on held-out windows, which is what quantization quality is (llama.cpp's own quant
    benchmarks report it): ours must be below llama-quantize's for Q4_0 and for Q4_K_M with an imatrix made
    from the same calibration text."""
    model16, f16, calib, evaluation, root = trained
    table = {}
    ids = encode(stories_text()[600_000:640_000])
    bos = 1
    windows = [[bos] + ids[start:start + CTX - 1] for start in range(0, KLD_WINDOWS * CTX, CTX)]
    reference = log_probs(f16, windows)
    probs = np.exp(reference)

    def record(label, path, seconds):
        entry = {"ppl": lcpp.perplexity(path, evaluation, CTX, EVAL_CHUNKS), "seconds": round(seconds, 2),
                 "bytes": path.stat().st_size}
        if path != f16:
            theirs = log_probs(path, windows)
            entry["kld"] = float((probs * (reference - theirs)).sum(-1).mean())
            entry["top1"] = float((reference.argmax(-1) == theirs.argmax(-1)).mean())
        table[label] = entry

    record("f16 (convert_hf_to_gguf)", f16, 0.0)
    start = time.perf_counter()
    peer_q4_0 = lcpp.quantize(f16, root / "peer-q4_0.gguf", "Q4_0")
    record("llama-quantize Q4_0", peer_q4_0, time.perf_counter() - start)
    start = time.perf_counter()
    imatrix = lcpp.imatrix(f16, calib, root / "imatrix.gguf", CTX, CALIB_WINDOWS)
    imatrix_s = time.perf_counter() - start
    start = time.perf_counter()
    peer_q4_k_m = lcpp.quantize(f16, root / "peer-q4_k_m-imatrix.gguf", "Q4_K_M", imatrix=imatrix)
    record("llama-quantize Q4_K_M + imatrix", peer_q4_k_m, imatrix_s + time.perf_counter() - start)
    start = time.perf_counter()
    peer_q4_k_m_plain = lcpp.quantize(f16, root / "peer-q4_k_m.gguf", "Q4_K_M")
    record("llama-quantize Q4_K_M", peer_q4_k_m_plain, time.perf_counter() - start)
    for gguf_type in ("q4_0", "q4_k_m"):
        path, seconds = ours(trained, gguf_type, name=f"{gguf_type}-timed")
        record(f"gptq-quant {gguf_type.upper()}", path, seconds)
    report = Path(os.environ.get("GPTQ_BUILD_DIR", ".")) / "gguf_quality.json"
    report.write_text(json.dumps(table, indent=2))
    print(json.dumps(table, indent=2))
    assert table["gptq-quant Q4_0"]["kld"] < table["llama-quantize Q4_0"]["kld"], table
    assert table["gptq-quant Q4_K_M"]["kld"] <= table["llama-quantize Q4_K_M + imatrix"]["kld"], table
    # The same tensor types as llama-quantize's: the files are the same size.
    assert table["gptq-quant Q4_K_M"]["bytes"] == pytest.approx(table["llama-quantize Q4_K_M"]["bytes"], rel=0.01)
    assert table["gptq-quant Q4_0"]["bytes"] == pytest.approx(table["llama-quantize Q4_0"]["bytes"], rel=0.01)


def _refused(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in last, last


def test_bad_input_exits_2_and_leaves_nothing(trained, tmp_path):
    model16, _, calib, _, _ = trained
    common = ("--format", "gguf", "--calib", calib, "--nsamples", 4, "--seqlen", 32, "--device", "cpu")
    # An existing output file.
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"keep me")
    _refused(run_cli("quantize", "--model", model16, "--output", existing, "--gguf-type", "q4_0", *common),
             str(existing))
    assert existing.read_bytes() == b"keep me"
    # Act-order on 32-column blocks needs static groups.
    out = tmp_path / "desc.gguf"
    _refused(run_cli("quantize", "--model", model16, "--output", out, "--gguf-type", "q4_0", "--desc-act",
                     *common), "--static-groups")
    # An unknown file type.
    _refused(run_cli("quantize", "--model", model16, "--output", out, "--gguf-type", "q3_xs", *common), "q3_xs")
    # A family GGUF has no mapping for.
    gemma = make_tiny_model("gemma2", tmp_path / "gemma2")
    _refused(run_cli("quantize", "--model", gemma, "--output", out, "--gguf-type", "q4_0", *common),
             "config.json")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("exists.gguf", "gemma2")]
    assert leftovers == [], leftovers
