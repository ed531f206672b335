# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Documentation only: the module is a binary per machine (bin/<machine>/ in
# the built collection), run by the action of the same name (plugins/action/).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ops_volume
short_description: Fill, replace or remove a data volume of a deployed pod version
description:
  - Makes one volume of a deployed pod version hold the contents of a tar
    archive (plain, gzip, xz, bzip2 or zstd, told by content), or removes it.
  - A volume belongs to its version. Its host directory is
    C(<root>/pods/<pod>/<version>/volumes/<name>/data); units see it as
    C(OPS_VOLUME_<NAME>); only a service running in an image of the
    C(systemd) runtime gets it mounted where pod.json says (a unit on the
    host uses the path, a podman unit passes C(-v) itself).
  - Idempotent. The archive's digest is recorded with the volume, and the
    same archive again reports C(changed=false) without extracting. A
    different archive is extracted only with O(replace=true), or into a
    volume created empty that is still empty; otherwise the task fails,
    naming both digests, and the contents stay as they are. The same
    archive with another O(keep_setuid) needs extracting again, so
    O(replace=true) too.
  - Check mode reads the archive and refuses what the extraction would
    refuse from its start (not a regular file, a damaged compression, no
    tar header or one with a wrong checksum), with the same message.
  - Extraction is always safe. Absolute paths, C(..), symlinks leading out
    of the volume, entries under a symlink, and hard links out of the volume
    or through a symlink are refused with the entry named. Device nodes and
    fifos are refused unless O(allow_special_files=true). Setuid, setgid and
    sticky bits are dropped unless O(keep_setuid=true).
  - Nothing is left half-done. A volume is built whole in C(<root>/staging/),
    synced, then renamed into place or swapped with the old one in one atomic
    exchange, and only then are the old contents deleted. A refused archive,
    a checksum mismatch or a failed download leaves the store as it was.
  - The archive is hashed before deciding and again while it is extracted.
    If the two differ (the file or the server's answer changed in between),
    nothing is installed and the error says so.
  - Running units of the version had the old directory mounted or open. When their
    volume is replaced (or an empty one filled) ops resets their start limit,
    restarts them and says so in the returned C(actions). If a restart fails,
    the task fails with C(changed=true), the new contents in place and
    recorded. Running units of a version that is not current (left running
    by an M(ops.onboard.ops_pod) run with O(ops.onboard.ops_pod#module:rollback=false)) are not
    restarted, as only the current version's units start; a warning names
    them (stop them, or make the version current).
  - A change of O(mode), O(owner) or O(group) alone is made in place,
    without extracting again.
version_added: 0.1.0
author: ops developers (@ops)
options:
  pod:
    description: Name of the deployed pod.
    type: str
    required: true
  version:
    description:
      - Version of the deployed pod.
      - With O(state=present) the version must be deployed and declare the
        volume O(name) in its pod.json.
    type: str
    required: true
  name:
    description: The volume, as named in pod.json.
    type: str
    required: true
  data:
    description:
      - Path (on the managed host), C(file://), C(http://) or C(https://) URI
        of the archive of the volume's contents.
      - A tar archive, plain or compressed with gzip, xz, bzip2 or zstd,
        told by content.
      - Without it, a volume that does not exist is created empty, and the
        contents of one that does are left as they are.
    type: str
  checksum:
    description:
      - C(sha256:<hex>) or C(sha512:<hex>) of the archive file.
      - Requires O(data).
    type: str
  owner:
    description:
      - User (name or id) owning every extracted entry.
      - An id runs from 0 to 4294967294; 4294967295 (-1 to chown, "leave it
        as it is") and negative ids are refused.
      - Without O(owner) and O(group), entries keep the archive's ownership
        when ops runs as root.
      - Each entry extracted keeps its mode through the change of owner,
        setuid bits kept by O(keep_setuid) included. A later change of owner
        is made in place, except for a volume extracted with
        O(keep_setuid=true) - that one needs O(replace=true) and is extracted
        again, so that no file its services made gets setuid bits.
    type: str
  group:
    description:
      - Group (name or id) owning every extracted entry.
      - Ids as for O(owner).
    type: str
  mode:
    description:
      - Mode of the volume's top directory, such as V(0750). Quote it.
      - Without it, the mode of the archive's top entry, else V(0755).
    type: str
  replace:
    description:
      - Replace the contents when the archive differs from the one extracted
        (or O(keep_setuid) differs from what it was extracted with).
      - Without it, a different archive fails the task and changes nothing,
        unless the volume was created empty and is still empty.
    type: bool
    default: false
  allow_special_files:
    description: Create the archive's device nodes and fifos instead of refusing the archive.
    type: bool
    default: false
  keep_setuid:
    description: Keep setuid, setgid and sticky bits instead of dropping them.
    type: bool
    default: false
  state:
    description:
      - Whether the volume should exist.
      - V(absent) deletes the volume's directory. A volume of a version that
        is not deployed is absent already.
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description:
      - Seconds a download (or a restart) may take, from 0 to 604800 (one week).
    type: int
    default: 600
extends_documentation_fragment:
  - ops.onboard.binary_module
  - ops.onboard.store
  - ops.onboard.store.lock
attributes:
  check_mode:
    support: full
    description:
      - Reads the archive to hash it (a URI is streamed through the hash,
        written nowhere), refuses what the extraction would refuse from the
        archive's start, and writes nothing.
  diff_mode:
    support: full
    description:
      - The volume's digest, entries, bytes, mode and owner before and after.
notes:
  - A run with nothing to do, a refused request and check mode take no lock
    (O(lock_timeout)).
  - Volumes are first built by M(ops.onboard.ops_pod) when it deploys a
    version, from the C(data) each volume declares in pod.json.
  - The archive is read twice when something changes, once to hash it and
    once to extract it; a URI is downloaded twice.
"""

EXAMPLES = r"""
- name: Fill the shop's data volume from a local archive
  ops.onboard.ops_volume:
    pod: shop
    version: "7"
    name: data
    data: /srv/archives/shop-data.tar.gz
    owner: shop
    group: shop
    mode: "0750"

- name: Replace the catalogue with a new one
  ops.onboard.ops_volume:
    pod: shop
    version: "7"
    name: catalogue
    data: https://files.example.com/catalogue-2026-11.tar.zst
    checksum: sha256:3b1f8e5c2d4a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e
    replace: true

- name: Remove the scratch volume of version 6
  ops.onboard.ops_volume:
    pod: shop
    version: "6"
    name: scratch
    state: absent
"""

RETURN = r"""
changed:
  description: The volume was (or, in check mode, would be) created, replaced, adjusted or removed.
  type: bool
  returned: always
msg:
  description: What was done, or that the volume is as requested (prefixed C(check mode:) in check mode).
  type: str
  returned: always
  sample: extract volume data of pod shop version 7 from /srv/archives/shop-data.tar.gz
path:
  description: The volume's host directory.
  type: str
  returned: always, on failure too
  sample: /var/lib/ops/pods/shop/7/volumes/data/data
digest:
  description:
    - C(sha256:) of the archive file the volume holds.
    - V(null) for a volume created empty, or one that is absent.
  type: str
  returned: success, and when a restart failed
  sample: "sha256:3b1f8e5c2d4a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"
entries:
  description:
    - Entries extracted into the volume.
    - V(null) when the volume is absent; V(0) in check mode for an archive
      not extracted yet.
  type: int
  returned: success, and when a restart failed
  sample: 1204
bytes:
  description:
    - Bytes of file contents in the volume.
    - V(null) when the volume is absent; V(0) in check mode for an archive
      not extracted yet.
  type: int
  returned: success, and when a restart failed
  sample: 52428800
actions:
  description: What was (or would be) done, in order, including the units restarted.
  type: list
  elements: str
  returned: success, and when a restart failed
  sample:
    - replace the contents of volume catalogue of pod shop version 7 with https://files.example.com/catalogue-2026-11.tar.zst
    - restart shop-7-web@1.service to use the new contents
"""
