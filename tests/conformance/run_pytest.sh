#!/usr/bin/env bash
# Runs one conformance file under the oracle Python; exit 77 (CTest skip) when
# no oracle environment was configured.
set -uo pipefail
if [[ -z "${GPTQ_PYTHON:-}" || ! -x "${GPTQ_PYTHON}" ]]; then
  echo "skipped: no oracle Python (configure with -DGPTQ_PYTHON=..., scripts/setup.sh --oracles does)"
  exit 77
fi
export GPTQMODEL_CPU_WORKERS="${GPTQMODEL_CPU_WORKERS:-2}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$GPTQ_PYTHON" -m pytest -q -x -p no:cacheprovider "$1"
rc=$?
# pytest: 5 = nothing collected (all skipped at module level) -> CTest skip.
[[ $rc -eq 5 ]] && exit 77
exit $rc
