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

A collection without any binary is its source (a git install, or a copy of
the project's checkout: the binaries are built, not kept in git): its tasks
fail at once, before asking the host anything, saying how to get a built
collection. One that has binaries, but none for the host's machine, names
the machines it was built for.

The binary is not copied for every task: the module Ansible copies and
runs is a small launcher that runs the host's cached copy of the binary,
checked first (module_cache.py). Only when the host has no intact copy is
the binary sent, installed in the cache, and run; where the cache cannot be
used (read-only or full, another user's, no sha256sum) the binary that was
sent runs from Ansible's remote tmp, as Ansible runs any binary module.
"""

from __future__ import annotations

import json
import os

import yaml

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.ops.onboard.plugins.plugin_utils import module_cache

display = Display()

# What the launcher prints instead of running the binary (module_cache.py).
CACHE_SAID = "_ops_module_cache"
OFF = ("false", "no", "off", "0")
CHECK_MODE = "check mode"

COLLECTION = "ops.onboard"

# What uname -m (or the architecture fact) says, to the name of a build.
MACHINES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}


# The collection's directory: this file is plugins/plugin_utils/ in it.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def collection_version(root=ROOT):
    """The collection's version, from MANIFEST.json (an installed collection)
    or galaxy.yml (a copy of the source tree); None when neither tells it."""
    try:
        with open(os.path.join(root, "MANIFEST.json"), encoding="utf-8") as manifest:
            return str(json.load(manifest)["collection_info"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(os.path.join(root, "galaxy.yml"), encoding="utf-8") as galaxy:
            return str(yaml.safe_load(galaxy)["version"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def source_checkout_message(module, root=ROOT):
    """What a task says when the collection holds no binary at all: the
    collection's source, as a git install or a copy of the checkout gives it."""
    tarball = "ops-onboard-%s.tar.gz" % (collection_version(root) or "<version>")
    return (
        "%s.%s cannot run: the ops.onboard collection at %s is a source checkout without the module binaries "
        "(they are built, not kept in git, so a git install has none). Install a built collection instead: the "
        "release tarball (ansible-galaxy collection install ./%s, or a requirements.yml entry of type url or "
        "file), or one built from the project's checkout with collection/build"
        % (COLLECTION, module, root, tarball)
    )


def no_binary_message(module, machine, built):
    """What a task says when the collection has binaries, none for this machine."""
    name = MACHINES.get(machine, machine)
    if name not in MACHINES.values():
        return "%s.%s has no binary for this host's machine %r: ops runs on x86_64 and aarch64 Linux hosts only " \
            "(this collection was built for: %s)" % (COLLECTION, module, machine, ", ".join(built))
    return (
        "%s.%s has no binary for this host's machine %r (this collection was built for: %s only): install the "
        "release tarball, which holds x86_64 and aarch64, or build one with collection/build"
        % (COLLECTION, module, machine, ", ".join(built))
    )


class BinaryModule(ActionBase):
    """The action of every ops module: dispatch to the binary for the target."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        module = (self._task.resolved_action or self._task.action).rsplit(".", 1)[-1]
        built = self._built(module)
        if not built:
            # Before the host is asked anything: no host can run this.
            raise AnsibleActionFail(source_checkout_message(module))
        directory = self._cache_directory(task_vars)
        system, machine, cached = self._platform(task_vars, directory, module)
        if system != "Linux":
            raise AnsibleActionFail(
                "%s.%s runs on Linux only; this host runs %s" % (COLLECTION, module, system)
            )
        name = MACHINES.get(machine, machine)
        if name not in built:
            raise AnsibleActionFail(no_binary_message(module, machine, built))
        result.update(self._run_binary("%s.%s_%s" % (COLLECTION, module, name), task_vars, directory, cached))
        return result

    def _built(self, module):
        """The machines this collection holds a binary of the module for, sorted."""
        return sorted(
            name for name in set(MACHINES.values())
            if self._shared_loader_obj.module_loader.has_plugin("%s.%s_%s" % (COLLECTION, module, name))
        )

    def _digests(self, module):
        """The sha256 of each machine's binary of the module this collection holds."""
        digests = {}
        for name in sorted(set(MACHINES.values())):
            path = self._shared_loader_obj.module_loader.find_plugin("%s.%s_%s" % (COLLECTION, module, name))
            if path:
                digests[name] = module_cache.sha256_of(path)
        return digests

    def _run_binary(self, binary, task_vars, directory, cached):
        """The binary's result, run from the host's cache when it may be.

        ``cached``: the digests whose entries the host said it has, or None
        when it was not asked (facts told its machine): then the launcher
        is tried first, which finds out.
        """
        if directory is None:
            return self._execute(binary, task_vars, launcher=None)
        # Ansible shows a warning once however many hosts give it: each names its host.
        host = self._task.delegate_to or task_vars.get("inventory_hostname")
        path = self._shared_loader_obj.module_loader.find_plugin(binary)
        self._binary_name = os.path.basename(path)
        sha = module_cache.sha256_of(path)
        entry = "%s/%s" % (directory.rstrip("/"), sha)
        if cached is None or sha in cached:
            result = self._execute(binary, task_vars, module_cache.launcher(sha, directory))
            reason = result.get(CACHE_SAID)
        else:
            # The host said it has no such entry: send the binary at once.
            reason = module_cache.ABSENT
        if reason is None:
            display.vv("ran the cached %s (%s)" % (entry, binary), host=host)
            return result
        warnings = []
        if reason == module_cache.DAMAGED:
            warnings.append(
                "%s: the cached %s in %s (sha256 %s) was not intact (changed, truncated, or not a "
                "regular file of the user's): it was not run; the binary was sent again. If nothing "
                "on that host should change it, find out what did" % (host, binary, directory, sha)
            )
        sent = self._send(path)
        if self._task.check_mode and reason in (module_cache.ABSENT, module_cache.DAMAGED):
            # Check mode changes nothing on the host, the cache included.
            reason = CHECK_MODE
        elif reason in (module_cache.ABSENT, module_cache.DAMAGED):
            reason = self._install(sha, directory, sent)
            if reason == module_cache.INSTALLED:
                result = self._execute(binary, task_vars, module_cache.launcher(sha, directory))
                reason = result.get(CACHE_SAID)
                if reason is None:
                    display.vv("sent %s and cached it as %s" % (binary, entry), host=host)
                    return self._warned(result, warnings)
        message = self._fall_back_message(directory, reason)
        if reason == module_cache.UNSAFE:
            warnings.append("%s: %s" % (host, message))
        else:
            display.vv(message, host=host)
        result = self._execute(binary, task_vars, module_cache.sent_launcher(sha, sent))
        if CACHE_SAID in result:
            # Never taken for the module's result: the module did not run.
            raise AnsibleActionFail(
                "%s: the copy of %s sent to the remote tmp (%s) does not have the sha256 of the "
                "binary (%s): it was not run" % (host, binary, sent, sha)
            )
        return self._warned(result, warnings)

    @staticmethod
    def _warned(result, warnings):
        if warnings:
            result["warnings"] = warnings + list(result.get("warnings") or [])
        return result

    def _cache_directory(self, task_vars):
        """Where the host keeps its binaries, or None (no cache).

        The variable ops_module_cache, else the controller's environment
        OPS_MODULE_CACHE, else ~/.ansible/ops/bin (an empty value counts as
        unset); false, no, off or 0 turns the cache off.
        """
        value = task_vars.get("ops_module_cache")
        value = self._templar.template(value) if isinstance(value, str) else value
        if value is None or value == "":
            value = os.environ.get("OPS_MODULE_CACHE") or module_cache.DEFAULT_DIR
        if value is False or (isinstance(value, str) and value.strip().lower() in OFF):
            return None
        try:
            module_cache.directory_word(value)
        except ValueError as error:
            raise AnsibleActionFail("ops_module_cache %s" % error) from None
        return value

    def _execute(self, binary, task_vars, launcher):
        """Ansible's run of the module, its file replaced by ``launcher`` when given."""
        self._launcher = launcher
        try:
            return self._execute_module(
                module_name=binary, module_args=dict(self._task.args), task_vars=task_vars
            )
        finally:
            self._launcher = None

    def _transfer_file(self, local_path, remote_path):
        # _execute_module sends the module's file by this; _transfer_data
        # sends its data through it too, as a local temporary file.
        launcher = getattr(self, "_launcher", None)
        if launcher is None or os.path.basename(local_path) != self._binary_name:
            return super()._transfer_file(local_path, remote_path)
        return self._transfer_data(remote_path, launcher)

    def _send(self, path):
        """Put the binary in the task's remote tmp, readable by the user the module runs as."""
        if self._connection._shell.tmpdir is None:
            self._make_tmp_path()
        tmpdir = self._connection._shell.tmpdir
        sent = self._connection._shell.join_path(tmpdir, "ops_binary_" + os.path.basename(path))
        super()._transfer_file(path, sent)
        self._fixup_perms2([tmpdir, sent], self._get_remote_user())
        return sent

    def _install(self, sha, directory, sent):
        """Copy the sent binary into the cache; what the installer said."""
        run = self._low_level_execute_command(module_cache.installer(sha, directory, sent))
        words = (run.get("stdout") or "").split()
        return words[-1] if words and run.get("rc") == 0 else module_cache.UNWRITABLE

    @staticmethod
    def _fall_back_message(directory, reason):
        """Why the binary runs from the remote tmp this time."""
        why = {
            module_cache.UNSAFE: "a directory on the way to it belongs to another user or may be "
            "written by others",
            module_cache.UNWRITABLE: "it cannot be written (read-only, full, or not a directory)",
            module_cache.NO_TOOLS: "the host lacks sha256sum or stat to check it",
            module_cache.NO_HOME: "$HOME is not set for the user the module runs as",
            CHECK_MODE: "check mode writes nothing, the cache included",
        }.get(reason, "the host said %r" % reason)
        advice = (
            "; set ops_module_cache to a directory that only root or the module's user can write, "
            "or to false" if reason == module_cache.UNSAFE else ""
        )
        return "the module cache %s is not used (%s): the binary was copied for this task%s" % (
            directory, why, advice)

    def _platform(self, task_vars, directory, module):
        """The target's kernel and machine, as uname -s and uname -m say, and
        which digests of the module's binaries its cache holds.

        The cache is asked in the same command as uname (no round trip of its
        own), only whether an entry is there: the launcher checks it before it
        runs it. Without that command (facts told the machine) it is None.
        """
        # A delegated task runs on another host than the one whose facts
        # these are: ask that host.
        facts = {} if self._task.delegate_to else (task_vars.get("ansible_facts") or {})
        if facts.get("system") and facts.get("architecture"):
            return str(facts["system"]), str(facts["architecture"]), None
        command = "uname -sm"
        digests = self._digests(module) if directory else {}
        if digests:
            command += " && { %s; }" % module_cache.presence(directory, sorted(set(digests.values())))
        probe = self._low_level_execute_command(command)
        lines = (probe.get("stdout") or "").splitlines()
        words = lines[0].split() if lines else []
        if probe.get("rc") != 0 or len(words) != 2:
            raise AnsibleActionFail(
                "could not tell the target's system and machine: uname -sm said %r (rc %s)"
                % ((probe.get("stderr") or probe.get("stdout") or "").strip(), probe.get("rc"))
            )
        cached = {line.split()[1] for line in lines[1:] if line.startswith("cached ") and len(line.split()) == 2}
        return words[0], words[1], cached
