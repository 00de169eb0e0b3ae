"""Mixed-precision recipes (--recipe), checked from the outside:

1. A recipe with three precisions, a skipped module, an RTN module, an
   act-order module and a quantized lm_head: an independent unpack (bits from
   each module's own shapes, not our config) finds every module at the bits
   the recipe asked, the skipped one as a plain .weight, the RTN one equal to
   round-to-nearest written here, only the act-order one with a permuted
   g_idx; GPTQModel loads the checkpoint (its "dynamic" map, lm_head
   quantized) and gives our logits; transformers on the dequantized weights
   gives our perplexity. A tied model's quantized lm_head is written untied.
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
import torch
from safetensors.torch import load_file

from hf_fixtures import hf_perplexity, make_tiny_model, random_ids, write_ids
from model_driver import our_logits, our_ppl, run_cli
from quant_fixtures import (encode, gptqmodel_logits, module_bits, quantize, save_word_tokenizer,
                            stories_text, train_tiny_llama, unpacked_codes, windows, write_dequantized)

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
                   {"match": "model.layers.1.mlp.down_proj", "skip": True},
                   {"match": "model.layers.1.mlp.up_proj", "method": "rtn"},
                   {"match": "model.layers.1.mlp.gate_proj", "desc_act": True, "damp_percent": 0.05},
                   {"match": "lm_head", "bits": 8, "group_size": 32}]}


def expected_mixed_bits(module: str) -> int | None:
    if module == "model.layers.1.mlp.down_proj":
        return None
    if ".self_attn." in module or module == "lm_head":
        return 8
    return 2 if module.startswith("model.layers.0.mlp.") else 4


def rtn_codes(weight: torch.Tensor, bits: int, group_size: int) -> np.ndarray:
    """Symmetric min-max round-to-nearest codes, written from the GPTQ grid's definition."""
    maxq = 2 ** bits - 1
    w = weight.float().reshape(weight.shape[0], -1, group_size)
    xmax = torch.maximum(w.abs().amax(-1, keepdim=True), torch.full_like(w[..., :1], 1e-30))
    scale = 2 * xmax / maxq
    zero = (maxq + 1) / 2
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq).reshape(weight.shape).long().numpy()


def assert_loads_in_gptqmodel_as_ours(model_dir: Path, out: Path, tmp_path: Path) -> None:
    """GPTQModel's logits equal ours (fp16), and transformers on the
    dequantized weights gives our perplexity."""
    ids_file = write_ids(tmp_path / "ids.json", random_ids(2, 40, 320, seed=5))
    ours = our_logits(out, ids_file, tmp_path / "logits.bin", dtype="fp16")
    theirs = gptqmodel_logits(out, ids_file, tmp_path / "theirs.npy")
    assert float(np.abs(ours - theirs).max() / np.abs(theirs).max()) < 1e-2
    ids = random_ids(1, 64 * 4, 320, seed=9).flatten()
    mine = our_ppl(out, "--tokens", write_ids(tmp_path / "ppl.json", ids), "--seqlen", 64)
    ref = hf_perplexity(write_dequantized(model_dir, out, tmp_path / "dequantized"), ids, seqlen=64)
    assert abs(mine["ppl"] / ref["ppl"] - 1) < 1e-3, (mine, ref)


def test_three_precisions_a_skip_rtn_act_order_and_lm_head_load_in_gptqmodel(tmp_path):
    pytest.importorskip("gptqmodel")
    model_dir = make_tiny_model("llama", tmp_path / "model", seed=7)
    save_word_tokenizer(model_dir, 320)
    out, report_path = tmp_path / "gptq", tmp_path / "report.json"
    quantize(model_dir, out, "--recipe", write_recipe(tmp_path / "r.json", MIXED), "--calib", calib(tmp_path),
             "--nsamples", N_SAMPLES, "--seqlen", SEQLEN, "--report", report_path)
    bits = packed_bits(out)
    assert len(bits) == 15 and "lm_head" in bits
    for module, found in bits.items():
        assert found == expected_mixed_bits(module), (module, found)
    report = {e["name"]: e for e in json.loads(report_path.read_text())["layers"]}
    assert not report["model.layers.1.mlp.down_proj"]["quantized"]
    assert "rules[2] (match 'model.layers.1.mlp.down_proj')" in report["model.layers.1.mlp.down_proj"]["reason"]
    assert report["model.layers.0.self_attn.q_proj"]["group_size"] == 64
    assert report["model.layers.1.mlp.up_proj"]["method"] == "rtn"
    assert report["model.layers.1.mlp.gate_proj"]["desc_act"] and report["model.layers.1.mlp.gate_proj"]["damp_used"] == 0.05
    assert report["lm_head"]["quantized"] and report["lm_head"]["n_tokens"] == N_SAMPLES * SEQLEN

    # The RTN module is plain round-to-nearest of the original weight; the
    # act-order one has a permuted g_idx, every other one the natural order.
    original = load_file(str(model_dir / "model.safetensors"))
    codes, _ = unpacked_codes(out, "model.layers.1.mlp.up_proj")
    expected = rtn_codes(original["model.layers.1.mlp.up_proj.weight"], 4, 32)
    assert np.mean(codes == expected) > 0.999, np.mean(codes == expected)
    for module in bits:
        if bits[module] is None:
            continue
        _, g_idx = unpacked_codes(out, module)
        natural = np.arange(len(g_idx)) // report[module]["group_size"]
        assert (module == "model.layers.1.mlp.gate_proj") != bool(np.array_equal(g_idx, natural)), module
    quantization = json.loads((out / "config.json").read_text())["quantization_config"]
    assert quantization["lm_head"] is True and quantization["desc_act"] is False
    assert quantization["dynamic"]["+:model\\.layers\\.1\\.mlp\\.gate_proj"]["desc_act"] is True
    assert quantization["dynamic"]["+:lm_head"]["bits"] == 8

    assert_loads_in_gptqmodel_as_ours(model_dir, out, tmp_path)


def test_lm_head_of_a_tied_model_is_untied_and_loads(tmp_path):
    """A tied model's lm_head is the embedding: quantizing it writes lm_head
    on its own, keeps embed_tokens, and unties the config."""
    pytest.importorskip("gptqmodel")
    model_dir = make_tiny_model("llama-tied", tmp_path / "model", seed=8)
    save_word_tokenizer(model_dir, 320)
    out = tmp_path / "gptq"
    quantize(model_dir, out, "--recipe", write_recipe(tmp_path / "r.json", {"rules": [{"match": "lm_head"}]}),
             "--group-size", 32, "--calib", calib(tmp_path), "--nsamples", N_SAMPLES, "--seqlen", SEQLEN)
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["quantization_config"]["lm_head"] is True
    assert "+:lm_head" not in config["quantization_config"].get("dynamic", {})  # the default scheme
    tensors = load_file(str(out / "model.safetensors"))
    assert "lm_head.qweight" in tensors and "model.embed_tokens.weight" in tensors and "lm_head.weight" not in tensors

    assert_loads_in_gptqmodel_as_ours(model_dir, out, tmp_path)


def test_all_rtn_recipe_needs_no_calibration(tmp_path):
    model_dir = make_tiny_model("llama", tmp_path / "model", seed=7)
    out, report_path = tmp_path / "gptq", tmp_path / "report.json"
    recipe = write_recipe(tmp_path / "r.json", {"default": {"bits": 4, "group_size": 32, "method": "rtn"}})
    quantize(model_dir, out, "--recipe", recipe, "--report", report_path)
    report = json.loads(report_path.read_text())
    assert report["method"] == "rtn" and all(e["method"] == "rtn" for e in report["layers"])
    proc = run_cli("rtn", "--model", model_dir, "--output", tmp_path / "rtn", "--recipe",
                   write_recipe(tmp_path / "g.json", {"default": {"group_size": 32},
                                                      "rules": [{"match": "*.mlp.*", "method": "gptq"}]}))
    assert proc.returncode == 2 and "method 'gptq' (recipe rules[0] (match '*.mlp.*')) needs calibration" in proc.stderr


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
        assert table.pop("lm_head") == "-", name  # no preset names lm_head: it stays as it is
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
    ({"default": {"group_size": 32}, "rules": [{"match": "*.mlp.*", "static_groups": True, "group_size": -1}]},
     "static_groups (recipe rules[0] (match '*.mlp.*')) needs a positive group_size"),
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
