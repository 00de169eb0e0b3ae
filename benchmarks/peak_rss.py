#!/usr/bin/env python3
"""Peak RSS of `gptq-quant quantize` against model size, and a run under a
cgroup memory limit smaller than the checkpoint ("larger than RAM", enforced).

    ~/.cache/gptq-quant/venv/bin/python benchmarks/peak_rss.py --binary build/gptq-quant \\
        [--sizes 0.1g,1g,4g] [--nsamples 16 --seqlen 128] [--cgroup-mib 2048]

Models are random bf16 Llama checkpoints written straight with safetensors
(timing and memory do not depend on the values): "0.1g" = 4 blocks, hidden
768, intermediate 2048; "1g" = 12 blocks, hidden 2048, intermediate 5632;
"4g" = 40 blocks of the same shape as "1g" (so 1g against 4g shows whether
memory grows with the number of layers); vocab 8000, untied. Each run is
4-bit g128 GPTQ on the CPU in the checkpoint's dtype.

Peak RSS is the child's ru_maxrss. The baseline is the peak of a --dry-run
on the same model (libtorch loaded, config parsed, no tensor read). The bound
is (largest block in fp32 + block-boundary activations + the largest solve's
working set) x 1.2 + baseline, with
  activations  = 4 x N x T x hidden + N x T x intermediate (compute dtype),
  solve        = 4 x rows x cols x 4 B (W, its error, Q, dequantized) + 3 x cols^2 x 4 B (H, its factor, scratch)
for the largest stacked solve (gate+up: 2 x intermediate rows; down: intermediate columns).

--cgroup-mib N: also quantizes the largest model inside a cgroup-v1 memory
cgroup with memory.limit_in_bytes = N MiB (needs a writable
/sys/fs/cgroup/memory), after showing that the limit is enforced (a process
in it that touches N + 256 MiB is killed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "conformance"))
from random_llama import make_random_llama  # noqa: E402

SIZES = {"0.1g": (4, 768, 2048), "1g": (12, 2048, 5632), "4g": (40, 2048, 5632)}
VOCAB = 8000
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def run_isolated(cmd: list[str], preexec=None) -> tuple[int, float, float]:
    """(exit code, peak RSS MiB, wall s) of `cmd`, run from a fresh Python child so that its
    RUSAGE_CHILDREN holds only this run; `preexec`: a cgroup.procs file the child joins first."""
    code = ("import json,sys,resource,subprocess,time,os\n"
            "cmd=json.loads(sys.argv[1]); cg=sys.argv[2]\n"
            "def pre():\n"
            "    if cg: open(cg,'w').write(str(os.getpid()))\n"
            "t=time.monotonic(); p=subprocess.run(cmd,stdout=subprocess.DEVNULL,stderr=subprocess.PIPE,preexec_fn=pre)\n"
            "w=time.monotonic()-t; u=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "sys.stderr.write(p.stderr.decode()[-1500:] if p.returncode else '')\n"
            "print(json.dumps([p.returncode,u.ru_maxrss/1024,w]))\n")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cmd), preexec or ""], capture_output=True, text=True)
    if out.stderr.strip():
        sys.stderr.write(out.stderr)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def bound_mib(layers, hidden, inter, n, t, baseline) -> float:
    block = (4 * hidden * hidden + 3 * hidden * inter) * 4
    activations = (4 * n * t * hidden + n * t * inter) * 2
    solve_up = 4 * (2 * inter) * hidden * 4 + 3 * hidden * hidden * 4
    solve_down = 4 * hidden * inter * 4 + 3 * inter * inter * 4
    return (block + activations + max(solve_up, solve_down)) * 1.2 / 2**20 + baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, type=Path)
    parser.add_argument("--sizes", default="0.1g,1g,4g")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--cgroup-mib", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="gptq_peak_rss_"))
    root.mkdir(parents=True, exist_ok=True)
    calib = root / "calib.json"
    calib.write_text(json.dumps(torch.randint(0, VOCAB, (args.nsamples, args.seqlen),
                                              generator=torch.Generator().manual_seed(1)).tolist()))
    rows = []
    for size in args.sizes.split(","):
        layers, hidden, inter = SIZES[size]
        model = root / f"model-{size}"
        if not (model / "model.safetensors").exists():
            make_random_llama(model, layers, hidden, inter, VOCAB)
        model_mib = (model / "model.safetensors").stat().st_size / 2**20
        base = [str(args.binary), "-q", "quantize", "--model", str(model), "--device", "cpu", "--calib", str(calib),
                "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--group-size", "128"]
        _, baseline, _ = run_isolated(base + ["--output", str(root / "dry"), "--dry-run"])
        out = root / f"out-{size}"
        shutil.rmtree(out, ignore_errors=True)
        code, peak, wall = run_isolated(base + ["--output", str(out)])
        bound = bound_mib(layers, hidden, inter, args.nsamples, args.seqlen, baseline)
        rows.append((size, layers, hidden, inter, model_mib, baseline, peak, bound, wall, code))
        print(f"{size}: {layers} blocks, hidden {hidden}, inter {inter}, {model_mib:.0f} MiB: peak {peak:.0f} MiB "
              f"(baseline {baseline:.0f}, bound {bound:.0f}) in {wall:.1f} s, exit {code}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print("\n| model | blocks | hidden | intermediate | checkpoint MiB | baseline MiB | peak RSS MiB | bound MiB | within | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, layers, hidden, inter, model_mib, baseline, peak, bound, wall, code in rows:
        print(f"| {size} | {layers} | {hidden} | {inter} | {model_mib:.0f} | {baseline:.0f} | {peak:.0f} | {bound:.0f} | "
              f"{'yes' if peak <= bound else 'NO'} | {wall:.1f} |")

    if args.cgroup_mib:
        group = CGROUP_ROOT / f"gptq_peak_rss_{os.getpid()}"
        group.mkdir()
        try:
            (group / "memory.limit_in_bytes").write_text(str(args.cgroup_mib << 20))
            hog = [sys.executable, "-c", f"b=bytearray({(args.cgroup_mib + 256) << 20}); print(len(b))"]
            code, peak, _ = run_isolated(hog, str(group / "cgroup.procs"))
            print(f"\nlimit check: a process touching {args.cgroup_mib + 256} MiB in the {args.cgroup_mib} MiB cgroup "
                  f"exits {code} (peak {peak:.0f} MiB){' -> enforced' if code == -9 else ' -> NOT enforced'}")
            size = args.sizes.split(",")[-1]
            model = root / f"model-{size}"
            out = root / "out-cgroup"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [str(args.binary), "-q", "quantize", "--model", str(model), "--device", "cpu", "--calib", str(calib),
                   "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--group-size", "128",
                   "--output", str(out)]
            code, peak, wall = run_isolated(cmd, str(group / "cgroup.procs"))
            failcnt = (group / "memory.failcnt").read_text().strip()
            max_usage = int((group / "memory.max_usage_in_bytes").read_text()) / 2**20
            print(f"{size} ({(model / 'model.safetensors').stat().st_size / 2**20:.0f} MiB checkpoint) in the "
                  f"{args.cgroup_mib} MiB cgroup: exit {code}, peak RSS {peak:.0f} MiB, cgroup max usage "
                  f"{max_usage:.0f} MiB (page cache included), limit hits {failcnt}, {wall:.1f} s")
            shutil.rmtree(out, ignore_errors=True)
        finally:
            for pid in (group / "cgroup.procs").read_text().split():
                (CGROUP_ROOT / "cgroup.procs").write_text(pid)
            group.rmdir()
    return 0 if all(row[6] <= row[7] and row[9] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
