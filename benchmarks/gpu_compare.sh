#!/usr/bin/env bash
# Kernel device times of this tree against another checkout, in one run on one card
# (`kernels.py profile` per tree: the delta rule and sliding window at the LM and RL shapes).
# Timings of two runs, or of two cards, do not compare; this puts both sides in one run.
#
#   git worktree add --detach .base REV                       # locally, then carry .base
#   source .device/setup.sh; bash benchmarks/gpu_compare.sh .base
#   NEW_ENV=RLMEM_DELTA_GROUPS=auto bash benchmarks/gpu_compare.sh .   # one tree, two settings
#   LM=1 bash benchmarks/gpu_compare.sh .base          # also the 24-layer LM step, ~5 min more
#
# With LM=1, `benchmarks/lm_ab.sh BASE .` then times hqlt-sync's 24-layer LM step for base,
# new, base, new (LM_ARGS and ROUNDS as there), each side's variables set.
#
# Both sides run this tree's benchmarks/kernels.py; only the rlmem package differs (BASE's
# comes first on PYTHONPATH), and BASE_ENV / NEW_ENV (VAR=VALUE ...) set variables for one
# side. Logs and JSON go to $OUT; the last lines are the tables.
set -u
BASE=${1:?usage: bash benchmarks/gpu_compare.sh BASE_TREE}
OUT=${OUT:-/tmp/rlmem-compare}
mkdir -p "$OUT"
HERE=$(pwd)

# on_side SIDE LOG CMD...: CMD with SIDE's rlmem first on PYTHONPATH and SIDE's variables set,
# its output in LOG.
on_side() {
    local side=$1 log=$2 tree=$HERE vars=${NEW_ENV:-}
    shift 2
    if [[ $side == base ]]; then
        tree=$(cd "$BASE" && pwd)
        vars=${BASE_ENV:-}
    fi
    echo "== $side: $tree ${vars} ($(basename "$log"))"
    # shellcheck disable=SC2086  # vars is a list of VAR=VALUE
    env $vars PYTHONPATH="$tree:${PYTHONPATH:-}" "$@" > "$log" 2>&1
    echo "   exit $?"
}

for side in base new; do
    on_side $side "$OUT/profile-$side.log" timeout 300 python3 benchmarks/kernels.py profile \
        --json "$OUT/profile-$side.json"
done

OUT="$OUT" python3 - <<'EOF'
import json, os

out = os.environ["OUT"]
sides = {}
for side in ("base", "new"):
    try:
        with open(os.path.join(out, f"profile-{side}.json")) as f:
            sides[side] = json.load(f)
    except (OSError, ValueError):
        sides[side] = {"device": "?", "cases": {}}
print(f"\n{sides['new']['device']}; device ms per call (kernels.py profile), base -> new")
print("| case | kernel | base | new | new / base |")
print("|---|---|---|---|---|")
for case in sides["new"]["cases"] | sides["base"]["cases"]:
    base = sides["base"]["cases"].get(case, {})
    new = sides["new"]["cases"].get(case, {})
    rows = [("**total**", sum(base.values()) if base else None, sum(new.values()) if new else None)]
    names = sorted(set(base) | set(new), key=lambda n: -max(base.get(n, 0), new.get(n, 0)))
    rows += [(n[:40], base.get(n), new.get(n)) for n in names[:6]]
    for name, b, n in rows:
        ratio = f"{n / b:.2f}" if b and n else "-"
        fb = f"{b:.3f}" if b is not None else "-"
        fn = f"{n:.3f}" if n is not None else "-"
        print(f"| {case} | {name} | {fb} | {fn} | {ratio} |")
EOF

if [[ ${LM:-0} == 1 ]]; then
    ENV_1=${BASE_ENV:-} ENV_2=${NEW_ENV:-} OUT="$OUT/lm" bash "$HERE/benchmarks/lm_ab.sh" "$BASE" "$HERE"
fi
