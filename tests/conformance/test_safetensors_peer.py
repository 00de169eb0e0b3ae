"""gptq::io against the reference `safetensors` package, in both directions.

Our side runs through build/tests/gptq_tool_safetensors_tool (tests/tools/
safetensors_tool.cpp): `dump` prints names/dtypes/shapes/sha256 of the bytes,
`copy` rewrites a checkpoint with our writer.
"""
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file as torch_load_file
from safetensors.torch import save_file as torch_save_file

DTYPE_NAMES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.uint16: "U16", torch.uint32: "U32",
    torch.uint64: "U64", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def tool_path() -> Path:
    build_dir = os.environ.get("GPTQ_BUILD_DIR")
    if not build_dir:
        pytest.skip("GPTQ_BUILD_DIR not set (run through CTest)")
    path = Path(build_dir) / "tests" / "gptq_tool_safetensors_tool"
    assert path.exists(), f"{path} not built (cmake --build ... --target gptq_tool_safetensors_tool)"
    return path


def run_tool(*args, expect_rc=0):
    result = subprocess.run([str(tool_path()), *map(str, args)], capture_output=True, text=True)
    assert result.returncode == expect_rc, (result.returncode, result.stderr)
    return result


def dump(path, as_dtype=None):
    args = ["dump", path] + (["--as", as_dtype] if as_dtype else [])
    return json.loads(run_tool(*args).stdout)


def tensor_bytes(t: torch.Tensor) -> bytes:
    if t.numel() == 0:
        return b""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def make_tensors(seed=0):
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for dtype, name in DTYPE_NAMES.items():
        for label, shape in (("matrix", (6, 5)), ("scalar", ()), ("empty", (0, 4)), ("cube", (2, 3, 4))):
            if dtype == torch.bool:
                t = torch.randint(0, 2, shape, generator=gen).bool()
            elif dtype.is_floating_point:
                t = (torch.randn(shape, generator=gen) * 10).to(dtype)
            else:
                t = torch.randint(0, 127, shape, generator=gen).to(dtype)
            tensors[f"{name}.{label}"] = t
    return tensors


def check_dump_matches(dumped, tensors):
    assert set(dumped["tensors"]) == set(tensors)
    for name, t in tensors.items():
        entry = dumped["tensors"][name]
        assert entry["dtype"] == DTYPE_NAMES[t.dtype], name
        assert entry["shape"] == list(t.shape), name
        assert entry["sha256"] == sha(t), name


def test_we_read_files_written_by_torch_api(tmp_path):
    tensors = make_tensors()
    path = tmp_path / "ref.safetensors"
    torch_save_file(tensors, str(path), metadata={"origin": "python", "format": "pt"})
    dumped = dump(path)
    check_dump_matches(dumped, tensors)
    assert dumped["metadata"] == {"origin": "python", "format": "pt"}


def test_we_read_files_written_by_numpy_api(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {
        "f32": rng.standard_normal((7, 3)).astype(np.float32),
        "f16": rng.standard_normal((4,)).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 2)).astype(np.float64),
        "i64": rng.integers(-1000, 1000, (5,)).astype(np.int64),
        "i32": rng.integers(-1000, 1000, (3, 1)).astype(np.int32),
        "i16": rng.integers(-1000, 1000, (9,)).astype(np.int16),
        "i8": rng.integers(-100, 100, (2, 3)).astype(np.int8),
        "u8": rng.integers(0, 255, (11,)).astype(np.uint8),
        "bool": rng.integers(0, 2, (6,)).astype(np.bool_),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0,), dtype=np.int32),
    }
    path = tmp_path / "np.safetensors"
    np_save_file(arrays, str(path))
    dumped = dump(path)
    check_dump_matches(dumped, {k: torch.from_numpy(v) for k, v in arrays.items()})


def test_lazy_load_converts_like_torch(tmp_path):
    tensors = {"w": torch.randn(33, 17, dtype=torch.float32).to(torch.bfloat16),
               "h": torch.randn(8, dtype=torch.float16)}
    path = tmp_path / "conv.safetensors"
    torch_save_file(tensors, str(path))
    dumped = dump(path, "F32")
    for name, t in tensors.items():
        assert dumped["tensors"][name]["dtype"] == "F32"
        assert dumped["tensors"][name]["sha256"] == sha(t.to(torch.float32))


def test_python_reads_single_file_we_write(tmp_path):
    tensors = make_tensors(seed=1)
    src = tmp_path / "src.safetensors"
    torch_save_file(tensors, str(src), metadata={"origin": "python"})
    ours = tmp_path / "ours.safetensors"
    run_tool("copy", src, ours)
    loaded = torch_load_file(str(ours))
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and loaded[name].shape == t.shape, name
        assert tensor_bytes(loaded[name]) == tensor_bytes(t), name
    with safe_open(str(ours), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "origin": "python"}
    # Header padded with spaces to 8 bytes, as the reference writes it.
    raw = ours.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and raw[8:8 + n].decode().rstrip(" ").endswith("}")


def test_python_reads_sharded_checkpoint_we_write(tmp_path):
    tensors = {f"model.layers.{i}.w": torch.randn(16, 16).to(torch.bfloat16) for i in range(6)}
    tensors["lm_head.weight"] = torch.randn(64, 16)
    src = tmp_path / "src.safetensors"
    torch_save_file(tensors, str(src))
    out = tmp_path / "out"
    written = run_tool("copy", src, out, "--max-shard-bytes", 1100).stdout.split()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all(str(out / s) in written for s in shards)
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    seen = {}
    for shard in shards:
        loaded = torch_load_file(str(out / shard))
        for name, t in loaded.items():
            assert index["weight_map"][name] == shard
            assert name not in seen
            seen[name] = t
    assert set(seen) == set(tensors)
    for name, t in tensors.items():
        assert tensor_bytes(seen[name]) == tensor_bytes(t), name
    # And we read our own sharded output back identically.
    check_dump_matches(dump(out), tensors)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"


@pytest.mark.parametrize("damage", ["truncate_data", "truncate_header", "corrupt_json", "bad_length"])
def test_damaged_files_exit_2_with_one_line(tmp_path, damage):
    path = tmp_path / "damaged.safetensors"
    torch_save_file({"a": torch.randn(64), "b": torch.randn(32)}, str(path))
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    if damage == "truncate_data":
        raw = raw[:-5]
    elif damage == "truncate_header":
        raw = raw[: 8 + n // 2]
    elif damage == "corrupt_json":
        raw[8 + n // 2] = ord("\x00")
    else:
        raw[:8] = (1 << 40).to_bytes(8, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception):
        torch_load_file(str(path))  # the reference refuses these too
    result = run_tool("dump", path, expect_rc=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged.safetensors" in lines[0], result.stderr
    assert result.stdout == ""
