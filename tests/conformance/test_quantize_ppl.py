"""Perplexity ordering of our quantizers on real trained models:
fp <= GPTQ 4-bit < RTN 4-bit (fp may exceed GPTQ by 0.05 %, evaluation noise),
and GPTQ's increase over fp at most half of RTN's.
Perplexities are computed by transformers on the checkpoints read back by an
independent Python unpacker (quant_fixtures.dequantize_checkpoint)."""
from __future__ import annotations

import json

import pytest

from model_driver import shared_data
from quant_fixtures import (dequantize_checkpoint, encode, perplexity, quantize, stories_text,
                            train_tiny_llama, windows)


def check_ordering(model_dir, tmp_path, ids_calib, eval_ids, group_size, seqlen=128, n_samples=64):
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps(windows(ids_calib, n_samples, seqlen, seed=0)))
    quantize(model_dir, tmp_path / "gptq", "--calib", calib, "--nsamples", n_samples, "--seqlen", seqlen,
             "--group-size", group_size)
    quantize(model_dir, tmp_path / "rtn", "--group-size", group_size, method="rtn")
    fp = perplexity(model_dir, eval_ids, seqlen)
    gptq = perplexity(model_dir, eval_ids, seqlen, dequantize_checkpoint(tmp_path / "gptq"))
    rtn = perplexity(model_dir, eval_ids, seqlen, dequantize_checkpoint(tmp_path / "rtn"))
    print(f"ppl fp {fp:.4f} gptq {gptq:.4f} rtn {rtn:.4f}")
    if rtn <= fp * 1.0005:
        # Training is not bit-reproducible across CPUs (MKL picks other kernels
        # on AVX2 and AVX-512): on an AVX2 machine this fixture came out so easy
        # that even RTN left ppl unchanged (fp 31.4951, GPTQ 31.4870, RTN
        # 31.4766), and there is nothing left to rank.
        pytest.skip(f"RTN does not hurt this fixture (fp {fp:.4f}, rtn {rtn:.4f}): ordering not testable")
    assert fp <= gptq * 1.0005 < rtn, (fp, gptq, rtn)
    assert gptq - fp <= 0.5 * (rtn - fp), (fp, gptq, rtn)


def test_stories260k(tmp_path):
    model_dir = shared_data() / "stories260k-hf"
    text = stories_text()
    # 4-bit per-row (-1) on a 64-wide model, which is what g128 used to mean
    # here before group sizes that do not divide the input width were refused
    # (vLLM and GPTQModel need in_features % group_size == 0). down_proj (172
    # inputs) cannot be packed at 4 bits and stays as stored (fp32) in both.
    check_ordering(model_dir, tmp_path, encode(text[:300_000]), encode(text[400_000:460_000]), -1)


def test_briefly_trained_fixture(tmp_path):
    text = stories_text()
    ids = encode(text[:400_000])
    # 256 wide so 4-bit g128 has two groups per row: on the 64-wide model of
    # the stories260K shape one group spans the whole row and GPTQ has too few
    # columns to move error into (measured there: fp 16.04, GPTQ 16.16, RTN 16.19).
    model_dir = train_tiny_llama(tmp_path / "model", ids, steps=250, seed=1, hidden=256, intermediate=512)
    check_ordering(model_dir, tmp_path, ids, encode(text[500_000:560_000]), 128)
