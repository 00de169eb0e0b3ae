"""llama.cpp as a conformance peer: its converter, quantizer, imatrix,
perplexity and logits, driven from the tree scripts/setup_llama_cpp.sh builds.

The tree root comes from GPTQ_LLAMA_CPP_DIR (CTest passes it): gguf-py/ and
convert_hf_to_gguf.py under it, the tools and libllama.so under build/bin, the
llama-cpp-python ctypes bindings under bindings/llama_cpp. Tests call
``require()`` (or ``pytestmark = skip_unless_available()``) first; without the
tree they skip with the reason (``require(built=False)``: gguf-py and the
converter only, which the unbuilt tree already has).

    import llama_cpp_peer as lcpp
    lcpp.require()
    f32 = lcpp.convert_hf(model_dir, tmp_path / "m.gguf")
    q4 = lcpp.quantize(f32, tmp_path / "q4.gguf", "Q4_0")
    lcpp.perplexity(q4, text_file, ctx=128, chunks=8)     # float
    lcpp.logits(f32, ids)                                 # [T, vocab] float32

Every tool runs as a subprocess with a timeout, 2 threads, and its stderr in
the error. logits()/tokenize() run the ctypes bindings in a child Python, and
perplexity() the tool's entry point (see there): libllama's OpenMP runtime
then never meets torch's in one process.

Perplexity, llama.cpp's way (tools/perplexity, ``perplexity()``): the text
file, less one trailing newline, is tokenized with BOS (the GGUF's add_bos);
n = min(chunks, len(ids) // ctx) chunks ids[i*ctx:(i+1)*ctx] are evaluated
each from an empty cache, with the chunk's first token replaced by BOS; only
the second half is scored: logits at positions ctx//2 .. ctx-2 predict
tokens ctx//2+1 .. ctx-1, i.e. ctx - ctx//2 - 1 tokens per chunk; PPL =
exp(mean NLL). ``gptq-quant benchmark ppl`` (GPTQ paper protocol) scores all
ctx-1 next tokens of each window and replaces nothing, so the two numbers are
different measurements; to compare like with like, score any model's logits
on ``perplexity_chunks()`` with ``chunk_nll()``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ENV_VAR = "GPTQ_LLAMA_CPP_DIR"
THREADS = 2
TIMEOUT_S = 900
TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity")
LIBS = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so", "libllama-common.so",
        "libllama-perplexity-impl.so")


class PeerError(RuntimeError):
    """A llama.cpp tool failed; the message carries its command and stderr."""


def root() -> Path | None:
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def unavailable_reason(built: bool = True) -> str | None:
    """Why llama.cpp cannot be used here, or None when it can. built=False asks only for
    the Python side (gguf-py, convert_hf_to_gguf.py), which needs no compiled tools."""
    tree = root()
    if tree is None:
        return f"{ENV_VAR} is not set (scripts/setup.sh --oracles builds llama.cpp and CTest passes it)"
    needed = [tree / "gguf-py" / "gguf" / "__init__.py", tree / "convert_hf_to_gguf.py"]
    if built:
        needed.append(tree / "bindings" / "llama_cpp" / "llama_cpp.py")
        needed += [tree / "build" / "bin" / name for name in TOOLS + LIBS]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        return (f"llama.cpp under {ENV_VAR}={tree} is not built (missing {', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}); run scripts/setup_llama_cpp.sh")
    return None


def available(built: bool = True) -> bool:
    return unavailable_reason(built) is None


def require(built: bool = True) -> Path:
    """The tree root, or pytest.skip with the reason (also usable at module level)."""
    reason = unavailable_reason(built)
    if reason:
        import pytest
        pytest.skip(f"llama.cpp peer unavailable: {reason}", allow_module_level=True)
    return root()


def skip_unless_available(built: bool = True):
    """A pytest mark for ``pytestmark = skip_unless_available()``."""
    import pytest
    reason = unavailable_reason(built)
    return pytest.mark.skipif(reason is not None, reason=f"llama.cpp peer unavailable: {reason}")


def bin_dir() -> Path:
    return require() / "build" / "bin"


def gguf():
    """The gguf-py package of the tree (not whatever `gguf` pip may have installed)."""
    path = str(require(built=False) / "gguf-py")
    loaded = sys.modules.get("gguf")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(path):
        raise PeerError(f"a different gguf module is already imported: {loaded.__file__}")
    if path not in sys.path:
        sys.path.insert(0, path)
    import gguf as module
    return module


def _env() -> dict:
    libs = str(require(built=False) / "build" / "bin")
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(THREADS),
               LLAMA_CPP_LIB_PATH=libs)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libs, env.get("LD_LIBRARY_PATH")]))
    return env


def _run(cmd, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    cmd = [str(part) for part in cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    except subprocess.TimeoutExpired as err:
        tail = (err.stderr or b"")[-4000:]
        raise PeerError(f"timed out after {timeout} s: {' '.join(cmd)}\n{tail!r}") from None
    if proc.returncode != 0:
        raise PeerError(f"exit {proc.returncode}: {' '.join(cmd)}\n--- stderr ---\n{proc.stderr[-6000:]}"
                        f"\n--- stdout ---\n{proc.stdout[-2000:]}")
    return proc


def convert_hf(model_dir, out, outtype: str = "f32", timeout: float = TIMEOUT_S) -> Path:
    """convert_hf_to_gguf.py MODEL_DIR --outfile OUT --outtype {f32,f16,bf16,q8_0}."""
    out = Path(out)
    _run([sys.executable, require(built=False) / "convert_hf_to_gguf.py", model_dir, "--outfile", out,
          "--outtype", outtype], timeout)
    return out


def convert_hf_in_process(model_dir, out, outtype: str = "f32") -> Path:
    """convert_hf with the same script and arguments, run inside this process
    (runpy): a fresh interpreter per file spends seconds importing torch and
    transformers, and a test file that converts dozens of fixtures pays that
    dozens of times. The script's logging goes to this process's stderr."""
    import runpy

    tree = require(built=False)
    gguf()  # the tree's gguf-py, which the script would put first on sys.path
    out = Path(out)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(tree / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(out), "--outtype", outtype]
    sys.path.insert(0, str(tree))  # its `conversion` package
    try:
        runpy.run_path(str(tree / "convert_hf_to_gguf.py"), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise PeerError(f"convert_hf_to_gguf.py {model_dir} --outtype {outtype} exited {stop.code}") from None
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    if not out.is_file():
        raise PeerError(f"convert_hf_to_gguf.py wrote no {out}")
    return out


def quantize(src, dst, type_name: str, imatrix=None, extra=(), timeout: float = TIMEOUT_S) -> Path:
    """llama-quantize [--imatrix FILE] [extra...] SRC DST TYPE 2 (type e.g. Q4_0, Q4_K_M)."""
    dst = Path(dst)
    cmd = [bin_dir() / "llama-quantize"]
    if imatrix is not None:
        cmd += ["--imatrix", imatrix]
    cmd += [*extra, src, dst, type_name.upper(), THREADS]
    _run(cmd, timeout)
    return dst


def _eval_args(ctx: int, chunks: int) -> list:
    # -b ctx: one sequence per batch; f32 KV cache and no flash attention so
    # an f32 model is evaluated in f32 throughout (llama.cpp's default f16
    # cache would add fp16 noise to K and V).
    return ["-c", ctx, "-b", ctx, "--chunks", chunks, "-t", THREADS, "-tb", THREADS,
            "-ctk", "f32", "-ctv", "f32", "-fa", "off", "-ngl", "0"]


def imatrix(gguf_path, text_file, out, ctx: int, chunks: int, timeout: float = TIMEOUT_S) -> Path:
    """llama-imatrix over the first `chunks` chunks of `ctx` tokens of text_file (GGUF imatrix out)."""
    out = Path(out)
    _run([bin_dir() / "llama-imatrix", "-m", gguf_path, "-f", text_file, "-o", out, "--no-ppl",
          *_eval_args(ctx, chunks)], timeout)
    if not out.exists():
        raise PeerError(f"llama-imatrix wrote no {out}")
    return out


_FINAL = re.compile(r"Final estimate: PPL = ([0-9.eE+-]+|nan|inf) \+/- ")


def perplexity(gguf_path, text_file, ctx: int, chunks: int, timeout: float = TIMEOUT_S) -> float:
    """llama-perplexity's final estimate (protocol in the module docstring).

    Runs the tool's own entry point (llama_perplexity() in
    libllama-perplexity-impl.so, what the llama-perplexity executable calls) in a
    child Python that flushes llama.cpp's log queue before exiting: the
    executable prints through an asynchronous logger it never flushes at exit
    (upstream issue 22142), so on a busy machine its last lines, the final
    estimate among them, are lost."""
    args = ["-m", gguf_path, "-f", text_file, *_eval_args(ctx, chunks)]
    proc = _run([sys.executable, Path(__file__).resolve(), "--child", "tool",
                 json.dumps({"name": "perplexity", "args": [str(a) for a in args]})], timeout)
    found = _FINAL.findall(proc.stdout + proc.stderr)
    if not found:
        raise PeerError(f"no 'Final estimate' in llama-perplexity's output:\n{proc.stderr[-4000:]}")
    return float(found[-1])


def perplexity_chunks(ids, ctx: int, chunks: int, bos_id: int | None) -> np.ndarray:
    """The [n, ctx] token windows llama-perplexity evaluates for `ids` (its own
    tokenization of the text, BOS first): first token of each replaced by BOS."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if ids.size < 2 * ctx:
        raise ValueError(f"llama-perplexity needs at least {2 * ctx} tokens, got {ids.size}")
    n = min(chunks, ids.size // ctx) if chunks > 0 else ids.size // ctx
    windows = ids[:n * ctx].reshape(n, ctx).copy()
    if bos_id is not None:
        windows[:, 0] = bos_id
    return windows


def chunk_nll(logits, window) -> tuple[float, int]:
    """(sum of NLL, count) over the tokens llama-perplexity scores in one window:
    logits [ctx, vocab] at positions ctx//2 .. ctx-2 against tokens ctx//2+1 .. ctx-1."""
    logits = np.asarray(logits, dtype=np.float64)
    window = np.asarray(window)
    ctx = window.size
    first = ctx // 2
    rows = logits[first:ctx - 1]
    shifted = rows - rows.max(axis=1, keepdims=True)
    logprob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    targets = window[first + 1:ctx]
    return float(-logprob[np.arange(targets.size), targets].sum()), int(targets.size)


def _child(command: str, payload: dict, timeout: float) -> dict:
    proc = _run([sys.executable, Path(__file__).resolve(), "--child", command, json.dumps(payload)], timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def logits(gguf_path, ids, out_file=None, timeout: float = TIMEOUT_S) -> np.ndarray:
    """float32 [len(ids), vocab]: llama.cpp's logits at every position of one
    sequence (one batch, every token flagged for output, f32 KV cache, no flash
    attention, 2 threads). Written to out_file (.npy; default beside the GGUF)."""
    ids = [int(t) for t in np.asarray(ids).ravel()]
    out = Path(out_file) if out_file else Path(str(gguf_path) + ".logits.npy")
    _child("logits", {"gguf": str(gguf_path), "ids": ids, "out": str(out)}, timeout)
    return np.load(out)


def tokenize(gguf_path, text: str, add_special: bool = True) -> list[int]:
    """llama.cpp's tokenization of `text` with the GGUF's vocabulary (special tokens not parsed,
    as llama-perplexity does)."""
    return _child("tokenize", {"gguf": str(gguf_path), "text": text, "add_special": add_special},
                  TIMEOUT_S)["ids"]


def perplexity_ids(gguf_path, text_file) -> tuple[list[int], int | None]:
    """(ids, bos) exactly as llama-perplexity/llama-imatrix tokenize text_file: one trailing
    newline dropped, BOS added when the GGUF says so; bos is the id that starts every
    chunk (None when the vocabulary adds no BOS). Feed them to perplexity_chunks()."""
    text = Path(text_file).read_bytes().decode("utf-8")  # bytes as the tool reads them
    if text.endswith("\n"):
        text = text[:-1]
    got = _child("tokenize", {"gguf": str(gguf_path), "text": text, "add_special": True}, TIMEOUT_S)
    return got["ids"], (got["bos"] if got["add_bos"] else None)


# ----- the child process: ctypes bindings, no torch -----

def _bindings():
    """llama_cpp.llama_cpp without the package __init__ (which would import the
    high-level API and its extra dependencies)."""
    import types
    pkg_dir = require() / "bindings" / "llama_cpp"
    if "llama_cpp" not in sys.modules:
        pkg = types.ModuleType("llama_cpp")
        pkg.__path__ = [str(pkg_dir)]
        sys.modules["llama_cpp"] = pkg
    import llama_cpp.llama_cpp as lc
    lc.llama_backend_init()
    return lc


def _load(lc, path: str, vocab_only: bool = False):
    params = lc.llama_model_default_params()
    params.n_gpu_layers = 0
    params.vocab_only = vocab_only
    model = lc.llama_model_load_from_file(path.encode(), params)
    if not model:
        raise PeerError(f"llama.cpp could not load {path}")
    return model


def _child_logits(payload: dict) -> dict:
    import ctypes
    lc = _bindings()
    ids = payload["ids"]
    n = len(ids)
    model = _load(lc, payload["gguf"])
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = n
    params.n_seq_max = 1
    params.n_threads = params.n_threads_batch = THREADS
    params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.type_k = params.type_v = lc.GGML_TYPE_F32
    params.no_perf = True
    ctx = lc.llama_init_from_model(model, params)
    if not ctx:
        raise PeerError("llama_init_from_model failed")
    batch = lc.llama_batch_init(n, 0, 1)
    try:
        for i, token in enumerate(ids):
            batch.token[i] = token
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        batch.n_tokens = n
        rc = lc.llama_decode(ctx, batch)
        if rc != 0:
            raise PeerError(f"llama_decode returned {rc}")
        n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
        out = np.empty((n, n_vocab), dtype=np.float32)
        for i in range(n):
            row = lc.llama_get_logits_ith(ctx, i)
            out[i] = np.ctypeslib.as_array(ctypes.cast(row, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)
    np.save(payload["out"], out)
    return {"shape": list(out.shape)}


def _child_tool(payload: dict) -> int:
    """Calls llama_<name>(argc, argv) from libllama-<name>-impl.so, then drains the log queue."""
    import ctypes
    libs = require() / "build" / "bin"
    name = payload["name"]
    impl = ctypes.CDLL(str(libs / f"libllama-{name}-impl.so"))
    common = ctypes.CDLL(str(libs / "libllama-common.so"))
    symbol = f"llama_{name}"
    entry = getattr(impl, f"_Z{len(symbol)}{symbol}iPPc")  # int llama_<name>(int, char **)
    entry.restype, entry.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    argv = [f"llama-{name}".encode(), *(arg.encode() for arg in payload["args"])]
    rc = entry(len(argv), (ctypes.c_char_p * (len(argv) + 1))(*argv, None))
    log_main, log_flush = common._Z15common_log_mainv, common._Z16common_log_flushP10common_log
    log_main.restype, log_flush.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    log_flush(log_main())
    ctypes.CDLL(None).fflush(None)
    return rc


def _child_tokenize(payload: dict) -> dict:
    import ctypes
    lc = _bindings()
    model = _load(lc, payload["gguf"], vocab_only=True)
    vocab = lc.llama_model_get_vocab(model)
    data = payload["text"].encode()
    capacity = len(data) + 8
    buf = (lc.llama_token * capacity)()
    n = lc.llama_tokenize(vocab, data, len(data), buf, capacity, payload["add_special"], False)
    if n < 0:
        raise PeerError(f"llama_tokenize needs {-n} tokens, more than {capacity}")
    ids = list(buf[:n])
    bos = lc.llama_vocab_bos(vocab)
    add_bos = bool(lc.llama_vocab_get_add_bos(vocab))
    lc.llama_model_free(model)
    return {"ids": ids, "bos": bos, "add_bos": add_bos}


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    if sys.argv[2] == "tool":
        sys.stdout.flush()
        os._exit(_child_tool(json.loads(sys.argv[3])))
    handler = {"logits": _child_logits, "tokenize": _child_tokenize}[sys.argv[2]]
    print(json.dumps(handler(json.loads(sys.argv[3]))))
