# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Documentation only: the module is a binary per machine (bin/<machine>/ in
# the built collection), run by the action of the same name (plugins/action/).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ops_release
short_description: Publish a pod bundle into a release repository
description:
  - Publishes a bundle (a directory holding C(pod.json) and every file it
    names) into a release repository on the host it runs on, under a
    channel and an optional label path, or takes a published version out.
  - "The repository's layout:
    C(images/<label>/<image>/<version>/) holds an image file, its C(id)
    (and for an ACI its C(sha512), the hex of the id) and its signature;
    C(volumes/<label>/<volume>/<version>/) holds a volume archive and its
    C(sha256); C(channels/<channel>/<label>/<pod>/<version>/) holds
    C(pod.json) byte for byte, copies of the unit files, relative symlinks
    to the images, signatures and volume archives, and C(release.json),
    the record of the version with the sha256 and size of every file
    C(pod.json) names; C(channels/<channel>/<label>/<pod>/tip) is a
    relative symlink to a version directory."
  - "C(tip) names the version most recently published, or pointed at with
    O(name) + O(version). With O(tip=true) (the default) it moves to the
    version only when this run publishes (adds) that version, or when the
    channel has no C(tip) yet. Publishing again a version already published
    is C(changed=false) and leaves C(tip) alone, whatever it names, so
    rerunning an old publish never rolls the channel back."
  - "To point C(tip) at a version already published (to withdraw a bad
    release, say), give O(state=present) with O(name), O(version) and
    O(channel) (and O(label)) and neither O(bundle) nor O(instructions):
    the version must be published (else the error lists the published
    versions); with O(tip=true) C(tip) moves to it (C(changed) when it
    moved), with O(tip=false) nothing is done."
  - "Each image and volume is stored once, by name and version. An image is
    named by its manifest (an ACI manifest's C(name), last segment:
    C(example.com/busybox) is C(busybox); a Docker archive's first repo
    tag; an OCI archive's image name annotation), else by its file name
    without the extension. An image file's id is computed and must be the
    one C(pod.json) gives."
  - "Stored once: an image's or volume's version is the one a release
    instruction file sets, used as it is. Otherwise, when the repository
    already holds, under the same label and name, a version with the same
    content (the same image id; the same volume sha256), the pod version
    links to that stored version (listed in RV(reused)) and no copy is
    made: the pod version's own when it holds it, else the lowest version
    holding it (versions compared as numbers when both are, numbers before
    other names, else as text). Only content the repository lacks is
    stored, under the pod version."
  - Idempotent. The same bundle again reports C(changed=false), every
    artifact and the version listed in RV(reused). A published version and
    its artifacts never change. Other content under a version already in the
    repository (C(pod.json), a unit file, an image with another id, a
    volume archive with another sha256) is refused, naming each
    difference, and nothing is written.
  - "O(state=absent) removes only a directory whose C(release.json) names
    that pod, version, channel and label (and only such a version can be
    pointed at): a label path has no fixed depth, so
    C(channels/stable/web/shop) may be pod C(shop) under label C(web)
    rather than version C(shop) of pod C(web). Anything else is reported
    as not published (C(changed=false)) and left alone."
  - "A publish that would write inside a published directory, or in its
    place, is refused before anything is written, naming each such
    directory: a pod directory (or a label directory above it) holding a
    C(release.json), a version directory holding another pod's versions,
    an image or volume name directory (or a label directory above it)
    holding an C(id) or C(sha256)."
  - Every image, volume and pod version directory is built whole in a
    temporary directory beside its place, each file synced, then renamed
    into place. A reader sees it complete or not at all. C(tip) is moved by
    a new link renamed over the old one. If a step fails, the steps done
    are undone.
  - "A run that adds a version and moves C(tip) to it first writes an
    intent record, C(channels/<channel>/<label>/<pod>/.tip-intent) holding
    the version (a hidden name, never read as a version), then renames the
    version into place, moves C(tip) and removes the record. If the run is
    killed in between, the next run on that pod finishes the move: C(tip)
    is moved to the version the record names when it is published (unless
    that run takes the version out) and the record removed; a record naming
    a version that never got into place is removed alone. Both are
    reported in RV(actions). Check mode writes no record."
  - "A release instruction file (O(instructions)) is YAML with the keys
    C(pod), C(version), C(channel), C(label), C(bundle) (a directory,
    absolute or relative to the file), C(images) and C(volumes) (versions
    by name, default the pod version; an image's name is its manifest's,
    see above) and C(revisions) (source revisions by name,
    recorded in C(release.json), not checked out); other keys are refused,
    and so is a name in C(images) or C(volumes) that is not one of the
    pod's images or volumes with an archive (the error names the file, the
    key and the pod's names). A file at
    C(channels/<channel>/<label>/<pod>/<version>.yaml) inside O(repo) has
    its channel, label, pod and version inferred from that path, and values
    it gives must agree with it. An image or volume whose file the bundle
    lacks is taken from the repository at its instructed version (default
    the pod version; an image no instruction names is also found at the
    lowest version holding its id, as images are stored once). A volume
    neither holds is an error (the release tool cannot create volumes), as is
    an image neither holds (building images is out of scope); the error
    names it, its version and the versions the repository holds. An image
    or volume whose instructed version holds other content is refused, the
    error suggesting another version in the instruction file."
version_added: 0.1.0
author: ops developers (@ops)
options:
  repo:
    description:
      - The release repository, an absolute path on the managed host. It is
        created when missing.
    type: path
    required: true
  bundle:
    description:
      - The bundle directory to publish (or its C(pod.json)), on the managed host.
      - One of O(bundle) and O(instructions) is required for O(state=present).
      - A symlink in the bundle is followed only when it stays inside the bundle.
    type: path
  instructions:
    description:
      - A release instruction file (YAML) on the managed host, naming the
        bundle and what to publish it as.
    type: path
  channel:
    description:
      - The release channel, such as V(stable).
      - Required unless O(instructions) gives it (or its path in the
        repository does); when both give it, they must agree.
    type: str
  label:
    description:
      - A label path, safe names joined by C(/), such as V(web/shop). No label by default.
    type: str
  name:
    description:
      - The pod, without O(bundle) or O(instructions). With O(state=absent)
        the version to take out; with O(state=present) the published
        version to point C(tip) at.
      - With a bundle it must be the name in C(pod.json).
    type: str
  version:
    description:
      - The pod version, without O(bundle) or O(instructions). With
        O(state=absent) the version to take out; with O(state=present) the
        published version to point C(tip) at.
      - With a bundle it must be the version in C(pod.json).
    type: str
  tip:
    description:
      - Move the pod's C(tip) to the version when this run publishes it, or
        when the channel has no C(tip) yet. A version already published is
        left as it is, and so is C(tip).
      - With O(name) and O(version) and no bundle, move C(tip) to that
        published version.
      - V(false) never moves C(tip).
    type: bool
    default: true
  state:
    description:
      - Whether the version should be published.
      - V(absent) removes C(channels/<channel>/<label>/<pod>/<version>) and
        C(tip) when it names that version (point C(tip) again with
        O(state=present), O(name) and O(version)). Images and volumes are
        left in the repository, as other versions may share them.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - ops.onboard.binary_module
  - ops.onboard.store.lock
attributes:
  check_mode:
    support: full
    description:
      - Reads the bundle, computes every image id and file digest, compares
        with the repository and writes nothing.
  diff_mode:
    support: full
    description:
      - Each artifact added (file, id or sha256), the new version's
        C(release.json), and C(tip) before and after.
notes:
  - A change takes the repository's lock (C(<repo>/lock)); check mode and a
    run with nothing to do take none.
  - M(ops.onboard.ops_pod) reads the same repository layout.
"""

EXAMPLES = r"""
- name: Publish the shop's bundle to the stable channel
  ops.onboard.ops_release:
    repo: /srv/releases
    bundle: /srv/bundles/shop-7
    channel: stable
    label: web/shop

- name: Publish from a release instruction file kept in the repository
  ops.onboard.ops_release:
    repo: /srv/releases
    instructions: /srv/releases/channels/stable/web/shop/shop/8.yaml

- name: Publish version 9 to staging without moving tip
  ops.onboard.ops_release:
    repo: /srv/releases
    bundle: /srv/bundles/shop-9
    channel: staging
    tip: false

- name: Withdraw version 7 by pointing tip back at the published version 6
  ops.onboard.ops_release:
    repo: /srv/releases
    channel: stable
    label: web/shop
    name: shop
    version: "6"

- name: Take version 7 out of the stable channel
  ops.onboard.ops_release:
    repo: /srv/releases
    channel: stable
    label: web/shop
    name: shop
    version: "7"
    state: absent
"""

RETURN = r"""
changed:
  description: Something was (or, in check mode, would be) added to or removed from the repository.
  type: bool
  returned: always
msg:
  description: What was done, or that the version is published as requested (prefixed C(check mode:) in check mode).
  type: str
  returned: always
path:
  description: The pod version directory.
  type: str
  returned: success
  sample: /srv/releases/channels/stable/web/shop/shop/7
version:
  description: The pod version.
  type: str
  returned: success
  sample: "7"
tip:
  description: The version C(tip) names after the run; V(null) when there is no C(tip).
  type: str
  returned: success
  sample: "7"
added:
  description: What was (or would be) added, relative to the repository.
  type: list
  elements: str
  returned: success
  sample:
    - images/web/shop/app/7
    - volumes/web/shop/static/7
    - channels/stable/web/shop/shop/7
reused:
  description:
    - What the repository held already and the version uses (an image or
      volume stored by an earlier version with the same content, or the
      published version itself), relative to the repository.
  type: list
  elements: str
  returned: success
  sample:
    - images/web/shop/base/6
actions:
  description: What was (or would be) done, in order.
  type: list
  elements: str
  returned: success
  sample:
    - "add images/web/shop/app/7: image app version 7 (app.aci, sha512-...)"
    - "add channels/stable/web/shop/shop/7: pod shop version 7"
    - move channels/stable/web/shop/shop/tip from 6 to 7
"""
