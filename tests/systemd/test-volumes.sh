#!/usr/bin/env bash
# Volumes against a real systemd: each scenario of
# tests/volumes/volume_scenarios.py in a fresh sandbox (systemd, a loopback
# HTTP server), through the real module binaries. The archives are built
# once, on the host, into a directory bound into each sandbox.
source "$(dirname "$0")/lib.sh"

fixtures=$(mktemp -d /var/tmp/ops-volume-fixtures.XXXXXX)
trap 'rm -rf "$fixtures"' EXIT
check "volume fixtures build (tests/volumes/fixtures.py)" python3 "$project/tests/volumes/fixtures.py" "$fixtures"
command -v zstd >/dev/null || echo "SKIP volumes: .tar.zst (the zstd command is not installed)"
scenarios=$(python3 -c "
import sys; sys.path.insert(0, '$project/tests/volumes')
import volume_scenarios
print(' '.join(volume_scenarios.SCENARIOS))")
for scenario in $scenarios; do
  check "volumes: $scenario" "$sandbox" --bind "$fixtures" -- \
    python3 "$project/tests/volumes/volume_scenarios.py" "$fixtures" "$scenario"
done
finish
