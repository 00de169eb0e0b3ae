"""`gptq-quant convert` between checkpoint formats, checked against the peers
(no llama.cpp needed; the GGUF target is tests/conformance/test_convert.py):

1. gptq_v2 -> gptq: a v2 checkpoint with asymmetric zeros of 0 (rows of one
   linear made all-positive, so min-max grids start at 0) is refused with the
   count of such groups (counted here from the packed fields) and the first
   module; --allow-lossy writes a v1 checkpoint whose per-field zeros are all
   >= 1 and whose weights moved by exactly the per-module change the report
   gives (recomputed here from both checkpoints).
2. gptq -> gptq_v2 -> gptq gives byte-identical tensors, sym and asym.
3. compressed-tensors: a mixed checkpoint (4-bit g32 default, 8-bit g64
   attention, one linear skipped) converted; the compressed-tensors package
   validates the config, assigns each module its scheme with its own matcher,
   and its PackedQuantizationCompressor decompresses every linear to exactly
   our dequantized weights (fp16 scales: its fp16 product (q - z) * s is the
   exact fp32 product rounded once, so the comparison is bit for bit against
   ours rounded to fp16). The symmetric mixed checkpoint also loads in
   transformers (the package's compressed load + decompress on first forward)
   with weights bit-equal to our fp32 dequantization. (Asymmetric
   pack-quantized does not load through transformers 5.24 + compressed-tensors
   0.20 at all: the package's meta-device compression leaves weight_zero_point
   unpacked, so the shapes mismatch; vLLM and the decompressor take the packed
   layout we write.)
4. fp32/fp16/bf16: transformers loads each as a plain model; fp32 weights equal
   an independent unpack of the GPTQ tensors bit for bit and its logits equal
   our forward of the GPTQ checkpoint (tests/tools/model_logits) within fp32
   noise; fp16/bf16 weights are those rounded once.
5. Refusals: exit 2 with one line, nothing left behind."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_fixtures import make_tiny_model, random_ids, write_ids
from model_driver import our_logits, run_cli
from quant_fixtures import dequantize_checkpoint, module_bits, quantize

N_SAMPLES, SEQLEN, VOCAB = 16, 64, 320
SKEWED = "model.layers.0.mlp.up_proj"
ASYM_MIXED = {"default": {"bits": 4, "group_size": 32, "sym": False},
              "rules": [{"match": "*.self_attn.*", "bits": 8, "group_size": 64, "sym": True},
                        {"match": "model.layers.1.mlp.down_proj", "skip": True}]}
SYM_MIXED = {"default": {"bits": 4, "group_size": 32, "sym": True},
             "rules": [{"match": "*.self_attn.*", "bits": 8, "group_size": 64},
                       {"match": "model.layers.1.mlp.down_proj", "skip": True}]}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert_formats")
    model_dir = make_tiny_model("llama", root / "model", seed=7)
    # All-positive rows: an asymmetric min-max grid over them has zero point 0.
    path = model_dir / "model.safetensors"
    state = load_file(str(path))
    state[SKEWED + ".weight"][:6] = state[SKEWED + ".weight"][:6].abs()
    save_file(state, str(path), metadata={"format": "pt"})
    calib = write_ids(root / "calib.json", random_ids(N_SAMPLES, SEQLEN, VOCAB, seed=4))
    made = {}

    def checkpoint(name, *flags) -> Path:
        if name not in made:
            made[name] = root / name
            quantize(model_dir, made[name], "--calib", calib, "--nsamples", N_SAMPLES, "--seqlen", SEQLEN, *flags)
        return made[name]

    def recipe(name, body) -> Path:
        file = root / f"{name}.json"
        file.write_text(json.dumps(body))
        return file

    return model_dir, checkpoint, recipe


def tensors_of(directory: Path) -> dict:
    tensors = {}
    for shard in sorted(Path(directory).glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def fields(words: np.ndarray, bits: int) -> np.ndarray:
    """int32 [rows, n] -> the packed bit fields [rows, n * 32 / bits] (2/4/8 bits)."""
    words = words.astype(np.uint32)
    shifts = np.arange(32 // bits, dtype=np.uint32) * bits
    return ((words[..., None] >> shifts) & ((1 << bits) - 1)).reshape(words.shape[0], -1).astype(np.int64)


def dequantize_v2(directory: Path) -> dict:
    """Each quantized linear of a v2 checkpoint (zeros stored as they are), float32."""
    tensors, state = tensors_of(directory), {}
    for name, qweight in tensors.items():
        if name.endswith(".qweight"):
            prefix = name[: -len(".qweight")]
            g_idx = tensors[prefix + ".g_idx"].numpy().astype(np.int64)
            bits = module_bits(qweight, g_idx)
            codes = fields(qweight.numpy().T.copy(), bits)
            zeros = fields(tensors[prefix + ".qzeros"].numpy(), bits)
            scales = tensors[prefix + ".scales"].float().numpy()
            weight = (codes - zeros[g_idx].T) * scales[g_idx].T
            state[prefix + ".weight"] = torch.from_numpy(weight.astype(np.float32))
    return state


def zero_zero_groups(directory: Path) -> dict:
    """Module -> count of (group, row) zero points of 0 in a v2 checkpoint."""
    tensors, counts = tensors_of(directory), {}
    for name, qzeros in tensors.items():
        if name.endswith(".qzeros"):
            prefix = name[: -len(".qzeros")]
            bits = module_bits(tensors[prefix + ".qweight"], tensors[prefix + ".g_idx"])
            n_zero = int((fields(qzeros.numpy(), bits) == 0).sum())
            if n_zero:
                counts[prefix] = n_zero
    return counts


def convert(source, to, output, *flags):
    return run_cli("convert", "--input", source, "--to", to, "--output", output, *flags)


def converted(source, to, output, *flags) -> Path:
    proc = convert(source, to, output, *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(output)


def refused(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_v2_zero_points_of_0_are_refused_for_v1_or_reencoded_with_a_report(fixture, tmp_path):
    _, checkpoint, _ = fixture
    v2 = checkpoint("asym-v2", "--bits", 4, "--group-size", 32, "--asym", "--format", "gptq_v2")
    counts = zero_zero_groups(v2)
    assert SKEWED in counts, counts
    total, first = sum(counts.values()), sorted(counts)[0]
    refused(convert(v2, "gptq", tmp_path / "v1"), f"{total} group(s)", f"first: {first}", "--allow-lossy")
    assert list(tmp_path.iterdir()) == []

    proc = convert(v2, "gptq", tmp_path / "v1", "--allow-lossy", "--report", tmp_path / "report.json", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert json.loads(proc.stdout) == report
    assert report["exact"] is False and report["lossy"]["groups_changed"] == total
    assert {m["name"]: m["groups_changed"] for m in report["lossy"]["modules"]} == counts
    v1 = tmp_path / "v1"
    assert json.loads((v1 / "config.json").read_text())["quantization_config"]["checkpoint_format"] == "gptq"
    # Per-field v1 readers (vLLM, AutoGPTQ: field + 1) and GPTQModel's word-wise
    # reader (dequantize_checkpoint) agree: no stored zero - 1 borrowed.
    tensors = tensors_of(v1)
    for name, qzeros in tensors.items():
        if name.endswith(".qzeros"):
            assert int(fields(qzeros.numpy(), 4).max()) <= 14, name
    before, after = dequantize_v2(v2), dequantize_checkpoint(v1)
    changes = {m["name"]: m["max_abs_change"] for m in report["lossy"]["modules"]}
    for name, weight in before.items():
        prefix = name[: -len(".weight")]
        change = float((after[name] - weight).abs().max())
        assert change == pytest.approx(changes.get(prefix, 0.0), rel=1e-6, abs=0.0), prefix


@pytest.mark.parametrize("flags", [("--sym",), ("--asym",)], ids=["sym", "asym"])
def test_v1_to_v2_and_back_is_byte_identical(fixture, tmp_path, flags):
    _, checkpoint, _ = fixture
    v1 = checkpoint(f"v1{flags[0]}", "--bits", 4, "--group-size", 32, *flags)
    v2 = converted(v1, "gptq_v2", tmp_path / "v2")
    back = converted(v2, "gptq", tmp_path / "back")
    for directory, fmt in ((v2, "gptq_v2"), (back, "gptq")):
        assert json.loads((directory / "config.json").read_text())["quantization_config"]["checkpoint_format"] == fmt
        assert json.loads((directory / "quantize_config.json").read_text())["checkpoint_format"] == fmt
    original, returned = tensors_of(v1), tensors_of(back)
    assert sorted(original) == sorted(returned)
    for name in original:
        assert original[name].dtype == returned[name].dtype and torch.equal(original[name], returned[name]), name
    ours, theirs = dequantize_checkpoint(v1), dequantize_v2(v2)
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def package_decompress(ct_dir: Path, model_dir: Path) -> dict:
    """Every quantized linear as the compressed-tensors package decompresses it:
    its QuantizationConfig, its matcher assigning schemes, its compressor."""
    import transformers
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    qconfig = QuantizationConfig.model_validate(json.loads((ct_dir / "config.json").read_text())["quantization_config"])
    config = transformers.AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    apply_quantization_config(model, qconfig)
    tensors, weights = tensors_of(ct_dir), {}
    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None:
            continue
        local = {key[len(name) + 1:]: value for key, value in tensors.items() if key.startswith(name + ".weight_")}
        compressor = BaseCompressor.get_value_from_registry(scheme.format or qconfig.format)
        weights[name + ".weight"] = compressor.decompress(local, scheme)["weight"]
    return weights


def test_compressed_tensors_decompress_to_our_weights(fixture, tmp_path):
    pytest.importorskip("compressed_tensors")
    model_dir, checkpoint, recipe = fixture
    for name, body, fmt in (("asym-mixed", ASYM_MIXED, "gptq_v2"), ("sym-mixed", SYM_MIXED, "gptq")):
        gptq = checkpoint(name, "--recipe", recipe(name, body), "--format", fmt)
        ct = converted(gptq, "compressed-tensors", tmp_path / f"{name}-ct")
        dense = converted(gptq, "fp32", tmp_path / f"{name}-fp32")
        qconfig = json.loads((ct / "config.json").read_text())["quantization_config"]
        assert qconfig["quant_method"] == "compressed-tensors" and qconfig["format"] == "pack-quantized"
        assert "model.layers.1.mlp.down_proj" in qconfig["ignore"] and "lm_head" in qconfig["ignore"]
        assert not (ct / "quantize_config.json").exists()
        ours = tensors_of(dense)
        theirs = package_decompress(ct, model_dir)
        assert len(theirs) == 13, sorted(theirs)  # 14 linears, one skipped
        for weight_name, weight in theirs.items():
            assert weight.dtype == torch.float16, weight_name
            expected = ours[weight_name].half()
            assert torch.equal(weight.view(torch.int16), expected.view(torch.int16)), (name, weight_name)
        ct_tensors = tensors_of(ct)
        for tensor_name, tensor in ours.items():  # what stays dense is copied as stored
            if tensor_name not in theirs:
                assert torch.equal(ct_tensors[tensor_name].float(), tensor), tensor_name


def test_symmetric_compressed_tensors_load_in_transformers(fixture, tmp_path):
    pytest.importorskip("compressed_tensors")
    import transformers

    _, checkpoint, recipe = fixture
    gptq = checkpoint("sym-mixed", "--recipe", recipe("sym-mixed", SYM_MIXED), "--format", "gptq")
    ct = converted(gptq, "compressed-tensors", tmp_path / "ct")
    dense = converted(gptq, "fp32", tmp_path / "fp32")
    model = transformers.AutoModelForCausalLM.from_pretrained(ct)
    assert model.model.layers[0].self_attn.q_proj.quantization_scheme.weights.num_bits == 8
    assert model.model.layers[0].mlp.up_proj.quantization_scheme.weights.num_bits == 4
    ids = torch.as_tensor(random_ids(1, 32, VOCAB, seed=3))
    with torch.no_grad():
        logits = model(ids).logits  # the first forward decompresses
    state, ours = model.state_dict(), tensors_of(dense)
    for name, weight in ours.items():
        assert torch.equal(state[name], weight), name
    reference = transformers.AutoModelForCausalLM.from_pretrained(dense)
    with torch.no_grad():
        assert torch.equal(reference(ids).logits, logits)


def test_dense_outputs_load_in_transformers_with_our_logits(fixture, tmp_path):
    import transformers

    model_dir, checkpoint, _ = fixture
    gptq = checkpoint("v1--asym", "--bits", 4, "--group-size", 32, "--asym")
    ids = random_ids(1, 48, VOCAB, seed=11)
    ours = our_logits(gptq, write_ids(tmp_path / "ids.json", ids), tmp_path / "ours.bin", dtype="fp32")
    expected = dequantize_checkpoint(gptq)
    scale = float(np.abs(ours).max())
    # fp32 holds our weights exactly; fp16/bf16 round each weight once (2^-11 / 2^-8 relative).
    for to, dtype, tol in (("fp32", torch.float32, 1e-5), ("fp16", torch.float16, 5e-3),
                           ("bf16", torch.bfloat16, 4e-2)):
        out = converted(gptq, to, tmp_path / to, "--report", tmp_path / f"{to}.json")
        config = json.loads((out / "config.json").read_text())
        assert "quantization_config" not in config and not (out / "quantize_config.json").exists()
        assert (out / "generation_config.json").exists()
        state = tensors_of(out)
        assert sorted(state) == sorted(expected)
        for name, weight in expected.items():
            assert state[name].dtype == dtype, name
            assert torch.equal(state[name], weight.to(dtype)), name
        model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        with torch.no_grad():
            theirs = model(torch.as_tensor(ids)).logits.numpy()
        err = float(np.abs(theirs - ours).max()) / scale
        assert err <= tol, (to, err)
        report = json.loads((tmp_path / f"{to}.json").read_text())
        assert report["linears_converted"] == 14 and report["output_bytes"] > 0


def test_refusals_are_one_line_and_leave_nothing(fixture, tmp_path):
    model_dir, checkpoint, _ = fixture
    sym = checkpoint("v1--sym", "--bits", 4, "--group-size", 32, "--sym")
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep").write_text("keep")
    refused(convert(sym, "fp16", existing), "already exists")
    assert [p.name for p in existing.iterdir()] == ["keep"]
    refused(convert(model_dir, "compressed-tensors", tmp_path / "a"), "not a GPTQ checkpoint")
    three = checkpoint("3bit", "--bits", 3, "--group-size", 32)
    refused(convert(three, "compressed-tensors", tmp_path / "b"), "3-bit", "compressed-tensors")
    act_order = checkpoint("act-order", "--bits", 4, "--group-size", 32, "--desc-act")
    refused(convert(act_order, "compressed-tensors", tmp_path / "c"), "act-order")
    # A malformed linear: qzeros of the wrong width, named with its module.
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in sym.iterdir():
        if item.suffix != ".safetensors":
            (broken / item.name).write_bytes(item.read_bytes())
    tensors = tensors_of(sym)
    tensors["model.layers.0.mlp.up_proj.qzeros"] = tensors["model.layers.0.mlp.up_proj.qzeros"][:, :-1].contiguous()
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    refused(convert(broken, "gptq_v2", tmp_path / "d"), "model.layers.0.mlp.up_proj")
    unknown = run_cli("convert", "--input", sym, "--to", "awq", "--output", tmp_path / "e")
    assert unknown.returncode == 2 and "--to: awq not in" in unknown.stderr, unknown.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "exists"]
