#!/usr/bin/env bash
# The LM / synthetic-task acceptance runs of issue 6 on one GPU, in one go (~12 min on an H100).
# From the repo root:  source .device/setup.sh; bash benchmarks/gpu_lm.sh
#   (1) parity, 2 layers, d_model 128, 4 heads, window 8 (chunk 16), paper options:
#       hqlt-sync should reach >= 95% normalised test accuracy (lengths 40-256),
#       hqlt-delayed-stream and hqlt-delayed-chunk should stay near chance;
#   (2) LM training tokens/s of hqlt-sync vs a same-size full-attention transformer
#       (rlmem's `transformer` core and the SDPA flash-attention peer of BENCHMARKS.md):
#       T=2048 B=8 eager, T=2048 B=8 and T=8192 B=2 torch.compile'd (hqlt-sync and SDPA only),
#       T=8192 B=2 compiled with CUDA graphs (reduce-overhead; unless COMPILE_MODE is set),
#       T=8192 B=2 eager with EAGER_8K=1 (~8-10 min together);
#   (3) validation perplexity after a fixed token budget on the stdlib corpus:
#       transformer, deltanet, hqlt-sync;
#   (4) (only when SECTIONS names it) the forward alone at T=8192 B=2 with CUDA graphs
#       (evaluation / prefill tokens/s, hqlt-sync and SDPA) and decoding after a 2048-token
#       prompt (`lm_decode.py --compile`: eager, CUDA graph, compiled + graph; ~5 min).
# Logs and JSON go to $OUT (or /tmp/rlmem-lm); the last lines are the results table.
# Knobs: PARITY_STEPS (optimiser steps per parity run, default 3000; a run stops early at 99%),
# PARITY_S (a cap on each run's training seconds, default 150; the learning-rate schedule decays
# fully by whichever budget ends first), LM_STEPS (optimiser steps of run 3, default 300),
# SECTIONS (which of 1 2 3 4 to run, default "1 2 3"; e.g. SECTIONS=2 for the throughput runs
# alone, SECTIONS=4 for evaluation and decoding), COMPILE_MODE (torch.compile mode of the
# compiled throughput runs, e.g. reduce-overhead for CUDA graphs),
# CORE_OPT (key=value ... for the throughput runs' cores, e.g. mixer=dynamic-scalar: the
# same-size hqlt-sync, 342.3M parameters against the transformer's 341.1M).
set -u
OUT=${OUT:-/tmp/rlmem-lm}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export RLMEM_CACHE=${RLMEM_CACHE:-/tmp/rlmem-cache}
PARITY_STEPS=${PARITY_STEPS:-3000}
PARITY_S=${PARITY_S:-150}
LM_STEPS=${LM_STEPS:-300}
SECTIONS=${SECTIONS:-1 2 3}
run_section() { [[ " $SECTIONS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%F)"

if run_section 1; then
echo "== (1) parity: train lengths 3-40, test lengths 40-256, $PARITY_STEPS steps (at most ${PARITY_S}s) per core"
for core in hqlt-sync hqlt-delayed-stream hqlt-delayed-chunk; do
    timeout $((PARITY_S + 60)) python3 -m rlmem.cli lm task parity --core "$core" \
        --core-opt window=8 chunk=16 --n-layers 2 --d-model 128 --n-heads 4 \
        --steps "$PARITY_STEPS" --batch-size 256 --lr 3e-3 --warmup-steps 300 --eval-interval 250 \
        --test-size 2048 --target-acc 0.99 --time-budget "$PARITY_S" --no-progress-bar \
        --run-dir "$OUT/parity-$core" 2>&1 | tee "$OUT/parity-$core.log" | grep -E "^(step|parity)"
done
fi

if run_section 2; then
echo "== (2) LM training throughput (D=1024, 24 layers, 16 heads, bf16${CORE_OPT:+, $CORE_OPT}): T=2048 B=8 eager and compiled, T=8192 B=2 compiled"
CORES="hqlt-sync transformer sdpa-transformer"
SHAPE="--d-model 1024 --n-layers 24 --n-heads 16 ${CORE_OPT:+--core-opt $CORE_OPT}"
timeout 150 python3 benchmarks/lm_throughput.py --cores $CORES $SHAPE --seq-len 2048 \
    --batch-size 8 --steps 10 --warmup 3 --json "$OUT/throughput.json" 2>&1 \
    | tee "$OUT/throughput.log" | grep -v '^{'
# Compiled: the memory cores against the SDPA peer only (each compile costs ~1 min).
timeout 200 python3 benchmarks/lm_throughput.py --cores hqlt-sync sdpa-transformer $SHAPE \
    --seq-len 2048 --batch-size 8 --steps 10 --warmup 3 --compile ${COMPILE_MODE:+--compile-mode $COMPILE_MODE} \
    --json "$OUT/throughput-compile.json" 2>&1 | tee "$OUT/throughput-compile.log" | grep -v '^{'
timeout 200 python3 benchmarks/lm_throughput.py --cores hqlt-sync sdpa-transformer $SHAPE \
    --seq-len 8192 --batch-size 2 --steps 6 --warmup 3 --compile ${COMPILE_MODE:+--compile-mode $COMPILE_MODE} \
    --json "$OUT/throughput-8k-compile.json" 2>&1 | tee "$OUT/throughput-8k-compile.log" \
    | grep -v '^{'
# CUDA graphs at T=8192, where the compiled step otherwise waits on the host (RESULTS.md).
[[ -z "${COMPILE_MODE:-}" ]] && timeout 200 python3 benchmarks/lm_throughput.py \
    --cores hqlt-sync sdpa-transformer $SHAPE --seq-len 8192 --batch-size 2 --steps 6 --warmup 3 \
    --compile --compile-mode reduce-overhead --json "$OUT/throughput-8k-graphs.json" 2>&1 \
    | tee "$OUT/throughput-8k-graphs.log" | grep -v '^{'
[[ "${EAGER_8K:-0}" == 1 ]] && timeout 150 python3 benchmarks/lm_throughput.py --cores $CORES \
    $SHAPE --seq-len 8192 --batch-size 2 --steps 6 --warmup 2 \
    --json "$OUT/throughput-8k.json" 2>&1 | tee "$OUT/throughput-8k.log" | grep -v '^{'
fi

if run_section 3; then
echo "== (3) stdlib validation perplexity after $LM_STEPS steps of 16k tokens (D=256, 4 layers)"
for core in transformer deltanet hqlt-sync; do
    timeout 150 python3 -m rlmem.cli lm train --core "$core" --data stdlib \
        --d-model 256 --n-layers 4 --n-heads 4 --seq-len 512 --batch-size 32 \
        --max-steps "$LM_STEPS" --lr 2e-3 --warmup-steps 40 --eval-interval 1000 \
        --eval-batches 20 --log-interval 50 --no-progress-bar --no-resume \
        --run-dir "$OUT/lm-$core" 2>&1 | tee "$OUT/lm-$core.log" | grep -E "^(step|prep|[a-z-]+:)"
done
fi

if run_section 4; then
echo "== (4) evaluation forward (T=8192 B=2, CUDA graphs) and decoding (2048-token prompt)"
SHAPE="--d-model 1024 --n-layers 24 --n-heads 16 ${CORE_OPT:+--core-opt $CORE_OPT}"
timeout 200 python3 benchmarks/lm_throughput.py --cores hqlt-sync sdpa-transformer $SHAPE \
    --seq-len 8192 --batch-size 2 --steps 20 --warmup 3 --compile --compile-mode reduce-overhead \
    --mode eval --json "$OUT/eval-8k-graphs.json" 2>&1 | tee "$OUT/eval-8k-graphs.log" \
    | grep -v '^{'
(cd benchmarks && timeout 300 python3 lm_decode.py --cores hqlt-sync transformer $SHAPE \
    --prompt-len 2048 --new-tokens 128 --batch-sizes 1 8 --compile 2>&1) \
    | tee "$OUT/decode.log" | grep -v "^{"
fi

echo "== results"
OUT="$OUT" SECTIONS="$SECTIONS" python3 - <<'EOF'
import json, os
out = os.environ["OUT"]

def load(path):
    try:
        with open(os.path.join(out, path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

sections = os.environ["SECTIONS"].split()  # a table per section run (4 prints its own)

if "1" in sections:
    print("| parity (2 layers, test 40-256) | normalised test acc | raw | steps | seconds | stop |")
    print("|---|---|---|---|---|---|")
    for core in ("hqlt-sync", "hqlt-delayed-stream", "hqlt-delayed-chunk"):
        r = load(f"parity-{core}/results.json")
        if r is None:
            print(f"| {core} | missing | | | | |")
            continue
        print(f"| {core} | {100 * r['test_normalised_accuracy']:.1f}% | "
              f"{100 * r['test_accuracy']:.1f}% | {r['steps']} | {r['seconds']:.0f} | {r['stopped']} |")

if "2" in sections:
    runs = [("T=2048 B=8 eager", "throughput.json"),
            ("T=2048 B=8 compiled", "throughput-compile.json"),
            ("T=8192 B=2 compiled", "throughput-8k-compile.json"),
            ("T=8192 B=2 CUDA graphs", "throughput-8k-graphs.json"),
            ("T=8192 B=2 eager", "throughput-8k.json")]
    device = next((t["device"] for _, p in runs if (t := load(p))), "?")
    print(f"\n| LM training ({device}) | core | tokens/s | vs sdpa-transformer | vs transformer "
          "| MFU | mem (GB) |")
    print("|---|---|---|---|---|---|---|")
    for label, path in runs:
        t = load(path)
        rows = {r["core"]: r for r in (t or {}).get("results", []) if "error" not in r}
        errors = {r["core"]: r["error"] for r in (t or {}).get("results", []) if "error" in r}
        if t is None:
            print(f"| {label} | - | missing (not run or cut off) | | | | |")
            continue
        for core in ("hqlt-sync", "transformer", "sdpa-transformer"):
            r = rows.get(core)
            if r is None:
                if core in errors:
                    print(f"| {label} | {core} | {errors[core][:60]} | | | | |")
                continue
            ratios = [f"{r['tokens_per_s'] / rows[ref]['tokens_per_s']:.2f}x" if ref in rows else "-"
                      for ref in ("sdpa-transformer", "transformer")]
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
            mem = f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") is not None else "-"
            print(f"| {label} | {core} | {r['tokens_per_s']:,.0f} | {ratios[0]} | {ratios[1]} "
                  f"| {mfu} | {mem} |")

if "3" in sections:
    print("\n| stdlib LM (same token budget) | val loss | val ppl | bits/byte | tokens/s |")
    print("|---|---|---|---|---|")
    for core in ("transformer", "deltanet", "hqlt-sync"):
        r = load(f"lm-{core}/results.json")
        if r is None or "val_loss" not in r:
            print(f"| {core} | missing | | | |")
            continue
        print(f"| {core} | {r['val_loss']:.4f} | {r['val_ppl']:.3f} | {r['val_bpb']:.3f} | "
              f"{r['tokens_per_s']:,.0f} |")

EOF
