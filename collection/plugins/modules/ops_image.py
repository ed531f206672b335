# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Documentation only: the module is a binary per machine (bin/<machine>/ in
# the built collection), run by the action of the same name (plugins/action/).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ops_image
short_description: Import, verify and remove container images
description:
  - Imports an image (an ACI, an OCI image-layout archive or a Docker archive)
    into the V(systemd) or V(podman) runtime, checking its digest against
    O(id) and, when it has one, its detached OpenPGP signature; or removes an
    image that no deployed version uses.
  - The format is told by the file's content, not its name. An ACI may be
    plain or gzip, bzip2, xz or zstd-compressed.
  - In the V(systemd) runtime the image's root filesystem is unpacked into
    C(<root>/images/systemd/), beside ops's record of it. In the V(podman)
    runtime OCI and Docker archives go in with C(podman load) and an ACI with
    C(podman import), tagged C(localhost/ops-aci:sha512-<32 hex digits>);
    ops keeps a record in C(<root>/images/podman/).
  - An image already in the runtime is not fetched or checked again, and the
    module reports no change.
  - Nothing is half done. An import is staged under C(<root>/staging/) and
    made visible by one rename once every digest and the signature have been
    checked; after a failure (a wrong digest, a corrupt or truncated file, a
    bad signature, a failed or stalled download) the store is as it was.
version_added: 0.1.0
author: ops developers (@ops)
options:
  id:
    description:
      - The image digest. C(sha512-<hex>) for an ACI, the sha512 of the
        uncompressed image tar, with 32 to 128 lowercase hex digits (an ACI
        id may be shortened); C(sha256:<64 hex digits>) for an OCI or Docker
        image, the digest of its config (the id podman shows).
    type: str
    required: true
  path:
    description:
      - Path of the image file on the target.
      - Mutually exclusive with O(uri).
      - With O(state=present), O(path) or O(uri) is needed unless the image is
        already in the runtime.
    type: path
  uri:
    description:
      - C(http), C(https) or C(file) URI of the image file (a C(file) URI
        needs an absolute path, C(file:///path)).
      - Mutually exclusive with O(path).
      - O(timeout) covers the whole transfer.
    type: str
  signature:
    description:
      - Path or URI (C(http), C(https) or C(file)) of a detached OpenPGP
        signature over the image file.
      - Needs O(keyring). The signature is checked over the whole file before
        a byte of it is unpacked.
    type: str
  keyring:
    description: Path of the trusted public keys (armored or binary) that O(signature) is checked against.
    type: path
  require_signature:
    description: Refuse an image without a valid signature.
    type: bool
    default: false
  runtime:
    description: Where the image goes.
    type: str
    choices: [systemd, podman]
    default: systemd
  state:
    description:
      - Whether the image should be present.
      - V(absent) is refused while a deployed version uses the image; the
        error names the versions.
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description:
      - Seconds a download may take, from 0 to 604800 (one week).
    type: int
    default: 600
requirements:
  - sqv (Debian package C(sqv)) on the target, to check signatures
  - podman on the target, for O(runtime=podman)
extends_documentation_fragment:
  - ops.onboard.binary_module
  - ops.onboard.store
  - ops.onboard.store.lock
attributes:
  check_mode:
    support: full
    description:
      - Reports what would be imported or removed and changes nothing.
      - The checks that need no download and no reading of the whole image
        are made too - the file is a regular file, its compression and first
        tar header are sound, and a local image with a local signature has
        its signature checked - so check mode refuses what the real run
        would refuse by them. Whether the file is the image O(id) names is
        known only from all of its bytes, which only the real run reads.
  diff_mode:
    support: full
    description: The diff shows the image id, runtime and location added or removed.
notes:
  - M(ops.onboard.ops_pod) imports the images of a pod the same way.
"""

EXAMPLES = r"""
- name: Import the web ACI, signed
  ops.onboard.ops_image:
    id: sha512-be38aae91bafd722115bc7b4781c78db   # an ACI id may be shortened
    path: /srv/images/web.aci
    signature: /srv/images/web.aci.asc
    keyring: /etc/ops/trusted.asc
    require_signature: true

- name: Import the cache, an OCI archive, into podman
  ops.onboard.ops_image:
    id: sha256:6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8
    uri: https://images.example.com/cache.oci.tar
    runtime: podman
    timeout: 1200

- name: Remove the old web image once no deployed version uses it
  ops.onboard.ops_image:
    id: sha512-0c6e1f4d2b9a8e7f3c5d1a2b4e6f8091
    state: absent
"""

RETURN = r"""
changed:
  description:
    - The image was imported or removed (in check mode, would be).
    - V(false) when another ops run did the work while this one waited for the lock.
  type: bool
  returned: always
msg:
  description:
    - What was done, the RV(actions) joined by C(; ), or, with no change, the
      image's state. Prefixed with C(check mode:) in check mode.
  type: str
  returned: always
  sample: import image sha512-be38aae91bafd722115bc7b4781c78db from /srv/aci-xz.aci into systemd
id:
  description:
    - The image's id. Once the image is in the store, the whole id from ops's
      record, so a shortened ACI id is returned in full; otherwise as given.
    - Returned on failure too.
  type: str
  returned: always
  sample: sha512-be38aae91bafd722115bc7b4781c78dbcec9de2082bfda46199aa6fa2160f0bbaf7e851263554f693c59d93f68bca281c3c63aafbbc9cc882a5202d762ff93f4
runtime:
  description: The runtime, V(systemd) or V(podman). Returned on failure too.
  type: str
  returned: always
  sample: systemd
format:
  description:
    - The image's format, V(aci), V(oci) or V(docker).
    - V(null) when the image is not in the runtime (in check mode, one not
      imported yet).
  type: str
  returned: success
  sample: aci
location:
  description:
    - Where the image is, or would be. In the V(systemd) runtime its root
      filesystem in the store; in the V(podman) runtime podman's reference to
      it (C(localhost/ops-aci:sha512-<32 hex digits>) for an ACI, the hex
      digits of the config digest for an OCI or Docker image).
  type: str
  returned: success
  sample: /var/lib/ops/images/systemd/sha512-be38aae91bafd722115bc7b4781c78db/rootfs
size:
  description:
    - The image's size in bytes. In the V(systemd) runtime the bytes of file
      contents in the image; in the V(podman) runtime the size podman reports.
    - V(null) when the image is not in the runtime (in check mode, one not
      imported yet).
  type: int
  returned: success
  sample: 1982311
used_by:
  description: The deployed pod versions (C(pod/version)) that use the image in this runtime.
  type: list
  elements: str
  returned: success
  sample: [shop/2]
actions:
  description: What was done (in check mode, would be done); empty with no change.
  type: list
  elements: str
  returned: success
  sample:
    - import image sha512-be38aae91bafd722115bc7b4781c78db from /srv/aci-xz.aci into systemd
"""
