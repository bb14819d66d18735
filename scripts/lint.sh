#!/usr/bin/env bash
# Static analysis (issue 20): clang-tidy-14 with the checks of .clang-tidy over the project's
# sources, through the compile_commands.json of a configured build dir, and clang-format-14
# --dry-run over every tracked .cpp/.hpp. docs/reliability.md, "Static analysis".
#
#   bash scripts/lint.sh                    # make lint; ctest -L lint (lint.clang_tidy)
#   LINT_FILES='cache/.*' bash scripts/lint.sh   # one folder
#
# Exit status: 0 when there is no finding; 1 on any clang-tidy finding (every check is an error:
# WarningsAsErrors '*'), on a file clang-tidy cannot parse, or on a file that is not
# clang-formatted; 77 (skipped) only when clang-tidy-14 is missing (Debian: clang-tidy-14).
#
# Knobs (environment): LINT_BUILD (build: a configured build dir; cmake configures it when it has
# no compile_commands.json), LINT_JOBS (2: clang-tidy processes), LINT_FILES (the translation
# units, a regex on the path below the repository root; default: every folder of ours but tests/
# and fuzz/, see below), LINT_FORMAT (1: also the clang-format check; 0 skips it), LINT_TIDY
# (clang-tidy-14), LINT_FORMATTER (clang-format-14), LINT_CACHE_DIR (below), LINT_PREPROCESSOR
# (clang++-14: computes the cache keys; without it nothing is cached).
#
# Cache: a unit clang-tidy passed without a finding is remembered in LINT_CACHE_DIR
# (~/.cache/layercache/clang-tidy; empty: no cache) under a key that hashes everything its
# result depends on: the clang-tidy version, the .clang-tidy files, the arguments clang-tidy is
# given, the unit's compile command, the unit preprocessed by clang with its comments (-E -C:
# every header it includes, system ones too, and every NOLINT), and the bytes of each of our
# files it includes. A unit whose key is there is not analysed again; a unit with a finding is
# never remembered, so a finding is reported on every run. A key takes ~1 s of CPU against 5-90
# s for clang-tidy. CI may keep ~/.cache as it keeps ccache's (without it: the same run as
# before, plus the keys). Entries unused for 30 days are deleted.
#
# Scope and time: the checks walk the AST of the Asio/Beast/RocksDB headers of every unit, 5-90 s
# of CPU each. The 47 non-test units took 7m40s of CPU (user+sys): 3m50s of wall time at -j2 on
# 2 idle cores; measured 6m30s and 11m41s while another worktree built and tested on the same 2
# cores (load average 4 and 8-10). The 60 units of tests/ would add ~9 min of CPU (estimated
# from a wider run), past the ~8 min the CI budget has for lint, so they are linted only on
# demand (LINT_FILES='tests/.*'). Headers of every folder are checked (HeaderFilterRegex,
# anchored here to the root), so tests/ headers included by the units linted are covered too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

LINT_BUILD=${LINT_BUILD:-build}
LINT_JOBS=${LINT_JOBS:-2}
FOLDERS='asio|cache|config|content|daemon|log|metrics|net|oci|registry|server|loadtest|tests|fuzz'
LINT_FILES=${LINT_FILES:-(asio|cache|config|content|daemon|log|metrics|net|oci|registry|server|loadtest)/.*}
LINT_FORMAT=${LINT_FORMAT:-1}
LINT_TIDY=${LINT_TIDY:-clang-tidy-14}
LINT_FORMATTER=${LINT_FORMATTER:-clang-format-14}
LINT_CACHE_DIR=${LINT_CACHE_DIR-${XDG_CACHE_HOME:-$HOME/.cache}/layercache/clang-tidy}
LINT_PREPROCESSOR=${LINT_PREPROCESSOR:-clang++-14}

skip() {
  echo "lint: SKIPPED: $*" >&2
  exit 77
}
command -v "$LINT_TIDY" >/dev/null 2>&1 || skip "no $LINT_TIDY (install clang-tidy-14)"

if [ ! -f "$LINT_BUILD/compile_commands.json" ]; then
  cmake -S . -B "$LINT_BUILD" -G Ninja >/dev/null
fi
case $LINT_BUILD in
  /*) db=$LINT_BUILD ;;
  *) db=$ROOT/$LINT_BUILD ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/layercache-lint.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The units of the database whose path, below the root, matches LINT_FILES (never the
# generated ones of the build dir).
python3 - "$db/compile_commands.json" "$ROOT" "$LINT_FILES" >"$WORK/files" <<'EOF'
import json, os, re, sys
db, root, pattern = sys.argv[1], sys.argv[2], re.compile(sys.argv[3])
build = os.path.realpath(os.path.dirname(db))
seen = set()
for entry in json.load(open(db)):
    path = os.path.realpath(os.path.join(entry["directory"], entry["file"]))
    rel = os.path.relpath(path, root)
    if rel.startswith("..") or path.startswith(build + os.sep) or rel in seen:
        continue
    if pattern.fullmatch(rel):
        seen.add(rel)
        print(path)
EOF
count=$(wc -l <"$WORK/files")
[ "$count" -gt 0 ] || {
  echo "lint: FAILED: no unit of $db/compile_commands.json matches LINT_FILES=$LINT_FILES" >&2
  exit 1
}

# The cache key of one unit (see the header): printed, or nothing (and exit 1) when the unit
# cannot be preprocessed, which then runs uncached.
cat >"$WORK/key.py" <<'EOF'
import hashlib, json, os, re, shlex, subprocess, sys
db, root, unit, preprocessor, header_filter, tidy = sys.argv[1:7]
entry = next(e for e in json.load(open(db))
             if os.path.realpath(os.path.join(e["directory"], e["file"])) == unit)
args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
# The compile command without its driver and outputs: clang preprocesses what clang-tidy parses.
flags, skip = [], False
for a in args[1:]:
    if skip:
        skip = False
    elif a in ("-o", "-MF", "-MT", "-MQ"):
        skip = True
    elif a not in ("-c", "-MD", "-MMD"):
        flags.append(a)
pp = subprocess.run([preprocessor, *flags, "-E", "-C", "-o", "-"], cwd=entry["directory"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
if pp.returncode != 0:
    sys.exit(1)
h = hashlib.sha256()
for part in ("layercache-lint-cache 1", tidy, header_filter, entry["directory"],
             "\0".join(args[1:])):
    h.update(part.encode() + b"\0")
h.update(pp.stdout)
# Our own files byte for byte (the preprocessed text collapses spaces inside a line).
ours = sorted({m.decode() for m in re.findall(rb'^# \d+ "([^"]+)"', pp.stdout, re.M)
               if m.decode().startswith(root + os.sep)})
for path in ours:
    h.update(path.encode() + b"\0" + open(path, "rb").read() + b"\0")
print(h.hexdigest())
EOF

header_filter="^$ROOT/($FOLDERS)/"
cache=$LINT_CACHE_DIR
if [ -n "$cache" ] && ! command -v "$LINT_PREPROCESSOR" >/dev/null 2>&1; then
  echo "lint: no $LINT_PREPROCESSOR: no cache"
  cache=""
fi
if [ -n "$cache" ] && ! mkdir -p "$cache" 2>/dev/null; then
  echo "lint: cannot create $cache: no cache"
  cache=""
fi
[ -z "$cache" ] || find "$cache" -type f -mtime +30 -delete 2>/dev/null || true
# The tool and its configuration: the version and every .clang-tidy of the tree.
tidy_version="$("$LINT_TIDY" --version 2>&1)
$(git ls-files -z '.clang-tidy' '*/.clang-tidy' | xargs -0 -r sha256sum)"

echo "lint: $LINT_TIDY over $count units, -j$LINT_JOBS (.clang-tidy)${cache:+, cache $cache}"
start=$(date +%s)
failed=0
# One clang-tidy per unit, its output kept in a file of its own and printed whole at the end
# (parallel runs never interleave). Findings are errors (--warnings-as-errors='*'). A unit
# whose key is in the cache is skipped; one without a finding is added to it.
# shellcheck disable=SC2016
tr '\n' '\0' <"$WORK/files" | nice -n 10 xargs -0 -n1 -P "$LINT_JOBS" sh -c '
  work=$1 tidy=$2 db=$3 filter=$4 cache=$5 root=$6 pre=$7 version=$8 unit=$9
  key=""
  if [ -n "$cache" ]; then
    key=$(python3 "$work/key.py" "$db/compile_commands.json" "$root" "$unit" "$pre" \
      "$filter" "$version") || key=""
    if [ -n "$key" ] && [ -e "$cache/$key" ]; then
      touch "$cache/$key"
      echo "$unit" >>"$work/cached"
      exit 0
    fi
  fi
  out=$work/$(printf %s "$unit" | tr / _).log
  if "$tidy" -p "$db" --quiet --warnings-as-errors="*" --header-filter="$filter" "$unit" \
    >"$out" 2>&1; then
    [ -z "$key" ] || : >"$cache/$key"
  else
    echo "$unit" >>"$work/failed"
    echo "lint: findings in $unit" >&2
  fi
  exit 0' _ "$WORK" "$LINT_TIDY" "$db" "$header_filter" "$cache" "$ROOT" "$LINT_PREPROCESSOR" \
  "$tidy_version" || failed=1
took=$(($(date +%s) - start))

if [ -s "$WORK/failed" ]; then
  failed=1
  while read -r f; do
    grep -v -E '^[0-9]+ (warning|error)s? (and [0-9]+ (warning|error)s? )?(generated|treated as errors)\.$' \
      "$WORK/$(printf %s "$f" | tr / _).log" || true
  done <"$WORK/failed"
  # Each finding once (a header's are reported by every unit that includes it).
  cat "$WORK"/*.log | grep -E '^/.*: (warning|error): .*\[[a-z0-9.,-]+\]$' | sort -u \
    >"$WORK/findings" || true
  echo "lint: $(wc -l <"$WORK/findings") distinct clang-tidy findings:" >&2
  sed "s|^$ROOT/||" "$WORK/findings" >&2
fi
cached=0
[ ! -f "$WORK/cached" ] || cached=$(wc -l <"$WORK/cached")
echo "lint: clang-tidy took ${took}s ($cached of $count units unchanged since a clean run: cached)"

if [ "$LINT_FORMAT" = 1 ]; then
  if ! command -v "$LINT_FORMATTER" >/dev/null 2>&1; then
    echo "lint: no $LINT_FORMATTER, format check skipped" >&2
  elif ! git ls-files '*.cpp' '*.hpp' | xargs "$LINT_FORMATTER" --dry-run -Werror \
    >"$WORK/format.log" 2>&1; then
    failed=1
    grep -E '^[^ ].*: error: ' "$WORK/format.log" | sed 's/: error: .*//' | cut -d: -f1 | sort -u |
      sed 's/^/lint: not clang-formatted (make format): /' >&2
  fi
fi

if [ "$failed" = 1 ]; then
  echo "lint: FAILED (fix, or NOLINT(check): reason on the line; docs/reliability.md)" >&2
  exit 1
fi
echo "lint: no findings"
