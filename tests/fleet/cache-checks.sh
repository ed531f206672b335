# The module cache over SSH with become (sourced by tests/fleet/suite, in
# its loop over venvs: uses its play, check, on and names). Each host keeps
# one copy of each module binary in root's ~/.ansible/ops/bin, named by its
# sha256; a task sends the binary only when the host has no intact copy.
cache=/root/.ansible/ops/bin
facts_binary=$collections/ansible_collections/ops/onboard/bin/x86_64/ops_facts
facts_sha=$(sha256sum <"$facts_binary" | cut -c1-64)
facts_size=$(stat -c %s "$facts_binary")
# The collection's playbook clears them (as root: the inventory's become).
clear_caches() {
  local name
  play cache-clear ops.onboard.clear_module_cache || { show cache-clear; return 1; }
  for name in "${names[@]}"; do on "$name" test ! -e "$cache" || { echo "$name: $cache is still there"; return 1; }; done
}
sent() { cat "/sys/class/net/${links[$1]}/statistics/tx_bytes"; } # bytes the controller sent host INDEX
# cached INDEX: the host holds exactly the ops_facts binary, intact, root's,
# 0700, in a directory only root may enter; no temporary file is left.
cached() {
  local listing
  listing=$(on "${names[$1]}" sh -c "cd $cache && stat -c '%n %U %a %F' . * .[!.]* 2>/dev/null; sha256sum $facts_sha")
  printf '%s\n' "$listing"
  [ "$listing" = ". root 700 directory
$facts_sha root 700 regular file
$facts_sha  $facts_sha" ]
}

cache_is_used() {
  clear_caches || return 1
  local i first=() second=() before status=0
  for i in "${!names[@]}"; do first[i]=$(sent "$i"); done
  play cache-1 "$project/tests/fleet/cache.yml" || { show cache-1; return 1; }
  for i in "${!names[@]}"; do first[i]=$(($(sent "$i") - first[i])); second[i]=$(sent "$i"); done
  play cache-2 "$project/tests/fleet/cache.yml" || { show cache-2; return 1; }
  for i in "${!names[@]}"; do
    second[i]=$(($(sent "$i") - second[i]))
    echo "${names[i]}: first task sent ${first[i]} bytes, second ${second[i]} (binary $facts_size)"
    # SSH compresses: the binary goes over in about half its size.
    [ "${first[i]}" -gt $((facts_size / 4)) ] || { echo "${names[i]}: the first task did not send the binary"; status=1; }
    [ "${second[i]}" -le 65536 ] || { echo "${names[i]}: the second task sent over 64 KiB"; status=1; }
    cached "$i" || { echo "${names[i]}: not the cache expected"; status=1; }
  done
  return "$status"
}
check "ansible-core $core: the module cache: the first ops_facts task on a host sends the binary, the second sends under 64 KiB (bytes on each host's link)" cache_is_used

pipelined_hit() {
  local i before status=0
  for i in "${!names[@]}"; do before[i]=$(sent "$i"); done
  ANSIBLE_PIPELINING=true play cache-pipelined "$project/tests/fleet/cache.yml" || { show cache-pipelined; return 1; }
  for i in "${!names[@]}"; do
    before[i]=$(($(sent "$i") - before[i]))
    echo "${names[i]}: sent ${before[i]} bytes with pipelining"
    [ "${before[i]}" -le 65536 ] || status=1
    cached "$i" || status=1
  done
  return "$status"
}
check "ansible-core $core: the module cache with ANSIBLE_PIPELINING=true: the cached binary runs, under 64 KiB sent" pipelined_hit

# A cached binary changed (a script of the same name) or truncated is never
# run: the task warns, sends the binary, replaces the entry and succeeds.
tampered_is_not_run() {
  local i=0 j=$(( ${#names[@]} > 1 ? 1 : 0 )) status=0
  on "${names[i]}" sh -c "rm -f /tmp/tampered-ran; printf '#!/bin/sh\ntouch /tmp/tampered-ran\necho {}\n' >$cache/$facts_sha"
  [ "$j" = "$i" ] || on "${names[j]}" truncate -s 4096 "$cache/$facts_sha"
  play cache-tampered "$project/tests/fleet/cache.yml" -e "on=${names[i]},${names[j]}" || { show cache-tampered; return 1; }
  on "${names[i]}" test -e /tmp/tampered-ran && { echo "${names[i]}: the tampered binary ran"; status=1; }
  grep -q "${names[i]}: the cached ops.onboard.ops_facts_x86_64 in ~/.ansible/ops/bin (sha256 $facts_sha) was not intact" \
    "$logs/cache-tampered.err" || { echo "no warning for ${names[i]}"; status=1; }
  grep -q "${names[j]}: the cached ops.onboard.ops_facts_x86_64 .* was not intact" "$logs/cache-tampered.err" ||
    { echo "no warning for ${names[j]}"; status=1; }
  cached "$i" && cached "$j" || status=1
  return "$status"
}
check "ansible-core $core: a cached binary replaced by a script, or truncated, is not run: the task warns, replaces it and succeeds" tampered_is_not_run

two_plays_at_once() {
  clear_caches || return 1
  local a b status=0 i
  play cache-a "$project/tests/fleet/cache.yml" & a=$!
  play cache-b "$project/tests/fleet/cache.yml" & b=$!
  wait "$a" || { show cache-a; status=1; }
  wait "$b" || { show cache-b; status=1; }
  for i in "${!names[@]}"; do cached "$i" || status=1; done
  return "$status"
}
check "ansible-core $core: two plays at once on every host with an empty cache both succeed, and leave one intact binary" two_plays_at_once

# Where the cache cannot be: under /proc (mkdir fails), and in a directory
# of deploy's (another user's, under become): the binary is copied as before.
cache_unusable() {
  local status=0 i
  on "${names[0]}" rm -rf /home/deploy/ops-cache
  play cache-proc "$project/tests/fleet/cache.yml" -e ops_module_cache=/proc/ops-cache || { show cache-proc; status=1; }
  play cache-others "$project/tests/fleet/cache.yml" -e ops_module_cache=/home/deploy/ops-cache -e "on=${names[0]}" ||
    { show cache-others; status=1; }
  grep -q "${names[0]}: the module cache /home/deploy/ops-cache is not used (a directory on the way to it belongs to another user" \
    "$logs/cache-others.err" "$logs/cache-others" || { echo "no warning of the unsafe cache"; status=1; }
  on "${names[0]}" test ! -e /home/deploy/ops-cache || { echo "something was made in deploy's directory"; status=1; }
  for i in "${!names[@]}"; do on "${names[i]}" test ! -e /proc/ops-cache || status=1; done
  return "$status"
}
check "ansible-core $core: a cache that cannot be written (/proc) or that another user could change (deploy's home): the task still runs, the binary copied, nothing made there" cache_unusable

# A link another user (deploy) put in /tmp, where the cache is to be made,
# to a directory of root's: it is not followed, nothing is made there, and
# the binary is copied, with a warning.
link_in_tmp() {
  on "${names[0]}" sh -c 'rm -rf /tmp/ops-link /var/lib/ops-elsewhere && mkdir -m 0755 /var/lib/ops-elsewhere &&
    su deploy -s /bin/sh -c "ln -s /var/lib/ops-elsewhere /tmp/ops-link"'
  play cache-link "$project/tests/fleet/cache.yml" -e ops_module_cache=/tmp/ops-link/cache -e "on=${names[0]}" ||
    { show cache-link; return 1; }
  grep -q "${names[0]}: the module cache /tmp/ops-link/cache is not used (a directory on the way to it belongs to another user" \
    "$logs/cache-link.err" "$logs/cache-link" || { echo "no warning of the unsafe cache"; return 1; }
  [ -z "$(on "${names[0]}" ls -A /var/lib/ops-elsewhere)" ] || { echo "the link in /tmp was followed"; return 1; }
  on "${names[0]}" rm -rf /tmp/ops-link /var/lib/ops-elsewhere
}
check "ansible-core $core: a link another user put in /tmp where the cache is to be is not followed: nothing is made where it points, the binary is copied" link_in_tmp

delegated() {
  [ "${#names[@]}" -ge 2 ] || { echo "one host: nothing to delegate to"; return 0; }
  on "${names[1]}" rm -rf /root/.ansible/ops
  play cache-delegated "$project/tests/fleet/cache.yml" -e "on=${names[0]}" -e "delegate=${names[1]}" || { show cache-delegated; return 1; }
  cached 1
}
check "ansible-core $core: a task delegated to another host caches the binary there" delegated
