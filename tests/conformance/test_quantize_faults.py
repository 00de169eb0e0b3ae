"""Faults during a run, from the outside: each gives one clear line, its exit
status, and nothing partial (neither the output nor a temporary directory
beside it). Once a block is finished the work directory (<output>.partial)
stays, and the line says so (tests/conformance/test_resume.py resumes it).

- a NaN in a source weight: exit 2 naming the tensor
- activations that overflow to Inf inside a block: exit 1, "numerical
  failure", naming the block
- a write that fails (a file-size limit, as ENOSPC would): exit 1 naming the
  file being written
- SIGTERM / SIGINT in the middle of the run: exit 143 / 130, one line, the
  temporary output removed
"""
from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_fixtures import make_tiny_model, random_ids, write_ids
from model_driver import binary, run_cli


def edit_weight(model_dir: Path, name: str, edit) -> None:
    path = model_dir / "model.safetensors"
    tensors = load_file(str(path))
    tensors[name] = edit(tensors[name].clone())
    save_file(tensors, str(path), metadata={"format": "pt"})


def assert_nothing_left(parent: Path, output: str, work_dir_kept: bool = False) -> None:
    left = sorted(p.name for p in parent.iterdir() if p.name.startswith(output))
    assert left == ([output + ".partial"] if work_dir_kept else []), left
    if work_dir_kept:
        shutil.rmtree(parent / (output + ".partial"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() and line.strip()]


def quantize_args(model_dir: Path, out: Path, calib: Path, n_samples=8, seqlen=32) -> list:
    return ["quantize", "--model", model_dir, "--output", out, "--device", "cpu", "--group-size", 32,
            "--calib", calib, "--nsamples", n_samples, "--seqlen", seqlen]


def test_nan_in_a_source_weight_exits_2_naming_the_tensor(tmp_path):
    model_dir = make_tiny_model("llama", tmp_path / "model", seed=1)
    edit_weight(model_dir, "model.layers.1.mlp.up_proj.weight", lambda t: t.index_fill_(1, torch.tensor([3]), float("nan")))
    calib = write_ids(tmp_path / "calib.json", random_ids(8, 32, 320, seed=2))
    for command in (quantize_args(model_dir, tmp_path / "out", calib),
                    ["rtn", "--model", model_dir, "--output", tmp_path / "out", "--group-size", 32]):
        proc = run_cli(*command)
        assert proc.returncode == 2, proc.stderr
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and "'model.layers.1.mlp.up_proj.weight' holds NaN or Inf" in lines[0], proc.stderr
        assert "keeps 1 of 2 step(s); fix the input, then rerun with --resume" in lines[0], lines[0]
        assert_nothing_left(tmp_path, "out", work_dir_kept=True)


def test_overflowing_activations_exit_1_naming_the_block(tmp_path):
    model_dir = make_tiny_model("llama", tmp_path / "model", seed=1)
    # The MLP's input is the norm's output: 1e20 makes X^T X overflow float32.
    edit_weight(model_dir, "model.layers.1.post_attention_layernorm.weight", lambda t: t.fill_(1e20))
    calib = write_ids(tmp_path / "calib.json", random_ids(8, 32, 320, seed=2))
    proc = run_cli(*quantize_args(model_dir, tmp_path / "out", calib))
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "numerical failure: model.layers.1" in lines[0], proc.stderr
    assert "keeps 1 of 2 step(s); rerun with --resume" in lines[0], lines[0]
    assert_nothing_left(tmp_path, "out", work_dir_kept=True)


def test_a_failing_write_exits_1_naming_the_file(tmp_path):
    model_dir = make_tiny_model("llama", tmp_path / "model", seed=1)
    out = tmp_path / "out"
    # 16 KiB per file: the output's shard is larger; SIGXFSZ is ignored, so the write fails with EFBIG.
    command = " ".join(f"'{part}'" for part in [binary(), "rtn", "--model", model_dir, "--output", out,
                                                  "--group-size", 32])
    proc = subprocess.run(["bash", "-c", f"ulimit -f 16 && exec {command}"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "runtime failure: " in lines[0] and "File too large" in lines[0], proc.stderr
    assert str(tmp_path) in lines[0], lines[0]  # names the file being written
    assert_nothing_left(tmp_path, "out")


@pytest.mark.parametrize("signal_number,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_stops_cleanly(signal_number, status, tmp_path):
    model_dir = make_tiny_model("llama", tmp_path / "model", seed=1, hidden_size=256, intermediate_size=512,
                                num_hidden_layers=8, head_dim=64)
    calib = write_ids(tmp_path / "calib.json", random_ids(64, 128, 320, seed=2))
    out = tmp_path / "out"
    proc = subprocess.Popen([str(part) for part in [binary(), *quantize_args(model_dir, out, calib, 64, 128)]],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stderr:  # the per-linear lines: the run is under way
        seen.append(line)
        if "model.layers.0.self_attn" in line:
            break
    proc.send_signal(signal_number)
    rest = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode == status, "".join(seen) + rest
    lines = error_lines(rest)
    assert len(lines) == 1 and "interrupted: " in lines[0] and "stopped cleanly" in lines[0], rest
    assert_nothing_left(tmp_path, "out")
