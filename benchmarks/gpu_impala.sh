#!/usr/bin/env bash
# IMPALA vs PPO on one GPU (issue 5): end-to-end env steps/s of `rlmem impala` and `rlmem ppo`
# with the same core (hqlt-sync, 3 layers, d_model 128), env (popgym/RepeatPreviousMedium),
# learning rate and step budget, and the return each reaches. About 4-5 minutes.
#
#   source .device/setup.sh; bash benchmarks/gpu_impala.sh        # from the repo root
#
#   PPO: 512 envs x 64 steps on the GPU, 4 epochs x 4 minibatches (as benchmarks/gpu_rl.sh).
#   IMPALA: one actor process per spare CPU core, IMPALA_ENVS envs each, stepping a CPU copy of
#   the policy; unrolls of 64 steps; IMPALA_BATCH unrolls per learner update on the GPU.
# Each run stops at STEPS env steps or after MAX_SECONDS (fewer steps in the table: the time
# limit hit). Logs, run directories (TensorBoard, checkpoints, summary.json) and results.md go
# to $OUT (default /tmp/rlmem_gpu_impala); the last lines are the results table.
# Knobs: STEPS, MAX_SECONDS, LR, IMPALA_ENVS, IMPALA_BATCH, CORE_OPT, DEVICE (cpu: dry run).
set -uo pipefail
OUT=${OUT:-/tmp/rlmem_gpu_impala}
STEPS=${STEPS:-2000000}
MAX_SECONDS=${MAX_SECONDS:-100}
LR=${LR:-5e-4}
IMPALA_ENVS=${IMPALA_ENVS:-64}
IMPALA_BATCH=${IMPALA_BATCH:-2}
CORE_OPT=${CORE_OPT:-"n_layers=3 d_model=128"}
DEVICE=${DEVICE:-cuda}
ENV=popgym/RepeatPreviousMedium
mkdir -p "$OUT/runs"
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
python -c "import os, torch; print('torch', torch.__version__, '| cpus', os.cpu_count())"
git rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt"

run() {  # name algorithm extra-args...
    local name=$1 algo=$2
    shift 2
    echo "== $name: hqlt-sync ($CORE_OPT) on $ENV, $STEPS steps or ${MAX_SECONDS}s, lr $LR"
    timeout $((MAX_SECONDS + 60)) python -m rlmem.cli "$algo" --env "$ENV" --core hqlt-sync \
        --core-opt $CORE_OPT --lr "$LR" --total-steps "$STEPS" --max-seconds "$MAX_SECONDS" \
        --device "$DEVICE" --seed 1 --checkpoint-every 1000000 --no-progress \
        --run-dir "$OUT/runs/$name" "$@" > "$OUT/$name.log" 2>&1
    echo "   exit $? ($(tail -n 1 "$OUT/$name.log"))"
}

run ppo ppo --num-envs 512 --num-steps 64
run impala impala --envs-per-actor "$IMPALA_ENVS" --batch-size "$IMPALA_BATCH" --unroll-length 64

echo "== rlmem eval of both runs (64 episodes, sampled actions)"
for name in ppo impala; do
    timeout 30 python -m rlmem.cli eval "$OUT/runs/$name" --episodes 64 --num-envs 64 \
        --device "$DEVICE" --json > "$OUT/eval_$name.json" 2> "$OUT/eval_$name.log" \
        || echo "   eval $name failed: $(tail -n 1 "$OUT/eval_$name.log")"
done

OUT="$OUT" STEPS="$STEPS" LR="$LR" CORE_OPT="$CORE_OPT" python - <<'EOF' | tee "$OUT/results.md"
import json, os
out = os.environ["OUT"]

def load(path):
    try:
        with open(os.path.join(out, path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

fmt = lambda value, spec: "-" if value is None else format(value, spec)
runs = {name: load(f"runs/{name}/summary.json") for name in ("ppo", "impala")}
ref = (runs["ppo"] or {}).get("sps")
print(f"\nhqlt-sync ({os.environ['CORE_OPT']}) on popgym/RepeatPreviousMedium, lr "
      f"{os.environ['LR']}, budget {int(os.environ['STEPS']):,} env steps (or the time limit)")
print("| algorithm | env steps | seconds | SPS | vs ppo | final-window return | norm. MMER | "
      "eval return (64 ep.) | policy lag | learner idle |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name, s in runs.items():
    if s is None:
        print(f"| {name} | failed: see {name}.log | | | | | | | | |")
        continue
    e = load(f"eval_{name}.json") or {}
    ratio = f"{s['sps'] / ref:.2f}x" if ref else "-"
    print(f"| {name} | {s['steps']:,} | {s['seconds']} | {s['sps']:,} | {ratio} | "
          f"{fmt(s.get('episodic_return'), '.3f')} | {fmt(s.get('mmer_normalised'), '.3f')} | "
          f"{fmt(e.get('mean_return'), '.3f')} | {fmt(s.get('policy_lag_mean'), '.1f')} | "
          f"{fmt(s.get('learner_idle'), '.0%')} |")
s = runs["impala"] or {}
print(f"\nIMPALA: {s.get('num_actors', '?')} actors x {s.get('envs_per_actor', '?')} envs, "
      f"start-up {s.get('startup_seconds', '?')}s (not in its SPS), actor restarts "
      f"{s.get('actor_restarts', '?')}. Policy lag: learner updates between the weights an "
      "unroll was played with and the update that learns from it. Learner idle: share of the "
      "time the learner waited for unrolls (high: actor-bound). Chance on RepeatPrevious: "
      "normalised return ~0.25.")
EOF
