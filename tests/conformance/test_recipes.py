"""Mixed-precision recipes (--recipe), checked from the outside:

1. A recipe with three precisions and a skipped module: an independent unpack
   (bits from each module's own shapes, not our config) finds every module at
   the bits the recipe asked, the skipped one as a plain .weight; GPTQModel
   loads the checkpoint (its "dynamic" map) and gives our logits; transformers
   on the dequantized weights gives our perplexity.
2. Every preset in configs/ quantizes a fixture model it fits, each module at
   the preset's bits; --dry-run prints the same table without writing.
3. On a trained model, attention 8-bit + MLP 4-bit lands between uniform
   4-bit and uniform 8-bit in perplexity.
4. Bad recipes: exit 2 with one line naming the rule and the key.
"""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from hf_fixtures import hf_perplexity, make_tiny_model, random_ids, write_ids
from model_driver import our_logits, our_ppl, run_cli
from quant_fixtures import (encode, gptqmodel_logits, module_bits, quantize, save_word_tokenizer,
                            stories_text, train_tiny_llama, windows, write_dequantized)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
N_SAMPLES, SEQLEN = 16, 64


def calib(tmp_path, vocab=320) -> Path:
    return write_ids(tmp_path / "calib.json", random_ids(N_SAMPLES, SEQLEN, vocab, seed=4))


def packed_bits(out_dir: Path) -> dict[str, int | None]:
    """Module -> bits read from its packed shapes; None for a module stored as .weight."""
    tensors = {}
    for shard in out_dir.glob("*.safetensors"):
        tensors.update(load_file(str(shard)))
    bits = {}
    for name, tensor in tensors.items():
        if name.endswith(".qweight"):
            prefix = name[: -len(".qweight")]
            bits[prefix] = module_bits(tensor, tensors[prefix + ".g_idx"])
        elif (name.endswith(".weight") and ".layers." in name and "norm" not in name and tensor.dim() == 2
              and not name.endswith(".mlp.gate.weight")):  # MoE routers are never quantized
            bits[name[: -len(".weight")]] = None
    return bits


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(json.dumps(recipe))
    return path


MIXED = {"default": {"bits": 4, "group_size": 32, "sym": True},
         "rules": [{"match": "*.self_attn.*", "bits": 8, "group_size": 64},
                   {"match": "re:model\\.layers\\.0\\.mlp\\..*", "bits": 2},
                   {"match": "model.layers.1.mlp.down_proj", "skip": True}]}


def expected_mixed_bits(module: str) -> int | None:
    if module == "model.layers.1.mlp.down_proj":
        return None
    if ".self_attn." in module:
        return 8
    return 2 if module.startswith("model.layers.0.mlp.") else 4


def test_three_precisions_and_a_skip_load_in_gptqmodel(tmp_path):
    pytest.importorskip("gptqmodel")
    model_dir = make_tiny_model("llama", tmp_path / "model", seed=7)
    save_word_tokenizer(model_dir, 320)
    out, report_path = tmp_path / "gptq", tmp_path / "report.json"
    quantize(model_dir, out, "--recipe", write_recipe(tmp_path / "r.json", MIXED), "--calib", calib(tmp_path),
             "--nsamples", N_SAMPLES, "--seqlen", SEQLEN, "--report", report_path)
    bits = packed_bits(out)
    assert len(bits) == 14
    for module, found in bits.items():
        assert found == expected_mixed_bits(module), (module, found)
    report = {e["name"]: e for e in json.loads(report_path.read_text())["layers"]}
    assert not report["model.layers.1.mlp.down_proj"]["quantized"]
    assert report["model.layers.0.self_attn.q_proj"]["group_size"] == 64

    ids_file = write_ids(tmp_path / "ids.json", random_ids(2, 40, 320, seed=5))
    ours = our_logits(out, ids_file, tmp_path / "logits.bin", dtype="fp16")
    theirs = gptqmodel_logits(out, ids_file, tmp_path / "theirs.npy")
    assert float(np.abs(ours - theirs).max() / np.abs(theirs).max()) < 1e-2

    ids = random_ids(1, 64 * 4, 320, seed=9).flatten()
    mine = our_ppl(out, "--tokens", write_ids(tmp_path / "ppl.json", ids), "--seqlen", 64)
    ref = hf_perplexity(write_dequantized(model_dir, out, tmp_path / "dequantized"), ids, seqlen=64)
    assert abs(mine["ppl"] / ref["ppl"] - 1) < 1e-3, (mine, ref)


# Preset -> the fixture it fits (widths divisible by its group sizes).
PRESET_MODELS = {"w4g128.json": "llama", "w4g128-actorder.json": "llama", "w8-attention-w4-mlp.json": "llama",
                 "moe-experts-w4-rest-w8.json": "qwen3-moe", "w3g64-experts.json": "qwen3-moe"}
WIDE = {"hidden_size": 128, "intermediate_size": 256, "moe_intermediate_size": 128, "head_dim": 32}


def preset_bits(preset: dict, module: str) -> int:
    bits = preset["default"]["bits"]
    for rule in preset["rules"]:
        if fnmatch.fnmatchcase(module, rule["match"]) and "bits" in rule:
            bits = rule["bits"]
    return bits


def test_presets_are_listed_and_each_quantizes_a_fixture(tmp_path):
    assert sorted(p.name for p in CONFIGS.glob("*.json")) == sorted(PRESET_MODELS)
    for name, arch in PRESET_MODELS.items():
        preset = json.loads((CONFIGS / name).read_text())
        assert preset["description"]
        overrides = {k: v for k, v in WIDE.items() if arch != "llama" or k != "moe_intermediate_size"}
        model_dir = make_tiny_model(arch, tmp_path / name / "model", seed=3, **overrides)
        dry = run_cli("quantize", "--model", model_dir, "--output", tmp_path / name / "dry", "--recipe",
                      CONFIGS / name, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert not (tmp_path / name / "dry").exists()
        table = {line.split()[0]: line.split()[1] for line in dry.stdout.splitlines()[1:]}
        out = tmp_path / name / "gptq"
        quantize(model_dir, out, "--recipe", CONFIGS / name, "--calib", calib(tmp_path / name),
                 "--nsamples", N_SAMPLES, "--seqlen", SEQLEN)
        bits = packed_bits(out)
        assert bits and set(bits) == set(table), name
        for module, found in bits.items():
            assert found == preset_bits(preset, module) == int(table[module]), (name, module, found)
        quantization = json.loads((out / "config.json").read_text())["quantization_config"]
        assert quantization["desc_act"] == preset["default"]["desc_act"], name


def test_attention_8bit_mlp_4bit_lands_between_uniform_4_and_8(tmp_path):
    text = stories_text()
    ids = encode(text[:400_000])
    model_dir = train_tiny_llama(tmp_path / "model", ids, steps=250)
    calib_file = write_ids(tmp_path / "calib.json", windows(ids, 32, 128, seed=0))
    eval_file = write_ids(tmp_path / "eval.json", encode(text[500_000:540_000]))
    ppl = {}
    recipes = {"w4": {"default": {"bits": 4, "group_size": 32}, "rules": []},
               "w8": {"default": {"bits": 8, "group_size": 32}, "rules": []},
               "mixed": {"default": {"bits": 4, "group_size": 32},
                         "rules": [{"match": "*.self_attn.*", "bits": 8}]}}
    for name, recipe in recipes.items():
        out = tmp_path / name
        quantize(model_dir, out, "--recipe", write_recipe(tmp_path / f"{name}.json", recipe), "--calib", calib_file,
                 "--nsamples", 32, "--seqlen", 128)
        ppl[name] = our_ppl(out, "--tokens", eval_file, "--seqlen", 128)["ppl"]
    print(ppl)
    assert ppl["w8"] < ppl["mixed"] < ppl["w4"], ppl


@pytest.mark.parametrize("recipe,message", [
    ({"rules": [{"match": "*.self_attn.*", "bitz": 8}]}, "rules[0] (match '*.self_attn.*'): unknown key 'bitz'"),
    ({"default": {"bits": 5}}, "default: key 'bits' must be one of 2, 3, 4, 8"),
    ({"rules": [{"match": "*.attn.*", "bits": 8}]}, "rules[0] (match '*.attn.*') matches no quantizable module"),
    ({"default": {"group_size": 32}, "rules": [{"match": "*.mlp.down_proj", "group_size": 48}]},
     "model.layers.0.mlp.down_proj: group_size 48 (recipe rules[0] (match '*.mlp.down_proj')) does not divide"),
    ({"default": {"group_size": 128}}, "r.json default) does not divide its 64 input columns"),
    ({"rules": [{"match": "*.mlp.*", "desc_act": True}]}, "key 'desc_act' is a job-wide setting"),
])
def test_bad_recipe_exits_2_naming_rule_and_key(recipe, message, tmp_path):
    model_dir = make_tiny_model("llama", tmp_path / "model", seed=7)
    proc = run_cli("quantize", "--model", model_dir, "--output", tmp_path / "out", "--recipe",
                   write_recipe(tmp_path / "r.json", recipe), "--calib", calib(tmp_path),
                   "--nsamples", N_SAMPLES, "--seqlen", SEQLEN)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
