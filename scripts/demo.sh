#!/usr/bin/env bash
# Sets up only what the demo needs (the gptq-quant executable, and
# transformers to make the demo model: no tests, no test oracles, no
# llama.cpp) and runs the main job on its embedded default: GPTQ 4-bit g128
# symmetric quantization (the scheme vLLM serves) of a small Llama that scripts/make_demo_model.py
# creates from a seed and trains for about a minute (cached under
# ~/.cache/gptq-quant/demo-model), then the perplexity of the original and
# of the quantized checkpoint side by side.
#
#   scripts/demo.sh             quantize into ~/.cache/gptq-quant/demo-output/<timestamp>
#   DEMO_OUT=dir scripts/demo.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${GPTQ_BUILD_DIR:-$ROOT/build}"
CACHE="${GPTQ_CACHE:-$HOME/.cache/gptq-quant}"
DEMO="$CACHE/demo-model"
OUT="${DEMO_OUT:-$CACHE/demo-output/$(date +%Y%m%d-%H%M%S)}"

"$ROOT/scripts/setup.sh" --demo
"$CACHE/venv/bin/python" "$ROOT/scripts/make_demo_model.py" --out "$DEMO"

BIN="$BUILD_DIR/gptq-quant"
mkdir -p "$(dirname "$OUT")"
"$BIN" quantize --model "$DEMO/model" --output "$OUT" --calib "$DEMO/calib.txt" \
  --bits 4 --group-size 128 --nsamples 128 --seqlen 512 --device auto \
  --report "$OUT.report.json"

ppl() { "$BIN" -q benchmark ppl --model "$1" --text "$DEMO/eval.txt" --seqlen 512 --json; }
FP=$(ppl "$DEMO/model")
Q=$(ppl "$OUT")
"$CACHE/venv/bin/python" - "$FP" "$Q" "$DEMO/model" "$OUT" <<'PY'
import json, sys
fp, q = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"original  {sys.argv[3]}: perplexity {fp['ppl']:.3f}")
print(f"GPTQ 4bit {sys.argv[4]}: perplexity {q['ppl']:.3f} ({(q['ppl'] / fp['ppl'] - 1) * 100:+.2f} %)")
PY
echo "quantized checkpoint: $OUT (report: $OUT.report.json)"
