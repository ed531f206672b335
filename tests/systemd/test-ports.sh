#!/usr/bin/env bash
# Named ports on a real systemd: each scenario of port_scenarios.py in a
# fresh sandbox, through the real ops_pod binary, with services (busybox
# httpd) listening on the ports ops gave them.
source "$(dirname "$0")/lib.sh"

scenarios=$(python3 -c "
import sys; sys.path.insert(0, '$here')
import port_scenarios
print(' '.join(port_scenarios.SCENARIOS))")
for scenario in $scenarios; do
  check "ports: $scenario" "$sandbox" -- python3 "$here/port_scenarios.py" "$scenario"
done
finish
