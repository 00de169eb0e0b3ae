"""Model flags name Hugging Face repo ids found in the local cache exactly as
`huggingface-cli download` leaves it: models--org--name/refs/<revision> holds a
commit, snapshots/<commit>/ holds symlinks into blobs/. The fake cache here is
checked against huggingface_hub's own offline lookup, then `quantize`,
`rtn`, `benchmark ppl` and `convert` read from it; a repo that is not there
exits 2 with one line naming the path tried and the download command."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hf_fixtures import make_tiny_model, random_ids, write_ids
from model_driver import binary

MAIN = "0123456789abcdef0123456789abcdef01234567"
V1 = "89abcdef0123456789abcdef0123456789abcdef"


def add_to_cache(hub: Path, repo: str, commit: str, source: Path, refs=("main",)) -> Path:
    """Copies `source`'s files into the cache as huggingface_hub stores them."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("../..") / "blobs" / blob.name)
    for ref in refs:
        (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def run(*args, hub: Path, cwd=None, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    environment.update({"HF_HUB_CACHE": str(hub), **env})
    return subprocess.run([str(binary()), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=environment, cwd=cwd)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    tiny = make_tiny_model("llama", root / "tiny")
    hub = root / "hub"
    main = add_to_cache(hub, "org/tiny", MAIN, tiny)
    other = make_tiny_model("llama", root / "tiny-v1", seed=7)
    v1 = add_to_cache(hub, "org/tiny", V1, other, refs=("v1.0",))
    return {"root": root, "hub": hub, "tiny": tiny, "main": main, "v1": v1}


def test_fake_cache_is_what_huggingface_hub_reads(cache):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    found = huggingface_hub.snapshot_download("org/tiny", cache_dir=str(cache["hub"]), local_files_only=True)
    assert Path(found) == cache["main"]
    found = huggingface_hub.snapshot_download("org/tiny", revision="v1.0", cache_dir=str(cache["hub"]),
                                              local_files_only=True)
    assert Path(found) == cache["v1"]


def test_dry_run_from_a_repo_id(tmp_path, cache):
    out = tmp_path / "out"
    proc = run("quantize", "--model", "org/tiny", "--output", out, "--group-size", 32, "--dry-run", hub=cache["hub"])
    assert proc.returncode == 0, proc.stderr
    assert "model.layers.0.self_attn.q_proj" in proc.stdout
    assert str(cache["main"]) in proc.stderr
    assert not out.exists()


def test_rtn_from_the_cache_equals_rtn_from_the_directory(tmp_path, cache):
    from_dir, from_cache = tmp_path / "dir", tmp_path / "cache"
    assert run("rtn", "--model", cache["tiny"], "--output", from_dir, "--group-size", 32, "--device", "cpu",
               hub=cache["hub"]).returncode == 0
    proc = run("rtn", "--model", "org/tiny", "--output", from_cache, "--group-size", 32, "--device", "cpu",
               hub=cache["hub"])
    assert proc.returncode == 0, proc.stderr
    assert (from_dir / "model.safetensors").read_bytes() == (from_cache / "model.safetensors").read_bytes()


def test_revision_and_commit_hash(tmp_path, cache):
    for spec in ("org/tiny@v1.0", f"org/tiny@{V1}"):
        proc = run("quantize", "--model", spec, "--output", tmp_path / "out", "--group-size", 32, "--dry-run",
                   hub=cache["hub"])
        assert proc.returncode == 0, proc.stderr
        assert str(cache["v1"]) in proc.stderr, spec


def test_hf_home_when_hf_hub_cache_is_unset(tmp_path, cache):
    environment_hub = cache["root"] / "hf_home" / "hub"
    if not environment_hub.exists():
        shutil.copytree(cache["hub"], environment_hub, symlinks=True)
    proc = run("quantize", "--model", "org/tiny", "--output", tmp_path / "out", "--group-size", 32, "--dry-run",
               hub=cache["hub"], HF_HUB_CACHE="", HF_HOME=str(cache["root"] / "hf_home"))
    assert proc.returncode == 0, proc.stderr
    assert str(environment_hub) in proc.stderr


def test_local_directory_wins(tmp_path, cache):
    local = tmp_path / "org" / "tiny"
    shutil.copytree(cache["tiny"], local)
    proc = run("quantize", "--model", "org/tiny", "--output", tmp_path / "out", "--group-size", 32, "--dry-run",
               hub=cache["hub"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Hugging Face cache" not in proc.stderr


@pytest.mark.parametrize("spec, download", [
    ("org/missing", "huggingface-cli download org/missing"),
    ("org/tiny@v2", "huggingface-cli download org/tiny --revision v2"),
])
def test_not_in_the_cache_is_one_line_with_the_download_command(tmp_path, cache, spec, download):
    out = tmp_path / "out"
    proc = run("quantize", "--model", spec, "--output", out, "--dry-run", hub=cache["hub"])
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1, proc.stderr
    assert download in lines[0] and str(cache["hub"]) in lines[0], lines[0]
    assert not out.exists()


def test_benchmark_ppl_and_convert_read_repo_ids(tmp_path, cache):
    tokens = write_ids(tmp_path / "ids.json", random_ids(1, 96, 320)[0])
    proc = run("-q", "benchmark", "ppl", "--model", "org/tiny", "--tokens", tokens, "--seqlen", 32, "--device", "cpu",
               "--json", hub=cache["hub"])
    assert proc.returncode == 0 and '"ppl"' in proc.stdout, proc.stderr

    gptq = tmp_path / "gptq"
    assert run("rtn", "--model", "org/tiny", "--output", gptq, "--group-size", 32, "--device", "cpu",
               hub=cache["hub"]).returncode == 0
    add_to_cache(cache["hub"], "org/tiny-gptq", MAIN, gptq)
    out = tmp_path / "v2"
    proc = run("convert", "--input", "org/tiny-gptq", "--to", "gptq_v2", "--output", out, hub=cache["hub"])
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").exists()
