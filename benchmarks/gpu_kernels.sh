#!/usr/bin/env bash
# Build, check and time rlmem's Triton kernels on the GPU machine, in one go (<= 5 min; the
# compiled GPU pytest run is opt-in: RUN_TESTS=1; CHECK_S / BENCH_S / TEST_S cap each stage,
# BENCH_ONLY="delta_lm delta_rl step swa" picks timing sections, BENCH_ONLY=none skips them,
# ISOLATE=1 runs each check case in its own process).
# From the repo root:  source .device/setup.sh; bash benchmarks/gpu_kernels.sh
# Logs go to $OUT (or /tmp/rlmem-kernels); the last lines are the check summary and the table.
set -u
OUT=${OUT:-/tmp/rlmem-kernels}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%F)"

echo "== correctness (bf16 vs fp32 reference < 1e-2, fp32 < 1e-4, vs fla)"
timeout "${CHECK_S:-120}" python3 benchmarks/kernels.py check ${ISOLATE:+--isolate} 2>&1 | tee "$OUT/check.log"

if [ "${RUN_TESTS:-0}" = 1 ] && python3 -c "import pytest" 2>/dev/null; then
    echo "== tests/test_triton_kernels.py compiled on the GPU"
    timeout "${TEST_S:-90}" python3 -m pytest -q -x -p no:cacheprovider \
        tests/test_triton_kernels.py 2>&1 | tail -n 15 | tee "$OUT/pytest.log"
fi

echo "== timings (triton.testing.do_bench medians, bf16)"
[ "${BENCH_ONLY:-}" = none ] || timeout "${BENCH_S:-170}" python3 benchmarks/kernels.py bench ${BENCH_ONLY:+--only $BENCH_ONLY} 2>&1 | tee "$OUT/bench.log"

echo "== summary"
grep -E "^FAIL|^checks:" "$OUT/check.log" || echo "check log incomplete"
tail -n 3 "$OUT/pytest.log" 2>/dev/null
grep -E "^\|" "$OUT/bench.log" || echo "bench table incomplete"
