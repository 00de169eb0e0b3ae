"""`gptq-quant convert` against the peers:

- --to gguf re-encodes a GPTQ checkpoint of 4-bit symmetric groups of 32 as
  Q4_0 code for code: gguf-py's dequantization of every linear (Q/K rows
  un-permuted) equals an independent unpack of the GPTQ tensors bit for bit,
  and llama.cpp's logits on the file equal transformers' on those weights up
  to llama.cpp's 8-bit activation rounding; asymmetric groups become Q4_1 (or
  are refused, naming the groups fp16 cannot hold); schemes without an exact
  encoding (group 128) are refused with the quantize command that works;
- --to gptq_v2 and back to gptq gives the same tensors; an asymmetric v2
  zero of 0 is refused for v1 with the count of such groups;
- every refusal exits 2 with one line and leaves nothing behind."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import llama_cpp_peer as lcpp

lcpp.require()

from hf_fixtures import make_tiny_model  # noqa: E402
from model_driver import run_cli, shared_data  # noqa: E402
from quant_fixtures import dequantize_checkpoint, encode, quantize, stories_text, windows  # noqa: E402
from test_gguf_quantize import LOGIT_TOL, decoded_state_dict, logits_on_state  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    source = shared_data() / "stories260k-hf"
    if not (source / "tokenizer.json").exists():
        pytest.skip(f"{source} not found")
    root = tmp_path_factory.mktemp("convert")
    model_dir = make_tiny_model("llama", root / "model", vocab_size=512, seed=4)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, model_dir / name)
    calib = root / "calib.json"
    calib.write_text(json.dumps(windows(encode(stories_text()[:100_000]), 16, 64, seed=0)))
    return model_dir, calib, root


def gptq(model, name, *flags) -> Path:
    model_dir, calib, root = model
    out = root / name
    if not out.exists():
        quantize(model_dir, out, "--calib", calib, "--nsamples", 16, "--seqlen", 64, *flags)
    return out


def refused(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in last, last


def check_decoded_equals_gptq(gguf_path: Path, checkpoint: Path, model_dir: Path):
    config = json.loads((model_dir / "config.json").read_text())
    decoded = decoded_state_dict(gguf_path, config)
    expected = dequantize_checkpoint(checkpoint)
    linears = [name for name in expected if name.endswith("_proj.weight")]
    assert len(linears) == 7 * config["num_hidden_layers"], linears
    for name in linears:
        np.testing.assert_array_equal(decoded[name].numpy().view(np.uint32),
                                      expected[name].float().numpy().view(np.uint32), err_msg=name)
    return decoded


def test_gptq_4bit_sym_g32_becomes_q4_0_code_for_code(model, tmp_path):
    model_dir = model[0]
    checkpoint = gptq(model, "sym-g32", "--bits", 4, "--group-size", 32)
    out = tmp_path / "model.gguf"
    report = tmp_path / "report.json"
    proc = run_cli("convert", "--input", checkpoint, "--to", "gguf", "--output", out, "--report", report)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(report.read_text())["file_type"] == "q4_0"
    gguf = lcpp.gguf()
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.1.ffn_down.weight"] == "Q4_0", types
    assert types["blk.0.attn_norm.weight"] == "F32", types
    decoded = check_decoded_equals_gptq(out, checkpoint, model_dir)
    ids = encode(stories_text()[200_000:201_000])[:64]
    theirs = lcpp.logits(out, ids)
    ref = logits_on_state(model_dir, decoded, torch.tensor([ids]))
    err = float(np.abs(theirs - ref).max()) / max(1.0, float(np.abs(ref).max()))
    assert err <= LOGIT_TOL, err


def test_gptq_4bit_asym_g32_becomes_q4_1_or_names_the_groups(model, tmp_path):
    checkpoint = gptq(model, "asym-g32-v2", "--bits", 4, "--group-size", 32, "--asym", "--format", "gptq_v2")
    out = tmp_path / "asym.gguf"
    proc = run_cli("convert", "--input", checkpoint, "--to", "gguf", "--output", out)
    if proc.returncode == 0:
        check_decoded_equals_gptq(out, checkpoint, model[0])
    else:
        # m = -scale * zero must be an fp16 number for Q4_1; the line counts the groups where it is not.
        refused(proc, "group(s)", "fp16", "quantize --model")
        assert not out.exists()


def test_schemes_without_an_exact_encoding_are_refused(model, tmp_path):
    checkpoint = gptq(model, "sym-g16", "--bits", 4, "--group-size", 16)
    out = tmp_path / "g16.gguf"
    refused(run_cli("convert", "--input", checkpoint, "--to", "gguf", "--output", out), "group_size 16",
            "--format gguf")
    refused(run_cli("convert", "--input", model[0], "--to", "gguf", "--output", out), "not a GPTQ checkpoint")
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"keep")
    sym32 = gptq(model, "sym-g32", "--bits", 4, "--group-size", 32)
    refused(run_cli("convert", "--input", sym32, "--to", "gguf", "--output", existing), "already exists")
    assert existing.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.gguf"]


def test_v1_to_v2_and_back_keeps_every_tensor(model, tmp_path):
    checkpoint = gptq(model, "sym-g32", "--bits", 4, "--group-size", 32)
    v2 = tmp_path / "v2"
    back = tmp_path / "v1"
    assert run_cli("convert", "--input", checkpoint, "--to", "gptq_v2", "--output", v2).returncode == 0
    assert json.loads((v2 / "config.json").read_text())["quantization_config"]["checkpoint_format"] == "gptq_v2"
    assert run_cli("convert", "--input", v2, "--to", "gptq", "--output", back).returncode == 0
    original, returned = load_file(str(checkpoint / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert sorted(original) == sorted(returned)
    for name in original:
        assert torch.equal(original[name], returned[name]), name
    # v2 zeros are stored as they are, v1's as zero - 1: same weights either way.
    a, b = dequantize_checkpoint(checkpoint), dequantize_checkpoint(back)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_v2_zero_of_zero_is_refused_for_v1(model, tmp_path):
    checkpoint = gptq(model, "asym-g32-v2", "--bits", 4, "--group-size", 32, "--asym", "--format", "gptq_v2")
    zeros = 0
    for name, tensor in load_file(str(checkpoint / "model.safetensors")).items():
        if name.endswith(".qzeros"):
            words = tensor.numpy().astype(np.uint32)
            fields = (words[..., None] >> (np.arange(8, dtype=np.uint32) * 4)) & 0xF
            zeros += int((fields == 0).sum())
    out = tmp_path / "v1"
    proc = run_cli("convert", "--input", checkpoint, "--to", "gptq", "--output", out)
    if zeros == 0:
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        refused(proc, "zero point(s) of 0", "gptq_v2")
        assert not out.exists()
