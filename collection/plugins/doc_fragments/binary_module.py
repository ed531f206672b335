# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The attributes every ops module shares: a binary run by an action."""

from __future__ import annotations


class ModuleDocFragment:
    """ops.onboard.binary_module"""

    DOCUMENTATION = r"""
attributes:
  action:
    support: full
    description: An action runs the binary built for the target's machine (x86_64 or aarch64 Linux).
  async:
    support: none
    description: Not supported; a task runs to its end, bounded by its timeouts.
notes:
  - The binary is sent to a host once and kept in C(~/.ansible/ops/bin) of the user the module runs as (root's under become),
    named by its sha256 and checked before every run; the variable C(ops_module_cache) (or C(OPS_MODULE_CACHE) in the
    controller's environment) sets another directory, C(false) turns the cache off, and the playbook
    C(ops.onboard.clear_module_cache) clears it. C(-vv) says whether a task ran the cached binary or sent it.
"""
