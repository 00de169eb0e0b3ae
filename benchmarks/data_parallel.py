#!/usr/bin/env python3
"""Data-parallel quantize: one process against N ranks launched by torchrun,
with the machine's threads split so the comparison is fair (one process gets
all T threads, each of N ranks T / N), and one process on T / N threads (what
one rank alone would take: the scaling a rank per GPU or node would see).

    ~/.cache/gptq-quant/venv/bin/python benchmarks/data_parallel.py --binary build/gptq-quant \\
        [--ranks 2] [--threads 2] [--layers 4 --hidden 1024 --inter 2816] \\
        [--nsamples 64 --seqlen 256] [--repeats 3] [--json out.json]

The model is a random bf16 Llama written with safetensors (timing does not
depend on the values); calibration is random token ids. Each run is 4-bit
g128 GPTQ on the CPU. Per configuration: median wall time over --repeats, and
from rank 0's report the collectives' count, bytes and seconds (time inside
collectives includes waiting for the slower rank), per block. Also the
fraction of packed words the N-rank output shares with the one-process run on
the same thread count, next to what two one-process runs on different thread
counts share: GPTQ on a random model is chaotic (one code flipped by a last-bit
difference moves the rest of its row), so that is the noise floor.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "conformance"))
from random_llama import make_random_llama  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd: list[str], threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed


def codes(out_dir: Path) -> dict[str, np.ndarray]:
    tensors = {}
    for shard in sorted(out_dir.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return {k: v.numpy() for k, v in tensors.items() if k.endswith(".qweight")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--inter", type=int, default=2816)
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    binary = str(Path(args.binary).resolve())
    with tempfile.TemporaryDirectory(prefix="gptq-dp-") as tmp:
        root = Path(tmp)
        model = make_random_llama(root / "model", args.layers, args.hidden, args.inter, 8000, seed=0)
        rng = np.random.default_rng(1)
        calib = root / "calib.json"
        calib.write_text(json.dumps(rng.integers(0, 8000, size=(args.nsamples, args.seqlen)).tolist()))

        def quantize(out: Path, report: Path) -> list[str]:
            return ["quantize", "--model", str(model), "--output", str(out), "--device", "cpu", "--calib",
                    str(calib), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--bits", "4",
                    "--group-size", "128", "--report", str(report), "-q"]

        results = {}
        per_rank = max(1, args.threads // args.ranks)
        configs = (("1 process", 1, args.threads), (f"1 proc x{per_rank}t", 1, per_rank),
                   (f"{args.ranks} ranks", args.ranks, per_rank))
        for label, ranks, threads in configs:
            times = []
            for repeat in range(args.repeats):
                out, report = root / f"out-{label}-{repeat}", root / f"report-{label}-{repeat}.json"
                if ranks == 1:
                    cmd = [binary, *quantize(out, report)]
                else:
                    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--no-python",
                           binary, *quantize(out, report)]
                times.append(run(cmd, threads))
            rep = json.loads(report.read_text())
            results[label] = {"ranks": ranks, "threads_per_rank": threads, "wall_s": times,
                              "median_s": statistics.median(times), "timings_s": rep["timings_s"],
                              "distributed": rep.get("distributed"), "out": str(out)}
        # GPTQ on a random model is chaotic (one flipped code moves the rest of its
        # row): the same run on another thread count is the noise floor to compare with.
        same = lambda a, b: (sum(int((a[k] == b[k]).sum()) for k in a) / sum(v.size for v in a.values()))
        outputs = [codes(Path(results[label]["out"])) for label, _, _ in configs]
        same_words = same(outputs[1], outputs[2])
        noise_words = same(outputs[0], outputs[1])

    base = results["1 process"]["median_s"]
    print(f"model: {args.layers} blocks, hidden {args.hidden}, intermediate {args.inter}; "
          f"{args.nsamples} x {args.seqlen} tokens; {args.threads} threads in all")
    print(f"{'run':<14} {'median s':>9} {'speedup':>8} {'collectives':>12} {'MiB/block':>10} {'coll. s/block':>14}")
    for label, result in results.items():
        dist = result["distributed"] or {}
        per_block = lambda key: dist.get(key, 0) / args.layers
        print(f"{label:<14} {result['median_s']:9.2f} {base / result['median_s']:8.2f}x {dist.get('collectives', 0):12d} "
              f"{per_block('collective_bytes') / 2**20:10.2f} {per_block('collective_s'):14.3f}")
    print(f"packed words identical: {args.ranks} ranks vs 1 process at {per_rank} thread(s) {same_words:.6f}; "
          f"1 process at {args.threads} vs {per_rank} thread(s) {noise_words:.6f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results,
                                               "identical_words": same_words,
                                               "identical_words_threads": noise_words}, indent=2))


if __name__ == "__main__":
    main()
