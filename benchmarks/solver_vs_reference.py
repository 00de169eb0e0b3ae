#!/usr/bin/env python3
"""gptq-quant's solver against the published GPTQ algorithm, same problem, same run.

Runs `gptq-quant benchmark solver --json`, then, in this process with the same
thread count, on the same seeded problem (libtorch and PyTorch share the CPU
generator, so W and X are bit-identical):
  * reference: IST-DASLab GPTQ written plainly in PyTorch from the paper and
    the reference semantics (add_batch running mean; fasterquant with
    blocksize 128, percdamp 0.01, groupsize, actorder; cholesky ->
    cholesky_inverse -> cholesky(upper=True); per-column loop with lazy
    batch updates);
  * gptqmodel (optional): GPTQModel's GPTQ class on CPU configured as the
    paper (damp 0.01 without auto increment, act_group_aware off, mse off).
Prints a table of medians and ratios (reference time / ours).

  benchmarks/solver_vs_reference.py --binary build/gptq-quant --size 4096 \
      --samples 4096 --bits 4 --group-size 128 --desc-act --repeat 3
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
import torch  # noqa: E402


def make_problem(rows, cols, samples, seed):
    """The benchmark's problem, drawn in the same order as src/solver/benchmark.cpp."""
    torch.manual_seed(seed)
    W = torch.randn(rows, cols)
    column_scale = torch.exp(0.5 * torch.randn(cols))
    shared = torch.randn(32, cols) * 0.5
    X = (torch.randn(samples, cols) + torch.randn(samples, 32) @ shared) * column_scale
    return W, X


# ---- the reference, as published (quant.py + gptq.py semantics) ----------
def ref_quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def ref_find_params(x, maxq, sym=True):
    tmp = torch.zeros(x.shape[0])
    xmin = torch.minimum(x.min(1)[0], tmp)
    xmax = torch.maximum(x.max(1)[0], tmp)
    if sym:
        xmax = torch.maximum(torch.abs(xmin), xmax)
        neg = xmin < 0
        if torch.any(neg):
            xmin[neg] = -xmax[neg]
    both = (xmin == 0) & (xmax == 0)
    xmin[both] = -1
    xmax[both] = +1
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def ref_hessian(X, batch_rows):
    cols = X.shape[1]
    H = torch.zeros(cols, cols)
    nsamples = 0
    for inp in X.split(batch_rows):
        m = inp.shape[0]
        H *= nsamples / (nsamples + m)
        nsamples += m
        inp = math.sqrt(2 / nsamples) * inp.float()
        H += inp.t().matmul(inp)
    return H


def ref_fasterquant(W, H, bits, groupsize, actorder, blocksize=128, percdamp=0.01):
    maxq = 2 ** bits - 1
    W = W.clone().float()
    H = H.clone()
    columns = W.shape[1]
    scale, zero = ref_find_params(W, maxq)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    Losses = torch.zeros_like(W)
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1 and (i1 + i) % groupsize == 0:
                scale, zero = ref_find_params(W[:, (i1 + i):(i1 + i + groupsize)], maxq)
            q = ref_quantize(w.unsqueeze(1), scale, zero, maxq).flatten()
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if actorder:
        Q = Q[:, torch.argsort(perm)]
    return Q, torch.sum(Losses).item()


def run_gptqmodel(W, X, bits, group_size, desc_act, batch_rows):
    from gptqmodel.quantization.config import QuantizeConfig
    from gptqmodel.quantization.gptq import GPTQ

    qcfg = QuantizeConfig(bits=bits, group_size=group_size, sym=True, desc_act=desc_act,
                          damp_percent=0.01, damp_auto_increment=0.0, act_group_aware=False,
                          static_groups=False, mse=0.0, fallback=None, offload_to_disk=False,
                          device="cpu")
    linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    linear.weight.data = W.clone()
    gptq = GPTQ(linear, qcfg)
    gptq.quantizer.configure(perchannel=True)
    start = time.perf_counter()
    for batch in X.split(batch_rows):
        gptq.add_batch(batch.unsqueeze(0), None)
    gptq.finalize_hessian()
    hessian_s = time.perf_counter() - start
    start = time.perf_counter()
    _, _, _, _, _, avg_loss, _, nsamples = gptq.quantize(blocksize=128)
    solve_s = time.perf_counter() - start
    return hessian_s, solve_s, avg_loss * nsamples


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.environ.get("GPTQ_BINARY", "build/gptq-quant"))
    parser.add_argument("--size", type=int)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--desc-act", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-rows", type=int, default=2048, help="rows per add_batch (ours: fixed 2048)")
    parser.add_argument("--no-gptqmodel", action="store_true", help="skip GPTQModel's GPTQ class")
    parser.add_argument("--json-out", help="also write all figures to this file")
    args = parser.parse_args()
    rows = args.size or args.rows
    cols = args.size or args.cols

    command = [args.binary, "benchmark", "solver", "--rows", str(rows), "--cols", str(cols),
               "--samples", str(args.samples), "--bits", str(args.bits), "--group-size",
               str(args.group_size), "--repeat", str(args.repeat), "--seed", str(args.seed),
               "--device", "cpu", "--json"]
    if args.desc_act:
        command.append("--desc-act")
    print("running:", " ".join(command), file=sys.stderr)
    ours = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    torch.set_num_threads(ours["threads"])

    W, X = make_problem(rows, cols, args.samples, args.seed)
    ref_h, ref_s, ref_loss = [], [], None
    for _ in range(args.repeat):
        start = time.perf_counter()
        H = ref_hessian(X, args.batch_rows)
        ref_h.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, ref_loss = ref_fasterquant(W, H, args.bits, args.group_size, args.desc_act)
        ref_s.append(time.perf_counter() - start)
    reference = {"hessian_s": statistics.median(ref_h), "solve_s": statistics.median(ref_s), "loss": ref_loss}

    peer = None
    if not args.no_gptqmodel:
        try:
            runs = [run_gptqmodel(W, X, args.bits, args.group_size, args.desc_act, args.batch_rows)
                    for _ in range(args.repeat)]
            peer = {"hessian_s": statistics.median(r[0] for r in runs),
                    "solve_s": statistics.median(r[1] for r in runs), "loss": runs[-1][2]}
        except ImportError as error:
            print(f"gptqmodel not available: {error}", file=sys.stderr)

    print(f"{rows}x{cols}, {args.samples} samples, {args.bits}-bit g{args.group_size}"
          f"{' act-order' if args.desc_act else ''}, {ours['threads']} threads, torch {torch.__version__}, "
          f"libtorch {ours['libtorch']}, median of {args.repeat}")
    header = f"{'':12} {'ours':>9} {'reference':>10} {'ref/ours':>9}"
    if peer:
        header += f" {'gptqmodel':>10} {'gm/ours':>8}"
    print(header)
    for key in ("hessian_s", "solve_s"):
        line = f"{key:12} {ours[key]:9.3f} {reference[key]:10.3f} {reference[key] / ours[key]:9.2f}"
        if peer:
            line += f" {peer[key]:10.3f} {peer[key] / ours[key]:8.2f}"
        print(line)
    line = f"{'loss':12} {ours['loss']:9.4g} {reference['loss']:10.4g} {reference['loss'] / ours['loss']:9.4f}"
    if peer:
        line += f" {peer['loss']:10.4g} {peer['loss'] / ours['loss']:8.4f}"
    print(line)
    print(f"floor_s {ours['floor_s']:.3f} = cholesky {ours['floor_cholesky_s']:.3f} + inverse "
          f"{ours['floor_inverse_s']:.3f} + upper cholesky {ours['floor_upper_cholesky_s']:.3f} + gemm "
          f"{ours['floor_gemm_s']:.3f}; our factorisation {ours['factor_s']:.3f}")
    targets = {
        "solve >= 2.5x faster than reference": reference["solve_s"] / ours["solve_s"] >= 2.5,
        "solve below floor_s": ours["solve_s"] < ours["floor_s"],
        "hessian <= 0.6x reference": ours["hessian_s"] <= 0.6 * reference["hessian_s"],
    }
    for name, met in targets.items():
        print(f"  {'met ' if met else 'MISSED'} {name}")
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump({"ours": ours, "reference": reference, "gptqmodel": peer,
                       "targets": targets, "load_average": os.getloadavg()}, out, indent=1)


if __name__ == "__main__":
    main()
