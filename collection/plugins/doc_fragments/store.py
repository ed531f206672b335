# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Options of the ops store and unit directory that several modules share."""

from __future__ import annotations


class ModuleDocFragment:
    """ops.onboard.store, ops.onboard.store.units, ops.onboard.store.lock"""

    DOCUMENTATION = r"""
options:
  root:
    description:
      - The ops store. An absolute path, as in every ops module; a relative
        one is refused before anything is written.
    type: path
    default: /var/lib/ops
"""

    UNITS = r"""
options:
  unit_dir:
    description:
      - systemd's unit directory, where ops installs the pods' units. An
        absolute path.
    type: path
    default: /etc/systemd/system
"""

    LOCK = r"""
options:
  lock_timeout:
    description:
      - Seconds to wait for another ops run to finish, from 0 to 604800 (one
        week); any other value is refused.
    type: int
    default: 300
"""
