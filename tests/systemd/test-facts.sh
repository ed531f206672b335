#!/usr/bin/env bash
# ops_facts on a real systemd: each scenario of facts_scenarios.py in a
# fresh sandbox, checked field by field against systemctl and the store.
source "$(dirname "$0")/lib.sh"

scenarios=$(python3 -c "
import sys; sys.path.insert(0, '$here')
import facts_scenarios
print(' '.join(facts_scenarios.SCENARIOS))")
for scenario in $scenarios; do
  check "facts: $scenario" "$sandbox" -- python3 "$here/facts_scenarios.py" "$scenario"
done
finish
