#!/usr/bin/env bash
# The example per module (playbooks/examples/) must keep working: each runs
# in its own sandbox and ends with assertions on what it did.
source "$(dirname "$0")/lib.sh"
for example in ops_pod ops_image ops_volume ops_facts ops_release; do
  check "playbooks/examples/$example.yml runs and its assertions hold" "$project/playbooks/examples/run" "$example"
done
finish
