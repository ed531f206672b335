#!/usr/bin/env bash
# The sandbox itself: it boots a real systemd, runs units in it, and leaves
# the host untouched.
source "$(dirname "$0")/lib.sh"

marker=/tmp/ops-harness-marker.$$
probe=ops-harness-probe-$$

host_is_untouched() {
  echo keep > "$marker"
  "$sandbox" -- sh -ec "
    echo inside > /etc/$probe
    mkdir -p /var/lib/$probe && echo inside > /var/lib/$probe/file
    echo inside > /tmp/$probe
    echo inside > /root/$probe
    test ! -e $marker   # the host's /tmp is not visible inside either
  " || { echo "the sandboxed command failed"; return 1; }
  for path in /etc/$probe /var/lib/$probe /tmp/$probe /root/$probe; do
    [ ! -e "$path" ] || { echo "$path leaked to the host"; return 1; }
  done
  [ "$(cat "$marker")" = keep ] || { echo "the host's /tmp lost $marker"; return 1; }
  rm -f "$marker"
  ! grep -q ops-sandbox /proc/mounts || { echo "a sandbox mount is left on the host"; return 1; }
  ! ls -d /run/ops-sandbox.* 2>/dev/null || { echo "a sandbox state dir is left on the host"; return 1; }
}

pid1_is_systemd_and_running() {
  "$sandbox" -- sh -ec '
    test "$(cat /proc/1/comm)" = systemd
    state=$(systemctl is-system-running || true)
    case "$state" in running|degraded) ;; *) echo "state: $state"; exit 1 ;; esac
  '
}

a_unit_is_installed_started_and_stopped() {
  "$sandbox" -- sh -ec '
    cat > /etc/systemd/system/ops-probe@.service <<UNIT
[Unit]
Description=ops harness probe %i

[Service]
ExecStart=/bin/sh -c "echo \$PORT_HTTP > /run/ops-probe-%i; exec sleep infinity"
UNIT
    mkdir -p /etc/systemd/system/ops-probe@8081.service.d
    printf "[Service]\nEnvironment=PORT_HTTP=8081\n" > /etc/systemd/system/ops-probe@8081.service.d/50-port.conf
    systemctl daemon-reload
    systemctl start ops-probe@8081.service
    test "$(systemctl is-active ops-probe@8081.service)" = active
    for _ in $(seq 50); do [ -s /run/ops-probe-8081 ] && break; sleep 0.1; done
    test "$(cat /run/ops-probe-8081)" = 8081   # the drop-in reached the service
    systemctl stop ops-probe@8081.service
    test "$(systemctl is-active ops-probe@8081.service || true)" = inactive
  '
}

refuses_without_root() {
  local out
  out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups "$sandbox" -- true 2>&1)
  local status=$?
  [ "$status" -eq 2 ] || { echo "exit status $status: $out"; return 1; }
  grep -q "needs root" <<<"$out" || { echo "unclear refusal: $out"; return 1; }
}

a_failing_command_fails_the_sandbox() {
  "$sandbox" -- sh -c 'exit 7'
  [ $? -eq 7 ]
}

module_binaries_run_inside() {
  local bin=${OPS_BIN_DIR:-$project/target/debug}
  [ -x "$bin/ops_pod" ] || { echo "build the modules first: cargo build (looked in $bin)"; return 1; }
  local out
  out=$("$sandbox" -- sh -c "echo '{\"bogus\": 1, \"_ansible_check_mode\": true}' | $bin/ops_pod")
  grep -q '"msg":"Unsupported parameters for (ops_pod) module: bogus.' <<<"$out" || { echo "$out"; return 1; }
}

paths_are_data_not_code() {
  local dir bind marker
  dir=$(mktemp -d /var/tmp/ops-harness-paths.XXXXXX)
  marker=$dir/ran
  bind="$dir/a \"; touch $marker; echo \"\$(touch $marker)"
  mkdir -p "$bind" && echo here > "$bind/file"
  "$sandbox" --bind "$bind" -- cat "$bind/file" | grep -qx here || { echo "the bound directory is not there inside"; rm -rf "$dir"; return 1; }
  [ ! -e "$marker" ] || { echo "a --bind path ran as shell code"; rm -rf "$dir"; return 1; }
  rm -rf "$dir"
}

bad_roots_are_refused() {
  local out status empty
  empty=$(mktemp -d /var/tmp/ops-harness-root.XXXXXX)
  out=$("$sandbox" --root /etc/hostname -- true 2>&1); status=$?
  [ "$status" -eq 2 ] && grep -q "not a directory" <<<"$out" || { echo "a file as --root: $status $out"; rm -rf "$empty"; return 1; }
  out=$("$sandbox" --root "$empty" -- true 2>&1); status=$?
  rm -rf "$empty"
  [ "$status" -eq 2 ] && grep -q "not the root of a systemd distribution" <<<"$out" || { echo "an empty --root: $status $out"; return 1; }
}

# --reboot--: the part after it runs after a reboot, on the same disk
# (/var/tmp kept) with a fresh /run; a failing first part skips it.
reboots_on_the_same_disk() {
  local kept=/var/tmp/ops-harness-reboot.$$
  "$sandbox" -- sh -c "touch /run/ops-harness-booted $kept" \
    --reboot-- sh -c "[ ! -e /run/ops-harness-booted ] && [ -e $kept ]" \
    || { echo "no reboot, or the disk was not kept"; return 1; }
  [ ! -e "$kept" ] || { echo "the sandbox's disk reached the host"; return 1; }
  if "$sandbox" -- false --reboot-- true; then echo "a failing first part passed"; return 1; fi
}

check "host is untouched" host_is_untouched
check "PID 1 is a running systemd" pid1_is_systemd_and_running
check "a unit is installed, started and stopped" a_unit_is_installed_started_and_stopped
check "refuses clearly without root" refuses_without_root
check "the command's exit status is the sandbox's" a_failing_command_fails_the_sandbox
check "module binaries run inside" module_binaries_run_inside
check "--bind paths are data, never shell code" paths_are_data_not_code
check "a --root that is a file or no systemd root is refused (status 2)" bad_roots_are_refused
check "--reboot-- reboots between two commands, keeping the disk" reboots_on_the_same_disk
finish
