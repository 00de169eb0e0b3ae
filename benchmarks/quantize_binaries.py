#!/usr/bin/env python3
"""Two gptq-quant builds on the same quantize job, runs interleaved, medians
of the report's phase timings and their ratio. For changes inside the tool
(e.g. stacking the linears that share a Hessian into one solve).

    ~/.cache/gptq-quant/venv/bin/python benchmarks/quantize_binaries.py \
        --before /path/to/old/gptq-quant --after build/gptq-quant \
        [--model 168m] [--nsamples 16 --seqlen 256] [--repeat 3] [--desc-act]

The model is the random Llama of benchmarks/quantize_vs_gptqmodel.py (made by
transformers from a fixed seed, cached under ~/.cache/gptq-quant/bench-models);
calibration is seeded random ids. Few calibration tokens keep the forward
small so the solves, which do not depend on the token count, dominate.
Both builds also must write byte-identical checkpoints, which is checked.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantize_vs_gptqmodel import MODELS, make_model  # noqa: E402

import torch  # noqa: E402


def run(binary: str, model: Path, calib: Path, out: Path, args) -> dict:
    report = out.with_suffix(".json")
    cmd = [binary, "-q", "quantize", "--model", str(model), "--output", str(out), "--calib", str(calib),
           "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--bits", "4",
           "--group-size", "128", "--device", "cpu", "--dtype", "fp32", "--report", str(report)]
    if args.desc_act:
        cmd.append("--desc-act")
    subprocess.run(cmd, check=True)
    timings = json.loads(report.read_text())["timings_s"]
    digest = hashlib.sha256()
    for shard in sorted(out.glob("*.safetensors")):
        digest.update(shard.read_bytes())
    timings["sha256"] = digest.hexdigest()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--model", default="168m", choices=sorted(MODELS))
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--desc-act", action="store_true")
    args = parser.parse_args()

    cache = Path.home() / ".cache" / "gptq-quant" / "bench-models"
    model = cache / args.model
    if not (model / "config.json").exists():
        make_model(args.model, model)
    vocab = MODELS[args.model]["vocab_size"]
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib.json"
        generator = torch.Generator().manual_seed(0)
        calib.write_text(json.dumps(torch.randint(0, vocab, (args.nsamples, args.seqlen),
                                                  generator=generator).tolist()))
        runs = {"before": [], "after": []}
        for index in range(args.repeat):
            for side, binary in (("before", args.before), ("after", args.after)):
                runs[side].append(run(binary, model, calib, Path(tmp) / f"{side}-{index}", args))
                print(f"{side:6s} run {index}: solve {runs[side][-1]['solve']:.2f}s "
                      f"total {runs[side][-1]['total']:.2f}s", flush=True)
    same = {r["sha256"] for r in runs["before"] + runs["after"]}
    for phase in ("solve", "total"):
        before = statistics.median(r[phase] for r in runs["before"])
        after = statistics.median(r[phase] for r in runs["after"])
        print(f"{args.model} desc_act={int(args.desc_act)} {phase:5s} median before {before:7.2f}s "
              f"after {after:7.2f}s  speed-up {before / after:.2f}x")
    print("checkpoints byte-identical" if len(same) == 1 else f"checkpoints DIFFER ({len(same)} digests)")


if __name__ == "__main__":
    main()
