# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Documentation only: the module is a binary per machine (bin/<machine>/ in
# the built collection), run by the action of the same name (plugins/action/).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ops_pod
short_description: Deploy, start, stop, switch, roll back and remove versions of a pod
description:
  - Brings one version of a pod to O(state). The version comes from a bundle
    already on the target (O(bundle), a directory holding C(pod.json) and
    every file it names), from a release repository (O(repo), published with
    M(ops.onboard.ops_release); by O(channel), O(label), O(name) and
    O(version), C(tip) by default), or is one already in the store, picked
    by O(name) and O(version).
  - Each version is kept in the store under O(root) (C(pods/<name>/<version>/))
    and its unit files are installed in O(unit_dir) under versioned names
    (C(<pod>-<version>-<unit>), for example C(shop-2-web@.service)), so
    versions sit side by side. A plain unit the bundle gives instances
    (C(replication) V([8080, 8081]) with C(example.service)) is installed as
    its template (C(example-1001-example@.service)), one instance each.
    C(ops-<pod>.target) wants every installed
    version's units and, while the pod is started, brings them back after a
    reboot; C(current) alone decides which start (each version's units carry
    C(ConditionPathExists=<root>/pods/<pod>/current/is-version-<version>)),
    so a power cut at any moment boots the version the store calls current. Versions are immutable - the same version with other content is
    refused, its volume data included (a volume archive by path other than
    the one the version was deployed with; an archive by URI counts as the
    same data while its URI is the same) - give a new version, or load new
    data with M(ops.onboard.ops_volume) (O(ops.onboard.ops_volume#module:replace=true)).
  - O(state=started) makes the version current, starts its units, waits until
    each is up (and stays up for O(min_up_time)) within O(start_timeout),
    then stops every other version's units. If the new version does not
    come up and O(rollback=true),
    everything is put back and the task fails with the unit's state and its
    last journal lines in RV(msg).
  - A failure after the run began changing the host (a unit that does not
    come up, an image that cannot be had, a refused volume archive) is
    undone step by step; RV(msg) gives the real cause first, then what was
    undone, then what could not be. RV(actions) are the steps really done
    (the undo's marked C(undo:)), RV(current) is the host's, and C(changed)
    is false when everything was undone.
  - The images a bundle lists and the runtime lacks are imported first, as
    M(ops.onboard.ops_image) does, and a new version's volumes are built
    from their archives before it is added. An image is removed with the
    last version that uses it.
  - An image may leave out its C(id), in either shape - ops computes it from the file,
    records it, and warns that nothing pinned the image unless a C(signature) verified it; a unit names such an
    image by its C(path) or C(uri). An image given by C(path) is read (check mode too); one given by C(uri) is
    downloaded by a real run only, under the lock, into the store's staging (always removed), before it plans.
    Check mode downloads nothing and says the id is unknown until downloaded. A rerun of a stored version with
    the same C(uri) uses the recorded id and downloads nothing.
  - The pod's named ports get a host port for each instance, fixed or
    assigned from O(port_range). A pod that names no port gets a default one
    (C(PORT), kind V(default)) for each instance. A new version gets the ports
    its pod already holds for the same name and instance, so a switch or a
    rollback moves no client.
  - Instances listed as numbers from 1024 to 65535 (C(replication) V([8080, 8081]))
    are ports too - each instance's C(PORT) is its name, and the port is held;
    other instance names (V([1, 2]), a count) hold no port.
  - A rerun reports no change and does nothing, not even take the lock.
    Changes are serialized by a lock on C(<root>/lock), and are ordered so
    that a crash leaves the running version running and a rerun converges.
  - New unit files are checked with C(systemd-analyze verify) before anything
    is written.
  - A unit file may be given by V(http://), V(https://) or V(file://) URI - fetched to plan,
    check mode too (at most 1 MiB), stored with the version and pinned - a rerun with the same URI fetches nothing.
version_added: 0.1.0
author: ops developers (@ops)
options:
  bundle:
    description:
      - Path to a bundle directory or its C(pod.json), on the target.
      - The pod's name and version are taken from it.
      - Mutually exclusive with O(repo).
    type: path
  repo:
    description:
      - A release repository to deploy from instead of a bundle, as
        M(ops.onboard.ops_release) lays it out - a directory on the target,
        or the V(http://) or V(https://) URL of one served by any static
        HTTP server that follows symlinks (nginx, Apache, C(python3 -m
        http.server), busybox httpd).
      - The version is found at
        C(channels/<channel>/<label>/<name>/<version>/); O(version=tip) (the
        default) takes the version the channel's C(tip) links to, read once
        per run, and RV(tip) says which it was.
      - In a directory, the version's links may lead anywhere inside the
        repository, never outside it.
      - Over HTTP only C(release.json), C(pod.json) and the unit files are
        fetched to plan (each at most 1 MiB; that is all check mode fetches);
        an image is downloaded only when the runtime lacks its id and a
        volume archive only when the version is new to the host, so a rerun
        downloads no artifact again.
      - Every file is checked against the release's C(release.json) (which
        must name that pod, version, channel and label) - C(pod.json) and the
        unit files before anything is done, volume archives as they are
        extracted (a mismatch is undone and refused) - and images against
        their ids, signatures as for a bundle.
      - Needs O(name) and O(channel).
    type: str
  channel:
    description:
      - The repository's channel to deploy from (C(staging), C(stable)...).
    type: str
  label:
    description:
      - The pod's label path in the repository - segments of lowercase
        letters, digits, C(.), C(_) or C(-), joined by C(/) - or none.
    type: str
  name:
    description:
      - Name of the pod on the host.
      - With O(bundle) or O(repo), the deployment's name, the bundle's own name
        when left out. A bundle deployed under another name (C(myapp-staging),
        C(myapp-production)) is a pod of that name - its own store entry,
        versions, units (C(<name>-<version>-<unit>)), target, slice, ports,
        environment, rollback and pruning - and its units get C(POD_NAME)
        (the deployment's name) and C(POD_BUNDLE) (the bundle's). A deployment
        holds versions of one bundle; another bundle under its name is refused.
      - Without them, the pod (deployment) to act on.
      - One of O(bundle), O(repo) or O(name) is required.
    type: str
  bundle_name:
    description:
      - The pod's name in the bundle or the repository; defaults to O(name).
      - With O(repo), it picks the repository's pod, deployed as O(name).
      - With O(bundle), it must be the bundle's own name (refused otherwise).
    type: str
  version:
    description:
      - Version of the pod. Without O(bundle) or O(repo), it must be in the
        store.
      - With O(repo), the version to deploy from the repository, or V(tip)
        (the default) for the one the channel's C(tip) links to.
      - Taken from the bundle when O(bundle) is given; if given too, it must
        agree.
      - Left out without O(bundle), the current version; with O(state=absent),
        every version.
    type: str
  state:
    description:
      - What the version should be.
      - V(started) makes it current, starts it and stops the other versions.
        A running version whose unit files or O(env) change is restarted.
      - V(present) installs it without starting, stopping or switching
        anything.
      - V(stopped) stops it (and, for the current version, the pod's target
        and its start at boot).
      - V(restarted) restarts it (making it current, as V(started) does).
      - V(absent) removes it, refusing the current version while it is
        started. Without O(version), every version is removed - units,
        target, slice and store directory (and the units of an idle pod).
      - V(idle) stops the current version (O(version), when given, must be
        it) and marks the pod idle; its ports stay held, and each port of
        the version (all TCP; a pod that declares none has its default ports)
        is armed with a systemd socket unit (on the addresses the running
        version listened on, e.g. only 127.0.0.1; on every address when it
        listened on all, or was not running, with a warning then), so that a
        connection wakes the pod - its version starts again, as V(started)
        starts it, and the pod is no longer idle. The first connection may be
        refused while the pod starts; within O(start_timeout) of it, and
        usually within the version's start time plus a second, clients are
        served. An idle pod stays idle across a reboot (armed, not started).
        A wake whose version does not come up leaves the pod as a failed
        V(started) would - not idle, started at boot, its version failed,
        C(woken_at) set; C(journalctl -u ops-<pod>:wake.service) says why.
        Only a version deployed by an older ops that gave no default port has
        no ports, and is refused (use V(stopped)).
        V(started) or V(restarted) un-idles it, V(stopped) disarms it and
        leaves it stopped, V(present) leaves it idle. See the README's
        "Idle and wake".
    type: str
    choices: [present, started, stopped, restarted, absent, idle]
    default: started
  keep:
    description:
      - Prune the oldest versions beyond this many, never the current one nor
        the one the task acts on.
      - From 0 to 10000; any other value is refused.
    type: int
  env:
    description:
      - The version's secret environment, as variable names and values.
      - Written with mode C(0600) and given to every unit of the version;
        values are never returned, not even in the diff (only the names).
      - Values reach the units exactly as given, control characters
        included; a value with a NUL character, or a C(NAME=value) over
        131071 bytes, is refused, naming the variable.
      - Left out, the version's environment is kept as it is; V({}) removes
        it.
      - Left out for a new version, the current version's secret environment
        is carried over to it (the action names the variables, never the
        values), so an upgrade does not drop it; give V({}) for a new
        version without one. A stored version switched back to keeps its
        own.
    type: dict
  start_timeout:
    description:
      - Seconds to wait for the units to come up, from 0 to 604800 (one week).
    type: int
    default: 60
  min_up_time:
    description:
      - Seconds each started unit must stay up (active, and not restarted by
        systemd) to count as up, within O(start_timeout). A C(Type=simple)
        service is active as soon as it is forked; this window catches one
        that dies right after starting, and rolls back.
      - C(0) takes systemd's word as soon as the start job is done (active, or
        ready for C(Type=notify)) - the fastest, and what a C(systemd_service)
        task does; a service that dies a moment later then counts as up.
      - From 0 to 604800 (one week).
    type: int
    default: 1
  rollback:
    description:
      - Go back to the previous version when the new one does not come up.
      - With V(false), the new version stays current, as it is, and the old
        one keeps running - unless the two share ports; then the old one was
        stopped before the new one started, stays stopped, and RV(msg) says
        so. The old one runs only until it is next stopped (a reboot, a
        restart of the pod's target) - as it is not current, it does not
        start again.
    type: bool
    default: true
  runtime:
    description:
      - Where the pod's images go. V(systemd) unpacks them in the store and
        runs units in them with C(RootDirectory=); with V(podman), units run
        C(podman run ... ${OPS_IMAGE}).
      - Default - the version's own runtime, V(systemd) for a new version.
        Another runtime for a deployed version with images is refused.
    type: str
    choices: [systemd, podman]
  keyring:
    description:
      - Trusted public keys for the signatures of the pod's images.
      - Needed when an image of the bundle has a signature.
    type: path
  require_signature:
    description: Refuse an image of the pod that has no valid signature.
    type: bool
    default: false
  download_timeout:
    description:
      - Seconds an image download may take, from 0 to 604800 (one week); also bounds the download of an image
        given by URI without an id, to compute it.
    type: int
    default: 600
  ports:
    description:
      - Named ports laid over the bundle's, by name - a dict of name to a
        port number or V(assign), or a list of names to assign, or names to
        assign in one text separated by commas (V(driver, cluster, web)).
      - A port given as text of digits, as a template makes it, counts as a
        number.
      - Only for a version being added, from O(bundle) or O(repo); a stored
        version keeps the ports it was deployed with, and a rerun of its
        bundle with O(ports) that change them is refused (versions are
        immutable).
      - An empty text is refused, not read as no override; leave the option
        out (C(default(omit))).
    type: raw
  port_range:
    description: Where assigned ports come from, as C(LOW-HIGH).
    type: str
    default: 30000-32767
extends_documentation_fragment:
  - ops.onboard.binary_module
  - ops.onboard.store
  - ops.onboard.store.units
  - ops.onboard.store.lock
attributes:
  check_mode:
    support: full
    description:
      - The same plan, listed in RV(actions); nothing is written anywhere (no
        store, lock or daemon-reload).
  diff_mode:
    support: full
    description:
      - Every unit file and drop-in before and after, the files of
        C(<root>/ports/) added and removed, and a summary of the current and
        previous version, start at boot and the versions kept.
notes:
  - Binary modules need an executable remote tmp (the launcher that runs
    the cached binary runs from there).
  - The result's RV(pod) is the record M(ops.onboard.ops_facts) returns under
    C(ansible_facts.ops.pods.<name>).
  - To check a bundle before any host sees it (on the controller, in CI),
    run the collection's binary of that machine as
    C(bin/<machine>/ops_pod --validate BUNDLE); it checks what this module
    checks before it deploys, and each image and volume archive whole,
    writing nothing. C(docs/writing-a-bundle.md) in the collection shows
    how to make a bundle and check it.
seealso:
  - module: ops.onboard.ops_facts
  - module: ops.onboard.ops_image
  - module: ops.onboard.ops_volume
"""

EXAMPLES = r"""
- name: Deploy shop 2 (the bundle was copied to the host first)
  ops.onboard.ops_pod:
    bundle: /srv/bundles/shop-2
    env:
      API_TOKEN: "{{ vault_shop_token }}"
    keep: 3
  register: deployed

- name: Roll back shop to the version before, by name and version
  ops.onboard.ops_pod:
    name: shop
    version: "{{ deployed.previous }}"

- name: Stop shop's current version
  ops.onboard.ops_pod:
    name: shop
    state: stopped

- name: Idle shop until a connection to one of its ports wakes it
  ops.onboard.ops_pod:
    name: shop
    state: idle

- name: Remove every version of shop
  ops.onboard.ops_pod:
    name: shop
    state: absent

- name: Deploy with http on a fixed port and admin assigned from a narrower range
  ops.onboard.ops_pod:
    bundle: /srv/bundles/shop-3/pod.json
    ports:
      http: 8080
      admin: assign
    port_range: 31000-31999

- name: Roll one bundle out as two deployments, each with its own name, environment and ports
  ops.onboard.ops_pod:
    bundle: /srv/bundles/myapp-2
    name: "{{ item.name }}"           # POD_NAME; POD_BUNDLE is myapp
    env: "{{ item.env }}"
    ports: "{{ item.ports | default(omit) }}"   # staging: assigned; production: http fixed
  loop:
    - {name: myapp-staging, env: {DATABASE_URL: "{{ vault_staging_db }}"}}
    - {name: myapp-production, env: {DATABASE_URL: "{{ vault_production_db }}"}, ports: {http: 8080}}
  loop_control:
    label: "{{ item.name }}"

- name: Roll back myapp-staging alone (myapp-production is not touched)
  ops.onboard.ops_pod:
    name: myapp-staging
    version: "1"

- name: Deploy the tip of myapp's stable channel as myapp-staging
  ops.onboard.ops_pod:
    repo: http://releases.example.com/repo
    channel: stable
    bundle_name: myapp
    name: myapp-staging

- name: Deploy the tip of shop's stable channel from a repository over HTTP
  ops.onboard.ops_pod:
    repo: http://releases.example.com/repo
    channel: stable
    label: web
    name: shop
  register: deployed   # deployed.tip: the version tip named

- name: Roll shop back to version 1 of the same channel
  ops.onboard.ops_pod:
    repo: http://releases.example.com/repo
    channel: stable
    label: web
    name: shop
    version: "1"

- name: Run the images in podman, signed by a trusted key
  ops.onboard.ops_pod:
    bundle: /srv/bundles/shop-4
    runtime: podman
    keyring: /etc/ops/trusted.asc
    require_signature: true
"""

RETURN = r"""
msg:
  description:
    - The actions taken, joined with semicolons, or V(nothing to do);
      prefixed with C(check mode:) in check mode.
    - On failure, the real cause first (when the new version did not come
      up, its unit's state and last journal lines), then what was undone,
      then anything the undo could not undo.
  type: str
  returned: always
  sample: "add version 2 of pod shop to the store; ...; stop shop-1-web@1.service shop-1-web@2.service"
name:
  description: The pod's name on the host (the deployment's).
  type: str
  returned: always
  sample: shop
version:
  description: The version acted on; V(null) when every version was removed.
  type: str
  returned: always
  sample: "2"
current:
  description: The pod's current version after the run, or V(null).
  type: str
  returned: always
  sample: "2"
previous:
  description: The version current before it, or V(null).
  type: str
  returned: always
  sample: "1"
actions:
  description:
    - The steps taken (in check mode, that would be taken), in order, in words.
    - After a failure, the steps really done, then those of the undo,
      each prefixed with C(undo:).
  type: list
  elements: str
  returned: always
  sample:
    - add version 2 of pod shop to the store
    - write the environment file of version 2
    - install shop-2-web@.service
    - daemon-reload
    - make version 2 current
    - start shop-2-web@1.service shop-2-web@2.service (up)
    - stop shop-1-web@1.service shop-1-web@2.service
ports:
  description:
    - The pod's ports after the run (in check mode, as they would be), each
      with the versions that use it.
    - C(name) is V(null) for an instance's own port and for the default port,
      C(instance) V(null) for a plain unit; C(kind) is V(fixed), V(assigned),
      V(instance) or V(default) (the C(PORT) of a pod that names no port).
  type: list
  elements: dict
  returned: always
  sample:
    - {name: http, instance: "1", port: 30000, kind: assigned, versions: ["1", "2"]}
tip:
  description: With O(repo) and O(version=tip), the version the channel's tip named; else V(null).
  type: str
  returned: always
  sample: "2"
release:
  description: With O(repo), where the version was read (its directory or URL, without credentials); else V(null).
  type: str
  returned: always
  sample: http://releases.example.com/repo/channels/stable/web/shop/2
pod:
  description:
    - The pod's record after the run (in check mode, as it is), the one
      M(ops.onboard.ops_facts) returns under C(ansible_facts.ops.pods.<name>),
      so it also holds C(name), C(current), C(previous) (as RV(name), RV(current),
      RV(previous)), C(target), C(slice) and C(store).
    - V(null) when nothing of the pod is deployed.
  type: dict
  returned: always
  contains:
    started:
      description: The pod has a current version and starts at boot (its target is enabled).
      type: bool
      returned: always
    bundle_name:
      description: The bundle the current version (without one, the newest) was deployed from.
      type: str
      returned: always
    ports:
      description: The pod's ports, as RV(ports).
      type: list
      elements: dict
      returned: always
    versions:
      description:
        - By version, oldest first, each with its C(bundle_name), C(state), C(units),
          C(images), C(volumes), C(ports) and C(env_keys) (the names of its
          secret environment, never the values).
        - See M(ops.onboard.ops_facts) for every field.
      type: dict
      returned: always
"""
