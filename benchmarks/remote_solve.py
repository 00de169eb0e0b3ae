#!/usr/bin/env python3
"""Remote layer solves (`gptq-quant server` + `quantize --workers`) against
local ones, on loopback.

    ~/.cache/gptq-quant/venv/bin/python benchmarks/remote_solve.py --binary build/gptq-quant \\
        [--hidden 4096 --inter 14336] [--nsamples 4 --seqlen 128] [--json out.json]

The model is one random bf16 Llama block of the given widths (MHA), so its
o_proj is hidden x hidden (4096^2 by default) and its down_proj hidden x inter
(4096x14336); calibration is random ids. The same 4-bit g128 GPTQ job runs
  local        every solve in the quantizing process,
  remote       every solve on one worker (plaintext, bearer token),
  remote TLS   the same over TLS (a self-signed certificate made here),
  2 workers    two plaintext workers (jobs go round-robin, one at a time),
and each linear's "seconds" in the report (its solve's wall time, including
serialising, sending and receiving for a remote one) is compared with the
local run's: the difference is the per-linear overhead of going remote. The
worker runs on the same machine (all threads), the client idles meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "conformance"))
from random_llama import make_random_llama  # noqa: E402


def start_worker(binary: str, token: Path, tls: tuple[Path, Path] | None) -> tuple[subprocess.Popen, int]:
    cmd = [binary, "server", "--listen", "127.0.0.1:0", "--token-file", str(token), "--device", "cpu",
           "--max-message-mib", "4096"]
    if tls:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"serving layer solves on [^:]+:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    proc.kill()
    sys.exit("the worker did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--inter", type=int, default=14336)
    parser.add_argument("--nsamples", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--json")
    args = parser.parse_args()
    binary = str(Path(args.binary).resolve())
    results = {}
    with tempfile.TemporaryDirectory(prefix="gptq-remote-") as tmp:
        root = Path(tmp)
        model = make_random_llama(root / "model", 1, args.hidden, args.inter, 8000, seed=0)
        calib = root / "calib.json"
        calib.write_text(json.dumps(np.random.default_rng(1).integers(0, 8000, (args.nsamples, args.seqlen)).tolist()))
        token = root / "token"
        token.write_text("benchmark-token-0123456789abcdef\n")
        cert, key = root / "cert.pem", root / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True)

        def quantize(label: str, *extra: str) -> dict:
            report = root / f"{label}.json"
            cmd = [binary, "-q", "quantize", "--model", str(model), "--output", str(root / label), "--device", "cpu",
                   "--calib", str(calib), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen),
                   "--bits", "4", "--group-size", "128", "--report", str(report), *extra]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"{label} failed: {proc.stderr[-3000:]}")
            rep = json.loads(report.read_text())
            return {"wall_s": wall, "solve_s": rep["timings_s"]["solve"],
                    "linears": {layer["name"].split(".")[-1]: layer["seconds"] for layer in rep["layers"]},
                    "remote_solve": rep.get("remote_solve")}

        results["local"] = quantize("local")
        for label, tls, n_workers in (("remote", False, 1), ("remote TLS", True, 1), ("2 workers", False, 2)):
            workers = [start_worker(binary, token, (cert, key) if tls else None) for _ in range(n_workers)]
            try:
                host = "localhost" if tls else "127.0.0.1"
                extra = ["--workers", ",".join(f"{host}:{port}" for _, port in workers), "--worker-token-file",
                         str(token)]
                if tls:
                    extra += ["--tls-ca", str(cert)]
                results[label] = quantize(label.replace(" ", "-"), *extra)
            finally:
                for proc, _ in workers:
                    proc.terminate()
                    proc.wait(timeout=60)

    local = results["local"]["linears"]
    print(f"one block, hidden {args.hidden}, intermediate {args.inter}; {args.nsamples} x {args.seqlen} tokens")
    print(f"{'linear (stacked solve)':<24} {'local s':>8} " + " ".join(f"{k + ' s':>13} {'overhead':>9}"
                                                                    for k in results if k != "local"))
    shapes = {"q_proj": f"q/k/v {3 * args.hidden}x{args.hidden}", "o_proj": f"o {args.hidden}x{args.hidden}",
              "gate_proj": f"gate/up {2 * args.inter}x{args.hidden}", "down_proj": f"down {args.hidden}x{args.inter}"}
    for name, shape in shapes.items():
        # A stacked solve's time is split across its linears by rows: add them back up.
        members = {"q_proj": ("q_proj", "k_proj", "v_proj"), "gate_proj": ("gate_proj", "up_proj")}.get(name, (name,))
        total = lambda linears: sum(linears[m] for m in members)
        row = f"{shape:<24} {total(local):8.2f} "
        for label, result in results.items():
            if label != "local":
                row += f"{total(result['linears']):13.2f} {total(result['linears']) - total(local):+9.2f} "
        print(row)
    for label, result in results.items():
        print(f"{label:<12} wall {result['wall_s']:7.2f} s, solves {result['solve_s']:7.2f} s"
              + (f", workers {result['remote_solve']}" if result["remote_solve"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
