#!/usr/bin/env python3
"""Makes the demo model for scripts/demo.sh: a small Llama created from a
fixed seed and trained for a few hundred steps (about a minute on a laptop
CPU), saved in Hugging Face layout with a byte-level BPE tokenizer.json.

Training text: WikiText-2 (../shared/data/wikitext2-raw/wiki.test.raw or
../shared/data/wikitext2/*.txt) when present, else English-like text this
script generates from a seeded grammar. Output (cached; rebuilt only when
missing):  <out>/model  and  <out>/calib.txt (calibration text)  and
<out>/eval.txt (held-out text for perplexity).

Python is used only to MAKE this demo model; gptq-quant itself never runs it.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SEED = 0


def wikitext() -> str | None:
    shared = ROOT.parent / "shared" / "data"
    for candidate in (shared / "wikitext2-raw" / "wiki.test.raw", shared / "wikitext2" / "test.txt"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return None


def generated_text(n_sentences: int = 40000) -> str:
    rng = random.Random(SEED)
    subjects = ["the cat", "a small dog", "the old man", "my sister", "the teacher", "a bird",
                "the farmer", "our neighbour", "the river", "a young girl"]
    verbs = ["saw", "liked", "found", "carried", "painted", "followed", "heard", "helped"]
    objects = ["a red ball", "the green house", "an apple", "the long road", "a quiet song",
               "the blue boat", "a heavy box", "the bright star"]
    endings = ["in the morning", "after school", "near the hill", "with great care", "before dinner",
               "under the tree", ""]
    sentences = []
    for _ in range(n_sentences):
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(endings)}"
        sentences.append(sentence.strip().capitalize() + ".")
    return "\n".join(" ".join(sentences[i:i + 6]) for i in range(0, len(sentences), 6))


def train_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator([text[i:i + 10000] for i in range(0, len(text), 10000)], trainer)
    return tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "gptq-quant" / "demo-model")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    model_dir = args.out / "model"
    if (model_dir / "model.safetensors").is_file() and (args.out / "calib.txt").is_file():
        print(f"demo model cached at {model_dir}", file=sys.stderr)
        return 0

    from transformers import LlamaConfig, LlamaForCausalLM

    text = wikitext()
    source = "WikiText-2 (test split)" if text else "generated text"
    if text is None:
        text = generated_text()
    cut = int(len(text) * 0.85)
    train_text, eval_text = text[:cut], text[cut:]
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    tokenizer = train_tokenizer(train_text, vocab_size=1024)
    ids = torch.tensor(tokenizer.encode(train_text).ids, dtype=torch.long)

    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=128, intermediate_size=384,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=0, eos_token_id=0)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=args.steps)
    generator = torch.Generator().manual_seed(SEED)
    seqlen, batch = 128, 8
    start = time.time()
    model.train()
    for step in range(args.steps):
        offsets = torch.randint(0, ids.numel() - seqlen - 1, (batch,), generator=generator)
        x = torch.stack([ids[o:o + seqlen] for o in offsets.tolist()])
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}/{args.steps} loss {loss.item():.3f} ({time.time() - start:.0f}s)",
                  file=sys.stderr)
    model.eval()
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
         "eos_token": "<|endoftext|>", "model_max_length": 1024}, indent=2))
    (model_dir / "SOURCE.md").write_text(
        f"Demo Llama made by scripts/make_demo_model.py (seed {SEED}, {args.steps} steps on {source}).\n")
    (args.out / "calib.txt").write_text(train_text)
    (args.out / "eval.txt").write_text(eval_text)
    print(f"demo model written to {model_dir} (trained on {source})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
