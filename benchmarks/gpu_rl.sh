#!/usr/bin/env bash
# RL on one GPU: hqlt-sync vs gru (3 layers, d_model 128) on popgym/RepeatPreviousMedium and
# minigrid/MemoryS11 (3x3 view), a fixed step budget each (capped in wall time), then a table of
# normalised MMER / success and end-to-end SPS. About 5-6 minutes in all.
#
#   source .device/setup.sh; bash benchmarks/gpu_rl.sh        # from the repo root
#
# Logs, TensorBoard runs and summaries go to $OUT (default /tmp/rlmem_gpu_rl). Budgets can be
# changed with POPGYM_STEPS, MINIGRID_STEPS and MAX_SECONDS (per run); MINIGRID=0 skips MiniGrid.
# SPS counts the whole run; steady SPS starts after the first update (kernel compilation and
# CUDA-graph capture), as BENCHMARKS.md asks; rollout / update s are seconds per update.
set -uo pipefail
OUT=${OUT:-/tmp/rlmem_gpu_rl}
POPGYM_STEPS=${POPGYM_STEPS:-2000000}
MINIGRID_STEPS=${MINIGRID_STEPS:-1000000}
MAX_SECONDS=${MAX_SECONDS:-70}
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
mkdir -p "$OUT/runs"
CORE_OPT="n_layers=3 d_model=128"

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt"

echo "== env-only throughput"
python benchmarks/rl_throughput.py --env popgym/RepeatPreviousMedium --core gru \
    --num-envs 512 --steps 300000 --only env 2>&1 | tee "$OUT/env_throughput.log"

run() {  # name env steps extra-args...
    local name=$1 env=$2 steps=$3
    shift 3
    echo "== $name"
    timeout $((MAX_SECONDS + 120)) python -m rlmem.cli ppo --env "$env" --total-steps "$steps" \
        --device cuda --seed 1 --max-seconds "$MAX_SECONDS" --checkpoint-every 1000000 \
        --no-progress --run-dir "$OUT/runs/$name" "$@" > "$OUT/$name.log" 2>&1
    echo "   exit $? ($(tail -n 1 "$OUT/$name.log"))"
}

for core in hqlt-sync gru; do
    run "popgym_${core}" popgym/RepeatPreviousMedium "$POPGYM_STEPS" \
        --core "$core" --core-opt $CORE_OPT --lr 5e-4 --num-envs 512 --num-steps 64
done
[ "${MINIGRID:-1}" = 1 ] && for core in hqlt-sync gru; do
    run "minigrid_${core}" minigrid/MemoryS11 "$MINIGRID_STEPS" \
        --core "$core" --core-opt $CORE_OPT --lr 5e-4 --env-opt agent_view_size=3 \
        --num-envs 256 --num-steps 128 --num-workers "$WORKERS"
done

python - "$OUT" <<'EOF' | tee "$OUT/results.md"
import json, math, os, sys
out = sys.argv[1]
print("| run | env | core | steps | seconds | SPS | steady SPS | rollout s | update s "
      "| final mean return | MMER | normalised MMER / success |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
sps = {}
for name in ["popgym_hqlt-sync", "popgym_gru", "minigrid_hqlt-sync", "minigrid_gru"]:
    path = os.path.join(out, "runs", name, "summary.json")
    if not os.path.exists(os.path.join(out, f"{name}.log")):
        continue  # not run (MINIGRID=0)
    if not os.path.exists(path):
        print(f"| {name} | failed: see {name}.log | | | | | | | | | | |")
        continue
    s = json.load(open(path))
    score = s.get("mmer_normalised", s.get("success_rate", math.nan))
    sps[name] = s.get("sps_steady", s["sps"])
    print(f"| {name} | {s['env']} | {s['core']} | {s['steps']:,} | {s['seconds']} | "
          f"{s['sps']:,} | {s.get('sps_steady', 0):,} | {s.get('rollout_s', 0):.3f} | "
          f"{s.get('update_s', 0):.3f} | {s['episodic_return']:.3f} | {s['mmer']:.3f} | "
          f"{score:.3f} |")
print("\nPOPGym: normalised MMER (0.5 * MMER + 0.5; chance on RepeatPrevious ~ 0.25). MiniGrid:"
      " success rate of the last 100 episodes (about 0.5 is chance once the agent reaches the fork)."
      f" Cores: {os.environ.get('CORE_OPT', 'n_layers=3 d_model=128')}, lr 5e-4, PPO defaults.")
for env in ["popgym", "minigrid"]:
    a, b = sps.get(f"{env}_hqlt-sync"), sps.get(f"{env}_gru")
    if a and b:
        print(f"\n{env}: hqlt-sync steady SPS / gru steady SPS = {a / b:.2f}")
EOF
