"""The action groups of meta/runtime.yml hold the modules that take their
options, read from the installed collection's documentation.

    groups_match.py COLLECTIONS_PATH ANSIBLE_DOC

Ansible gives a group's module_defaults to every module of the group, and a
module refuses an option it does not take: group/ops.onboard.store sets
root, so its modules must be exactly those whose docs have root; .units
likewise for unit_dir. Run by tests/collection/run;
prints what differs and exits 1.
"""

import json
import os
import subprocess
import sys

import yaml

MODULES = ["ops_pod", "ops_image", "ops_volume", "ops_facts", "ops_release"]
# group -> the option its module_defaults are for
GROUPS = {"store": "root", "units": "unit_dir"}


def main():
    path, ansible_doc = sys.argv[1], sys.argv[2]
    runtime = os.path.join(path, "ansible_collections", "ops", "onboard", "meta", "runtime.yml")
    with open(runtime, encoding="utf-8") as f:
        groups = yaml.safe_load(f).get("action_groups") or {}
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=path)
    out = subprocess.run([ansible_doc, "--json", "-t", "module"] + ["ops.onboard." + m for m in MODULES],
                         env=env, check=True, capture_output=True, text=True).stdout
    options = {name.rsplit(".", 1)[1]: set(entry["doc"].get("options") or {}) for name, entry in json.loads(out).items()}
    problems = []
    if sorted(options) != sorted(MODULES):
        problems.append("ansible-doc documented %s, not the five modules" % sorted(options))
    if sorted(groups) != sorted(GROUPS):
        problems.append("runtime.yml's action_groups are %s, expected %s" % (sorted(groups), sorted(GROUPS)))
    for group, option in GROUPS.items():
        members = groups.get(group) or []
        if any(not isinstance(m, str) for m in members) or len(set(members)) != len(members):
            problems.append("group %s: %r is not a list of module names, each once" % (group, members))
            continue
        want = sorted(m for m in MODULES if option in options.get(m, ()))
        print("group %s (%s): %s" % (group, option, ", ".join(sorted(members))))
        if sorted(members) != want:
            problems.append("group %s holds %s; the modules that take %s are %s" % (group, sorted(members), option, want))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
