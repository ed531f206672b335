"""Sixteen module runs at once, round after round, against a booted systemd
(issue 19, item 4). Run inside the sandbox (tests/systemd/sandbox) by
tests/reliability/concurrency:

    python3 concurrency_scenarios.py ROUNDS SEED

Pods alpha (two busybox httpd instances on ports assigned from
23000-23999), beta (a plain service) and gamma (a service in a busybox
image) each have versions 1, 2 and 3 installed, each version an empty
read-write volume `data`; pod delta (a plain service, an assigned port) is
deployed and taken away; pod shop is deployed from a release repository
that every round publishes a new version into. Each round launches 16
runs at the same moment (readers and a quarter of the others a moment
later, up to SPREAD seconds, so that they meet the changes under way):

  * 6 ops_pod: switches of alpha, beta and gamma to a random version; one
    of delta (state=absent, or started at version 1 or 2); a second run
    on one of the four (started or present: a pod asked twice); a deploy
    of shop's previous round's version from the repository (keep=3,
    which prunes);
  * 1 ops_pod in check mode (any of the five pods);
  * 2 ops_facts;
  * 2 ops_volume of a pod version's `data` from one of two archives, with
    replace (without, a volume that holds the other archive is refused by
    design); one of them in check mode half the time;
  * 2 ops_image present or absent of small images no pod uses;
  * 2 ops_release: one publishes the round's version of shop; the other
    asks the same (one of the two finds it done), or the same in check
    mode, or takes out the version of three rounds before;
  * 1 run of ops_pod, ops_volume or ops_image with lock_timeout=0: the
    only run allowed to fail, and only with the store lock's timeout.

After the round: every other result is a success; ops_facts reads the
store; each pod is as one of the round's runs asked (at that version, or
gone with its units and unit files), or as before when none asked; the
current version's units are active and no other version's; alpha's ports
answer as the current version; the port records match the versions that
hold the ports, none held twice; each volume holds exactly the archive
its record names; no `.ops-tmp` file, staging or trash entry, tip intent
is left in the store, unit directory or repository; the repository
publishes exactly the versions published and not taken out, every
release.json matching its files and tip naming one of them; and a rerun
of the request that won, per pod and per volume, is changed=false. Any
other outcome is a defect: every failed run of the round, or the first
flaw of the store, is printed with the round and the seed, and the exit
status is 1. The last line is the figures:

    FIGURE concurrency: R rounds x 16 runs, F failures, T lock timeouts asked
"""

import collections
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "systemd"))
sys.path.insert(0, str(HERE.parent / "images"))
import scenario_kit as kit  # noqa: E402
from scenario_kit import BIN_DIR, expect, page  # noqa: E402
import fixtures as image_fixtures  # noqa: E402

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
PORT_RANGE = "23000-23999"
PODS = ["alpha", "beta", "gamma"]
VERSIONS = ["1", "2", "3"]
SPARE_IMAGES = 3
CHANNEL, LABEL = "stable", "conc"
RUNS_PER_ROUND = 16
# A run that takes longer is taken for a deadlock (the lock waits 300 s).
RUN_TIMEOUT = 240
# Readers (ops_facts, check mode) and a quarter of the others start at a
# random moment within this many seconds of the round's start rather than
# with the rest: they then read while the runs queued on the lock change
# the store, not only before.
SPREAD = 3.0
LOCK_TIMEOUT_SAID = "another ops run holds the store lock"

HTTPD = """[Unit]
Description=web %i of pod alpha

[Service]
ExecStartPre=/bin/sh -c 'mkdir -p /run/conc-www/%n && echo "$POD_NAME $POD_VERSION %i" > /run/conc-www/%n/index.html'
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:${PORT_HTTP} -h /run/conc-www/%n
"""

IDLE = """[Unit]
Description=an idle service of pod beta

[Service]
ExecStart=/bin/sleep infinity
"""

IN_IMAGE = """[Unit]
Description=a service of pod gamma in the busybox image

[Service]
ExecStart=/bin/busybox sleep 3600
"""

DELTA = """[Unit]
Description=a service of pod delta, deployed and taken away

[Service]
ExecStart=/bin/sleep infinity
"""

SHOP = """[Unit]
Description=a released service of pod shop

[Service]
ExecStart=/bin/sleep infinity
"""


# ---------------------------------------------------------------- fixtures

def tar_bytes(files):
    """A plain tar of {name: bytes} under ./, reproducible."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        top = tarfile.TarInfo(".")
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, image_fixtures.MTIME
        tar.addfile(top)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, image_fixtures.MTIME
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_archives(work):
    """Two generations of a volume's contents: {file: (path, sha256, files)}."""
    archives = {}
    for generation in ("v1", "v2"):
        files = {"generation": f"{generation}\n".encode(),
                 f"only-in-{generation}": b"x" * (100 if generation == "v1" else 5000)}
        data = tar_bytes(files)
        path = work / f"{generation}.tar"
        path.write_bytes(data)
        archives[generation] = (path, "sha256:" + hashlib.sha256(data).hexdigest(), files)
    return archives


def write_aci(path, name, tree):
    """An ACI of `tree` (fixtures Entries) named `name`; its id."""
    f, d = image_fixtures.f, image_fixtures.d
    manifest = dict(image_fixtures.ACI_MANIFEST, name=name)
    rootfs = [image_fixtures.Entry("rootfs/" + e.path, e.kind, e.data, e.target, e.mode)
              for e in tree]
    data = image_fixtures.make_tar([f("manifest", json.dumps(manifest).encode()), d("rootfs")]
                                   + rootfs)
    path.write_bytes(data)
    return "sha512-" + hashlib.sha512(data).hexdigest()


def write_images(work):
    """The busybox image gamma runs in, and small images no pod uses."""
    busybox = write_aci(work / "busybox.aci", "example.com/busybox",
                        image_fixtures.base_tree(b"gamma\n"))
    spare = []
    for i in range(SPARE_IMAGES):
        path = work / f"spare-{i}.aci"
        tree = [image_fixtures.d("etc"), image_fixtures.f("etc/spare", f"spare {i}\n".encode())]
        spare.append((write_aci(path, f"example.com/spare-{i}", tree), path))
    return (busybox, work / "busybox.aci"), spare


def write_bundle(directory, pod, files=None):
    """A bundle: pod.json from `pod`, and {name: text or bytes} beside it."""
    directory.mkdir(parents=True)
    for name, content in (files or {}).items():
        target = directory / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    (directory / "pod.json").write_text(json.dumps(pod, indent=2))
    return directory


def pod_bundles(work, busybox):
    """{(pod, version): bundle directory} of alpha, beta, gamma and delta."""
    image_id, image_path = busybox
    volume = [{"name": "data", "path": "/srv/data"}]
    bundles = {}
    for version in VERSIONS:
        alpha = {"name": "alpha", "version": version, "volumes": volume,
                 "ports": {"http": "assign"},
                 "containers": [{"name": "web", "replication": 2,
                                 "systemd": {"unit-files": ["web@.service"]}}]}
        beta = {"name": "beta", "version": version, "volumes": volume,
                "containers": [{"name": "idle", "systemd": {"unit-files": ["idle.service"]}}]}
        gamma = {"name": "gamma", "version": version, "volumes": volume,
                 "images": [{"id": image_id, "path": "busybox.aci"}],
                 "containers": [{"name": "app", "image": image_id,
                                 "systemd": {"unit-files": ["app.service"]}}]}
        bundles["alpha", version] = write_bundle(work / f"alpha-{version}", alpha,
                                                 {"web@.service": HTTPD})
        bundles["beta", version] = write_bundle(work / f"beta-{version}", beta,
                                                {"idle.service": IDLE})
        bundles["gamma", version] = write_bundle(
            work / f"gamma-{version}", gamma,
            {"app.service": IN_IMAGE, "busybox.aci": image_path.read_bytes()})
        delta = {"name": "delta", "version": version, "ports": {"http": "assign"},
                 "containers": [{"name": "run", "systemd": {"unit-files": ["run.service"]}}]}
        bundles["delta", version] = write_bundle(work / f"delta-{version}", delta,
                                                 {"run.service": DELTA})
    return bundles


def shop_bundle(work, version, spare, archive):
    """Pod shop at `version`, to publish: an image and a volume archive
    (the same in every version, so the repository shares them)."""
    image_id, image_path = spare
    pod = {"name": "shop", "version": version,
           "images": [{"id": image_id, "path": "spare.aci"}],
           "volumes": [{"name": "conf", "path": "/srv/conf", "read-only": True,
                        "data": "conf.tar"}],
           "containers": [{"name": "shop", "systemd": {"unit-files": ["shop.service"]}}]}
    return write_bundle(work / f"shop-{version}", pod,
                        {"shop.service": SHOP, "spare.aci": image_path.read_bytes(),
                         "conf.tar": archive.read_bytes()})


# ---------------------------------------------------------------- running

def run_module(binary, check_mode=False, **args):
    """Run a module binary as Ansible does (like kit.module), bounded by
    RUN_TIMEOUT: a run still going then is reported as hung."""
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    args["_ansible_check_mode"] = check_mode
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=kit.WORK, delete=False) as f:
        json.dump(args, f)
    began = time.monotonic()
    try:
        proc = subprocess.run([str(BIN_DIR / binary), f.name], capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"died": True, "hung": True, "msg": f"still running after {RUN_TIMEOUT} s"}
    finally:
        os.unlink(f.name)
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        result = {"died": True, "returncode": proc.returncode,
                  "stdout": proc.stdout, "stderr": proc.stderr}
    result["seconds"] = round(time.monotonic() - began, 2)
    return result


class Request:
    """One module run of a round: what it asks, and what it got."""

    def __init__(self, binary, kind, check_mode=False, may_time_out=False, **args):
        self.binary, self.kind, self.check_mode = binary, kind, check_mode
        self.may_time_out, self.args, self.result = may_time_out, args, None
        self.delay = 0.0

    def run(self):
        time.sleep(self.delay)
        self.result = run_module(self.binary, check_mode=self.check_mode, **self.args)

    def succeeded(self):
        r = self.result
        return not r.get("failed") and not r.get("died")

    def timed_out(self):
        msg = self.result.get("msg", "")
        return self.result.get("failed") is True and msg.startswith(LOCK_TIMEOUT_SAID) \
            and "(lock_timeout)" in msg

    def rerun_args(self):
        return {k: v for k, v in self.args.items() if k != "lock_timeout"}

    def shown(self):
        return json.dumps({"module": self.binary, "check_mode": self.check_mode,
                           "args": self.args, "result": self.result}, indent=2, default=str)


def all_at_once(requests):
    """Start every request's run at the same moment; wait for them all."""
    barrier = threading.Barrier(len(requests))

    def go(request):
        barrier.wait()
        request.run()

    threads = [threading.Thread(target=go, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------- the world

class World:
    """What the test set up, and what it asked so far."""

    def __init__(self, work, rng):
        self.work, self.rng = work, rng
        self.archives = write_archives(work)
        self.busybox, self.spare = write_images(work)
        self.bundles = pod_bundles(work, self.busybox)
        self.repo = work / "repo"
        self.conf = work / "conf.tar"
        self.conf.write_bytes(tar_bytes({"hello.txt": b"shop conf\n"}))
        # The request that made each pod (and each volume) what it is.
        self.last = {}
        self.volume_last = {}
        self.published = {"0"}
        # (module, check mode or not, changed or not, lock timeout or not): runs.
        self.tally = collections.Counter()

    def pod_request(self, pod, version, state="started", **more):
        return Request("ops_pod", f"pod {pod}", bundle=self.bundles[pod, version],
                       state=state, port_range=PORT_RANGE, start_timeout=60, min_up_time=0,
                       **more)

    def shop_request(self, version, **more):
        return Request("ops_pod", "pod shop", repo=self.repo, channel=CHANNEL, label=LABEL,
                       name="shop", version=version, keep=3, port_range=PORT_RANGE,
                       start_timeout=60, min_up_time=0, **more)

    def publish_request(self, version):
        bundle = self.work / f"shop-{version}"
        if not bundle.exists():
            shop_bundle(self.work, version, self.spare[0], self.conf)
        return Request("ops_release", "release", repo=self.repo, bundle=bundle,
                       channel=CHANNEL, label=LABEL)

    def volume_request(self, **more):
        pod, version = self.rng.choice(PODS), self.rng.choice(VERSIONS)
        generation = self.rng.choice(sorted(self.archives))
        path = self.archives[generation][0]
        return Request("ops_volume", f"volume {pod} {version}", pod=pod, version=version,
                       name="data", data=path, replace=True, **more)

    def image_request(self, **more):
        image_id, path = self.rng.choice(self.spare[1:])
        if self.rng.random() < 0.5:
            return Request("ops_image", "image", id=image_id, path=path, **more)
        return Request("ops_image", "image", id=image_id, state="absent", **more)

    def setup(self):
        """Every version of alpha, beta and gamma installed (3 current),
        shop published as version 0 and deployed from the repository."""
        for pod in PODS:
            for version in VERSIONS:
                request = self.pod_request(pod, version)
                request.run()
                expect(request.succeeded(), f"setup: {pod} {version} deploys", request.result)
                self.last[pod] = request
        delta = self.pod_request("delta", "1")
        delta.run()
        expect(delta.succeeded(), "setup: delta 1 deploys", delta.result)
        self.last["delta"] = delta
        publish = self.publish_request("0")
        publish.run()
        expect(publish.succeeded(), "setup: shop 0 is published", publish.result)
        shop = self.shop_request("0")
        shop.run()
        expect(shop.succeeded(), "setup: shop 0 deploys from the repository", shop.result)
        self.last["shop"] = shop

    def round_requests(self, number):
        """The 16 runs of round `number`."""
        rng = self.rng
        requests = [self.pod_request(pod, rng.choice(VERSIONS)) for pod in PODS]
        requests.append(self.delta_request())
        requests.append(self.second_pod_request())
        requests.append(self.check_mode_deploy(number))
        requests.append(self.shop_request(str(number)))
        requests += [Request("ops_facts", "facts") for _ in range(2)]
        requests.append(self.volume_request())
        requests.append(self.volume_request())
        requests[-1].check_mode = rng.random() < 0.5
        requests += [self.image_request() for _ in range(2)]
        requests.append(self.publish_request(str(number + 1)))
        requests.append(self.second_release_request(number))
        requests.append(self.asked_lock_timeout())
        expect(len(requests) == RUNS_PER_ROUND, f"{RUNS_PER_ROUND} runs a round: {len(requests)}")
        for request in requests:
            if request.binary == "ops_facts" or request.check_mode or rng.random() < 0.25:
                request.delay = rng.uniform(0, SPREAD)
        rng.shuffle(requests)
        return requests

    def delta_request(self, **more):
        """Pod delta taken away, or deployed again at version 1 or 2."""
        if self.rng.random() < 0.4:
            return Request("ops_pod", "pod delta", name="delta", state="absent", **more)
        return self.pod_request("delta", self.rng.choice(VERSIONS[:2]), **more)

    def second_pod_request(self):
        """A second run on one of the pods: started or present, or delta."""
        pod = self.rng.choice(PODS + ["delta"])
        if pod == "delta":
            return self.delta_request()
        return self.pod_request(pod, self.rng.choice(VERSIONS),
                                state=self.rng.choice(["started", "present"]))

    def check_mode_deploy(self, number):
        """A check-mode switch of a pod, or of shop to this round's version."""
        pod = self.rng.choice(PODS + ["shop", "delta"])
        if pod == "shop":
            request = self.shop_request(str(number))
        elif pod == "delta":
            request = self.delta_request()
        else:
            request = self.pod_request(pod, self.rng.choice(VERSIONS))
        request.check_mode = True
        return request

    def second_release_request(self, number):
        """The round's publish again (one of the two finds it done), in
        check mode, or the removal of an old version no one deploys."""
        request = self.publish_request(str(number + 1))
        choice = self.rng.randrange(3)
        if choice == 1:
            request.check_mode = True
        elif choice == 2 and number >= 3:
            request = Request("ops_release", "release", repo=self.repo, channel=CHANNEL,
                              label=LABEL, name="shop", version=str(number - 3), state="absent")
        return request

    def asked_lock_timeout(self):
        """A run that gives up at once when another holds the lock."""
        which = self.rng.randrange(4)
        if which == 0:
            request = self.pod_request(self.rng.choice(PODS), self.rng.choice(VERSIONS),
                                       lock_timeout=0)
        elif which == 3:
            request = self.delta_request(lock_timeout=0)
        elif which == 1:
            request = self.volume_request(lock_timeout=0)
        else:
            request = self.image_request(lock_timeout=0)
        request.may_time_out = True
        return request


# ---------------------------------------------------------------- checks

class Defect(AssertionError):
    """Something a round left that must not be; `failures` counts the
    failed runs (or 1, for a flaw of the store)."""

    def __init__(self, message, failures=1):
        super().__init__(message)
        self.failures = failures


def judge(world, requests):
    """Each result a success, or an asked lock timeout; their count.
    Raises Defect naming every failed run."""
    timeouts, failed = 0, []
    for request in requests:
        timed_out = not request.succeeded() and request.may_time_out and request.timed_out()
        world.tally[request.binary, request.check_mode, request.result.get("changed") is True,
                    timed_out] += 1
        if timed_out:
            timeouts += 1
        elif not request.succeeded():
            failed.append(request)
    if failed:
        raise Defect(f"{len(failed)} runs failed:\n" + "\n".join(r.shown() for r in failed),
                     len(failed))
    return timeouts


def current(pod):
    link = ROOT / "pods" / pod / "current"
    return os.readlink(link) if link.is_symlink() else None


def units_of(pod, version):
    names = {"alpha": ["web@1", "web@2"], "beta": ["idle"], "gamma": ["app"], "shop": ["shop"],
             "delta": ["run"]}
    return [f"{pod}-{version}-{n}.service" for n in names[pod]]


def active_units(pod):
    listed = subprocess.run(["systemctl", "list-units", "--state=active", "--plain", "--no-legend",
                             f"{pod}-*.service"], capture_output=True, text=True).stdout
    return sorted(line.split()[0] for line in listed.splitlines() if line.strip())


def asked_version(request):
    """The version a run asks to be current: None for state=absent."""
    if request.args.get("state") == "absent":
        return None
    return request.args.get("version") or request.args["bundle"].name.split("-")[1]


def check_pod(world, pod, requests, before):
    """The pod is as one of the round's runs asked (at that version, or
    gone), or as before when none asked; that run is the pod's last."""
    asked = [r for r in requests if r.kind == f"pod {pod}" and not r.check_mode
             and r.succeeded() and r.args.get("state", "started") in ("started", "absent")]
    now = current(pod)
    if asked:
        winners = [r for r in asked if asked_version(r) == now]
        if not winners:
            raise Defect(f"pod {pod} is at version {now}, which none of this round's runs asked: "
                         + "; ".join(r.shown() for r in asked))
        world.last[pod] = winners[-1]
    elif now != before:
        raise Defect(f"pod {pod} went from version {before} to {now} though no run asked it")
    if now is None:
        files = sorted(p.name for p in UNIT_DIR.glob(f"*{pod}*"))
        if (ROOT / "pods" / pod).exists() or files:
            raise Defect(f"pod {pod} was taken away, yet its store is "
                         f"{'there' if (ROOT / 'pods' / pod).exists() else 'gone'}, "
                         f"its unit files {files}")
    want = sorted(units_of(pod, now)) if now else []
    got = active_units(pod)
    if got != want:
        raise Defect(f"pod {pod} at version {now}: active units {got}, expected {want}")


def check_ports(facts):
    """Each port record names the pod and versions the store says hold
    the port; no port is held twice."""
    held = {}
    for pod, about in facts["ansible_facts"]["ops"]["pods"].items():
        for port in about["ports"]:
            if port["port"] in held:
                raise Defect(f"port {port['port']} is held by {held[port['port']][0]} and {pod}")
            held[port["port"]] = (pod, sorted(port["versions"]))
    records = {}
    for path in (ROOT / "ports").iterdir():
        fields = dict(line.split(": ", 1) for line in path.read_text().splitlines()
                      if ": " in line and not line.startswith("#"))
        records[int(path.name)] = (fields.get("pod"), sorted(fields.get("versions", "").split()))
    if records != held:
        raise Defect(f"port records {records} disagree with the store's versions {held}")


def check_alpha_serves(result):
    version = current("alpha")
    for port in result.get("ports", []):
        got = page(port["port"])
        want = f"alpha {version} {port['instance']}"
        if got != want:
            raise Defect(f"port {port['port']} answers {got!r}, expected {want!r}")


def check_volumes(world):
    """Each `data` volume holds exactly the archive its record names."""
    by_digest = {digest: (name, files) for name, (_, digest, files) in world.archives.items()}
    for pod in PODS:
        for version in VERSIONS:
            top = ROOT / "pods" / pod / version / "volumes" / "data"
            record = json.loads((top / "volume.json").read_text())
            data = top / "data"
            found = {str(p.relative_to(data)): p.read_bytes() for p in data.rglob("*")}
            digest = record.get("digest")
            if digest is None:
                if found:
                    raise Defect(f"{data} is recorded empty but holds {sorted(found)}")
                continue
            if digest not in by_digest:
                raise Defect(f"{top}/volume.json names digest {digest}, not an archive asked")
            name, files = by_digest[digest]
            if found != {k: v for k, v in files.items()}:
                raise Defect(f"{data} does not hold archive {name}: {sorted(found)}")
            world.volume_last[pod, version] = Request(
                "ops_volume", f"volume {pod} {version}", pod=pod, version=version, name="data",
                data=world.archives[name][0], replace=True)


def leftovers():
    """Temporary files, staging and trash entries, tip intents anywhere."""
    found = []
    for top in (ROOT, UNIT_DIR, kit.WORK / "repo"):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                if ".ops-tmp" in name or name == ".tip-intent":
                    found.append(os.path.join(dirpath, name))
    for where in ("staging", "trash"):
        if (ROOT / where).is_dir():
            found += [str(p) for p in (ROOT / where).iterdir()]
    return found


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_file(path, record, what):
    if not Path(path).is_file():
        raise Defect(f"{what}: {path} is missing")
    size, digest = Path(path).stat().st_size, sha256_file(path)
    if (size, digest) != (record["size"], record["sha256"]):
        raise Defect(f"{what}: {path} is {size} bytes, sha256 {digest}; release.json says "
                     f"{record['size']} bytes, sha256 {record['sha256']}")


def verify_repo(repo):
    """Every release.json matches its pod.json and files; tip names a
    published version. Returns the published versions."""
    published = []
    pods = repo / "channels" / CHANNEL / LABEL / "shop"
    for release in sorted(pods.glob("*/release.json")):
        version_dir = release.parent
        if version_dir.is_symlink():
            continue  # tip
        record = json.loads(release.read_text())
        what = f"release {version_dir.name}"
        check_file(version_dir / "pod.json", record["pod.json"], what)
        for name, file in record["files"].items():
            check_file(version_dir / name, file, what)
            if file.get("artifact"):
                check_file(repo / file["artifact"], file, what)
        published.append(version_dir.name)
    tip = pods / "tip"
    if not (tip.is_symlink() and os.readlink(tip) in published):
        raise Defect(f"tip {os.readlink(tip) if tip.is_symlink() else 'missing'} names no "
                     f"published version of {published}")
    return published


def check_facts():
    facts = run_module("ops_facts")
    if facts.get("failed") or facts.get("died"):
        raise Defect(f"ops_facts fails after the round: {json.dumps(facts, indent=2)}")
    return facts


def rerun_is_no_change(request, what):
    again = Request(request.binary, request.kind, **request.rerun_args())
    again.run()
    if not again.succeeded() or again.result.get("changed") is not False:
        raise Defect(f"a rerun of {what} is not changed=false:\n{again.shown()}")
    return again.result


def check_round(world, number, requests, before):
    """Everything the round must leave; raises Defect at the first flaw."""
    check_ports(check_facts())
    for pod in PODS + ["delta"]:
        check_pod(world, pod, requests, before[pod])
    if current("shop") != str(number):
        raise Defect(f"shop is at version {current('shop')}, asked {number}")
    if active_units("shop") != units_of("shop", number):
        raise Defect(f"shop's active units are {active_units('shop')}")
    world.last["shop"] = next(r for r in requests if r.kind == "pod shop")
    check_volumes(world)
    left = leftovers()
    if left:
        raise Defect(f"left behind: {left[:10]}")
    world.published.add(str(number + 1))
    for request in requests:
        if request.kind == "release" and request.args.get("state") == "absent" \
                and request.result.get("changed"):
            world.published.discard(request.args["version"])
    published = verify_repo(world.repo)
    if sorted(published) != sorted(world.published):
        raise Defect(f"the repository publishes {sorted(published)}, expected "
                     f"{sorted(world.published)}")
    for pod, request in world.last.items():
        result = rerun_is_no_change(request, f"the last request of pod {pod}")
        if pod == "alpha":
            check_alpha_serves(result)
    for (pod, version), request in world.volume_last.items():
        rerun_is_no_change(request, f"volume data of {pod} {version}")
    if leftovers():
        raise Defect(f"the reruns left behind: {leftovers()[:10]}")


def did_work(world, rounds):
    """The rounds changed things, not only looked: switches, replaced
    volumes, images in and out, publishes (with a few rounds, each kind
    of change happens; with none, the test would prove nothing)."""
    if rounds < 5:
        return
    for binary in ("ops_pod", "ops_volume", "ops_image", "ops_release"):
        if not world.tally[binary, False, True, False]:
            raise Defect(f"no {binary} run changed anything in {rounds} rounds")


# ---------------------------------------------------------------- main

def main(rounds, seed):
    work = kit.start("ops-concurrency-")
    world = World(work, random.Random(seed))
    timeouts = failures = done = 0
    began, slowest = time.monotonic(), 0.0
    try:
        world.setup()
        print(f"setup in {time.monotonic() - began:.0f} s")
        began = time.monotonic()
        for number in range(rounds):
            requests = world.round_requests(number)
            before = {pod: current(pod) for pod in PODS + ["delta"]}
            all_at_once(requests)
            slowest = max([slowest] + [r.result.get("seconds", 0) for r in requests])
            timeouts += judge(world, requests)
            check_round(world, number, requests, before)
            done += 1
        did_work(world, rounds)
    except Defect as defect:
        failures += defect.failures
        print(f"round {done} (seed {seed}): {defect}")
    except AssertionError as error:
        failures += 1
        print(f"setup (seed {seed}): {error}")
    seconds = time.monotonic() - began
    print(f"{done} rounds in {seconds:.0f} s ({seconds / max(done, 1):.1f} s a round, "
          f"slowest run {slowest:.1f} s), seed {seed}")
    for (binary, check_mode, changed, timed_out), n in sorted(world.tally.items()):
        what = "lock timeout" if timed_out else f"changed={str(changed).lower()}"
        print(f"  {binary}{' (check mode)' if check_mode else ''}: {n} runs {what}")
    print(f"FIGURE concurrency: {done} rounds x {RUNS_PER_ROUND} runs, {failures} failures, "
          f"{timeouts} lock timeouts asked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
