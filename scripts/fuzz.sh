#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (a separate clang build with ASan and UBSan) and runs
# each one for a bounded time on a copy of its seed corpus (fuzz/corpus/<harness>/), in a
# temporary directory: nothing is written into the repository. docs/reliability.md, "Fuzzing".
#
#   bash scripts/fuzz.sh                 # ~20 s per harness (ctest -L fuzz)
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh   # make fuzz
#
# Exit status: 0 when every harness ran its time without a finding; 1 when one crashed, leaked,
# hit UB, broke an invariant or timed out (the input's path is printed, and its temporary
# directory kept); 77 (skipped) only when clang++ or libFuzzer are missing.
#
# Knobs (environment): FUZZ_SECONDS (20, per harness), FUZZ_TARGETS (all: "range
# www_authenticate reference config manifest route retry_after multipart"), FUZZ_BUILD (build-fuzz), FUZZ_CXX
# (clang++-14, else clang++), FUZZ_TIMEOUT (30: seconds one input may take), FUZZ_RSS_MB (2048).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_TARGETS=${FUZZ_TARGETS:-range www_authenticate reference config manifest route retry_after multipart}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-30}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$ROOT}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}

skip() {
  echo "fuzz: SKIPPED: $*" >&2
  exit 77
}

# clang and libFuzzer (Debian: clang-14, libclang-rt-14-dev, libfuzzer-14-dev).
CXX=${FUZZ_CXX:-}
if [ -z "$CXX" ]; then
  for c in clang++-14 clang++; do
    if command -v "$c" >/dev/null 2>&1; then
      CXX=$c
      break
    fi
  done
fi
[ -n "$CXX" ] && command -v "$CXX" >/dev/null 2>&1 || skip "no clang++ (install clang-14)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/layercache-fuzz.XXXXXX")
keep_work=0
cleanup() { [ "$keep_work" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT

printf '%s\n' '#include <cstddef>' '#include <cstdint>' \
  'extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }' \
  >"$WORK/probe.cpp"
if ! "$CXX" -fsanitize=fuzzer,address,undefined "$WORK/probe.cpp" -o "$WORK/probe" \
  >"$WORK/probe.log" 2>&1; then
  cat "$WORK/probe.log" >&2
  skip "$CXX cannot link -fsanitize=fuzzer,address,undefined (install libclang-rt-14-dev)"
fi

echo "fuzz: building $FUZZ_BUILD with $CXX"
if [ ! -f "$FUZZ_BUILD/build.ninja" ]; then
  nice -n 19 cmake -S fuzz -B "$FUZZ_BUILD" -G Ninja -DCMAKE_CXX_COMPILER="$CXX" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$WORK/configure.log" 2>&1 || {
    cat "$WORK/configure.log" >&2
    echo "fuzz: FAILED: cmake could not configure fuzz/" >&2
    exit 1
  }
fi
nice -n 19 cmake --build "$FUZZ_BUILD" -j1

failed=0
summary=()
for h in $FUZZ_TARGETS; do
  bin=$FUZZ_BUILD/fuzz_$h
  [ -x "$bin" ] || {
    echo "fuzz: FAILED: no harness $bin" >&2
    exit 1
  }
  mkdir -p "$WORK/$h/corpus" "$WORK/$h/artifacts"
  cp -r "fuzz/corpus/$h/." "$WORK/$h/corpus/"
  seeds=$(find "$WORK/$h/corpus" -type f | wc -l)
  log=$WORK/$h/fuzz.log
  start=$(date +%s)
  rc=0
  # Output to a file (never a pipe the harness could open and block on); stdin /dev/null.
  # Exit codes 1 for every finding: libFuzzer's default 77 would read as "skipped".
  nice -n 19 "$bin" -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" \
    -rss_limit_mb="$FUZZ_RSS_MB" -malloc_limit_mb="$FUZZ_RSS_MB" -error_exitcode=1 \
    -timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$WORK/$h/artifacts/" \
    "$WORK/$h/corpus" </dev/null >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(find "$WORK/$h/corpus" -type f | wc -l)
  line=$(printf '%-18s %12s execs %5ss  seeds %4s  corpus %5s' "$h" "${execs:-?}" "$took" \
    "$seeds" "$corpus")
  if [ "$rc" != 0 ]; then
    failed=1
    keep_work=1
    artifact=$(find "$WORK/$h/artifacts" -type f | head -1)
    summary+=("$line  FAILED (exit $rc)")
    echo "fuzz: FAILED: $h (exit $rc); input: ${artifact:-none written}; log: $log" >&2
    grep -E 'ERROR|SUMMARY|invariant failed|runtime error|threw|#[0-9]+ 0x' "$log" | head -30 >&2 || true
  else
    summary+=("$line  ok")
  fi
done

echo "fuzz: ${FUZZ_SECONDS}s per harness, $CXX, -fsanitize=fuzzer,address,undefined"
printf '  %s\n' "${summary[@]}"
if [ "$failed" = 1 ]; then
  echo "fuzz: FAILED; reproduce with: $FUZZ_BUILD/fuzz_<harness> <input> (kept in $WORK)" >&2
  exit 1
fi
echo "fuzz: no findings"
