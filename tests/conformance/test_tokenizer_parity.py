"""Parity of gptq::calib::Tokenizer with Hugging Face `tokenizers` (the oracle).

Every tokenizer kind we support is built here into a temp dir: the real GPT-2
vocabulary (tok-gpt2 vocab.json + merges.txt), the real Llama-2 tokenizer.json
(tok-llama2, with its 4 U+0020 vocabulary entries restored to U+00A0 because
`tokenizers` itself refuses the file as shipped), stories260k-hf's tokenizer.json,
and BPEs trained with `tokenizers`' BpeTrainer on the shared texts: ByteLevel +
GPT-2 regex, Split(Llama-3 regex) + ByteLevel with ignore_merges, Split(Qwen2
regex) + ByteLevel, and SentencePiece-style byte_fallback BPE in the Llama-2
layout (Prepend/Replace normalizer) and in the Mistral layout (Metaspace).
Each is run over every shared text line by line and in big chunks plus a stress
set, with add_special_tokens false and true, through tests/tools/tokenize.cpp.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

SHARED = Path(os.environ.get("GPTQ_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared")) / "data"
BUILD = Path(os.environ.get("GPTQ_BUILD_DIR", "build"))
TOOL = Path(os.environ.get("GPTQ_TOKENIZE_TOOL", BUILD / "tests" / "gptq_tool_tokenize"))

if not SHARED.is_dir():
    pytest.skip(f"shared data not found at {SHARED} (set GPTQ_SHARED_DIR)", allow_module_level=True)
if not TOOL.exists():
    pytest.skip(f"{TOOL} not built (cmake --build <dir> --target gptq_tool_tokenize)", allow_module_level=True)

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXT_FILES = ["wikitext2/test.txt", "wikitext2/valid.txt", "wikitext2-raw/wiki.test.raw",
              "tinystories-valid/tinystories_val.txt", "tinyshakespeare/input.txt"]

STRESS = [
    "", " ", "  ", "\t", "\n", "\r\n", " \r\n \r\n", "\n\n\n", "\t\t x \t", "   leading", "trailing   ",
    "Hello world", " Hello world", "Hello  world", "hello\tworld\nnext line\r\nwindows",
    "1234567890 12 345 6789 0.5 -3e10 1,000,000", "x = [i**2 for i in range(10)]  # squares",
    "def f(a, b):\n    return a + b\n\n\tif (x != y) { y->z(); }",
    "don't I'll we've she's they're I'd you'm DON'T WE'VE", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Привет, мир! Ελληνικά κείμενα. Ünïcödé façade naïve café", "日本語のテキストと中文文本，还有한국어 텍스트",
    "العربية النص مع أرقام ١٢٣ و עברית", "हिन्दी पाठ और தமிழ் உரை ภาษาไทย",
    "emoji 😀😃 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇩🇪 ❤️", "combining: e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0352\u0353",
    "zero\u200bwidth\u200cjoiner\u200dnbsp\u00a0thin\u2009ideographic\u3000space",
    "\u0085nel\u2028ls\u2029ps", "<s> </s> <unk> <|endoftext|> <|im_end|> <mask>",
    "a <mask> b<mask>c  <mask>  d", "x<|im_end|> y <|im_end|>\n\nz", "[WORD] and x[WORD]y and ([WORD])",
    "\U0001f600" * 20, "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "tab\tafter\ttab\t", "mixed \n \n\t \n",
    "\x00\x01\x02 control \x7f chars \x1b[0m", "~!@#$%^&*()_+`-=[]\\{}|;':\",./<>?",
    "    ", "\n ", " \n", "Hello\n\n\n\nworld", "   Hello", "ﬁ ligature ℌ ℍ Ⅷ ½ ²",
]


def ggml_inputs():
    path = SHARED / "llamacpp-vocab" / "ggml-vocab.inp"
    return path.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1] if path.exists() else []


def chunks(text, size):
    return [text[start:start + size] for start in range(0, len(text), size)]


def texts_of(max_lines=None, max_chunks=None):
    """The stress set, llama.cpp's inputs, and each shared text line by line
    and in 100k chunks (the first max_lines / max_chunks of each)."""
    texts = list(STRESS) + ggml_inputs()
    for name in TEXT_FILES:
        content = (SHARED / name).read_text(encoding="utf-8")
        texts += content.split("\n")[:max_lines]
        texts += chunks(content, 100_000)[:max_chunks]
    return texts


@pytest.fixture(scope="module")
def corpus():
    return texts_of()


@pytest.fixture(scope="module")
def special_corpus():
    """add_special_tokens only changes what the post-processor wraps around
    the pre-tokenized ids, so 2000 lines and one chunk of each text cover it;
    the full corpus (the oracle alone takes seconds over it) runs once, plain."""
    return texts_of(max_lines=2000, max_chunks=1)


def train_texts():
    for name in ["wikitext2-raw/wiki.test.raw", "tinyshakespeare/input.txt", "tinystories-valid/tinystories_val.txt"]:
        yield from (SHARED / name).read_text(encoding="utf-8").split("\n")
    yield from STRESS


def byte_level(tmp, name, split_pattern, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if split_pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train_texts(), trainer)
    tok.add_special_tokens([AddedToken("<|im_end|>", rstrip=True, special=True, normalized=False),
                            AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("[WORD]", single_word=True, normalized=False), AddedToken(" Hello", normalized=True)])
    bos = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])])
    path = tmp / f"{name}.json"
    tok.save(str(path))
    return path


def sentencepiece_style(tmp, name, metaspace):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
                                  limit_alphabet=300)
    tok.train_from_iterator(train_texts(), trainer)
    data = json.loads(tok.to_str())
    # Llama-2 layout: <unk> <s> </s>, then the 256 <0xXX> byte tokens, then the pieces.
    old = sorted(data["model"]["vocab"].items(), key=lambda item: item[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token, _ in old:
        vocab.setdefault(token, len(vocab))
    data["model"]["vocab"] = vocab
    for entry in data["added_tokens"]:
        entry["id"] = vocab[entry["content"]]
    if metaspace:
        data["normalizer"] = None
        data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
        data["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    else:
        data["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    data["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def gpt2_real(tmp):
    tok = Tokenizer(models.BPE.from_file(str(SHARED / "tok-gpt2" / "vocab.json"), str(SHARED / "tok-gpt2" / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(["<|endoftext|>"])
    path = tmp / "gpt2.json"
    tok.save(str(path))
    return path


def llama2_real(tmp):
    data = json.loads((SHARED / "tok-llama2" / "tokenizer.json").read_text(encoding="utf-8"))
    nbsp = "\u00a0"
    vocab = {token.replace(" ", nbsp): index for token, index in data["model"]["vocab"].items()}
    merges = []
    for merge in data["model"]["merges"]:
        if merge.count(" ") == 1:
            merges.append(merge)
            continue
        joined = merge.replace(" ", nbsp)
        splits = [(joined[:k], joined[k + 1:]) for k, c in enumerate(joined) if c == nbsp]
        left, right = next((a, b) for a, b in splits if a in vocab and b in vocab and a + b in vocab)
        merges.append(f"{left} {right}")
    data["model"]["vocab"], data["model"]["merges"] = vocab, merges
    path = tmp / "llama2.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tokenizers")
    return {
        "gpt2-real": gpt2_real(tmp),
        "llama2-real": llama2_real(tmp),
        "stories260k-hf": SHARED / "stories260k-hf" / "tokenizer.json",
        "bytelevel-gpt2-regex": byte_level(tmp, "bytelevel-gpt2", None, False),
        "bytelevel-llama3-split": byte_level(tmp, "bytelevel-llama3", LLAMA3_PATTERN, True),
        "bytelevel-qwen2-split": byte_level(tmp, "bytelevel-qwen2", QWEN2_PATTERN, False),
        "sentencepiece-bytefallback": sentencepiece_style(tmp, "sp-normalizer", False),
        "sentencepiece-metaspace": sentencepiece_style(tmp, "sp-metaspace", True),
    }


def run_tool(tokenizer_json, texts, tmp_path, *flags):
    inputs = tmp_path / "texts.jsonl"
    with inputs.open("w", encoding="utf-8") as out:
        for text in texts:
            out.write(json.dumps(text) + "\n")
    result = subprocess.run([str(TOOL), str(tokenizer_json), str(inputs), *flags], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.split("\n")[:-1]]


def assert_same_ids(name, texts, expected, rows):
    assert len(rows) == len(texts)
    bad = [k for k in range(len(texts)) if rows[k]["ids"] != expected[k]]
    detail = "\n".join(f"  {texts[k][:80]!r}\n    ours {rows[k]['ids'][:30]}\n    hf   {expected[k][:30]}" for k in bad[:5])
    assert not bad, f"{name}: {len(bad)} of {len(texts)} texts differ\n{detail}"


KIND_NAMES = ["gpt2-real", "llama2-real", "stories260k-hf", "bytelevel-gpt2-regex", "bytelevel-llama3-split",
              "bytelevel-qwen2-split", "sentencepiece-bytefallback", "sentencepiece-metaspace"]


@pytest.mark.parametrize("add_special", [False, True], ids=["plain", "special"])
@pytest.mark.parametrize("kind", KIND_NAMES)
def test_ids_match_tokenizers(kind, add_special, kinds, corpus, special_corpus, tmp_path):
    corpus = special_corpus if add_special else corpus
    oracle = Tokenizer.from_file(str(kinds[kind]))
    expected = [encoding.ids for encoding in oracle.encode_batch(corpus, add_special_tokens=add_special)]
    flags = ["--add-special-tokens"] if add_special else ["--decode"]
    rows = run_tool(kinds[kind], corpus, tmp_path, *flags)
    assert_same_ids(kind, corpus, expected, rows)
    if not add_special:
        decoded = oracle.decode_batch(expected)
        bad = [k for k in range(len(corpus)) if rows[k]["decoded"] != decoded[k]]
        detail = "\n".join(f"  ours {rows[k]['decoded'][:60]!r}\n  hf   {decoded[k][:60]!r}" for k in bad[:5])
        assert not bad, f"{kind}: decode differs on {len(bad)} of {len(corpus)} texts\n{detail}"


@pytest.mark.parametrize("kind,expected_file", [("gpt2-real", "ggml-vocab-gpt-2.gguf.out"),
                                                ("llama2-real", "ggml-vocab-llama-spm.gguf.out")])
def test_llamacpp_vectors(kind, expected_file, kinds, tmp_path):
    inputs = ggml_inputs()
    expected = [[int(x) for x in line.split()] for line in
                (SHARED / "llamacpp-vocab" / expected_file).read_text().splitlines()]
    assert len(inputs) == len(expected) > 40
    rows = run_tool(kinds[kind], inputs, tmp_path)
    assert_same_ids(kind, inputs, expected, rows)


def test_tok_llama2_as_shipped_is_rejected_like_tokenizers(tmp_path):
    shipped = SHARED / "tok-llama2" / "tokenizer.json"
    with pytest.raises(Exception):
        Tokenizer.from_file(str(shipped))
    inputs = tmp_path / "texts.jsonl"
    inputs.write_text('"x"\n')
    result = subprocess.run([str(TOOL), str(shipped), str(inputs)], capture_output=True, text=True)
    assert result.returncode == 2 and "merge" in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["gpt2-real", "llama2-real"])
def test_speed_wikitext2_test(kind, kinds, tmp_path):
    text = (SHARED / "wikitext2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    lines = text.split("\n")
    oracle = Tokenizer.from_file(str(kinds[kind]))
    start = time.perf_counter()
    expected = [e.ids for e in oracle.encode_batch(lines, add_special_tokens=False)]
    hf_batch = time.perf_counter() - start
    start = time.perf_counter()
    for line in lines:
        oracle.encode(line, add_special_tokens=False)
    hf_serial = time.perf_counter() - start
    rows = run_tool(kinds[kind], lines, tmp_path, "--time")
    ours = rows.pop()["seconds"]
    assert_same_ids(kind, lines, expected, rows)
    mb = len(text.encode()) / 1e6
    print(f"\n{kind}: wikitext2 test ({mb:.2f} MB, {len(lines)} lines): ours {ours:.3f} s, "
          f"tokenizers encode {hf_serial:.3f} s, encode_batch {hf_batch:.3f} s")
    # Well under a few seconds on an idle machine; relative to the oracle when the machine is shared.
    assert ours < max(5.0, 2 * hf_batch)
