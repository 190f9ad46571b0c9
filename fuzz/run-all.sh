#!/usr/bin/env bash
# Builds every fuzz target and runs each in turn for a bounded time or number
# of executions. CI runs it for a few seconds a target so that no target rots;
# longer runs find more.
#
#   fuzz/run-all.sh [-t SECONDS] [-n RUNS] [TARGET...]
#
# Defaults: 5 seconds each, no limit on runs, every target of
# `cargo fuzz list`. A run stops at whichever limit comes first. Each target
# grows a scratch corpus in $FUZZ_SCRATCH (default fuzz/target/corpus/TARGET)
# from the committed seeds in fuzz/corpus/TARGET, which stay small. Findings
# land in fuzz/artifacts/TARGET/; the script fails on the first.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); it runs on the
# stable toolchain through RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"

seconds=5
runs=-1
while getopts "t:n:h" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    n) runs=$OPTARG ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

export RUSTC_BOOTSTRAP=1
cargo fuzz build
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

scratch=${FUZZ_SCRATCH:-target/corpus}
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "corpus/$t"
  echo "== fuzz $t: ${seconds}s, runs ${runs}"
  log=$scratch/$t.log
  status=0
  # Over-allocations and hangs are findings too, not only crashes.
  cargo fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -runs="$runs" \
    -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^(Done |stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t/" >&2
    exit "$status"
  fi
done
echo "fuzz: ${#targets[@]} targets ran clean"
