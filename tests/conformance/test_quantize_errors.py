"""`gptq-quant quantize` / `rtn` refuse bad input with exit 2, one clear line,
and leave nothing behind."""
from __future__ import annotations

import json
import shutil

import pytest

from hf_fixtures import make_tiny_model, random_ids, write_ids
from quant_fixtures import quantize


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model("llama", tmp_path_factory.mktemp("tiny") / "llama")


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error")]


def assert_refused(proc, out_dir, needle):
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not out_dir.exists()
    assert not list(out_dir.parent.glob(out_dir.name + ".tmp-*"))


def test_dir_without_weights(tmp_path, tiny):
    model = tmp_path / "noweights"
    model.mkdir()
    shutil.copy(tiny / "config.json", model / "config.json")
    out = tmp_path / "out"
    assert_refused(quantize(model, out, method="rtn", check=False), out, "noweights")


def test_dir_without_config(tmp_path, tiny):
    model = tmp_path / "noconfig"
    model.mkdir()
    shutil.copy(tiny / "model.safetensors", model / "model.safetensors")
    out = tmp_path / "out"
    assert_refused(quantize(model, out, method="rtn", check=False), out, "config.json")


def test_unsupported_architecture(tmp_path, tiny):
    model = tmp_path / "gpt2"
    shutil.copytree(tiny, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert_refused(quantize(model, out, method="rtn", check=False), out, "GPT2LMHeadModel")


def test_calibration_shorter_than_one_window(tmp_path, tiny):
    calib = write_ids(tmp_path / "ids.json", random_ids(1, 100, 320)[0])
    out = tmp_path / "out"
    proc = quantize(tiny, out, "--calib", calib, "--seqlen", 128, "--nsamples", 4, check=False)
    assert_refused(proc, out, "too short")


def test_existing_output_is_never_touched(tmp_path, tiny):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    proc = quantize(tiny, out, method="rtn", check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr, proc.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert not list(tmp_path.glob("out.tmp-*"))


def test_rtn_output_layout(tmp_path, tiny):
    out = tmp_path / "out"
    quantize(tiny, out, "--group-size", 32, method="rtn")
    config = json.loads((out / "config.json").read_text())
    q = config["quantization_config"]
    assert q["quant_method"] == "gptq" and q["bits"] == 4 and q["group_size"] == 32
    assert q["checkpoint_format"] == "gptq" and q["lm_head"] is False
    assert q["meta"]["quantizer"][0].startswith("gptq-quant:")
    assert json.loads((out / "quantize_config.json").read_text()) == q
    assert (out / "model.safetensors").exists()
