"""`gptq-quant quantize` / `rtn` refuse bad input with exit 2, one clear line,
and leave nothing behind; a numerical failure on valid input exits 1 with the
"numerical failure:" prefix, also leaving nothing behind."""
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
    proc = quantize(tiny, out, "--calib", calib, "--seqlen", 128, "--nsamples", 4, "--group-size", 32,
                    check=False)
    assert_refused(proc, out, "too short")


def test_ready_windows_set_their_own_shape(tmp_path, tiny):
    # 6 windows of 24 tokens under the default --nsamples 128 / --seqlen 2048:
    # the windows decide, and the report says what was used.
    windows = random_ids(6, 24, 320).tolist()
    calib = write_ids(tmp_path / "windows.json", windows)
    out, report = tmp_path / "out", tmp_path / "report.json"
    quantize(tiny, out, "--calib", calib, "--group-size", 32, "--report", report)
    calibration = json.loads(report.read_text())["calibration"]
    assert (calibration["format"], calibration["n_samples"], calibration["seqlen"]) == ("windows", 6, 24)
    # Windows of unequal length are refused, naming the first odd one.
    windows[3] = windows[3][:20]
    uneven = tmp_path / "uneven.json"
    uneven.write_text(json.dumps(windows))
    out = tmp_path / "out_uneven"
    proc = quantize(tiny, out, "--calib", uneven, "--group-size", 32, check=False)
    assert_refused(proc, out, "window 3 has 20 tokens, window 0 has 24")


def test_group_size_must_divide_every_input_width(tmp_path, tiny):
    # 64-wide model: g128 would give vLLM in/group = 0 scale rows.
    out = tmp_path / "out"
    proc = quantize(tiny, out, "--group-size", 128, method="rtn", check=False)
    assert_refused(proc, out, "model.layers.0.self_attn.q_proj: --group-size 128 does not divide its 64")


def test_static_groups_need_groups_before_calibration(tmp_path, tiny):
    out = tmp_path / "out"
    # No --calib at all: the contradiction is reported first, before any calibration.
    proc = quantize(tiny, out, "--static-groups", "--group-size", -1, "--calib", tmp_path / "missing.txt",
                    check=False)
    assert_refused(proc, out, "--static-groups")


def test_already_quantized_source_is_refused(tmp_path, tiny):
    once = tmp_path / "once"
    quantize(tiny, once, "--group-size", 32, method="rtn")
    out = tmp_path / "out"
    assert_refused(quantize(once, out, "--group-size", 32, method="rtn", check=False), out,
                   "already quantized")


def test_unknown_format_is_a_usage_error(tmp_path, tiny):
    out = tmp_path / "out"
    proc = quantize(tiny, out, "--group-size", 32, "--format", "awq", method="rtn", check=False)
    assert proc.returncode == 2 and "gptq_v2" in proc.stderr, proc.stderr
    assert not out.exists()


def test_overflowing_activations_are_a_numerical_failure(tmp_path, tiny):
    """A norm weight of 3e38 overflows the fp32 block input: the Hessian is not
    finite. That is not the user's input error (exit 2) but a numerical failure."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "overflow"
    shutil.copytree(tiny, model)
    tensors = load_file(str(model / "model.safetensors"))
    tensors["model.layers.0.input_layernorm.weight"].fill_(3e38)
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    calib = write_ids(tmp_path / "ids.json", random_ids(4, 32, 320)[0:4].tolist())
    out = tmp_path / "out"
    proc = quantize(model, out, "--calib", calib, "--seqlen", 32, "--nsamples", 4, "--group-size", 32,
                    check=False)
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: numerical failure: "), proc.stderr
    assert "model.layers.0" in lines[0] and "hessian" in lines[0], proc.stderr
    assert not out.exists()
    assert not list(tmp_path.glob("out.tmp-*"))


def test_existing_output_is_never_touched(tmp_path, tiny):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    proc = quantize(tiny, out, "--group-size", 32, method="rtn", check=False)
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
