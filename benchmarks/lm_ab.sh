#!/usr/bin/env bash
# The 24-layer LM training step of several checkouts, alternating, in one run on one card.
#
#   git worktree add --detach .a REV_A; git worktree add --detach .b REV_B   # locally, carried
#   source .device/setup.sh; bash benchmarks/lm_ab.sh . .a .b
#   LM_ARGS="... --core-opt mixer=dynamic-scalar" ROUNDS=3 bash benchmarks/lm_ab.sh . .a
#
# Each round times every tree once, in the order given (`lm_throughput.py --cores hqlt-sync`,
# each tree's own script and rlmem package; LM_ARGS replaces the default shape: D=1024, 24
# layers, 16 heads, T=2048 B=8, compiled), so a drift of the card's clock shows as rounds that
# disagree rather than as a difference between trees. The first round also warms each tree's
# compile caches (a fresh card's first 24-layer compile takes over 100 s): compare the later
# rounds. ENV_1, ENV_2, ... (VAR=VALUE ...) set variables for the first, second, ... tree (one
# tree twice with two settings: `ENV_2=RLMEM_DELTA_GROUPS=0 bash benchmarks/lm_ab.sh . .`).
# Logs and JSON go to $OUT; the last lines are the table.
set -u
(($# >= 1)) || { echo "usage: bash benchmarks/lm_ab.sh TREE [TREE ...]" >&2; exit 2; }
OUT=${OUT:-/tmp/rlmem-lm-ab}
ROUNDS=${ROUNDS:-2}
LM_ARGS=${LM_ARGS:---d-model 1024 --n-layers 24 --n-heads 16 --seq-len 2048 --batch-size 8 --compile}
mkdir -p "$OUT"

for round in $(seq "$ROUNDS"); do
    for i in $(seq $#); do
        tree=$(cd "${!i}" && pwd)
        vars_name=ENV_$i
        vars=${!vars_name:-}
        log="$OUT/lm-$i-$round"
        echo "== round $round, tree $i: $tree $vars"
        # shellcheck disable=SC2086  # LM_ARGS and vars are lists
        (cd "$tree" && env $vars PYTHONPATH="$tree:${PYTHONPATH:-}" timeout 300 python3 \
            benchmarks/lm_throughput.py --cores hqlt-sync $LM_ARGS --json "$log.json" \
            > "$log.log" 2>&1)
        echo "   exit $?"
    done
done

OUT="$OUT" ROUNDS="$ROUNDS" TREES="$*" LM_ARGS="$LM_ARGS" python3 - <<'EOF'
import json, os

out, rounds, trees = os.environ["OUT"], int(os.environ["ROUNDS"]), os.environ["TREES"].split()
print(f"\nLM step of hqlt-sync (lm_throughput.py) per tree and round; {os.environ.get('LM_ARGS', '')}")
print("| tree | round | tokens/s | step (ms) | min-max (ms) |")
print("|---|---|---|---|---|")
for round_ in range(1, rounds + 1):
    for i, tree in enumerate(trees, 1):
        tree += f" ({os.environ[f'ENV_{i}']})" if os.environ.get(f"ENV_{i}") else ""
        try:
            with open(os.path.join(out, f"lm-{i}-{round_}.json")) as f:
                r = json.load(f)["results"][0]
        except (OSError, ValueError, IndexError, KeyError):
            print(f"| {tree} | {round_} | (no result: see lm-{i}-{round_}.log) | | |")
            continue
        if "error" in r:
            print(f"| {tree} | {round_} | {r['error']} | | |")
            continue
        each = r["step_ms_each"]
        spread = f"{min(each):.1f}-{max(each):.1f}" if each else "-"
        print(f"| {tree} | {round_} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.1f} | {spread} |")
EOF
