#!/usr/bin/env bash
# Idle and wake on a real systemd (idle_scenarios.py): idle, a wake by a
# connection, stopped and started; what a rerun repairs (a socket that
# cannot listen, a hand edit, a failed waker, sockets left listening); and
# idle across a reboot of the sandbox
# (its systemd powered off and booted again on the same disk).
source "$(dirname "$0")/lib.sh"

check "idle: idle_and_wake" "$sandbox" -- python3 "$here/idle_scenarios.py" idle_and_wake
check "idle: repairs" "$sandbox" -- python3 "$here/idle_scenarios.py" repairs
check "idle: across a reboot" "$sandbox" -- python3 "$here/idle_scenarios.py" reboot_before \
  --reboot-- python3 "$here/idle_scenarios.py" reboot_after
finish
