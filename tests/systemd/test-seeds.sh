#!/usr/bin/env bash
# The seeds' own example pods (shared/seeds/000 and 001, as written there)
# on a real systemd: each scenario of seed_scenarios.py in a fresh sandbox,
# through the real ops_pod and ops_facts binaries.
source "$(dirname "$0")/lib.sh"

scenarios=$(python3 -c "
import sys; sys.path.insert(0, '$here')
import seed_scenarios
print(' '.join(seed_scenarios.SCENARIOS))")
for scenario in $scenarios; do
  check "seeds: $scenario" "$sandbox" -- python3 "$here/seed_scenarios.py" "$scenario"
done
finish
