"""Larger than RAM, proven: a checkpoint bigger than the memory the process
is allowed is quantized inside a cgroup whose limit is shown to be enforced,
and so is a run whose block activations exceed the limit (offloaded; the
same run in RAM is killed).

The limit is a cgroup-v1 memory cgroup (/sys/fs/cgroup/memory, as on the CI
machines; skipped with a message where it is not writable). A process in the
cgroup that touches more than the limit is killed (the check that the limit
is real); gptq-quant then quantizes a 720 MiB bf16 checkpoint under a 480 MiB
limit and the output is checked complete. The page cache the reads go
through counts against a v1 limit too, and is reclaimed as the run goes.
benchmarks/peak_rss.py does the same at 4 GiB (docs/benchmarks.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from model_driver import binary
from random_llama import make_random_llama

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
LIMIT_MIB = 480
LAYERS, HIDDEN, INTER, VOCAB = 28, 1024, 2816, 8000


def make_cgroup(limit_mib: int) -> Path:
    group = CGROUP_ROOT / f"gptq_test_{os.getpid()}_{limit_mib}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_mib << 20))
    except OSError as error:
        pytest.skip(f"no writable cgroup-v1 memory controller at {CGROUP_ROOT} ({error}); "
                    "benchmarks/peak_rss.py --cgroup-mib records the larger-than-RAM run instead")
    # No swap escape: where memsw is accounted, cap it at the same limit.
    memsw = group / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        memsw.write_text(str(limit_mib << 20))
    return group


def remove_cgroup(group: Path) -> None:
    for pid in (group / "cgroup.procs").read_text().split():
        (CGROUP_ROOT / "cgroup.procs").write_text(pid)
    group.rmdir()


@pytest.fixture()
def cgroup():
    group = make_cgroup(LIMIT_MIB)
    yield group
    remove_cgroup(group)


def run_in(group: Path, cmd: list) -> subprocess.CompletedProcess:
    procs = str(group / "cgroup.procs")
    return subprocess.run([str(part) for part in cmd], capture_output=True, text=True, timeout=1200,
                          preexec_fn=lambda: Path(procs).write_text(str(os.getpid())))


def test_a_checkpoint_larger_than_the_memory_limit_is_quantized(cgroup, tmp_path):
    hog = run_in(cgroup, [sys.executable, "-c", f"b = bytearray({(LIMIT_MIB + 128) << 20}); print(len(b))"])
    assert hog.returncode == -9, f"the {LIMIT_MIB} MiB limit is not enforced: {hog.returncode} {hog.stdout}"

    model = make_random_llama(tmp_path / "model", LAYERS, HIDDEN, INTER, VOCAB)
    checkpoint_mib = (model / "model.safetensors").stat().st_size / 2**20
    assert checkpoint_mib > LIMIT_MIB * 1.3
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps(torch.randint(0, VOCAB, (8, 64), generator=torch.Generator().manual_seed(1)).tolist()))
    out = tmp_path / "out"
    proc = run_in(cgroup, [binary(), "-q", "quantize", "--model", model, "--output", out, "--device", "cpu",
                           "--calib", calib, "--nsamples", 8, "--seqlen", 64, "--group-size", 128])
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert int((cgroup / "memory.max_usage_in_bytes").read_text()) <= LIMIT_MIB << 20
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    for layer in range(LAYERS):
        assert f"model.layers.{layer}.mlp.down_proj.qweight" in names
    assert json.loads((out / "config.json").read_text())["quantization_config"]["bits"] == 4


def test_activations_larger_than_the_limit_run_offloaded(tmp_path):
    """4 x 128 x 512 x 768 fp32 = 768 MiB of block activations under a 700 MiB
    limit: in RAM the run is killed; with --offload-activations it finishes,
    with the same bytes as an unlimited run in RAM. fp32 rather than bf16:
    the same bytes from half the tokens, and CPU matmuls 4x faster."""
    model = make_random_llama(tmp_path / "model", 4, 768, 2048, VOCAB)
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps(torch.randint(0, VOCAB, (128, 512), generator=torch.Generator().manual_seed(2)).tolist()))

    def args(out, *extra):
        return [binary(), "-q", "quantize", "--model", model, "--output", out, "--device", "cpu", "--dtype", "fp32",
                "--calib", calib, "--nsamples", 128, "--seqlen", 512, "--group-size", 128, "--windows-per-chunk", 16,
                "--max-activation-mib", 0, *extra]

    group = make_cgroup(700)
    try:
        in_ram = run_in(group, args(tmp_path / "in-ram"))
        assert in_ram.returncode == -9, (in_ram.returncode, in_ram.stderr[-1000:])
        offload = tmp_path / "offload"
        offload.mkdir()
        offloaded = run_in(group, args(tmp_path / "offloaded", "--offload-activations", offload))
        assert offloaded.returncode == 0, (offloaded.returncode, offloaded.stderr[-2000:])
        assert int((group / "memory.max_usage_in_bytes").read_text()) <= 700 << 20
    finally:
        remove_cgroup(group)
    unlimited = subprocess.run([str(part) for part in args(tmp_path / "unlimited")], capture_output=True, text=True,
                               timeout=1200)
    assert unlimited.returncode == 0, unlimited.stderr[-2000:]
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "offloaded" / name).read_bytes() == (tmp_path / "unlimited" / name).read_bytes()
