"""The CLI surface a newcomer meets: `--help` teaches in a fixed order, the
reference pages document only flags that exist (every `--flag` in
docs/<subcommand>.md and in the README's commands is one --help lists), and
long commands show progress with an ETA on a terminal and stay parseable off
one."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from model_driver import run_cli

ROOT = Path(__file__).resolve().parents[2]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Flags of other programs that the pages quote (torchrun, huggingface-cli) and
# the negated spellings CLI11 lists as "!--flag" after the positive one.
NOT_OURS = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--no-python", "--revision"}

QUANTIZE_GROUPS = ["Model and output", "Scheme", "Calibration", "Runtime and memory",
                   "Distribution (data-parallel", "Remote workers"]

PAGES = {
    "quantize.md": [["quantize"], ["convert"], ["benchmark", "ppl"]],  # its repo-id section names their flags
    "rtn.md": [["rtn"], ["quantize"]],
    "convert.md": [["convert"], ["quantize"]],
    "benchmark.md": [["benchmark", "ppl"], ["benchmark", "solver"]],
    "server.md": [["server"], ["quantize"]],
}


def help_text(*subcommand) -> str:
    proc = run_cli(*subcommand, "--help")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def flags_in(text: str) -> set[str]:
    return set(FLAG.findall(text)) - NOT_OURS


def test_quantize_help_lists_its_groups_in_order():
    text = help_text("quantize")
    positions = [text.find("\n" + group) for group in QUANTIZE_GROUPS]
    assert all(p >= 0 for p in positions), text
    assert positions == sorted(positions), text
    # The scheme comes before anything about workers or TLS.
    assert text.find("--bits") < text.find("--calib") < text.find("--device") < text.find("--workers"), text


def test_rtn_help_shares_the_groups():
    text = help_text("rtn")
    groups = [g for g in QUANTIZE_GROUPS if g != "Calibration"]
    positions = [text.find("\n" + group) for group in groups]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), text


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_documented_flag_exists(page):
    documented = flags_in((ROOT / "docs" / page).read_text())
    listed = set()
    for subcommand in PAGES[page]:
        listed |= flags_in(help_text(*subcommand))
    listed |= flags_in(help_text())  # global flags: -q/--quiet, -v/--verbose, --version
    assert documented - listed == set(), page


def test_readme_commands_use_existing_flags():
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith(("gptq-quant ", "torchrun "))]
    assert len(commands) >= 5
    for line in commands:
        subcommand = line.split("gptq-quant ", 1)[1].split()[0]
        assert flags_in(line) <= flags_in(help_text(subcommand)), line


def run_on_a_tty(*args) -> tuple[int, str]:
    """Runs the CLI with stderr on a pseudo-terminal; returns (exit status, what the terminal got)."""
    import os
    import pty
    import subprocess

    from model_driver import binary

    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(binary()), *map(str, args)], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=600), b"".join(chunks).decode(errors="replace")


def test_progress_redraws_only_on_a_tty(tmp_path):
    """rtn and convert show 'done/total ... ETA' redrawn on a terminal; off one
    nothing is redrawn (no carriage returns), one closing line instead."""
    from hf_fixtures import make_tiny_model

    model = make_tiny_model("llama", tmp_path / "tiny", num_hidden_layers=3)
    rc, terminal = run_on_a_tty("rtn", "--model", model, "--output", tmp_path / "rtn", "--group-size", 32,
                                "--device", "cpu")
    assert rc == 0, terminal
    assert "\r\x1b[Kquantizing [1/21]" in terminal and "ETA" in terminal, terminal
    rc, terminal = run_on_a_tty("convert", "--input", tmp_path / "rtn", "--to", "fp32", "--output", tmp_path / "fp32")
    assert rc == 0, terminal
    assert "\r\x1b[Kconverting [1/21]" in terminal and "ETA" in terminal, terminal

    proc = run_cli("convert", "--input", tmp_path / "rtn", "--to", "gptq_v2", "--output", tmp_path / "v2")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    proc = run_cli("-q", "convert", "--input", tmp_path / "rtn", "--to", "bf16", "--output", tmp_path / "bf16")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
