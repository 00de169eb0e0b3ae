"""Bad model inputs: exit status 2 and one clear line on stderr, never a crash."""
from __future__ import annotations

import json
import shutil
import struct

import pytest

from hf_fixtures import make_tiny_model, write_ids
from model_driver import run_cli


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    return make_tiny_model("llama", tmp_path_factory.mktemp("good") / "m")


@pytest.fixture
def model_copy(good_model, tmp_path):
    return shutil.copytree(good_model, tmp_path / "m")


def ppl_error(model_dir, tmp_path, ids=None):
    tokens = write_ids(tmp_path / "ids.json", ids if ids is not None else list(range(1, 65)))
    proc = run_cli("-q", "benchmark", "ppl", "--model", model_dir, "--tokens", tokens, "--seqlen", 32,
                   "--device", "cpu", timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    return lines[0]


def edit_config(model_dir, change):
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_good_model_runs(good_model, tmp_path):
    tokens = write_ids(tmp_path / "ids.json", list(range(1, 65)))
    proc = run_cli("-q", "benchmark", "ppl", "--model", good_model, "--tokens", tokens, "--seqlen", 32,
                   "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n_windows"] == 2


def test_missing_config_key(model_copy, tmp_path):
    edit_config(model_copy, lambda c: c.pop("num_attention_heads"))
    line = ppl_error(model_copy, tmp_path)
    assert "'num_attention_heads'" in line and "config.json" in line


def test_unsupported_architecture(model_copy, tmp_path):
    edit_config(model_copy, lambda c: c.update(architectures=["FalconForCausalLM"]))
    line = ppl_error(model_copy, tmp_path)
    assert "FalconForCausalLM" in line and "not supported" in line


def test_unsupported_rope_type_on_deepseek(tmp_path):
    model_dir = make_tiny_model("deepseek-v3", tmp_path / "ds")
    edit_config(model_dir, lambda c: c.update(rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                               "factor": 4.0}))
    line = ppl_error(model_dir, tmp_path)
    assert "config.json" in line and "rope_parameters.rope_type 'longrope'" in line, line


def test_missing_config(model_copy, tmp_path):
    (model_copy / "config.json").unlink()
    assert "config.json" in ppl_error(model_copy, tmp_path)


def test_shape_mismatch_with_config(model_copy, tmp_path):
    edit_config(model_copy, lambda c: c.update(intermediate_size=c["intermediate_size"] * 2))
    assert "mlp" in ppl_error(model_copy, tmp_path)


def test_truncated_shard(model_copy, tmp_path):
    shard = model_copy / "model.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert "model.safetensors" in ppl_error(model_copy, tmp_path)


def test_corrupted_header(model_copy, tmp_path):
    shard = model_copy / "model.safetensors"
    data = bytearray(shard.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    data[8:8 + min(header_len, 40)] = b"#" * min(header_len, 40)
    shard.write_bytes(bytes(data))
    assert "model.safetensors" in ppl_error(model_copy, tmp_path)


def test_token_out_of_vocabulary(good_model, tmp_path):
    line = ppl_error(good_model, tmp_path, ids=list(range(1, 64)) + [100000])
    assert "100000" in line


def test_too_few_tokens(good_model, tmp_path):
    assert "fewer than one window" in ppl_error(good_model, tmp_path, ids=[1, 2, 3])
