#!/usr/bin/env bash
# Fuzz the guest-facing decoders and the C fast paths (docs/fuzzing.md).
#
#   bash scripts/fuzz.sh                     every target in fuzz/, FUZZ_SECONDS each
#   bash scripts/fuzz.sh relp syslog_stream  only these (fuzz/fuzz_<name>.py)
#
# Environment:
#   FUZZ_SECONDS   fuzzing time per target (default 60)
#   FUZZ_JOBS      targets run at once (default 1)
#   FUZZ_NICE      niceness of the fuzzers (default 19)
#   FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 30)
#   FUZZ_MAX_LEN   largest input libFuzzer makes up (default 4096)
#   FUZZ_ARGS      more libFuzzer flags, e.g. "-use_value_profile=1"
#
# Per target, build/fuzz/<name>/ holds corpus/ (kept between runs: each run starts
# from what the last one found), seeds/ (rewritten from the target's seeds()),
# crashes/ (inputs that broke an invariant) and log.txt. Exits 1 if any target
# found something, 2 on a usage or setup error.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
SECONDS_EACH=${FUZZ_SECONDS:-60}
JOBS=${FUZZ_JOBS:-1}
NICENESS=${FUZZ_NICE:-19}
TIMEOUT=${FUZZ_TIMEOUT:-30}
MAX_LEN=${FUZZ_MAX_LEN:-4096}
OUT=$ROOT/build/fuzz

if [[ ! -x $PYTHON ]]; then
    echo "fuzz: no Python at $PYTHON (run 'make setup' first)" >&2
    exit 2
fi
if ! "$PYTHON" -c "import atheris" 2>/dev/null; then
    echo "fuzz: installing atheris into the venv"
    "$PYTHON" -m pip install --quiet "atheris>=2.3" || {
        echo "fuzz: could not install atheris" >&2
        exit 2
    }
fi

available=()
for file in fuzz/fuzz_*.py; do
    name=${file#fuzz/fuzz_}
    available+=("${name%.py}")
done
if (($# > 0)); then
    targets=("$@")
    for name in "${targets[@]}"; do
        if [[ ! -f fuzz/fuzz_$name.py ]]; then
            echo "fuzz: no target '$name'; there are: ${available[*]}" >&2
            exit 2
        fi
    done
else
    targets=("${available[@]}")
fi

# One target: fuzz it, then write a one-line summary to build/fuzz/<name>/summary.
fuzz_one() {
    local name=$1
    local dir=$OUT/$name
    mkdir -p "$dir/corpus" "$dir/crashes"
    rm -rf "$dir/seeds"
    if ! "$PYTHON" "fuzz/fuzz_$name.py" --write-seeds "$dir/seeds" >"$dir/log.txt" 2>&1; then
        echo "fuzz: $name could not write its seeds; see $dir/log.txt" >&2
        return 0 # no summary: reported as unfinished
    fi
    local before
    before=$(find "$dir/crashes" -type f | wc -l)
    local status=0
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    nice -n "$NICENESS" "$PYTHON" "fuzz/fuzz_$name.py" \
        -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -max_len="$MAX_LEN" \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$dir/crashes/" ${FUZZ_ARGS:-} \
        "$dir/corpus" "$dir/seeds" >"$dir/log.txt" 2>&1 || status=$?
    local after
    after=$(find "$dir/crashes" -type f | wc -l)
    local last execs rate cov ft corpus
    last=$(grep -E '^#[0-9]+' "$dir/log.txt" | tail -n 1 || true)
    execs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$dir/log.txt" | grep -oE '[0-9]+$' ||
        echo "$last" | grep -oE '^#[0-9]+' | tr -d '#' || true)
    rate=$(grep -oE '^stat::average_exec_per_sec: [0-9]+' "$dir/log.txt" | grep -oE '[0-9]+$' ||
        echo "$last" | grep -oE 'exec/s: [0-9]+' | grep -oE '[0-9]+' || true)
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || true)
    ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || true)
    corpus=$(find "$dir/corpus" -type f | wc -l)
    local findings=$((after - before))
    if ((status != 0 && findings == 0)); then
        findings=1 # it stopped without saving an input: read log.txt
    fi
    printf '%-20s %7ss %10s %8s %6s %7s %7s %9s\n' "$name" "$SECONDS_EACH" "${execs:-?}" \
        "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$findings" >"$dir/summary"
    return 0
}

header=$(printf '%-20s %8s %10s %8s %6s %7s %7s %9s' target time executions exec/s cov ft corpus findings)
echo "fuzz: ${#targets[@]} target(s), ${SECONDS_EACH}s each, $JOBS at a time; output in build/fuzz/"
running=0
for name in "${targets[@]}"; do
    rm -f "$OUT/$name/summary"
    if ((JOBS > 1)); then
        fuzz_one "$name" &
        running=$((running + 1))
        if ((running >= JOBS)); then
            wait -n
            running=$((running - 1))
        fi
    else
        fuzz_one "$name"
    fi
done
wait

echo "$header"
found=0
for name in "${targets[@]}"; do
    if [[ -f $OUT/$name/summary ]]; then
        cat "$OUT/$name/summary"
        count=$(awk '{print $NF}' "$OUT/$name/summary")
        if [[ $count != 0 ]]; then
            found=1
            echo "    -> see $OUT/$name/crashes/ and $OUT/$name/log.txt;" \
                "replay with: $PYTHON fuzz/fuzz_$name.py FILE"
        fi
    else
        echo "$name: no summary (the run did not finish)"
        found=1
    fi
done
exit "$found"
