# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run an ops module's binary built for the target's machine.

ops modules are Rust binaries for Linux, one per machine architecture,
found as ``ops.onboard.<module>_<machine>`` (build outputs placed by the
collection's build). The module a playbook names (``ops.onboard.ops_pod``)
is this action: it learns the target's system and machine from the
gathered facts ``ansible_facts.system`` and ``architecture`` or, when
facts were not gathered (or the task is delegated), from one ``uname -sm``
on the target, and runs that machine's binary as a module. Check mode and
diff reach the binary as for any module: it honours them. Async is not
supported.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

COLLECTION = "ops.onboard"

# What uname -m (or the architecture fact) says, to the name of a build.
MACHINES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}


class BinaryModule(ActionBase):
    """The action of every ops module: dispatch to the binary for the target."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        module = (self._task.resolved_action or self._task.action).rsplit(".", 1)[-1]
        system, machine = self._platform(task_vars)
        if system != "Linux":
            raise AnsibleActionFail(
                "%s.%s runs on Linux only; this host runs %s" % (COLLECTION, module, system)
            )
        binary = "%s.%s_%s" % (COLLECTION, module, MACHINES.get(machine, machine))
        if not self._shared_loader_obj.module_loader.has_plugin(binary):
            built = sorted(
                name for name in set(MACHINES.values())
                if self._shared_loader_obj.module_loader.has_plugin("%s.%s_%s" % (COLLECTION, module, name))
            )
            raise AnsibleActionFail(
                "%s.%s has no binary for this host's machine %r (this collection was built for: %s)"
                % (COLLECTION, module, machine, ", ".join(built) or "none")
            )
        result.update(
            self._execute_module(module_name=binary, module_args=self._task.args, task_vars=task_vars)
        )
        return result

    def _platform(self, task_vars):
        """The target's kernel and machine, as uname -s and uname -m say."""
        # A delegated task runs on another host than the one whose facts
        # these are: ask that host.
        facts = {} if self._task.delegate_to else (task_vars.get("ansible_facts") or {})
        if facts.get("system") and facts.get("architecture"):
            return str(facts["system"]), str(facts["architecture"])
        probe = self._low_level_execute_command("uname -sm")
        words = (probe.get("stdout") or "").split()
        if probe.get("rc") != 0 or len(words) != 2:
            raise AnsibleActionFail(
                "could not tell the target's system and machine: uname -sm said %r (rc %s)"
                % ((probe.get("stderr") or probe.get("stdout") or "").strip(), probe.get("rc"))
            )
        return words[0], words[1]
