#!/usr/bin/env python3
"""Kills `gptq-quant quantize` with SIGKILL at N random moments, resumes each
with --resume (itself killed again at random, up to --max-kills times), and
prints how many of the N finished outputs are byte-identical to an
uninterrupted run's.

    ~/.cache/gptq-quant/venv/bin/python benchmarks/resume_kill_points.py \\
        --binary build/gptq-quant [--runs 20] [--layers 6] [--max-kills 3] [--seed 0]

The model is a random Llama made by transformers from a fixed seed (hidden
256, intermediate 512, --layers blocks, vocab 320), calibrated on 64 windows
of 64 random token ids, 4-bit g32 with act-order and lm_head at 8 bits (so
every kind of step runs). A kill moment is drawn uniformly over the
uninterrupted run's wall time, so kills land in start-up, block solves, the
durable writes between blocks and the final assembly alike; each run prints
where its kills landed (the last log line before the kill).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "conformance"))
from hf_fixtures import make_tiny_model, random_ids, write_ids  # noqa: E402


def output_bytes(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--max-kills", type=int, default=3, help="kills per run at most (the last resume is never killed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="gptq_resume_kills_"))
    model = make_tiny_model("llama", root / "model", seed=5, num_hidden_layers=args.layers, hidden_size=256,
                            intermediate_size=512, head_dim=32)
    calib = write_ids(root / "calib.json", random_ids(64, 64, 320, seed=6))
    recipe = root / "recipe.json"
    recipe.write_text(json.dumps({"default": {"bits": 4, "group_size": 32}, "rules": [{"match": "lm_head", "bits": 8}]}))

    def command(out: Path, resume: bool) -> list[str]:
        cmd = [str(args.binary), "quantize", "--model", str(model), "--output", str(out), "--device", "cpu",
               "--calib", str(calib), "--nsamples", "64", "--seqlen", "64", "--recipe", str(recipe), "--desc-act"]
        return cmd + (["--resume"] if resume else [])

    start = time.monotonic()
    subprocess.run(command(root / "reference", False), check=True, capture_output=True)
    wall = time.monotonic() - start
    reference = output_bytes(root / "reference")
    print(f"uninterrupted run: {wall:.2f} s, {sum(map(len, reference.values()))} bytes in {len(reference)} files")

    identical = 0
    for run_idx in range(args.runs):
        out = root / f"out-{run_idx}"
        kills = rng.randint(1, args.max_kills)
        landed = []
        for kill_idx in range(kills):
            proc = subprocess.Popen(command(out, kill_idx > 0), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
            time.sleep(rng.uniform(0, wall))
            proc.kill()
            _, stderr = proc.communicate()
            lines = [line for line in stderr.splitlines() if line.strip()]
            landed.append("finished first" if proc.returncode == 0 else (lines[-1][-70:] if lines else "at start-up"))
            if proc.returncode == 0 or (out.exists() and not (root / f"out-{run_idx}.partial").exists()):
                break  # finished (or killed on its way out, with the output in place)
        if not out.exists() or (root / f"out-{run_idx}.partial").exists():
            final = subprocess.run(command(out, True), capture_output=True, text=True)
            if final.returncode != 0:
                print(f"run {run_idx}: resume failed ({final.returncode}): {final.stderr.strip()[-300:]}")
                continue
        same = output_bytes(out) == reference
        leftovers = [p.name for p in root.iterdir() if p.name.startswith(out.name) and p.name != out.name]
        identical += same and not leftovers
        print(f"run {run_idx}: {len(landed)} kill(s) {'identical' if same else 'DIFFERENT'}"
              f"{' leftovers ' + str(leftovers) if leftovers else ''}; kills after: " + " | ".join(landed))
        shutil.rmtree(out, ignore_errors=True)
    print(f"identical: {identical} of {args.runs}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if identical == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
