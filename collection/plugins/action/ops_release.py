# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""ops_release runs the binary built for the target's machine."""

from __future__ import annotations

from ansible_collections.ops.onboard.plugins.plugin_utils.binary_module import BinaryModule


class ActionModule(BinaryModule):
    """The ops.onboard.ops_release action."""
