# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record a playbook run as JSON for the fleet tests (tests/fleet/suite).

ansible-core has no JSON callback of its own (ansible.posix has one, which
the tests do not install), and the tests want both the usual output for
people and the results to assert on. Enabled with
ANSIBLE_CALLBACKS_ENABLED=fleet_record, it writes to $OPS_FLEET_RECORD:
{"plays": [{"play": {"name"}, "tasks": [{"task": {"name"}, "hosts":
{HOST: RESULT}}]}], "stats": {HOST: {"ok", "changed", "unreachable",
"failures", "skipped", "rescued", "ignored"}}}, the shape of ansible.posix's
json callback. A play appears only if it started.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: fleet_record
type: aggregate
short_description: record plays, tasks, results and stats as JSON in $OPS_FLEET_RECORD
description: For the fleet tests of ops.
"""


def _get(obj, *names):
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleet_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.plays = []
        self.tasks = {}

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})
        self.tasks = {}

    def _task(self, task):
        key = task._uuid
        if key not in self.tasks:
            self.tasks[key] = {"task": {"name": task.get_name()}, "hosts": {}}
            self.plays[-1]["tasks"].append(self.tasks[key])
        return self.tasks[key]

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task(task)

    def _record(self, result, **extra):
        task = _get(result, "task", "_task")
        host = _get(result, "host", "_host")
        data = dict(_get(result, "result", "_result") or {})
        data.update(extra)
        self._task(task)["hosts"][host.get_name()] = data

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        summary = {host: stats.summarize(host) for host in hosts}
        with open(os.environ["OPS_FLEET_RECORD"], "w", encoding="utf-8") as out:
            json.dump({"plays": self.plays, "stats": summary}, out, default=str, indent=1)
