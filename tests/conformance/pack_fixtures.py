"""Shared helpers for the GPTQ packing and solver conformance tests.

Our side runs through build/tests/gptq_tool_solve_layer (tests/tools/
solve_layer.cpp); the peer is GPTQModel 7.7 driven layer by layer on CPU.
GPTQMODEL_CPU_WORKERS must be set before gptqmodel is imported (ORACLES.md).
"""
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")


def tool_path() -> Path:
    build_dir = os.environ.get("GPTQ_BUILD_DIR")
    if not build_dir:
        pytest.skip("GPTQ_BUILD_DIR not set (run through CTest)")
    path = Path(build_dir) / "tests" / "gptq_tool_solve_layer"
    assert path.exists(), f"{path} not built (cmake --build ... --target gptq_tool_solve_layer)"
    return path


def run_solve_layer(mode: str, tensors: dict, tmp_path: Path, *flags):
    """Runs `solve_layer MODE in out FLAGS`; returns (tensors, metadata) of its output."""
    in_path, out_path = tmp_path / f"{mode}_in.safetensors", tmp_path / f"{mode}_out.safetensors"
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(in_path))
    result = subprocess.run([str(tool_path()), mode, str(in_path), str(out_path), *map(str, flags)],
                            capture_output=True, text=True)
    assert result.returncode == 0, (result.returncode, result.stderr)
    with safe_open(str(out_path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}


def gptqmodel():
    """Imports gptqmodel lazily (about a minute and a half on a loaded 2-core machine)."""
    return pytest.importorskip("gptqmodel")


def peer_pack(codes, zeros, scales, g_idx, bits, group_size, desc_act, impl="block"):
    """GPTQModel's own packing of the given codes, as its quantize() saves them (v1).

    The peer's packers take a float weight and recompute the codes as
    round(W / s + z), so W is rebuilt from our codes exactly enough for that to
    return them. zeros/scales come in our [G, out] orientation; the peer wants
    [out, G] (its GPTQ.quantize returns them that way).
    """
    gptqmodel()
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    from gptqmodel.quantization.config import QuantizeConfig
    from gptqmodel.utils.model import convert_gptq_v2_to_v1_format_module

    out_features, in_features = codes.shape
    cols = g_idx.long()
    weight = (codes.float() - zeros.float()[cols].T) * scales.float()[cols].T
    linear = torch.nn.Linear(in_features, out_features, bias=False)
    linear.weight.data = weight
    module = TorchLinear(bits=bits, group_size=group_size, sym=True, desc_act=desc_act,
                         in_features=in_features, out_features=out_features, bias=False,
                         pack_dtype=torch.int32)
    pack = module.pack_block if impl == "block" else module.pack_original
    pack(linear, scales.float().T.contiguous(), zeros.float().T.contiguous(), g_idx.to(torch.int32))
    convert_gptq_v2_to_v1_format_module(
        module, QuantizeConfig(bits=bits, group_size=group_size, offload_to_disk=False))
    return {"qweight": module.qweight, "qzeros": module.qzeros, "scales": module.scales,
            "g_idx": module.g_idx}
