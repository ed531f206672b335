#!/usr/bin/env bash
# Run tests/compat/sequence.py with two builds, each in its own booted
# sandbox, and show how their normalised records differ.
#
#   tests/compat/diff.sh OLD_BIN_DIR NEW_BIN_DIR OUT_DIR
#
# A manual tool for reshapes that must not change behaviour (build the old
# commit in its own worktree first); not part of CI, which has one build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sandbox="$here/../systemd/sandbox"
[ $# -eq 3 ] || { echo "usage: $0 OLD_BIN_DIR NEW_BIN_DIR OUT_DIR" >&2; exit 2; }
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); out=$3
mkdir -p "$out"
for side in old new; do
  bin=${!side}
  "$sandbox" --bind "$bin" -- env OPS_BIN_DIR="$bin" python3 "$here/sequence.py" \
    > "$out/$side.jsonl" 2> "$out/$side.stderr" || echo "$side: sequence exited $?" >&2
  python3 "$here/normalise.py" < "$out/$side.jsonl" > "$out/$side.json"
done
diff -u "$out/old.json" "$out/new.json" > "$out/diff" && echo "no difference" || echo "differences: $out/diff"
