#!/usr/bin/env bash
# Builds layercache with sanitizers and runs the test suites in those builds: ASan+UBSan in
# $SANITIZE_BUILD/asan and TSan in $SANITIZE_BUILD/tsan, the unit, integration and e2e labels
# in each (`make test` narrows TSan to unit and integration, and leaves a few long e2e tests
# out of ASan+UBSan: tests/CMakeLists.txt).
# docs/reliability.md, "Sanitizers".
#
#   bash scripts/sanitize.sh                  # both (make sanitize; part of make test)
#   SANITIZERS=tsan bash scripts/sanitize.sh  # one
#
# Any sanitizer report fails: in-process reports halt the test binary (halt_on_error,
# abort_on_error); reports of sanitized child processes (layercached, layercachectl) fail the
# test that ran them (tests/support/process.cpp, sanitizer_report()).
#
# Exit status: 0 when every suite passed; 1 when a build or a test failed; 77 (skipped) only
# when the compiler cannot build and run a program with any of the sanitizers (e.g. no
# libasan/libubsan/libtsan) — a sanitizer that is missing is skipped, the others still run.
#
# Knobs (environment): SANITIZERS ("asan tsan"), SANITIZE_BUILD (build/sanitize),
# SANITIZE_BUILD_JOBS (the number of cores), SANITIZE_TEST_JOBS (2), ASAN_LABELS
# ("unit|integration|e2e"), TSAN_LABELS (the same), ASAN_EXCLUDE, TSAN_EXCLUDE (ctest -E
# regexes), SANITIZE_CTEST_ARGS (more ctest arguments), DISK_FULL_ROUNDS (2, below), RANDOM_RANGES (50, below), CXX (c++),
# ASAN_COMPILE_FLAGS ("-O0 -g1"), TSAN_COMPILE_FLAGS ("-O1 -g1"): LAYERCACHE_SANITIZE_FLAGS of
# each tree when it is first configured. ASan+UBSan at -O0 compiles in about half the CPU time
# of -O1 (the cold ASan+UBSan tree was the longest step of a cold `make test`); TSan keeps -O1,
# its tests being the slower ones (docs/reliability.md, "Timings").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SANITIZERS=${SANITIZERS:-asan tsan}
SANITIZE_BUILD=${SANITIZE_BUILD:-build/sanitize}
SANITIZE_TEST_JOBS=${SANITIZE_TEST_JOBS:-2}
SANITIZE_BUILD_JOBS=${SANITIZE_BUILD_JOBS:-$(nproc)}
ASAN_LABELS=${ASAN_LABELS:-unit|integration|e2e}
TSAN_LABELS=${TSAN_LABELS:-unit|integration|e2e}
ASAN_EXCLUDE=${ASAN_EXCLUDE:-}
# StoreCrash: SIGKILLs its writer process 150-750 ms after spawning it, a window tuned to the
# plain build; under TSan the child spends most of it starting and opening RocksDB, so some
# rounds (nondeterministically all) kill it before anything was flushed and the test's "some
# writes survive" check fails. The test is single-threaded in our code (one writer process, then
# a reopen): TSan has nothing to find there, and ASan+UBSan still runs it.
TSAN_EXCLUDE=${TSAN_EXCLUDE:-^StoreCrash\.}
SANITIZE_CTEST_ARGS=${SANITIZE_CTEST_ARGS:-}
# DiskFull.RoundsOfRocksDbMeetingAFullDiskNeverAbortOrHang repeats one scenario (a disk filled
# behind RocksDB's back, space back, SIGTERM, reopen) to catch an abort that shows up once in
# many rounds: the plain build runs 4. A sanitizer checks the code each round runs, and the
# first round runs all of it (the second: the same on a reopened store); under ASan+UBSan at
# -O0 a round took ~55 s (230 s for 4, 2026-12-07). `make test` sets 1 (tests/CMakeLists.txt).
export DISK_FULL_ROUNDS=${DISK_FULL_ROUNDS:-2}
# CacheTest.RandomRangesColdAndWarmAreExact: 50 random ranges a round, not 150 (76 s under
# ASan+UBSan and 116 s under TSan at 150: the longest integration test in both).
export RANDOM_RANGES=${RANDOM_RANGES:-50}
CXX=${CXX:-c++}
ASAN_COMPILE_FLAGS=${ASAN_COMPILE_FLAGS:--O0 -g1}
TSAN_COMPILE_FLAGS=${TSAN_COMPILE_FLAGS:--O1 -g1}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$ROOT}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}

# The runtime options of every sanitized process, the tests and their children alike.
# ASan: stop at the first error (abort: a core-less SIGABRT the harness sees), leaks at exit.
ASAN_RUNTIME="halt_on_error=1:abort_on_error=1:detect_leaks=1:print_summary=1"
UBSAN_RUNTIME="print_stacktrace=1:halt_on_error=1:abort_on_error=1:print_summary=1"
# TSan: stop at the first report; the suppressions are uninstrumented libraries only
# (tests/tsan.supp says why each one is there).
TSAN_RUNTIME="halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:history_size=4"
TSAN_RUNTIME+=":suppressions=$ROOT/tests/tsan.supp"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/layercache-sanitize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

now() { date +%s; }

# Can $CXX build a threaded C++20 program with -fsanitize=$1 and run it cleanly? Prints the
# reason when not.
probe() {
  local flags=$1
  printf '%s\n' '#include <thread>' '#include <vector>' \
    'int main() { std::vector<int> v(4); std::thread t([&] { v[1] = 1; }); t.join();' \
    '  return v[1] == 1 ? 0 : 1; }' >"$WORK/probe.cpp"
  if ! "$CXX" -std=c++20 -fsanitize="$flags" "$WORK/probe.cpp" -o "$WORK/probe" -pthread \
    >"$WORK/probe.log" 2>&1; then
    echo "$CXX cannot link -fsanitize=$flags: $(head -3 "$WORK/probe.log")"
    return 1
  fi
  if ! "$WORK/probe" >"$WORK/probe.log" 2>&1; then
    echo "a -fsanitize=$flags program does not run here: $(head -3 "$WORK/probe.log")"
    return 1
  fi
}

failed=()
passed=()
skipped=()
summary=()

# run <name> <-fsanitize list> <labels> <exclude regex> <compile flags>
run() {
  local name=$1 flags=$2 labels=$3 exclude=$4 compile_flags=$5
  local dir=$SANITIZE_BUILD/$name reason
  if ! reason=$(probe "$flags"); then
    echo "sanitize: $name SKIPPED: $reason" >&2
    skipped+=("$name")
    summary+=("$name: skipped ($reason)")
    return 0
  fi
  local t0 t1 t2 rc=0
  t0=$(now)
  echo "sanitize: $name: building $dir (-fsanitize=$flags)"
  # The compiler and flags when the tree is first configured; the labels every time (only
  # their tests are built: LAYERCACHE_TEST_LABELS, tests/CMakeLists.txt).
  local first=()
  if [ ! -f "$dir/build.ninja" ]; then
    first=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX"
      -DLAYERCACHE_SANITIZE="$flags" -DLAYERCACHE_SANITIZE_FLAGS="$compile_flags")
  fi
  if ! nice -n 19 cmake -S . -B "$dir" "${first[@]}" -DLAYERCACHE_TEST_LABELS="$labels" \
    >"$WORK/$name-configure.log" 2>&1; then
    cat "$WORK/$name-configure.log" >&2
    echo "sanitize: $name FAILED: cmake could not configure $dir" >&2
    failed+=("$name")
    summary+=("$name: configure failed")
    return 0
  fi
  if ! nice -n 19 cmake --build "$dir" -j "$SANITIZE_BUILD_JOBS"; then
    echo "sanitize: $name FAILED: the build failed" >&2
    failed+=("$name")
    summary+=("$name: build failed")
    return 0
  fi
  t1=$(now)
  # shellcheck disable=SC2016  # the single quotes are literal text: $exclude does expand
  echo "sanitize: $name: ctest -L '$labels'${exclude:+ -E '$exclude'}"
  (
    cd "$dir"
    # shellcheck disable=SC2086  # SANITIZE_CTEST_ARGS is a list of arguments
    ASAN_OPTIONS=$ASAN_RUNTIME UBSAN_OPTIONS=$UBSAN_RUNTIME TSAN_OPTIONS=$TSAN_RUNTIME \
      nice -n 19 ctest --output-on-failure -j "$SANITIZE_TEST_JOBS" -L "$labels" \
      ${exclude:+-E "$exclude"} $SANITIZE_CTEST_ARGS
  ) || rc=$?
  t2=$(now)
  local line="$name: build $((t1 - t0)) s, tests $((t2 - t1)) s"
  if [ "$rc" != 0 ]; then
    failed+=("$name")
    summary+=("$line: FAILED")
  else
    passed+=("$name")
    summary+=("$line: passed")
  fi
}

for s in $SANITIZERS; do
  case $s in
    asan) run asan address,undefined "$ASAN_LABELS" "$ASAN_EXCLUDE" "$ASAN_COMPILE_FLAGS" ;;
    tsan) run tsan thread "$TSAN_LABELS" "$TSAN_EXCLUDE" "$TSAN_COMPILE_FLAGS" ;;
    *)
      echo "sanitize: unknown sanitizer '$s' (asan, tsan)" >&2
      exit 1
      ;;
  esac
done

echo "sanitize: summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "sanitize: FAILED: ${failed[*]}" >&2
  exit 1
fi
if [ ${#passed[@]} -eq 0 ]; then
  echo "sanitize: SKIPPED: no sanitizer could run (${skipped[*]})" >&2
  exit 77
fi
echo "sanitize: passed: ${passed[*]}"
