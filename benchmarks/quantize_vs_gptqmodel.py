#!/usr/bin/env python3
"""End-to-end quantization time: gptq-quant vs GPTQModel 7.7 on the same
models and the same calibration tokens, 4-bit g128, GPTQ paper settings,
act-order off and on. Prints one line per run and the speed ratios.

    ~/.cache/gptq-quant/venv/bin/python benchmarks/quantize_vs_gptqmodel.py \
        --binary build/gptq-quant [--models small,168m] [--nsamples 128 --seqlen 512]

Models are random checkpoints made by transformers from a fixed seed (timing
does not depend on the weights' values): "small" = Llama, 4 layers, hidden
256, intermediate 768, vocab 2048; "168m" = Llama, 8 layers, hidden 1024,
intermediate 2816, vocab 32000; "moe" = Qwen3-MoE, 4 layers, hidden 1024,
32 experts of width 512, top-4, vocab 8192 (--models moe --desc-act off). Both tools run on the CPU in fp32 (GPTQModel loaded with
dtype=torch.float32) with all threads; timings include loading, calibration
forwards, Hessians, solves, packing and writing. GPTQModel's one-time
extension compile is excluded by a warm-up run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

MODELS = {
    "small": dict(num_hidden_layers=4, hidden_size=256, intermediate_size=768, vocab_size=2048,
                  num_attention_heads=8, num_key_value_heads=4),
    "168m": dict(num_hidden_layers=8, hidden_size=1024, intermediate_size=2816, vocab_size=32000,
                 num_attention_heads=16, num_key_value_heads=8),
    "moe": dict(num_hidden_layers=4, hidden_size=1024, intermediate_size=2816, vocab_size=8192,
                num_attention_heads=16, num_key_value_heads=8, head_dim=64, moe_intermediate_size=512,
                num_experts=32, num_experts_per_tok=4, norm_topk_prob=True),
}
FAMILIES = {"moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM")}


SHARED = Path(os.environ.get("GPTQ_SHARED_DIR", Path(__file__).resolve().parent.parent.parent / "shared"))


def train_tokenizer(vocab_size: int, out: Path) -> None:
    """A byte-level BPE tokenizer.json of the model's vocabulary size, trained by
    `tokenizers` on WikiText-2 (GPTQModel.load refuses a directory without
    one; the calibration below is token ids, so its merges do not matter)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text_file = SHARED / "data" / "wikitext2-raw" / "wiki.test.raw"
    lines = text_file.read_text(encoding="utf-8").split("\n") if text_file.exists() else \
        [" ".join(f"word{k % 997} w{k % 31}" for k in range(row, row + 64)) for row in range(20000)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(lines, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>").save_pretrained(out)


def make_model(name: str, out: Path) -> Path:
    import transformers

    config_name, model_name = FAMILIES.get(name, ("LlamaConfig", "LlamaForCausalLM"))
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(max_position_embeddings=2048, rms_norm_eps=1e-5,
                                                tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
                                                **MODELS[name])
    getattr(transformers, model_name)(config).save_pretrained(out, safe_serialization=True)
    train_tokenizer(MODELS[name]["vocab_size"], out)
    return out


def calibration(vocab: int, n_samples: int, seqlen: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (n_samples, seqlen), generator=generator).tolist()


def run_ours(binary: Path, model: Path, out: Path, calib_file: Path, n_samples, seqlen, desc_act) -> float:
    args = [str(binary), "-q", "quantize", "--model", str(model), "--output", str(out), "--calib",
            str(calib_file), "--nsamples", str(n_samples), "--seqlen", str(seqlen), "--bits", "4",
            "--group-size", "128", "--device", "cpu", "--dtype", "fp32"]
    if desc_act:
        args.append("--desc-act")
    start = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - start


def run_gptqmodel(model: Path, out: Path, windows, desc_act) -> float:
    from gptqmodel import GPTQModel, QuantizeConfig

    config = QuantizeConfig(bits=4, group_size=128, sym=True, desc_act=desc_act, damp_percent=0.01,
                            damp_auto_increment=0.0, act_group_aware=False, static_groups=False,
                            mse=0.0, true_sequential=True, offload_to_disk=False, fallback=None,
                            device="cpu")
    calib = [{"input_ids": torch.tensor(w).unsqueeze(0),
              "attention_mask": torch.ones(1, len(w), dtype=torch.long)} for w in windows]
    start = time.perf_counter()
    model_obj = GPTQModel.load(str(model), config, dtype=torch.float32)
    model_obj.quantize(calib, batch_size=1, calibration_sort=None)
    model_obj.save(str(out))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, default=Path(__file__).resolve().parent.parent / "build" / "gptq-quant")
    parser.add_argument("--models", default="small,168m")
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--skip-gptqmodel", action="store_true")
    parser.add_argument("--desc-act", choices=["both", "off", "on"], default="both")
    args = parser.parse_args()
    if not args.skip_gptqmodel:
        # Before any model is built: GPTQModel patches transformers' MoE blocks
        # on import, and a MoE class used before the patch loads wrongly.
        import gptqmodel  # noqa: F401
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            model = make_model(name, tmp / name)
            windows = calibration(MODELS[name]["vocab_size"], args.nsamples, args.seqlen)
            calib_file = tmp / f"{name}.calib.json"
            calib_file.write_text(json.dumps(windows))
            for desc_act in {"both": (False, True), "off": (False,), "on": (True,)}[args.desc_act]:
                tag = f"{name} desc_act={int(desc_act)}"
                ours = run_ours(args.binary, model, tmp / f"{name}-ours-{desc_act}", calib_file,
                                args.nsamples, args.seqlen, desc_act)
                theirs = None
                if not args.skip_gptqmodel:
                    if not results:  # warm-up: compiles GPTQModel's CPU extensions once
                        run_gptqmodel(model, tmp / "warmup", windows[:4], desc_act)
                    theirs = run_gptqmodel(model, tmp / f"{name}-theirs-{desc_act}", windows, desc_act)
                ratio = f"{theirs / ours:.2f}x" if theirs else "-"
                print(f"{tag:24s} gptq-quant {ours:7.1f}s  GPTQModel {theirs or float('nan'):7.1f}s  "
                      f"speed-up {ratio}", flush=True)
                results.append({"model": name, "desc_act": desc_act, "gptq_quant_s": ours,
                                "gptqmodel_s": theirs})
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
