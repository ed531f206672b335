#!/usr/bin/env bash
# Images against real components: each scenario of
# tests/images/image_scenarios.py in a fresh sandbox (podman, sqv, a
# loopback HTTP server, systemd), through the real module binaries. The
# image fixtures are built once, on the host, into a directory bound into
# each sandbox.
source "$(dirname "$0")/lib.sh"

fixtures=$(mktemp -d /var/tmp/ops-image-fixtures.XXXXXX)
trap 'rm -rf "$fixtures"' EXIT
check "image fixtures build (tests/images/fixtures.py)" python3 "$project/tests/images/fixtures.py" "$fixtures"
scenarios=$(python3 -c "
import sys; sys.path.insert(0, '$project/tests/images')
import image_scenarios
print(' '.join(image_scenarios.SCENARIOS))")
for scenario in $scenarios; do
  check "images: $scenario" "$sandbox" --bind "$fixtures" -- \
    python3 "$project/tests/images/image_scenarios.py" "$fixtures" "$scenario"
done
finish
