#!/usr/bin/env python3
"""Writes seed inputs for gptq_fuzz_safetensors_header: valid .safetensors
files from the reference `safetensors` package (every dtype, scalars, empty
tensors, metadata) into the directory given as argv[1]."""
import sys
from pathlib import Path

import torch
from safetensors.torch import save

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool, torch.uint16, torch.uint32,
          torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2]


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = {
        "empty": ({}, None),
        "metadata_only": ({}, {"format": "pt", "k": "v"}),
        "scalar": ({"s": torch.tensor(1.5)}, None),
        "zero_size": ({"e": torch.zeros(0, 3)}, {"format": "pt"}),
    }
    for dtype in DTYPES:
        name = str(dtype).split(".")[-1]
        seeds[f"one_{name}"] = ({"w": torch.zeros(2, 3, dtype=dtype)}, None)
    seeds["mixed"] = ({f"model.layers.{i}.w": torch.zeros(4, 2, dtype=DTYPES[i]) for i in range(len(DTYPES))},
                      {"format": "pt", "note": "ünïcode"})
    for name, (tensors, metadata) in seeds.items():
        (out_dir / f"{name}.safetensors").write_bytes(save(tensors, metadata=metadata))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
