#!/usr/bin/env bash
# The one run behind docs/benchmarks.md "Local engine on the H200": the CUDA correctness check, then the
# Gemma-3-4B-shaped benchmark, each under its own time limit (a hang in the second keeps the first's output).
# On the device machine framelens is not installed: the tree is copied into a package layout, and the few
# packages that machine lacks come from carried wheels in .whl/ (see the device README).
#   OUT=/tmp/out bash bench/local_engine_h200.sh     (DEVICE, PRESET, PY, REPEATS, CHECK_S, BENCH_S override;
#   QWEN_S=SECONDS adds the Qwen2.5-VL-3B-shaped bench, QWEN_PRESET=qwen2.5-vl-mini to try it on a CPU)
set -o pipefail
OUT=${OUT:-/tmp/local-engine-out}; mkdir -p "$OUT"
PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}; PRESET=${PRESET:-gemma3-4b}; DTYPE=${DTYPE:-bfloat16}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 3
fi
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r framework /tmp/pkg/framelens && cp -r plugins /tmp/pkg/framelens/plugins
export PYTHONPATH=/tmp/pkg:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
date -u | tee "$OUT/machine.txt"
{ nvidia-smi || true; $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"
} 2>&1 | tee -a "$OUT/machine.txt"
$PY -c "import framelens.plugins.vlm.local.engine as e; print('engine from', e.__file__)" || exit 4
echo "== check"
timeout ${CHECK_S:-150} $PY bench/local_engine_check.py --device "$DEVICE" --preset gemma3-mini --tokens 24 \
    2>"$OUT/check.err" | tee "$OUT/check.jsonl"
echo "check rc=$?"
echo "== bench"
timeout ${BENCH_S:-270} $PY bench/local_engine.py --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" --batch 8 \
    --tokens 64 --capacity 1024 --rules 50 --profile --repeats "${REPEATS:-3}" 2> >(grep -v "it/s\]" | tee "$OUT/bench.err" >&2) | tee "$OUT/bench.json"
echo "bench rc=$?"
if [ -n "${QWEN_S:-}" ]; then  # the Qwen2.5-VL-3B-shaped report, when the time limit allows it
    echo "== bench qwen"
    timeout "$QWEN_S" $PY bench/local_engine.py --preset "${QWEN_PRESET:-qwen2.5-vl-3b}" --device "$DEVICE" \
        --dtype "$DTYPE" --batch 8 --tokens 64 --capacity 1024 --rules 50 --repeats "${REPEATS:-3}" \
        2> >(grep -v "it/s\]" | tee "$OUT/bench-qwen.err" >&2) | tee "$OUT/bench-qwen.json"
    echo "bench qwen rc=$?"
fi
