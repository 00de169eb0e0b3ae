#!/usr/bin/env python3
"""Perplexity throughput, load time and peak RSS: `gptq-quant benchmark ppl`
against transformers on the same CPU, the same token ids and windows.

    ppl_vs_transformers.py --binary build/gptq-quant --model DIR \
        (--text FILE | --random-tokens N) [--seqlen 512] [--max-windows 4] [--threads 2]
    ppl_vs_transformers.py --make-llama OUT_DIR [--layers 12 --hidden 768 ...]   # random model

Each side runs in its own process. Peak RSS is the process' high-water mark
(VmHWM / ru_maxrss) minus its RSS before the model is touched (after imports /
libtorch start-up). Load: config + weights (+ tokenizer for --text) until the
first forward; throughput: n_windows * seqlen / wall time of the scoring loop.
transformers runs one window at a time (its usual perplexity loop) with sdpa
attention; we run block by block over all windows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HF_SIDE = r"""
import json, resource, sys, time, torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
from transformers import AutoModelForCausalLM
baseline = rss()
start = time.perf_counter()
dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args["dtype"], "auto")
model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=dtype, attn_implementation="sdpa").eval()
ids = torch.tensor(json.load(open(args["ids"])), dtype=torch.long).flatten()
load_s = time.perf_counter() - start
seqlen = args["seqlen"]
n_windows = ids.numel() // seqlen
if args["max_windows"]:
    n_windows = min(n_windows, args["max_windows"])
start = time.perf_counter()
nll = 0.0
with torch.no_grad():
    for w in range(n_windows):
        batch = ids[w * seqlen:(w + 1) * seqlen].unsqueeze(0)
        logits = model(input_ids=batch).logits.float()[0, :-1]
        nll += torch.nn.functional.cross_entropy(logits, batch[0, 1:], reduction="sum").item()
compute_s = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"ppl": float(torch.tensor(nll / (n_windows * (seqlen - 1))).exp()),
                  "n_windows": n_windows, "tokens_per_s": n_windows * seqlen / compute_s,
                  "load_s": load_s, "peak_rss_bytes": peak, "baseline_rss_bytes": baseline}))
"""


def make_llama(out: Path, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int,
               vocab: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                         max_position_embeddings=4096)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out}: {n_params / 1e6:.1f}M parameters", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="build/gptq-quant")
    parser.add_argument("--model")
    parser.add_argument("--text")
    parser.add_argument("--random-tokens", type=int, default=0)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--max-windows", type=int, default=0)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--make-llama")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()
    if args.make_llama:
        make_llama(Path(args.make_llama), args.layers, args.hidden, args.intermediate, args.heads,
                   args.kv_heads, args.vocab)
        return 0

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "ids.json"
        if args.text:
            from transformers import AutoTokenizer

            ids = AutoTokenizer.from_pretrained(args.model)(Path(args.text).read_text())["input_ids"]
        else:
            vocab = json.loads((Path(args.model) / "config.json").read_text())["vocab_size"]
            ids = torch.randint(0, vocab, (args.random_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
        ids_file.write_text(json.dumps(ids))
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        common = ["--seqlen", str(args.seqlen), "--max-windows", str(args.max_windows)]
        ours_cmd = [args.binary, "-q", "benchmark", "ppl", "--model", args.model, "--device", "cpu",
                    "--dtype", args.dtype, "--json", *common]
        ours_cmd += ["--text", args.text] if args.text else ["--tokens", str(ids_file)]
        ours = json.loads(subprocess.run(ours_cmd, check=True, capture_output=True, text=True, env=env).stdout)
        hf_args = json.dumps({"model": args.model, "ids": str(ids_file), "seqlen": args.seqlen,
                              "max_windows": args.max_windows, "dtype": args.dtype, "threads": args.threads})
        hf = json.loads(subprocess.run([sys.executable, "-c", HF_SIDE, hf_args], check=True,
                                       capture_output=True, text=True, env=env).stdout.splitlines()[-1])
    mib = 1024 * 1024
    print(f"| side | ppl | windows x seqlen | tokens/s | load s | peak RSS over baseline |")
    print(f"|---|---|---|---|---|---|")
    for name, row in (("gptq-quant", ours), ("transformers", hf)):
        extra = (row["peak_rss_bytes"] - row["baseline_rss_bytes"]) / mib
        print(f"| {name} | {row['ppl']:.4f} | {row['n_windows']} x {args.seqlen} | {row['tokens_per_s']:.1f} "
              f"| {row['load_s']:.2f} | {extra:.0f} MiB |")
    print(json.dumps({"gptq_quant": ours, "transformers": hf}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
