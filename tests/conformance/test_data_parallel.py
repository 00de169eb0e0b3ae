"""Data-parallel quantize on c10d (Gloo on loopback), from the outside.

`torchrun --nproc-per-node 2 --no-python gptq-quant quantize ...` against the
same command run as one process, every process on one thread so the two runs
differ only in how the work is split:
  - the codes of every quantized linear agree for >= 99.9 % of the weights
    (not bit-identical: each process sums its own windows' Hessian and the sums
    are added in rank order, which rounds differently from one process adding
    every window in turn) and perplexity by `gptq-quant benchmark ppl` agrees
    within 0.1 %, on the trained stories260K model with TinyStories text;
  - rank 0's report says 2 processes, its windows, the collectives;
  - a MoE model (routing counts summed over the processes) agrees the same way;
  - a rank killed with SIGKILL mid-run: the survivor fails within a timeout with
    one line naming its rank and the collective, leaves no output and no work
    directory, never hangs;
  - --resume under a launcher is refused (exit 2).
Needs torch's launcher (torch.distributed.run) in the oracle Python and
../shared/data; skips without them.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_fixtures import make_tiny_model, random_ids, write_ids
from model_driver import binary, our_ppl, shared_data
from quant_fixtures import all_unpacked_codes, encode, stories_text, windows

pytest.importorskip("torch.distributed.run", reason="torch (scripts/requirements-build.txt) not in the oracle Python")

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GPTQ_FAULT_POINT")
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_single(args) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary()), *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=single_env())


def run_torchrun(args, nproc=2) -> subprocess.CompletedProcess:
    env = single_env()
    env["GLOO_SOCKET_IFNAME"] = "lo"
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--no-python",
                           str(binary()), *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def spawn_ranks(args, world: int, faults: dict[int, str]) -> list[subprocess.Popen]:
    """One process per rank with the variables torchrun would set (no agent that
    would stop the survivors itself when one dies)."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = single_env()
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
        if rank in faults:
            env["GPTQ_FAULT_POINT"] = faults[rank]
        procs.append(subprocess.Popen([str(binary()), *map(str, args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))
    return procs


def codes(out_dir: Path) -> dict[str, np.ndarray]:
    """Every packed linear's codes [out, in]."""
    return {prefix: unpacked for prefix, (unpacked, _) in all_unpacked_codes(out_dir).items()}


def assert_same_codes(single: Path, parallel: Path, min_equal=0.999) -> float:
    ours, theirs = codes(single), codes(parallel)
    assert ours and sorted(ours) == sorted(theirs)
    equal = sum(int((ours[k] == theirs[k]).sum()) for k in ours)
    total = sum(ours[k].size for k in ours)
    assert equal / total >= min_equal, f"{total - equal} of {total} codes differ"
    return equal / total


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    model_dir = shared_data() / "stories260k-hf"
    if not (model_dir / "model.safetensors").is_file():
        pytest.skip(f"{model_dir} (the trained stories260K model) is absent")
    root = tmp_path_factory.mktemp("dp")
    text = stories_text()
    calib = root / "calib.json"
    calib.write_text(json.dumps(windows(encode(text[:200_000]), 32, 128, seed=0)))
    eval_ids = root / "eval.json"
    eval_ids.write_text(json.dumps(encode(text[400_000:440_000])))

    def args(out: Path, *extra):
        return ["quantize", "--model", model_dir, "--output", out, "--device", "cpu", "--calib", calib,
                "--nsamples", 32, "--seqlen", 128, "--group-size", -1, "--desc-act", *extra]

    single = root / "single"
    proc = run_single(args(single))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, args, single, eval_ids


def test_two_ranks_match_one_process(stories):
    root, args, single, eval_ids = stories
    parallel = root / "torchrun"
    report = root / "report.json"
    proc = run_torchrun(args(parallel, "--report", report))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "info: [rank 0]" in proc.stderr and "info: [rank 1]" not in proc.stderr  # rank 1 speaks only of trouble
    equal = assert_same_codes(single, parallel)
    dist = json.loads(report.read_text())["distributed"]
    assert dist["world_size"] == 2 and dist["rank"] == 0 and dist["windows"] == 16 and dist["backend"] == "gloo"
    assert dist["collectives"] > 0 and dist["collective_bytes"] > 0
    ppl_single = our_ppl(single, "--tokens", eval_ids, "--seqlen", 128)["ppl"]
    ppl_parallel = our_ppl(parallel, "--tokens", eval_ids, "--seqlen", 128)["ppl"]
    print(f"codes equal {equal:.6f}; ppl one process {ppl_single:.5f}, two {ppl_parallel:.5f}")
    assert abs(ppl_parallel - ppl_single) <= 0.001 * ppl_single, (ppl_single, ppl_parallel)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("torchrun")) == ["torchrun"]


def test_moe_routing_counts_are_summed_over_ranks(tmp_path):
    model_dir = make_tiny_model("qwen3-moe", tmp_path / "moe", seed=5, num_hidden_layers=2)
    calib = write_ids(tmp_path / "calib.json", random_ids(8, 64, 256, seed=6))

    def args(out: Path, *extra):
        return ["quantize", "--model", model_dir, "--output", out, "--device", "cpu", "--calib", calib,
                "--nsamples", 8, "--seqlen", 64, "--group-size", 16, *extra]

    single, parallel = tmp_path / "single", tmp_path / "torchrun"
    single_report, parallel_report = tmp_path / "single.json", tmp_path / "torchrun.json"
    proc = run_single(args(single, "--report", single_report))
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = run_torchrun(args(parallel, "--report", parallel_report))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert_same_codes(single, parallel)
    # Each expert's routed-token count (and whether it fell back to all tokens)
    # is the whole run's, not one rank's share.
    routed = lambda report: {layer["name"]: (layer.get("routed_tokens"), layer.get("hessian_tokens"),
                                             layer["n_tokens"])
                             for layer in json.loads(report.read_text())["layers"]}
    assert routed(single_report) == routed(parallel_report)


def test_a_killed_rank_fails_the_survivor_with_one_line(stories):
    root, args, _, _ = stories
    out = root / "killed"
    procs = spawn_ranks(args(out), 2, faults={1: "linear-solved:4"})
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=300))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            pytest.fail("a rank hung after its peer was killed")
    assert procs[1].returncode == -9
    assert procs[0].returncode == 1, outputs[0][1]
    errors = [line for line in outputs[0][1].splitlines() if line.startswith("error")]
    assert len(errors) == 1, outputs[0][1]
    assert "[rank 0]" in errors[0] and "rank 0 of 2" in errors[0] and "failed" in errors[0], errors[0]
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("killed")) == []


def test_resume_is_refused_under_a_launcher(stories):
    root, args, _, _ = stories
    procs = spawn_ranks(args(root / "resumed", "--resume"), 2, faults={})
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        assert "--resume" in stderr and "data-parallel" in stderr, stderr
