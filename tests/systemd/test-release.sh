#!/usr/bin/env bash
# Releases against a real systemd: each scenario of
# tests/release/release_scenarios.py in a fresh sandbox (systemd, a loopback
# HTTP server), through the real module binaries: ops_release publishes,
# ops_pod deploys from the repository. The fixtures (the busybox ACI, the
# volume archives) are built once, on the host, into a directory bound into
# each sandbox.
source "$(dirname "$0")/lib.sh"

fixtures=$(mktemp -d /var/tmp/ops-release-fixtures.XXXXXX)
trap 'rm -rf "$fixtures"' EXIT
check "release fixtures build (tests/volumes/fixtures.py)" python3 "$project/tests/volumes/fixtures.py" "$fixtures"
scenarios=$(python3 -c "
import sys; sys.path.insert(0, '$project/tests/release')
import release_scenarios
print(' '.join(release_scenarios.SCENARIOS))")
for scenario in $scenarios; do
  check "release: $scenario" "$sandbox" --bind "$fixtures" -- \
    python3 "$project/tests/release/release_scenarios.py" "$fixtures" "$scenario"
done
finish
