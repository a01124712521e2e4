#!/usr/bin/env bash
# Where an LM training step's time goes (issue 6), on one GPU in ~1-2 min. From the repo root:
#   source .device/setup.sh; bash benchmarks/gpu_lm_profile.sh
# torch.profiler over 2 training steps (after 3 warm-up steps) of hqlt-sync and the SDPA
# transformer peer at T=2048 B=8, D=1024, 16 heads, 4 layers, bf16: top-25 kernels, device time
# by category, step wall time vs device busy time. The log goes to $OUT.
# Knobs: CORES (default "hqlt-sync sdpa-transformer"), COMPILE=1 to profile torch.compile'd
# models, TRACE=1 to also write a Chrome trace per core to $OUT (tens of MB each), N_LAYERS
# (default 4; 24 is the throughput runs' model, where fixed costs weigh as they do there).
set -u
OUT=${OUT:-/tmp/rlmem-lm-profile}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CORES=${CORES:-hqlt-sync sdpa-transformer}
EXTRA=()
[[ "${COMPILE:-0}" == 1 ]] && EXTRA+=(--compile)
[[ "${TRACE:-0}" == 1 ]] && EXTRA+=(--trace "$OUT")
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%F)"
timeout 200 python3 benchmarks/lm_profile.py --cores $CORES --seq-len 2048 --batch-size 8 \
    --d-model 1024 --n-layers "${N_LAYERS:-4}" --n-heads 16 --warmup 3 --steps 2 --top 25 \
    "${EXTRA[@]}" 2>&1 | tee "$OUT/profile.log" | grep -v "^USDT\|profiler_st"
