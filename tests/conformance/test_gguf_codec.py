"""The ggml block codec (gptq::gguf::encode_rows / decode_rows / quantize_rows)
against llama.cpp's own gguf-py (gguf.quants), the numpy port of ggml's
dequantize_row_* and of the legacy quantize_row_*_ref.

gptq_tool_ggml_codec quantizes a few weights to every ggml type we write: by
round to nearest (quantize_rows, for the K-quants also with an importance
vector diag(H)) and by GPTQ on make_ggml_grid (the solver's codes, scales and
grid zeros encoded with encode_rows). For each we check:
  - gguf-py's dequantize of our bytes equals our decode_rows bit for bit, and
    for GPTQ also the solver's dequantized weight (what later blocks saw);
  - Q4_0, Q4_1 and Q8_0 round to nearest equals gguf-py's quantize byte for
    byte (it mirrors ggml's _ref: codes from the float32 d and min, d and m
    then rounded to fp16; Q8_0 rounds half away from zero). gguf-py has no
    K-quant quantizer, so K-quant bytes are checked by decoding only;
  - GPTQ's output error on the calibration inputs is below round to
    nearest's on every grid;
  - where llama.cpp is built (libggml-base under build/bin), our round to
    nearest equals ggml's own C quantizer (ggml_quantize_chunk, with the same
    imatrix for the K-quants): the same values everywhere, the same bytes on
    the Gaussian and trained-like weights. On the adversarial rows the bytes
    may differ where the values cannot: codes of zero-scale groups (ggml
    leaves its search's codes there), an equivalent (d, sc) split, and Q6_K
    super-blocks whose fp16 d underflows, which ggml decodes to -0 where we
    decode +0.

Needs GPTQ_LLAMA_CPP_DIR (gguf-py/ under it); skips without it.
"""
from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import llama_cpp_peer as lcpp
from model_driver import tool

lcpp.require(built=False)
gguf = lcpp.gguf()
from gguf.quants import dequantize, quantize  # noqa: E402

TYPES = {
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q4_1": gguf.GGMLQuantizationType.Q4_1,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_K": gguf.GGMLQuantizationType.Q4_K,
    "q5_K": gguf.GGMLQuantizationType.Q5_K,
    "q6_K": gguf.GGMLQuantizationType.Q6_K,
}
LEGACY = ("q4_0", "q4_1", "q8_0")
NAMES = ("gaussian", "trained", "adversarial")


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(13)
    gaussian = rng.standard_normal((32, 512)) * 0.05
    # Trained-like: heavy tails, per-row scales, a few outlier columns.
    t = rng.standard_normal((48, 1024)) / np.sqrt(rng.chisquare(4, (48, 1024)) / 4)
    trained = t * rng.uniform(0.005, 0.05, (48, 1)) * np.where(rng.random(1024) < 0.01, 8, 1)
    # Adversarial rows: zeros, constants, one huge outlier, negative-only, tiny.
    adversarial = rng.standard_normal((12, 256)) * 0.02
    adversarial[0] = 0
    adversarial[1] = 0.75
    adversarial[2] = -3.5
    adversarial[3, 7] = 300
    adversarial[4] = -rng.random(256) - 0.25
    adversarial[5] = rng.standard_normal(256) * 1e-6
    adversarial[6] = rng.standard_normal(256) * 1e-9
    adversarial[7, :128] = 0
    return {"gaussian": gaussian.astype(np.float32), "trained": trained.astype(np.float32),
            "adversarial": adversarial.astype(np.float32)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ggml_codec")
    rng = np.random.default_rng(14)
    tensors = {}
    for name, W in weights().items():
        tensors[f"W.{name}"] = W
        scale = rng.uniform(0.1, 2.0, W.shape[1]).astype(np.float32)
        tensors[f"X.{name}"] = rng.standard_normal((256, W.shape[1])).astype(np.float32) * scale
    save_file(tensors, str(tmp / "in.safetensors"))
    result = subprocess.run([str(tool("ggml_codec")), str(tmp / "in.safetensors"),
                             str(tmp / "out.safetensors")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return tensors, load_file(str(tmp / "out.safetensors"))


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("type_name", list(TYPES))
@pytest.mark.parametrize("name", NAMES)
def test_gguf_py_decodes_our_bytes_to_our_values(run, name, type_name):
    _, out = run
    variants = ["rtn", "gptq"] + (["imatrix"] if type_name not in LEGACY else [])
    for variant in variants:
        key = f"{name}.{type_name}.{variant}"
        theirs = dequantize(out[f"{key}.bytes"], TYPES[type_name])
        ours = out[f"{key}.decode"]
        assert theirs.shape == ours.shape, key
        assert np.isfinite(theirs).all(), key
        differ = bits(theirs) != bits(ours)
        assert not differ.any(), f"{key}: {differ.sum()} values differ, first at {np.argwhere(differ)[0]}"
        if variant == "gptq":
            differ = bits(theirs) != bits(out[f"{key}.deq"])
            assert not differ.any(), f"{key}: the solver's weights differ from ggml's decode at {differ.sum()} values"


@pytest.mark.parametrize("type_name", LEGACY)
@pytest.mark.parametrize("name", NAMES)
def test_round_to_nearest_matches_gguf_py_quantizer(run, name, type_name):
    tensors, out = run
    theirs = quantize(tensors[f"W.{name}"], TYPES[type_name])
    ours = out[f"{name}.{type_name}.rtn.bytes"]
    assert theirs.shape == ours.shape
    differ = theirs != ours
    assert not differ.any(), f"{differ.sum()} of {ours.size} bytes differ, first at {np.argwhere(differ)[0]}"


@pytest.mark.parametrize("type_name", list(TYPES))
def test_gptq_beats_round_to_nearest_on_its_grid(run, type_name):
    tensors, out = run
    W, X = tensors["W.trained"], tensors["X.trained"]
    err = {}
    for variant in ("rtn", "gptq"):
        Q = dequantize(out[f"trained.{type_name}.{variant}.bytes"], TYPES[type_name])
        err[variant] = float(np.square(X @ (W - Q).T).mean())
    assert err["gptq"] < err["rtn"], err


def ggml_quantizer():
    path = lcpp.root() / "build" / "bin" / "libggml-base.so"
    if not path.exists():
        pytest.skip(f"llama.cpp is not built ({path} missing)")
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    def quantize_chunk(W: np.ndarray, qtype, imatrix: np.ndarray | None) -> np.ndarray:
        W = np.ascontiguousarray(W, dtype=np.float32)
        dst = np.zeros(gguf.quants.quant_shape_to_byte_shape(W.shape, qtype), dtype=np.uint8)
        weights = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
        lib.ggml_quantize_chunk(int(qtype), W.ctypes.data, dst.ctypes.data, 0, W.shape[0], W.shape[1],
                                None if weights is None else weights.ctypes.data)
        return dst

    return quantize_chunk


@pytest.mark.parametrize("type_name", list(TYPES))
@pytest.mark.parametrize("name", NAMES)
def test_round_to_nearest_matches_ggml_c_quantizer(run, name, type_name):
    quantize_chunk = ggml_quantizer()
    tensors, out = run
    W, X = tensors[f"W.{name}"], tensors[f"X.{name}"]
    importance = np.diag(2.0 * X.T @ X / X.shape[0]).astype(np.float32)
    variants = {"rtn": None} | ({} if type_name in LEGACY else {"imatrix": importance})
    for variant, imatrix in variants.items():
        ours = out[f"{name}.{type_name}.{variant}.bytes"]
        theirs = quantize_chunk(W, TYPES[type_name], imatrix)
        values_ours, values_theirs = (dequantize(b, TYPES[type_name]) for b in (ours, theirs))
        assert np.array_equal(values_ours, values_theirs), f"{variant}: values differ"
        if name != "adversarial":
            assert np.array_equal(ours, theirs), f"{variant}: {(ours != theirs).sum()} bytes differ"
