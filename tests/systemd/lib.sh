# Helpers for the real-systemd tests; sourced by each test-*.sh.
# A test script runs its checks with `check NAME COMMAND...`; the runner
# counts the PASS/FAIL lines. OPS_CHECK_PREFIX (e.g. "bullseye: ") goes
# before each name, so a run on another root names it.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/../.." && pwd)
sandbox="$here/sandbox"
failures=0
passes=0

check() {
  local name=$1; shift
  local output
  if output=$("$@" 2>&1); then
    echo "PASS ${OPS_CHECK_PREFIX:-}$name"
    passes=$((passes + 1))
  else
    echo "FAIL ${OPS_CHECK_PREFIX:-}$name"
    printf '%s\n' "$output" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}

finish() { [ "$failures" -eq 0 ]; }
