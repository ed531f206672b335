# The release repository over HTTP (sourced by tests/fleet/suite, in its
# loop over venvs: uses its play, json_play, show, check, on, serves,
# state_of, recap, task_msg, reset and the hosts' arrays).
#
# On the controller, ops_release (tests/fleet/release.yml, a play on
# localhost) publishes pod web into a repository directory, which a plain
# static server in the controller's namespace serves to the hosts
# (python3 -m http.server, which follows symlinks; its request log is
# $logs/http.log). Every host deploys from it with ops_pod `repo: URL`
# (tests/fleet/deploy-repo.yml); what the hosts asked the server for is
# read from that log.
repo=$work/repo-$core
controller=$(ip -4 -o addr show dev br0 | awk '{ sub("/.*", "", $4); print $4; exit }')
port=8080
url=http://$controller:$port
httplog=$logs/http.log
tip_link=$repo/channels/stable/fleet/web/tip

rm -rf "$repo" && mkdir -p "$repo"
python3 -u -m http.server --bind "$controller" --directory "$repo" "$port" >"$httplog" 2>&1 &
server=$!
server_answers() {
  local _
  for _ in $(seq 100); do curl -sS -o /dev/null --max-time 2 "$url/" 2>/dev/null && return 0; sleep 0.1; done
  cat "$httplog"; return 1
}
check "ansible-core $core: a static HTTP server of the release repository ($url) answers in the controller's namespace" server_answers

# The lines of the server's log so far; the artifacts (images and volume
# archives) asked for after line MARK, one "CLIENT PATH" a line.
log_mark() { wc -l <"$httplog"; }
artifacts_since() {
  tail -n +"$(($1 + 1))" "$httplog" | sed -nE 's/^([0-9.]+) .*"GET ([^ ]+\.(aci\.gz|tar\.gz)) HTTP[^"]*" ([0-9]+) .*/\1 \2 \4/p'
}
# A value of one host's result of a task in a JSON log: result LOG TASK HOST JQ-FILTER.
result() {
  jq -r --arg t "$2" --arg h "$3" ".plays[].tasks[] | select(.task.name | startswith(\$t)) | .hosts[\$h] // empty | $4" "$logs/$1.json"
}

publishes() { # publishes LOG VERSION [TIP [BUNDLE]]: json_play of release.yml
  json_play "$1" "$project/tests/fleet/release.yml" -e "repo=$repo" -e "bundle=${4:-$bundles/web-$2}" -e "version=$2" \
    -e "tip=${3:-true}" || { show "$1"; return 1; }
}

first_publish() {
  publishes release-1 1 || return 1
  result release-1 "Publish the bundle" localhost '"changed=\(.changed) tip=\(.tip) added=\(.added)"'
  [ "$(recap release-1 localhost changed)" = 1 ] || { echo "not changed"; return 1; }
  [ "$(result release-1 "Publish the bundle" localhost .tip)" = 1 ] || return 1
  [ "$(readlink "$tip_link")" = 1 ] && [ -f "$repo/channels/stable/fleet/web/1/release.json" ] ||
    { echo "no tip -> 1 or no release.json in the repository"; return 1; }
}
check "ansible-core $core: ops_release on the controller publishes web 1 into a new repository (changed, tip -> 1)" first_publish

republish_unchanged() {
  local before
  before=$(cd "$repo" && find . -printf '%p %y %m %s %T@ %l\n' | sort) || return 1
  publishes release-1-again 1 || return 1
  result release-1-again "Publish the bundle" localhost '"changed=\(.changed) reused=\(.reused) msg=\(.msg)"'
  [ "$(recap release-1-again localhost changed)" = 0 ] || { echo "changed"; return 1; }
  [ "$(cd "$repo" && find . -printf '%p %y %m %s %T@ %l\n' | sort)" = "$before" ] || { echo "the repository changed"; return 1; }
}
check "ansible-core $core: the same bundle published again: changed=0, the repository untouched" republish_unchanged

tip_moves() {
  local served
  publishes release-3 3 || return 1
  result release-3 "Publish the bundle" localhost '"changed=\(.changed) tip=\(.tip) actions=\(.actions)"'
  [ "$(recap release-3 localhost changed)" = 1 ] && [ "$(result release-3 "Publish the bundle" localhost .tip)" = 3 ] || return 1
  [ "$(readlink "$tip_link")" = 3 ] || { echo "tip -> $(readlink "$tip_link")"; return 1; }
  # The server follows the tip's link.
  served=$(curl -sS --max-time 5 "$url/channels/stable/fleet/web/tip/release.json" | jq -r .version) || return 1
  [ "$served" = 3 ] || { echo "the server's tip/release.json says version $served"; return 1; }
}
check "ansible-core $core: a new version (web 3) published moves the tip to it; the server serves tip/release.json of 3" tip_moves

# From here on, the hosts start without pod web (nor its image).
reset
deploy_mark=$(log_mark)
deploys_tip() {
  json_play repo-tip "$project/tests/fleet/deploy-repo.yml" -e "repo=$url" -e expect=3 || { show repo-tip; return 1; }
  local i got status=0
  for i in "${!names[@]}"; do
    [ "$(recap repo-tip "${names[i]}" changed)" -gt 0 ] || { echo "${names[i]}: not changed"; status=1; }
    result repo-tip "Deploy it" "${names[i]}" '"\(.tip) \(.release)"'
  done
  # Each host downloaded the image and the volume archive, once.
  got=$(artifacts_since "$deploy_mark")
  printf '%s\n' "$got"
  for i in "${!names[@]}"; do
    [ "$(grep -c "^${addrs[i]} .*/busybox\.aci\.gz 200$" <<<"$got")" = 1 ] && [ "$(grep -c "^${addrs[i]} .*/www\.tar\.gz 200$" <<<"$got")" = 1 ] ||
      { echo "${names[i]} did not download the image and the archive once each"; status=1; }
  done
  return "$status"
}
check "ansible-core $core: ops_pod version: tip over HTTP on every host: tip is 3, each host downloads the image and the volume archive once" deploys_tip
for i in "${!names[@]}"; do
  check "ansible-core $core: $(label "${names[i]}" "$i") serves web 3 from the repository" serves "$i" 3
done

rerun_fetches_no_artifact() {
  local mark name got status=0
  mark=$(log_mark)
  json_play repo-tip-again "$project/tests/fleet/deploy-repo.yml" -e "repo=$url" -e expect=3 || { show repo-tip-again; return 1; }
  for name in "${names[@]}"; do
    echo "$name: changed=$(recap repo-tip-again "$name" changed) msg=$(task_msg repo-tip-again "Deploy it" "$name")"
    [ "$(recap repo-tip-again "$name" changed)" = 0 ] || status=1
  done
  echo "asked for: $(tail -n +"$((mark + 1))" "$httplog" | sed -nE 's/.*"GET ([^ ]+) .*/\1/p' | sort | uniq -c | tr -s ' \n' ' ')"
  got=$(artifacts_since "$mark")
  [ -z "$got" ] || { echo "artifacts downloaded again: $got"; status=1; }
  return "$status"
}
check "ansible-core $core: the same deploy again: changed=0 on every host, and no image or volume archive asked of the server" rerun_fetches_no_artifact

rolls() { # rolls LOG VERSION WANT-ARTIFACTS: deploy VERSION by name; WANT-ARTIFACTS: the per-host downloads expected
  local mark got name status=0
  mark=$(log_mark)
  json_play "$1" "$project/tests/fleet/deploy-repo.yml" -e "repo=$url" -e "version=$2" -e "expect=$2" || { show "$1"; return 1; }
  for name in "${names[@]}"; do [ "$(recap "$1" "$name" changed)" -gt 0 ] || { echo "$name: not changed"; status=1; }; done
  got=$(artifacts_since "$mark" | awk '{ sub(".*/", "", $2); print $2 }' | sort | uniq -c | awk '{ print $2 "x" $1 }' | tr '\n' ' ')
  echo "artifacts asked for: ${got:-none}"
  [ "$got" = "$3" ] || { echo "expected: ${3:-none}"; status=1; }
  return "$status"
}
rolls_back() { rolls repo-1 1 "www.tar.gzx${#names[@]} "; }
check "ansible-core $core: roll back by version (1, new to the hosts): each host downloads only version 1's volume archive (the runtime has the image)" rolls_back
for i in "${!names[@]}"; do
  check "ansible-core $core: $(label "${names[i]}" "$i") serves web 1" serves "$i" 1
done
rolls_forward() { rolls repo-3 3 ""; }
check "ansible-core $core: roll forward by version (3, in the hosts' stores): no artifact downloaded" rolls_forward
for i in "${!names[@]}"; do
  check "ansible-core $core: $(label "${names[i]}" "$i") serves web 3 again" serves "$i" 3
done

# A host as state_of sees it (every entry of the store, the unit files and
# shipped bundles: names, modes, sizes, times, links, bytes), but for the
# time of /var/lib/ops itself, where a refused download was staged and
# removed.
content_of() { # content_of NAME
  state_of "$1" | awk '$1 == "/var/lib/ops" && $2 == "d" { $5 = "" } { print }'
}
tampered_refused() { # tampered_refused LOG VERSION WHAT-THE-MESSAGE-SAYS WANT-ARTIFACTS
  local i before=() msg got status=0 mark
  for i in "${!names[@]}"; do before[i]=$(content_of "${names[i]}") || return 1; done
  mark=$(log_mark)
  json_play "$1" "$project/tests/fleet/deploy-repo.yml" -e "repo=$url" -e "version=$2" -e "expect=$2" && { echo "the play succeeded"; status=1; }
  for i in "${!names[@]}"; do
    msg=$(task_msg "$1" "Deploy it" "${names[i]}")
    echo "${names[i]}: $msg"
    [ "$(recap "$1" "${names[i]}" failures)" = 1 ] || { echo "${names[i]}: did not fail"; status=1; }
    [[ $msg == *"$3"* ]] || { echo "${names[i]}: the message does not say: $3"; status=1; }
    [ "$(content_of "${names[i]}")" = "${before[i]}" ] ||
      { echo "${names[i]} changed:"; diff <(echo "${before[i]}") <(content_of "${names[i]}"); status=1; }
    serves "$i" 3 || { echo "${names[i]} does not serve web 3"; status=1; }
  done
  got=$(artifacts_since "$mark" | awk '{ sub(".*/", "", $2); print $2 }' | sort | uniq -c | awk '{ print $2 "x" $1 }' | tr '\n' ' ')
  echo "artifacts asked for: ${got:-none}"
  [ "$got" = "$4" ] || { echo "expected: ${4:-none}"; status=1; }
  return "$status"
}
# A version whose volume archive in the repository is not the one
# published (other bytes, a valid archive of another page): refused on
# every host after the download, undone, the hosts as they were.
tampered_volume() {
  publishes release-4 4 false || return 1
  [ "$(readlink "$tip_link")" = 3 ] || { echo "tip: false moved the tip to $(readlink "$tip_link")"; return 1; }
  local archive=$repo/volumes/fleet/www/4/www.tar.gz other=$work/other-www
  mkdir -p "$other" && echo "web tampered" >"$other/index.html"
  tar -C "$other" -czf "$archive.new" index.html && mv "$archive.new" "$archive" || return 1
  tampered_refused repo-4-tampered 4 "www.tar.gz does not match its checksum" "www.tar.gzx${#names[@]} "
}
check "ansible-core $core: web 4 published with tip: false, its volume archive then overwritten in the repository: refused on every host after its download (sha256), each host as it was (store, unit files: entries, bytes, times), web 3 still served" tampered_volume
tampered_unit() {
  echo "# tampered" >>"$repo/channels/stable/fleet/web/4/web@.service" || return 1
  tampered_refused repo-4-unit 4 "web%40.service does not match the release's release.json" ""
}
check "ansible-core $core: a unit file of web 4 changed in the repository: refused on every host before any artifact is downloaded, the hosts as they were" tampered_unit

# Web 5 with an image of its own (web 4's ACI with one more file) and a
# volume of its own, whose image
# archive in the repository is then replaced by web 4's (a valid image,
# of another id): refused on every host after its download, by id.
tampered_image() {
  local five=$work/web-5-$core aci=$work/web-5-$core.aci id
  rm -rf "$five" && cp -a "$bundles/web-4" "$five" || return 1
  gzip -dc "$five/busybox.aci.gz" >"$aci" && mkdir -p "$work/extra/rootfs" && echo 5 >"$work/extra/rootfs/five" &&
    tar -C "$work/extra" --owner=0 --group=0 --numeric-owner -rf "$aci" rootfs/five || return 1
  id=sha512-$(sha512sum "$aci" | cut -c1-64)
  gzip -n <"$aci" >"$five/busybox.aci.gz" && rm "$aci" || return 1
  # A volume of its own too: web 4's (tampered above) would be shared,
  # the repository storing each archive once.
  mkdir -p "$work/www-5" && echo "web 5" >"$work/www-5/index.html" &&
    tar -C "$work/www-5" -czf "$five/www.tar.gz" index.html || return 1
  jq --arg id "$id" '.version = 5 | .images[0].id = $id | .containers[0].image = $id' "$bundles/web-4/pod.json" >"$five/pod.json" || return 1
  publishes release-5 5 false "$five" || return 1
  cp "$bundles/web-4/busybox.aci.gz" "$repo/images/fleet/fleet-busybox/5/busybox.aci.gz" || return 1
  # The new version's volume is staged before the image is imported: both are downloaded.
  tampered_refused repo-5-image 5 "busybox.aci.gz is not image $id: it is sha512-" "busybox.aci.gzx${#names[@]} www.tar.gzx${#names[@]} "
}
check "ansible-core $core: web 5's image replaced in the repository by another valid image: refused on every host after its download (the image's id), the hosts as they were, web 3 still served" tampered_image

# A repository in a directory on a host, whose version links its volume
# archive to a file outside the repository (the very bytes published):
# refused, the host as it was; the same link pointing inside deploys.
local_repo=/srv/ops-repo
escape_refused() {
  local clean=$work/repo-clean-$core msg before status=0
  json_play release-clean "$project/tests/fleet/release.yml" -e "repo=$clean" -e "bundle=$bundles/web-4" -e version=4 ||
    { show release-clean; return 1; }
  on "${names[0]}" sh -c "rm -rf $local_repo /srv/outside && mkdir -p $local_repo /srv/outside" || return 1
  tar -C "$clean" -cf - channels images volumes | on "${names[0]}" tar -C "$local_repo" -xf - || return 1
  on "${names[0]}" sh -c "set -e; cd $local_repo/channels/stable/fleet/web/4
    mv $local_repo/volumes/fleet/www/4/www.tar.gz /srv/outside/www.tar.gz
    ln -sfn ../../../../../../outside/www.tar.gz www.tar.gz" || return 1
  # The file outside holds the very bytes published.
  [ "$(on "${names[0]}" sha256sum /srv/outside/www.tar.gz | cut -c1-64)" = \
    "$(jq -r '.files["www.tar.gz"].sha256' "$clean/channels/stable/fleet/web/4/release.json")" ] || { echo "not the bytes published"; return 1; }
  before=$(content_of "${names[0]}") || return 1
  json_play repo-escape "$project/tests/fleet/deploy-repo.yml" -e "on=${names[0]}" -e "repo=$local_repo" -e version=4 -e expect=4 &&
    { echo "the play succeeded"; status=1; }
  msg=$(task_msg repo-escape "Deploy it" "${names[0]}")
  echo "${names[0]}: $msg"
  [ "$(recap repo-escape "${names[0]}" failures)" = 1 ] || { echo "did not fail"; status=1; }
  [[ $msg == *'"www.tar.gz" resolves to /srv/outside/www.tar.gz, outside the repository'* ]] || { echo "not the message expected"; status=1; }
  [ "$(content_of "${names[0]}")" = "$before" ] || { echo "${names[0]} changed:"; diff <(echo "$before") <(content_of "${names[0]}"); status=1; }
  serves 0 3 || status=1
  # The same file, linked inside the repository: deploys.
  on "${names[0]}" sh -c "set -e; mv /srv/outside/www.tar.gz $local_repo/volumes/fleet/www/4/www.tar.gz
    ln -sfn ../../../../../volumes/fleet/www/4/www.tar.gz $local_repo/channels/stable/fleet/web/4/www.tar.gz" || return 1
  json_play repo-local "$project/tests/fleet/deploy-repo.yml" -e "on=${names[0]}" -e "repo=$local_repo" -e version=4 -e expect=4 ||
    { show repo-local; status=1; }
  serves 0 4 || status=1
  on "${names[0]}" rm -rf "$local_repo" /srv/outside
  return "$status"
}
check "ansible-core $core: $(label "${names[0]}" 0): a directory repository whose version links its volume archive outside the repository is refused, the host as it was; linked inside, the same version deploys and is served" escape_refused

kill "$server"; wait "$server" 2>/dev/null
stop_server() {
  ! curl -s -o /dev/null --max-time 2 "$url/" || { echo "the server still answers"; return 1; }
  rm -rf "$repo" "$work/repo-clean-$core"
}
check "ansible-core $core: the HTTP server is stopped and the repositories removed ($(grep -c '"GET ' "$httplog") requests logged)" stop_server
