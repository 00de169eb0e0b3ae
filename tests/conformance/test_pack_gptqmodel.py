"""gptq::pack against GPTQModel 7.7's own packers: byte-identical v1 tensors.

Same codes, zeros, scales and g_idx go through our pack_gptq (solve_layer pack)
and through GPTQModel's TorchLinear.pack_block (what its CPU quantize() uses)
and pack_original (the legacy numpy packer), each followed by its v2 -> v1
qzeros conversion as at save time. qweight, qzeros, scales and g_idx must be
equal bit for bit.
"""
import pytest
import torch

from pack_fixtures import peer_pack, run_solve_layer

OUT_FEATURES, IN_FEATURES, GROUP_SIZE = 128, 512, 128


def make_layer(bits, order, zeros_kind, seed):
    gen = torch.Generator().manual_seed(seed)
    maxq = 2**bits - 1
    n_groups = IN_FEATURES // GROUP_SIZE
    codes = torch.randint(0, maxq + 1, (OUT_FEATURES, IN_FEATURES), generator=gen, dtype=torch.uint8)
    codes[:, 0], codes[:, -1] = 0, maxq
    if zeros_kind == "sym":
        zeros = torch.full((n_groups, OUT_FEATURES), 2 ** (bits - 1), dtype=torch.int32)
    else:
        # Asymmetric grids, including zero points 0 (which borrow across v1
        # fields in GPTQModel's word-level "minus one") and maxq.
        zeros = torch.randint(0, maxq + 1, (n_groups, OUT_FEATURES), generator=gen, dtype=torch.int32)
        zeros[:, ::7], zeros[:, 3::7] = 0, maxq
    scales = torch.rand((n_groups, OUT_FEATURES), generator=gen) * 0.02 + 1e-3
    sequential = torch.arange(IN_FEATURES, dtype=torch.int32) // GROUP_SIZE
    if order == "desc_act":
        # As GPTQ with act-order leaves it: g_idx[original column] = rank // group_size.
        perm = torch.randperm(IN_FEATURES, generator=gen)
        g_idx = torch.empty(IN_FEATURES, dtype=torch.int32)
        g_idx[perm] = sequential
    else:
        g_idx = sequential
    return codes, zeros, scales, g_idx


def assert_same_bytes(name, ours, peer):
    assert ours.dtype == peer.dtype, (name, ours.dtype, peer.dtype)
    assert ours.shape == peer.shape, (name, tuple(ours.shape), tuple(peer.shape))
    if not torch.equal(ours.view(torch.int16) if ours.dtype == torch.float16 else ours,
                       peer.view(torch.int16) if peer.dtype == torch.float16 else peer):
        differing = (ours != peer).sum().item()
        pytest.fail(f"{name}: {differing} of {ours.numel()} elements differ")


@pytest.mark.parametrize("zeros_kind", ["sym", "asym"])
@pytest.mark.parametrize("order", ["sequential", "desc_act"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packed_tensors_are_byte_identical(bits, order, zeros_kind, tmp_path):
    codes, zeros, scales, g_idx = make_layer(bits, order, zeros_kind, seed=bits * 10 + len(order))
    ours, _ = run_solve_layer("pack", {"codes": codes, "zeros": zeros, "scales": scales, "g_idx": g_idx},
                              tmp_path, "--bits", bits)
    assert torch.equal(ours["unpacked_codes"], codes)
    assert torch.equal(ours["unpacked_zeros"], zeros)
    for impl in ("block", "original"):
        peer = peer_pack(codes, zeros, scales, g_idx, bits, GROUP_SIZE, order == "desc_act", impl)
        for name in ("qweight", "qzeros", "scales", "g_idx"):
            assert_same_bytes(f"{impl}:{name}", ours[name], peer[name])


def test_dequantized_matches_definition(tmp_path):
    # dequantized = (code - zero[g_idx]) * fp16 scale[g_idx], in float32.
    codes, zeros, scales, g_idx = make_layer(4, "desc_act", "asym", seed=5)
    ours, _ = run_solve_layer("pack", {"codes": codes, "zeros": zeros, "scales": scales, "g_idx": g_idx},
                              tmp_path, "--bits", 4)
    cols = g_idx.long()
    expected = (codes.float() - zeros.float()[cols].T) * scales.half().float()[cols].T
    assert torch.equal(ours["dequantized"], expected)
