#!/usr/bin/env bash
# ops_pod on a real systemd: each scenario of pod_scenarios.py in a fresh
# sandbox, through the real ops_pod binary.
source "$(dirname "$0")/lib.sh"

scenarios=$(python3 -c "
import sys; sys.path.insert(0, '$here')
import pod_scenarios
print(' '.join(pod_scenarios.SCENARIOS))")
for scenario in $scenarios; do
  check "ops_pod: $scenario" "$sandbox" -- python3 "$here/pod_scenarios.py" "$scenario"
done
finish
