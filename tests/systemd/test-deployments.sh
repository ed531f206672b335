#!/usr/bin/env bash
# Named deployments on a real systemd (seed 004): each scenario of
# deployment_scenarios.py in a fresh sandbox, through the real ops_pod
# binary: one bundle as two deployments, side by side.
source "$(dirname "$0")/lib.sh"

scenarios=$(python3 -c "
import sys; sys.path.insert(0, '$here')
import deployment_scenarios
print(' '.join(deployment_scenarios.SCENARIOS))")
for scenario in $scenarios; do
  check "deployments: $scenario" "$sandbox" -- python3 "$here/deployment_scenarios.py" "$scenario"
done
finish
