# Sourced by whatever runs ansible from the checkout (tests, the demo):
# builds the debug binaries into collection/, makes ops.onboard findable
# through a throwaway collections path, and points ANSIBLE_* at it.
# Sets $ops_ansible_work (removed on exit) and needs $project.
"$project/collection/build" --debug >/dev/null
ops_ansible_work=$(mktemp -d /var/tmp/ops-ansible.XXXXXX)
trap 'rm -rf "$ops_ansible_work"' EXIT
mkdir -p "$ops_ansible_work/collections/ansible_collections/ops"
ln -s "$project/collection" "$ops_ansible_work/collections/ansible_collections/ops/onboard"
export ANSIBLE_COLLECTIONS_PATH="$ops_ansible_work/collections" ANSIBLE_HOME="$ops_ansible_work/home" \
  ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
# The module cache (collection/plugins/plugin_utils/module_cache.py) of
# these local runs: in target/, so debug builds do not pile up in root's
# ~/.ansible/ops/bin (cargo clean removes it).
export OPS_MODULE_CACHE=${OPS_MODULE_CACHE:-$project/target/module-cache}
