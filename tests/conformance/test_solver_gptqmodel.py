"""gptq::solver::gptq_quantize against GPTQModel 7.7's GPTQ class, layer by layer.

Both sides get the same W [256, 512] and the same calibration inputs X (random,
correlated columns with unequal scales, so act-order matters), fed in the same
batches: the peer through GPTQ.add_batch, ours through HessianAccumulator in
solve_layer (tests/tools/solve_layer.cpp). The peer runs on CPU configured as
the paper: damp 0.01 with no auto increment, act_group_aware (GAR) off, mse
off, static_groups off, sym, block size 128.

Deviations of the peer that the comparison has to account for:
- Its loss is "avg_loss" = sum((w - q)^2 / Hinv[c,c]^2) / 2 / nsamples; ours is
  the sum without the division, so we compare ours with avg_loss * nsamples.
- It returns scale and zero as [out, n_groups]; ours are [n_groups, out].
- Codes are not returned: it returns Q = scale * (code - zero), so its codes
  are recovered as round(Q / scale + zero).
- Its H is a sum of per-batch X^T X scaled by 2/n at the end, ours a running
  mean; both are float32, so H agrees to rounding only (reported, not exact).
  GPTQ's sequential error feedback amplifies such ulp differences into rare
  flipped codes, hence the 99.9 % threshold rather than equality.
"""
import json
import os
from pathlib import Path

import pytest
import torch

from pack_fixtures import gptqmodel, run_solve_layer

OUT_FEATURES, IN_FEATURES, N_SAMPLES, BATCH_ROWS = 256, 512, 2048, 512
MIN_CODE_MATCH = 0.999
MAX_LOSS_REL_DIFF = 1e-3

CONFIGS = {
    "b4_g128": dict(bits=4, group_size=128, desc_act=False),
    "b4_g128_act_order": dict(bits=4, group_size=128, desc_act=True),
    "b3_g128": dict(bits=3, group_size=128, desc_act=False),
    "b8_g128": dict(bits=8, group_size=128, desc_act=False),
    "b4_per_row": dict(bits=4, group_size=-1, desc_act=False),
    "b2_g64_act_order": dict(bits=2, group_size=64, desc_act=True),
}

RESULTS = {}


def make_problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(OUT_FEATURES, IN_FEATURES, generator=gen) * 0.05
    mixing = torch.randn(IN_FEATURES, IN_FEATURES, generator=gen) / IN_FEATURES**0.5
    mixing += torch.eye(IN_FEATURES)
    column_scale = torch.exp(torch.randn(IN_FEATURES, generator=gen))
    X = (torch.randn(N_SAMPLES, IN_FEATURES, generator=gen) @ mixing) * column_scale
    return W, X


def run_peer(W, X, bits, group_size, desc_act):
    gptqmodel()
    from gptqmodel.quantization.config import QuantizeConfig
    from gptqmodel.quantization.gptq import GPTQ

    qcfg = QuantizeConfig(bits=bits, group_size=group_size, sym=True, desc_act=desc_act,
                          damp_percent=0.01, damp_auto_increment=0.0, act_group_aware=False,
                          static_groups=False, mse=0.0, fallback=None, offload_to_disk=False,
                          device="cpu")
    linear = torch.nn.Linear(IN_FEATURES, OUT_FEATURES, bias=False)
    linear.weight.data = W.clone()
    gptq = GPTQ(linear, qcfg)
    gptq.quantizer.configure(perchannel=True)  # as its GPTQProcessor does
    for batch in X.split(BATCH_ROWS):
        gptq.add_batch(batch.unsqueeze(0), None)
    H = gptq.finalize_hessian().clone()  # quantize() consumes it in place
    Q, scale, zero, g_idx, _, avg_loss, damp, nsamples = gptq.quantize(blocksize=128)
    cols = g_idx.long()
    codes = torch.round(Q / scale[:, cols] + zero[:, cols]).to(torch.uint8)
    return {"codes": codes, "scales": scale.T.contiguous(), "zeros": zero.T.to(torch.int32),
            "g_idx": g_idx.to(torch.int32), "dequantized": Q, "H": H,
            "loss": avg_loss * nsamples, "damp": damp, "nsamples": nsamples}


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_solver_matches_gptqmodel(name, problem, tmp_path):
    config = CONFIGS[name]
    W, X = problem
    flags = ["--bits", config["bits"], "--group-size", config["group_size"],
             "--damp-percent", 0.01, "--damp-increment", 0, "--max-damp-retries", 0,
             "--block-size", 128, "--batch-rows", BATCH_ROWS]
    if config["desc_act"]:
        flags.append("--desc-act")
    ours, meta = run_solve_layer("solve", {"W": W, "X": X}, tmp_path, *flags)
    peer = run_peer(W, X, **config)

    h_rel = ((ours["H"] - peer["H"]).abs().max() / peer["H"].abs().max()).item()
    code_match = (ours["codes"] == peer["codes"]).float().mean().item()
    our_loss = float(meta["loss"])
    loss_rel = abs(our_loss - peer["loss"]) / peer["loss"]
    scale_rel = ((ours["scales"] - peer["scales"]).abs() / peer["scales"]).max().item()
    RESULTS[name] = dict(code_match=code_match, loss_ours=our_loss, loss_peer=peer["loss"],
                         loss_rel_diff=loss_rel, hessian_max_rel_diff=h_rel,
                         scale_max_rel_diff=scale_rel, n_samples=int(meta["n_samples"]),
                         peer_nsamples=int(peer["nsamples"]))
    print(name, RESULTS[name])

    assert int(meta["n_samples"]) == peer["nsamples"] == N_SAMPLES
    assert h_rel < 1e-5, f"Hessians differ by {h_rel:.3g} (relative to max |H|)"
    assert torch.equal(ours["g_idx"], peer["g_idx"]), "act-order permutation or groups differ"
    assert float(meta["damp_used"]) == pytest.approx(peer["damp"])
    assert code_match >= MIN_CODE_MATCH, f"{name}: only {100 * code_match:.3f} % of codes equal"
    assert loss_rel <= MAX_LOSS_REL_DIFF, f"{name}: loss {our_loss:.6g} vs {peer['loss']:.6g}"
    assert torch.equal(ours["zeros"], peer["zeros"])


def teardown_module(module):
    build_dir = os.environ.get("GPTQ_BUILD_DIR")
    if build_dir and RESULTS:
        out = Path(build_dir) / "conformance"
        out.mkdir(exist_ok=True)
        (out / "solver_gptqmodel.json").write_text(json.dumps(RESULTS, indent=2))
