#!/usr/bin/env bash
# The main job must keep working: run playbooks/demo (it boots its own
# sandbox and ends with assertions on its story).
source "$(dirname "$0")/lib.sh"
check "playbooks/demo runs and its assertions hold" "$project/playbooks/demo"
finish
