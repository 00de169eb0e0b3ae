"""Runs our side of the model conformance tests: the gptq-quant CLI and the
gptq_tool_model_logits tool built next to it (paths from CTest's env)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest


def binary() -> Path:
    path = os.environ.get("GPTQ_BINARY")
    if not path:
        pytest.skip("GPTQ_BINARY not set (run through ctest)")
    return Path(path)


def tool(name: str) -> Path:
    build = os.environ.get("GPTQ_BUILD_DIR")
    if not build:
        pytest.skip("GPTQ_BUILD_DIR not set (run through ctest)")
    path = Path(build) / "tests" / f"gptq_tool_{name}"
    assert path.exists(), f"{path} is not built (cmake --build <build> --target gptq_tool_{name})"
    return path


def shared_data() -> Path:
    root = os.environ.get("GPTQ_SHARED_DIR")
    data = Path(root) / "data" if root else None
    if data is None or not data.is_dir():
        pytest.skip("../shared/data not found (set GPTQ_SHARED_DIR)")
    return data


def our_logits(model_dir, ids_file, out_file, dtype="auto", device="cpu") -> np.ndarray:
    proc = subprocess.run([str(tool("model_logits")), "--model", str(model_dir), "--ids", str(ids_file),
                           "--out", str(out_file), "--dtype", dtype, "--device", device],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    shape = json.loads(proc.stdout)["shape"]
    return np.fromfile(out_file, dtype="<f4").reshape(shape)


def run_cli(*args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary()), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def our_ppl(model_dir, *args) -> dict:
    proc = run_cli("-q", "benchmark", "ppl", "--model", model_dir, "--device", "cpu", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
