"""Resume, from the outside: a run killed with SIGKILL at any moment and
continued with --resume writes exactly the bytes of an uninterrupted run.

The kills are real SIGKILLs: at named moments through GPTQ_FAULT_POINT (the
binary kills itself there, no destructor runs: core/fault_point.h) and at
random moments from outside (benchmarks/resume_kill_points.py runs N of those).
Also: a resume with a changed option or model is refused naming what changed,
an existing work directory without --resume is refused, SIGTERM leaves a
resumable run, and a failing write (a file-size limit, as a full disk) leaves
the work directory resumable once the limit is gone.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from hf_fixtures import make_tiny_model, random_ids, write_ids
from model_driver import binary

N_LAYERS = 3


def run(args, fault: str | None = None, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("GPTQ_FAULT_POINT", None)
    if fault:
        env["GPTQ_FAULT_POINT"] = fault
    return subprocess.run([str(binary()), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def output_bytes(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name) and p.name != name)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A 3-block model quantized once without interruption: the reference bytes."""
    root = tmp_path_factory.mktemp("resume")
    model_dir = make_tiny_model("llama", root / "model", seed=3, num_hidden_layers=N_LAYERS)
    calib = write_ids(root / "calib.json", random_ids(16, 32, 320, seed=4))
    recipe = root / "recipe.json"  # lm_head quantized too: one more step, the final norm's Hessian
    recipe.write_text('{"default": {"bits": 4, "group_size": 32}, "rules": [{"match": "lm_head", "bits": 8}]}')

    def args(out: Path, *extra, nsamples=16):
        return ["quantize", "--model", model_dir, "--output", out, "--device", "cpu", "--calib", calib,
                "--nsamples", nsamples, "--seqlen", 32, "--recipe", recipe, "--desc-act", "--max-shard-mib", 0, *extra]

    reference = root / "reference"
    proc = run(args(reference))
    assert proc.returncode == 0, proc.stderr
    assert leftovers(root, "reference") == []  # the work directory is gone once the output is in place
    return root, args, output_bytes(reference)


def resume_until_done(args, out: Path, faults: list[str]) -> list[int]:
    """Runs with each fault in turn (each a kill), then once more to the end; returns the exit statuses."""
    statuses = []
    for fault in faults:
        statuses.append(run(args(out, "--resume"), fault=fault).returncode)
    proc = run(args(out, "--resume"))
    assert proc.returncode == 0, proc.stderr
    statuses.append(0)
    return statuses


# Each named moment, the n-th time it is reached: inside a block's solve, while
# a block's file is half written, between a block's files and its state, while
# the output's shard is half written, before and after the output's rename.
KILL_POINTS = [
    "linear-solved:5",   # block 0's fifth linear solved, the block not yet durable
    "file-write:3",      # block 1's packed tensors: header written, data not
    "step-written:2",    # block 1's tensors durable, its output (next input) not yet
    "input-written:3",   # block 2's files durable, state.json not yet advanced
    "state-written:3",   # the last block durable: the resumed run solves lm_head from the stored input
    "shard-write:1",     # the output's shard: header written, data not
    "before-rename:1",   # the complete output, not yet renamed into place
    "output-renamed:1",  # the output in place, the work directory not yet removed
]


@pytest.mark.parametrize("fault", KILL_POINTS)
def test_killed_and_resumed_gives_the_same_bytes(job, fault):
    root, args, reference = job
    out = root / ("out-" + fault.replace(":", "-"))
    killed = run(args(out), fault=fault)
    assert killed.returncode == -signal.SIGKILL, (fault, killed.returncode, killed.stderr[-2000:])
    if fault == "output-renamed:1":
        assert out.is_dir() and (root / (out.name + ".partial")).is_dir()
    else:
        assert not out.exists()
    proc = run(args(out, "--resume"))
    assert proc.returncode == 0, proc.stderr
    assert output_bytes(out) == reference
    assert leftovers(root, out.name) == [], "work or temporary directory left behind"


def test_killed_repeatedly_gives_the_same_bytes(job):
    root, args, reference = job
    out = root / "out-repeated"
    assert run(args(out), fault="linear-solved:9").returncode == -signal.SIGKILL
    statuses = resume_until_done(args, out, ["linear-solved:2", "file-write:2", "shard-write:1", "before-rename:1"])
    assert statuses == [-signal.SIGKILL] * 4 + [0]
    assert output_bytes(out) == reference
    assert leftovers(root, out.name) == []


def test_a_changed_option_or_model_is_refused_naming_it(job, tmp_path):
    root, args, _ = job
    out = root / "out-changed"
    assert run(args(out), fault="state-written:2").returncode == -signal.SIGKILL
    proc = run(args(out, "--resume", "--damp-percent", 0.05))
    assert proc.returncode == 2, proc.stderr
    assert "damp_percent changed (was 0.01, now 0.05)" in proc.stderr, proc.stderr
    proc = run(args(out, "--resume", nsamples=8))
    assert proc.returncode == 2 and "calibration tokens changed" in proc.stderr, proc.stderr
    proc = run(args(out))  # no --resume: says how to resume or discard
    assert proc.returncode == 2, proc.stderr
    assert "holds an unfinished run (2 step(s) done); add --resume" in proc.stderr, proc.stderr
    # Still resumable with the original options.
    assert run(args(out, "--resume")).returncode == 0


def test_a_signal_leaves_a_resumable_run(job):
    root, args, reference = job
    out = root / "out-sigterm"
    proc = subprocess.Popen([str(part) for part in [binary(), *args(out)]], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stderr:  # block 1 is under way, so block 0 is durable
        seen.append(line)
        if "model.layers.1.self_attn" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode == 143, "".join(seen) + rest
    lines = [line for line in rest.splitlines() if "interrupted: " in line]
    assert len(lines) == 1 and "rerun with --resume to continue" in lines[0], rest
    assert not out.exists()
    assert run(args(out, "--resume")).returncode == 0
    assert output_bytes(out) == reference


def test_a_failing_write_leaves_a_resumable_run(job):
    root, args, reference = job
    out = root / "out-full"
    # The blocks' files (packed tensors, 16 x 32 x 64 fp32 activations: 128 KiB)
    # fit under the limit, the output's 192 KiB shard does not: the run fails
    # at the end, as on a disk that fills up.
    command = " ".join(f"'{part}'" for part in [binary(), *args(out)])
    limit_kib = 160
    proc = subprocess.run(["bash", "-c", f"ulimit -f {limit_kib} && exec {command}"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "runtime failure: " in line]
    assert len(lines) == 1 and "File too large" in lines[0], proc.stderr
    assert not out.exists()
    assert (root / (out.name + ".partial")).is_dir()
    assert "rerun with --resume to write the output" in lines[0], lines[0]
    proc = run(args(out, "--resume"))
    assert proc.returncode == 0, proc.stderr
    assert output_bytes(out) == reference
    assert leftovers(root, out.name) == []


def test_offloaded_activations_give_the_same_bytes(job):
    """--offload-activations keeps the block activations in files: same bytes
    as in RAM, and a run killed in RAM mode resumes offloaded."""
    root, args, reference = job
    offload = root / "offload"
    offload.mkdir()
    out = root / "out-offload"
    proc = run(args(out, "--offload-activations", offload))
    assert proc.returncode == 0, proc.stderr
    assert "live in files under" in proc.stderr, proc.stderr
    assert output_bytes(out) == reference
    assert list(offload.iterdir()) == []  # the activation files go with their tensors
    out = root / "out-offload-resumed"
    assert run(args(out), fault="state-written:2").returncode == -signal.SIGKILL
    proc = run(args(out, "--resume", "--offload-activations", offload))
    assert proc.returncode == 0, proc.stderr
    assert output_bytes(out) == reference

