# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Documentation only: the module is a binary per machine (bin/<machine>/ in
# the built collection), run by the action of the same name (plugins/action/).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ops_facts
short_description: Everything ops has deployed on a host, as facts
description:
  - Sets C(ansible_facts.ops) to what ops has deployed under O(root) - every
    pod, each version with its state, units, images, volumes, ports and the
    names of its secret environment - and the images and ports they use.
  - Read-only. It takes no lock and writes nothing, and it reads only
    committed state, so facts taken while a deployment runs show the host
    before or after one of its steps, never half of it.
  - systemd is asked once, for every unit (C(systemctl list-units) by pattern),
    or not at all with O(units=false).
version_added: 0.1.0
author: ops developers (@ops)
options:
  pods:
    description:
      - Only these pods, and the images and ports they use.
      - A pod that is not deployed is reported as a warning.
    type: list
    elements: str
  units:
    description:
      - Ask systemd for the state of the units.
      - Without, each version's C(state) and each instance's C(active_state)
        and C(sub_state) are V(null).
    type: bool
    default: true
extends_documentation_fragment:
  - ops.onboard.binary_module
  - ops.onboard.store
  - ops.onboard.store.units
attributes:
  check_mode:
    support: full
    description: The same facts in check mode; nothing is ever changed.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
  facts:
    support: full
    description: Sets C(ansible_facts.ops).
notes:
  - Run it as a task, or as a fact module of C(gather_facts). C(gather_facts)
    runs its fact modules without their action, so name the binary of the
    host's machine, as in C(ansible_facts_modules=[ops.onboard.ops_facts_x86_64])
    (or C(ops_facts_aarch64)); on hosts with Python,
    C(ansible_facts_modules=[setup, ops.onboard.ops_facts_x86_64]) gathers both.
    Naming C(ops.onboard.ops_facts) there fails with "missing interpreter line".
  - The record of a pod is the one M(ops.onboard.ops_pod) returns as C(pod).
"""

EXAMPLES = r"""
- name: What is deployed here
  ops.onboard.ops_facts:

- name: Only the shop, without asking systemd
  ops.onboard.ops_facts:
    pods: [shop]
    units: false

- name: The http ports of shop's current version
  ansible.builtin.debug:
    msg: >-
      {{ ansible_facts.ops.pods.shop.versions[ansible_facts.ops.pods.shop.current].ports
         | selectattr('name', 'eq', 'http') | map(attribute='port') | list }}

- name: Fail unless every version of shop that should run does
  ansible.builtin.assert:
    that: ansible_facts.ops.pods.shop.versions[ansible_facts.ops.pods.shop.current].state == 'running'
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always
  type: dict
  contains:
    ops:
      description: What ops has deployed.
      returned: always
      type: dict
      contains:
        root:
          description: The store the facts were read from.
          type: str
          returned: always
          sample: /var/lib/ops
        pods:
          description:
            - By pod name, the pod's record. A bundle deployed under several names
              (M(ops.onboard.ops_pod)'s O(ops.onboard.ops_pod#module:name)) is one pod per
              deployment, each naming the bundle it came from.
          type: dict
          returned: always
          contains:
            name:
              description: The pod's name on the host (the deployment's).
              type: str
              returned: always
              sample: shop
            bundle_name:
              description: The bundle the current version (without one, the newest) was deployed from.
              type: str
              returned: always
              sample: shop
            current:
              description: The current version, or V(null).
              type: str
              returned: always
              sample: "2"
            previous:
              description: The version current before it, or V(null).
              type: str
              returned: always
              sample: "1"
            started:
              description: The pod has a current version and starts at boot (its target is enabled).
              type: bool
              returned: always
            target:
              description: The pod's systemd target.
              type: str
              returned: always
              sample: ops-shop.target
            slice:
              description: The pod's systemd slice.
              type: str
              returned: always
              sample: ops-shop.slice
            store:
              description: The pod's directory in the store.
              type: str
              returned: always
              sample: /var/lib/ops/pods/shop
            idle:
              description:
                - The pod is idle (M(ops.onboard.ops_pod) O(ops.onboard.ops_pod#module:state=idle)) - its current version
                  stopped, its ports armed so that a connection wakes it.
              type: bool
              returned: always
            woken_at:
              description: When a connection last woke the pod (a failed wake included), in seconds since the Unix epoch; V(null) if never.
              type: int
              returned: always
              sample: 1764756000
            ports:
              description: The pod's ports, each with the versions that use it.
              type: list
              elements: dict
              returned: always
              sample:
                - {name: http, instance: "1", port: 30000, kind: assigned, versions: ["1", "2"]}
            versions:
              description: By version, oldest first.
              type: dict
              returned: always
              contains:
                version:
                  description: The version.
                  type: str
                  returned: always
                bundle_name:
                  description:
                    - The bundle it was deployed from (its own name in C(pod.json)).
                    - The pod's name for a version deployed before ops recorded it.
                  type: str
                  returned: always
                current:
                  description: It is the current version.
                  type: bool
                  returned: always
                state:
                  description:
                    - V(running) (every unit ops starts is active), V(partial) (some
                      unit is up, not all), V(failed) (a unit failed), V(stopped)
                      (the current version, nothing up) or V(installed) (another
                      version, nothing up).
                    - V(null) with O(units=false).
                  type: str
                  returned: always
                  sample: running
                deployed_at:
                  description: When it was added to the store (seconds since the Unix epoch).
                  type: int
                  returned: always
                digest:
                  description: C(sha256:) of the validated pod and its unit files.
                  type: str
                  returned: always
                runtime:
                  description: Where its images are, V(systemd) or V(podman).
                  type: str
                  returned: always
                units:
                  description:
                    - Its units, each with its runnable instances.
                    - C(shipped_as) is the plain unit file name the bundle shipped (C(example.service)) when it gave
                      that unit instances, so ops installed it as its template C(name) (C(example@.service)); absent
                      otherwise.
                  type: list
                  elements: dict
                  returned: always
                  sample:
                    - name: web@.service
                      installed_as: shop-2-web@.service
                      start: true
                      image: null
                      instances:
                        - {unit: shop-2-web@1.service, instance: "1", active_state: active,
                           sub_state: running, enabled: true}
                images:
                  description: Ids of the images its units run in; where pod.json gave none, the id ops computed from
                    the file (downloaded for a C(uri)) when it added the version (its meta.json marks it C(computed)).
                  type: list
                  elements: str
                  returned: always
                volumes:
                  description: Its volumes.
                  type: list
                  elements: dict
                  returned: always
                  sample:
                    - {name: data, path: /var/lib/ops/pods/shop/2/volumes/data/data, mount: /srv/data,
                       read_only: false, digest: "sha256:...", entries: 12, bytes: 4096}
                ports:
                  description:
                    - The host ports it uses; C(kind) V(default) is the C(PORT) of a pod
                      that names no port (C(name) V(null)).
                  type: list
                  elements: dict
                  returned: always
                  sample:
                    - {name: http, instance: "1", port: 30000, kind: assigned}
                env_keys:
                  description: Names of its secret environment; the values are never returned.
                  type: list
                  elements: str
                  returned: always
                  sample: [API_TOKEN]
        images:
          description: The images in the store (with O(pods), those the pods use).
          type: list
          elements: dict
          returned: always
          sample:
            - {id: "sha512-...", runtime: systemd, format: aci, size: 1052672,
               location: /var/lib/ops/images/systemd/sha512-.../rootfs, used_by: [shop/2]}
        ports:
          description: By port number, who holds it.
          type: dict
          returned: always
          sample:
            "30000": {pod: shop, versions: ["1", "2"], name: http, instance: "1", kind: assigned}
"""
