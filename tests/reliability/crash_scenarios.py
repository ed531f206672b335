"""Crash injection at every step, against a booted systemd and podman: run
inside the sandbox (tests/systemd/sandbox) by tests/reliability/crash.

    python3 crash_scenarios.py points OPERATION...   # a SIGKILL at each point
    python3 crash_scenarios.py random KIND...        # SIGKILLs at random times

The binaries (OPS_BIN_DIR) are built with the test-only cargo feature
`crash-points` (library/src/crash.rs): each durable step (a write, rename,
symlink swap, removal, sync) and each external program (systemctl, podman)
is a numbered point; `OPS_CRASH_LOG` lists them, `OPS_CRASH_AT=n` kills the
process by SIGKILL just before point n's step.

`points`: for each operation (deploy, switch, prune, absent, image import
into each runtime, image removal, volume replace, publish) the request runs
once with the log, which enumerates its points; then, for each point n,
from a fresh before-state (a root, pod name and repository of its own,
so no slow cleanup stands between points; podman's image is removed), the request runs with
OPS_CRASH_AT=n and must die by SIGKILL at the very point the enumeration
named; then:
  - ops_facts reads the host without error;
  - the version that ran before still runs, or the new one is fully up
    (`systemctl is-active`), never a mix;
  - the same request, rerun, succeeds and reaches the wanted end state;
  - a second rerun is `changed: false`;
  - no leftovers: no `.ops-tmp` file, `staging/` or `trash/` in the store
    root, the unit directory or the repository, no `ops-*` temporary
    directory of ops in /tmp.
`random`: a pod is switched between versions, its volume replaced and its
old versions pruned, each run killed after a random delay within its
measured run time, with the same checks after each kill.

Printed: `PASS name` / `FAIL name` (with why), and `FIGURE name: value`
lines (points per operation, kills, time). OPS_RELIABILITY_FULL=1 kills at
every point of every operation and makes 400 random kills; the default, to
fit CI's time, kills at SAMPLE points of each operation (the first of each
kind of step and the last, spread over the run) and makes 40.
"""

import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "systemd"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "images"))
import scenario_kit as kit  # noqa: E402
import fixtures as image_fixtures  # noqa: E402
from scenario_kit import expect  # noqa: E402

UNIT_DIR = Path("/etc/systemd/system")
PORT_RANGE = os.environ.get("OPS_CRASH_PORT_RANGE", "20000-20999")
FULL = os.environ.get("OPS_RELIABILITY_FULL") == "1"
CONTAINERS_CONF = kit.PROJECT / "tests" / "images" / "containers.conf"
PODMAN_ENV = {"CONTAINERS_CONF": str(CONTAINERS_CONF)}
CHANNEL, LABEL = "stable", "web"

# Each instance says which version it is, and runs.
WEB = """[Unit]
Description=web %i of a crash test pod

[Service]
ExecStart=/bin/sh -c 'echo "up $POD_NAME $POD_VERSION %i"; exec sleep infinity'
"""

# Reads its volume at start: a replace restarts it.
READER = """[Unit]
Description=a reader of its volume

[Service]
ExecStart=/bin/sh -c 'cat "$OPS_VOLUME_DATA/version.txt"; exec sleep infinity'
"""


# ---------------------------------------------------------------- fixtures

def tar_gz(files):
    """A gzipped tar of {name: text}, reproducible."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, text in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(text.encode()), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


class Fixtures:
    """The files every case reads: an ACI (busybox), two volume archives."""

    def __init__(self, top):
        self.top = top
        top.mkdir(parents=True, exist_ok=True)
        tree = image_fixtures.base_tree(b"hello from the crash tests\n")
        manifest = (json.dumps(image_fixtures.ACI_MANIFEST) + "\n").encode()
        rootfs = [image_fixtures.Entry("rootfs/" + e.path, e.kind, e.data, e.target, e.mode)
                  for e in tree]
        aci = image_fixtures.make_tar([image_fixtures.f("manifest", manifest),
                                       image_fixtures.d("rootfs")] + rootfs)
        self.aci = top / "busybox.aci"
        self.aci.write_bytes(aci)
        self.aci_id = "sha512-" + hashlib.sha512(aci).hexdigest()
        self.volumes = {}
        for generation in ("1", "2"):
            data = tar_gz({"version.txt": f"volume generation {generation}\n",
                           f"only-in-{generation}/file": "x\n",
                           "shared/a": "a\n" * 100, "shared/b": generation * 1000})
            path = top / f"data-{generation}.tar.gz"
            path.write_bytes(data)
            self.volumes[generation] = (path, "sha256:" + hashlib.sha256(data).hexdigest())


FIX = None  # set in main
# Points killed per operation by default (OPS_RELIABILITY_FULL=1: all).
SAMPLE = 6
# Pods left running slow every daemon-reload down: they go in batches.
CLEANUP_EVERY = 6
TIMES = {"setup": 0.0, "crash": 0.0, "rerun": 0.0}


# ---------------------------------------------------------------- module runs

def module(binary, process_env=None, **args):
    env = dict(PODMAN_ENV)
    env.update(process_env or {})
    return kit.module(binary, process_env=env, **args)


def succeeded(result, what):
    expect(not result.get("failed") and not result.get("died"),
           f"{what}: expected success, got {result.get('msg') or result}", result)
    return result


def active(units):
    """{unit: is-active word}, in one systemctl call."""
    if not units:
        return {}
    out = subprocess.run(["systemctl", "is-active", *units], capture_output=True,
                         text=True).stdout.split()
    return dict(zip(units, out))


def all_active(units):
    return all(state == "active" for state in active(units).values())


def none_active(units):
    return all(state in ("inactive", "unknown", "failed") for state in active(units).values())


def pod_bundle(case, version, instances=2, volume=None, image=False, keep_dir=None):
    """A native bundle of the case's pod at `version`; `volume` is a
    generation of the volume archive."""
    d = keep_dir or case.work / f"bundle-{case.pod}-{version}"
    (d / "units").mkdir(parents=True, exist_ok=True)
    containers = []
    if volume is None:
        (d / "units" / "web@.service").write_text(WEB)
        containers.append({"name": "web", "replication": instances,
                           "systemd": {"unit-files": ["units/web@.service"]}})
    else:
        (d / "units" / "reader.service").write_text(READER)
        containers.append({"name": "reader", "systemd": {"unit-files": ["units/reader.service"]}})
    pod = {"name": case.pod, "version": version, "containers": containers}
    if volume is not None:
        shutil.copy(FIX.volumes[volume][0], d / "data.tar.gz")
        pod["volumes"] = [{"name": "data", "path": "/srv/data", "data": "data.tar.gz"}]
    if image:
        shutil.copy(FIX.aci, d / "busybox.aci")
        containers[0]["image"] = FIX.aci_id
        pod["images"] = [{"id": FIX.aci_id, "path": "busybox.aci"}]
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


class Case:
    """One before-state of its own: a store root, a pod name, a repository."""

    serial = 0

    def __init__(self, op):
        Case.serial += 1
        self.op = op
        self.pod = f"{op.code}{Case.serial:04d}"
        self.work = kit.WORK / "cases" / self.pod
        self.work.mkdir(parents=True)
        self.root = self.work / "root"
        self.repo = self.work / "repo"
        self.tmp_before = {p.name for p in Path("/tmp").glob("ops-*")}
        Case.last = self

    def ops_pod(self, process_env=None, **args):
        args.setdefault("start_timeout", 20)
        args.setdefault("min_up_time", 0)
        return module("ops_pod", process_env, root=self.root, port_range=PORT_RANGE, **args)

    def units(self, version, instances=2):
        return [f"{self.pod}-{version}-web@{i}.service" for i in range(1, instances + 1)]

    def current(self):
        link = self.root / "pods" / self.pod / "current"
        return os.readlink(link) if link.is_symlink() else None

    def versions(self):
        d = self.root / "pods" / self.pod
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.is_symlink()) \
            if d.is_dir() else []

    def normalize(self, subject):
        """A point's subject with what differs between cases named alike."""
        for path, name in ((self.repo, "<repo>"), (self.root, "<root>"), (self.work, "<work>")):
            subject = subject.replace(str(path), name)
        subject = re.sub(rf"(?<![a-z0-9]){self.pod}(?![a-z0-9])", "<pod>", subject)
        subject = re.sub(r"\.ops-tmp\.\d+\.", ".ops-tmp.<pid>.", subject)
        return re.sub(r"/tmp/ops-([a-z]+)-[A-Za-z0-9-]+", r"/tmp/ops-\1-*", subject)


# ---------------------------------------------------------------- operations

class Operation:
    """A request, the before-state it starts from, and what must hold after
    a crash (`during`) and after the rerun (`converged`)."""

    code = "op"
    name = "operation"

    def setup(self, case):
        """Make the before-state; return the request: (binary, args)."""
        raise NotImplementedError

    def during(self, case):
        """What must hold right after a crash."""

    def converged(self, case, result):
        """The wanted end state, after the request succeeded."""

    def cleanup(self, cases):
        """Stop what the cases left running and drop their unit files (once
        for all cases: a daemon-reload each would cost more than a case)."""
        pods = [c.pod for c in cases]
        if not pods:
            return
        patterns = [f"{p}-*" for p in pods] + [f"ops-{p}*" for p in pods]
        subprocess.run(["systemctl", "stop", *patterns], capture_output=True)
        for entry in list(UNIT_DIR.iterdir()) + list((UNIT_DIR / "multi-user.target.wants").glob("*")):
            if any(entry.name.startswith((f"{p}-", f"ops-{p}.", f"ops-{p}:")) for p in pods):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "reset-failed"], capture_output=True)


def one_of_versions_up(case, before, after):
    """The version that ran (`before`, None for nothing) still runs whole,
    or the new one (`after`, None for nothing) is fully up."""
    b = case.units(before) if before else []
    a = case.units(after) if after else []
    old_whole = all_active(b) if b else none_active(case.units("1") + case.units("2"))
    new_whole = all_active(a) if a else none_active(b)
    expect(old_whole or new_whole,
           f"neither version {before} runs whole nor is {after} fully up: {active(b + a)}")


class Deploy(Operation):
    code, name = "dp", "deploy"

    def setup(self, case):
        return "ops_pod", {"bundle": pod_bundle(case, "1") / "pod.json"}

    def during(self, case):
        one_of_versions_up(case, None, "1")

    def converged(self, case, result):
        expect(case.current() == "1", f"version 1 is current (not {case.current()})")
        expect(all_active(case.units("1")), f"version 1 runs: {active(case.units('1'))}")


class Switch(Operation):
    code, name = "sw", "switch"

    def setup(self, case):
        succeeded(case.ops_pod(bundle=pod_bundle(case, "1") / "pod.json"), "deploy 1")
        return "ops_pod", {"bundle": pod_bundle(case, "2") / "pod.json"}

    def during(self, case):
        one_of_versions_up(case, "1", "2")

    def converged(self, case, result):
        expect(case.current() == "2", f"version 2 is current (not {case.current()})")
        expect(all_active(case.units("2")), f"version 2 runs: {active(case.units('2'))}")
        expect(none_active(case.units("1")), f"version 1 is stopped: {active(case.units('1'))}")


class Prune(Operation):
    code, name = "pr", "prune"

    def setup(self, case):
        succeeded(case.ops_pod(bundle=pod_bundle(case, "1") / "pod.json"), "deploy 1")
        succeeded(case.ops_pod(bundle=pod_bundle(case, "2") / "pod.json"), "deploy 2")
        return "ops_pod", {"bundle": pod_bundle(case, "2") / "pod.json", "keep": 1}

    def during(self, case):
        expect(all_active(case.units("2")), f"version 2 runs on: {active(case.units('2'))}")

    def converged(self, case, result):
        expect(case.versions() == ["2"], f"only version 2 is kept: {case.versions()}")
        expect(case.current() == "2", "version 2 is current")
        expect(not list(UNIT_DIR.glob(f"{case.pod}-1-*")), "version 1's unit files are gone")
        expect(all_active(case.units("2")), f"version 2 runs: {active(case.units('2'))}")


class Absent(Operation):
    code, name = "ab", "absent"

    def setup(self, case):
        succeeded(case.ops_pod(bundle=pod_bundle(case, "1") / "pod.json"), "deploy 1")
        succeeded(case.ops_pod(bundle=pod_bundle(case, "2") / "pod.json"), "deploy 2")
        return "ops_pod", {"name": case.pod, "state": "absent"}

    def during(self, case):
        one_of_versions_up(case, "2", None)

    def converged(self, case, result):
        expect(not (case.root / "pods" / case.pod).exists(), "the pod left the store")
        left = [p.name for p in UNIT_DIR.rglob("*") if case.pod in p.name]
        expect(not left, f"no unit file of the pod is left: {left}")
        expect(none_active(case.units("1") + case.units("2")), "nothing of it runs")


class ImageImport(Operation):
    def __init__(self, runtime):
        self.runtime = runtime
        self.code = "ii" if runtime == "systemd" else "ip"
        self.name = f"image-import-{runtime}"

    location = None

    def setup(self, case):
        if self.runtime == "podman" and self.location:
            podman("rmi", "-f", self.location)
        return "ops_image", {"id": FIX.aci_id, "path": FIX.aci, "runtime": self.runtime}

    def converged(self, case, result):
        location = result.get("location")
        expect(location, "the import says where the image is", result)
        if self.runtime == "systemd":
            expect((Path(location) / "bin" / "busybox").is_file(), f"{location} holds the rootfs")
        else:
            expect(podman("image", "exists", location).returncode == 0, f"podman has {location}")
            self.location = location


class ImageRemoval(Operation):
    def __init__(self, runtime):
        self.runtime = runtime
        self.code = "ri" if runtime == "systemd" else "rp"
        self.name = f"image-removal-{runtime}"

    def setup(self, case):
        r = succeeded(module("ops_image", id=FIX.aci_id, path=FIX.aci, runtime=self.runtime,
                             root=case.root), "import")
        case.location = r["location"]
        return "ops_image", {"id": FIX.aci_id, "state": "absent", "runtime": self.runtime}

    def converged(self, case, result):
        if self.runtime == "systemd":
            expect(not Path(case.location).exists(), f"{case.location} is gone")
        else:
            expect(podman("image", "exists", case.location).returncode != 0,
                   f"podman no longer has {case.location}")


class VolumeReplace(Operation):
    code, name = "vr", "volume-replace"

    def setup(self, case):
        b = pod_bundle(case, "1", volume="1")
        succeeded(case.ops_pod(bundle=b / "pod.json"), "deploy 1 with its volume")
        case.reader = f"{case.pod}-1-reader.service"
        return "ops_volume", {"pod": case.pod, "version": "1", "name": "data",
                              "data": str(FIX.volumes["2"][0]), "replace": True}

    def during(self, case):
        expect(all_active([case.reader]), f"{case.reader} runs on: {active([case.reader])}")

    def converged(self, case, result):
        volume = case.root / "pods" / case.pod / "1" / "volumes" / "data"
        record = json.loads((volume / "volume.json").read_text())
        expect(record["digest"] == FIX.volumes["2"][1], "the record says generation 2", record)
        text = (volume / "data" / "version.txt").read_text()
        expect(text == "volume generation 2\n", f"the volume holds generation 2: {text!r}")
        expect(not (volume / "data" / "only-in-1").exists(), "generation 1's files are gone")
        expect(all_active([case.reader]), f"{case.reader} runs: {active([case.reader])}")


class Publish(Operation):
    code, name = "pu", "publish"

    def setup(self, case):
        for version in ("1", "2"):
            pod_bundle(case, version, instances=1, volume=version, image=True,
                       keep_dir=case.work / f"release-{version}")
        succeeded(self.request(case, "1"), "publish 1")
        return "ops_release", self.args(case, "2")

    def args(self, case, version):
        return {"repo": case.repo, "bundle": case.work / f"release-{version}",
                "channel": CHANNEL, "label": LABEL}

    def request(self, case, version):
        return module("ops_release", **self.args(case, version))

    def converged(self, case, result):
        pod_dir = case.repo / "channels" / CHANNEL / LABEL / case.pod
        tip = os.readlink(pod_dir / "tip")
        expect(tip == "2", f"tip is 2, not {tip}")
        for version in ("1", "2"):
            expect((pod_dir / version / "pod.json").is_file(), f"version {version} is published")
        expect(result.get("tip") == "2", "the result says tip is 2", result)


def podman(*args):
    return subprocess.run(["podman", *args], capture_output=True, text=True,
                          env={**os.environ, **PODMAN_ENV})


OPERATIONS = {op.name: op for op in [
    Deploy(), Switch(), Prune(), Absent(), ImageImport("systemd"), ImageImport("podman"),
    ImageRemoval("systemd"), ImageRemoval("podman"), VolumeReplace(), Publish(),
]}


# ---------------------------------------------------------------- the kills

def request(case, binary, args, env=None):
    if binary == "ops_pod":
        return case.ops_pod(process_env=env, **args)
    if binary == "ops_release":
        return module(binary, env, **args)
    return module(binary, env, root=case.root, **args)


def read_points(case, log):
    """The points a run met, from its OPS_CRASH_LOG: [(kind, subject)]."""
    points = []
    for n, line in enumerate(log.read_text().splitlines() if log.exists() else [], 1):
        number, kind, subject = line.split("\t", 2)
        expect(int(number) == n, f"points are numbered in order: line {n} says {number}")
        points.append((kind, case.normalize(subject)))
    return points


def leftovers(case):
    """What a run left that no finished run leaves (in /tmp: since the
    case began)."""
    found = [str(p) for top in (case.root, case.repo) if top.exists()
             for p in top.rglob("*") if ".ops-tmp" in p.name]
    found += [str(p) for p in UNIT_DIR.rglob(f"*{case.pod}*") if ".ops-tmp" in p.name]
    found += [str(case.root / d) for d in ("staging", "trash") if (case.root / d).exists()]
    found += [str(p) for p in Path("/tmp").glob("ops-*") if p.name not in case.tmp_before]
    return found


def enumerate_points(op):
    """Run the request once with the log: its points, in order."""
    case = Case(op)
    binary, args = op.setup(case)
    log = case.work / "points.log"
    r = succeeded(request(case, binary, args, {"OPS_CRASH_LOG": str(log)}), f"{op.name}")
    expect(r["changed"] is True, f"{op.name} changes something", r)
    op.converged(case, r)
    expect(not leftovers(case), f"{op.name} leaves nothing behind: {leftovers(case)}")
    return case, read_points(case, log)


def crash_at(op, n, point):
    """Kill the request at point n (expected to be `point`), then check the
    host and that reruns converge. Returns the case."""
    t0 = time.monotonic()
    case = Case(op)
    binary, args = op.setup(case)
    TIMES["setup"] += time.monotonic() - t0
    t0 = time.monotonic()
    log = case.work / "crash.log"
    r = request(case, binary, args, {"OPS_CRASH_LOG": str(log), "OPS_CRASH_AT": str(n)})
    expect(r.get("died") and r["returncode"] == -signal.SIGKILL,
           f"killed by SIGKILL at point {n}", r)
    met = read_points(case, log)
    expect(met and met[-1] == point and len(met) == n,
           f"died at point {n} {point}, not at {len(met)} {met[-1:]}")
    succeeded(module("ops_facts", root=case.root), "ops_facts after the crash")
    op.during(case)
    TIMES["crash"] += time.monotonic() - t0
    t0 = time.monotonic()
    r = succeeded(request(case, binary, args), "the rerun")
    op.converged(case, r)
    r = succeeded(request(case, binary, args), "the second rerun")
    expect(r["changed"] is False, "the second rerun changes nothing", r)
    TIMES["rerun"] += time.monotonic() - t0
    left = leftovers(case)
    expect(not left, f"nothing is left behind after the rerun: {left}")
    return case


def spread(items, count):
    """`count` of `items`, evenly spaced, the first and last included."""
    if len(items) <= count:
        return list(items)
    if count < 2:
        return [items[len(items) // 2]] if count == 1 else []
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def sample(points):
    """Which points to kill at: every one in the full run. By default
    SAMPLE of each operation: the first point of each kind of step (a
    write, a rename, a systemctl call...) and the last, spread over the
    run if more, topped up with points spread over the rest."""
    numbered = list(enumerate(points, 1))
    if FULL or len(points) <= SAMPLE:
        return numbered
    firsts, kinds = [], set()
    for n, (kind, subject) in numbered:
        if kind not in kinds:
            kinds.add(kind)
            firsts.append((n, (kind, subject)))
    chosen = spread(sorted(set(firsts) | {numbered[-1]}), SAMPLE)
    rest = [p for p in numbered if p not in chosen]
    chosen += spread(rest, SAMPLE - len(chosen)) if len(chosen) < SAMPLE else []
    return sorted(chosen)


def every_point(names):
    """For each operation: every (or the default sample of) point killed."""
    total, failures, distinct = 0, 0, set()
    for name in names:
        op = OPERATIONS[name]
        began = time.monotonic()
        try:
            first, points = enumerate_points(op)
        except AssertionError as e:
            print(f"FAIL crash points: {name}: enumerating its points: {e}")
            failures += 1
            continue
        cases, bad = [first], []
        chosen = sample(points)
        for n, point in chosen:
            try:
                cases.append(crash_at(op, n, point))
                distinct.add((name, n, *point))
            except (AssertionError, subprocess.CalledProcessError) as e:
                bad.append(f"point {n} {point[0]} {point[1]}: {e}")
                cases.append(Case.last)
            if len(cases) >= CLEANUP_EVERY:
                op.cleanup(cases)
                cases = []
        op.cleanup(cases)
        killed = len(chosen) - len(bad)
        total += killed
        seconds = time.monotonic() - began
        print(f"FIGURE crash points of {name}: {len(points)} (killed at {killed} of {len(chosen)}"
              f" chosen, {seconds:.1f} s)")
        if bad:
            failures += 1
            print(f"FAIL crash points: {name}: {len(bad)} of {len(chosen)} points")
            for line in bad[:20]:
                print("    " + line.replace("\n", "\n    "))
        else:
            print(f"PASS crash points: {name}: killed at {killed} points, each converged")
    print(f"FIGURE crash points killed: {len(distinct)}")
    print("FIGURE crash time by phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))
    return failures


# ---------------------------------------------------------------- random kills

def spawn(binary, args):
    """Start a module binary as Ansible would, without waiting."""
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    args.update(_ansible_check_mode=False, _ansible_diff=False)
    path = kit.WORK / f"args-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(args))
    return subprocess.Popen([str(kit.BIN_DIR / binary), str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **PODMAN_ENV})


def settled(units, seconds=5):
    """Whether all `units` are active within `seconds`: a kill during
    systemctl leaves its child to finish the job."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all_active(units):
            return True
        time.sleep(0.05)
    return False


class Wandering:
    """One pod that is switched, has its volume replaced and is pruned,
    each request killed at a random moment of its run."""

    def __init__(self, rng):
        self.rng = rng
        self.case = Case(RandomOp)
        self.version, self.generation, self.next = "1", "1", 2
        b = pod_bundle(self.case, "1", volume="1")
        succeeded(self.case.ops_pod(bundle=b / "pod.json", keep=2), "deploy 1")
        self.runtime = {}

    def reader(self, version):
        return f"{self.case.pod}-{version}-reader.service"

    def pick(self):
        """The next request: (kind, binary, args, what it wants)."""
        if self.rng.random() < 0.5:
            version = str(self.next)
            b = pod_bundle(self.case, version, volume=self.rng.choice("12"))
            args = {"bundle": b / "pod.json", "keep": 2, "root": self.case.root,
                    "port_range": PORT_RANGE, "start_timeout": 20, "min_up_time": 0}
            return "switch", "ops_pod", args, version
        generation = "2" if self.generation == "1" else "1"
        args = {"pod": self.case.pod, "version": self.version, "name": "data",
                "data": str(FIX.volumes[generation][0]), "replace": True, "root": self.case.root}
        return "replace", "ops_volume", args, generation

    def round(self):
        kind, binary, args, wanted = self.pick()
        if kind not in self.runtime:
            began = time.monotonic()
            succeeded(module(binary, **args), f"a {kind} measured")
            self.runtime[kind] = time.monotonic() - began
            self.accept(kind, wanted)
            return "measured"
        proc = spawn(binary, args)
        time.sleep(self.rng.uniform(0, self.runtime[kind]))
        proc.send_signal(signal.SIGKILL)
        killed = proc.wait() == -signal.SIGKILL
        succeeded(module("ops_facts", root=self.case.root), f"ops_facts after a killed {kind}")
        if kind == "switch":
            expect(settled([self.reader(self.version)], 1) or settled([self.reader(wanted)]),
                   f"neither version {self.version} nor {wanted} runs after a killed switch: "
                   f"{active([self.reader(self.version), self.reader(wanted)])}")
        else:
            expect(settled([self.reader(self.version)]), f"version {self.version} runs on")
        succeeded(module(binary, **args), f"the rerun of a killed {kind}")
        self.accept(kind, wanted)
        r = succeeded(module(binary, **args), f"the second rerun of a killed {kind}")
        expect(r["changed"] is False, f"the second rerun of a {kind} changes nothing", r)
        left = leftovers(self.case)
        expect(not left, f"nothing is left behind after a killed {kind}: {left}")
        return "killed" if killed else "ended"

    def accept(self, kind, wanted):
        """Check the wanted end state and take it as the new one."""
        case = self.case
        if kind == "switch":
            expect(case.current() == wanted, f"version {wanted} is current, not {case.current()}")
            expect(len(case.versions()) <= 2, f"at most 2 versions are kept: {case.versions()}")
            self.version, self.next = wanted, self.next + 1
            record = case.root / "pods" / case.pod / wanted / "volumes" / "data" / "volume.json"
            digest = json.loads(record.read_text())["digest"]
            self.generation = next(g for g, (_, d) in FIX.volumes.items() if d == digest)
        else:
            record = case.root / "pods" / case.pod / self.version / "volumes" / "data" / "volume.json"
            digest = json.loads(record.read_text())["digest"]
            expect(digest == FIX.volumes[wanted][1], f"the volume holds generation {wanted}")
            self.generation = wanted
        expect(settled([self.reader(self.version)]), f"version {self.version} runs")


class RandomOp(Operation):
    code, name = "rk", "random"


def random_kills(rounds, seed):
    rng = random.Random(seed)
    began = time.monotonic()
    pods, counts, failure = [], {"killed": 0, "ended": 0, "measured": 0}, None
    wandering = None
    for i in range(rounds):
        if wandering is None or i % 50 == 0:
            if pods:
                Operation().cleanup(pods[-1:])
            wandering = Wandering(rng)
            pods.append(wandering.case)
        try:
            counts[wandering.round()] += 1
        except (AssertionError, subprocess.CalledProcessError) as e:
            failure = f"round {i} (seed {seed}): {e}"
            break
    Operation().cleanup(pods[-1:])
    print(f"FIGURE random kills: {counts['killed']} (of {rounds} rounds: {counts['ended']} ended"
          f" before their kill, {counts['measured']} measured the run time;"
          f" {time.monotonic() - began:.1f} s, seed {seed})")
    if failure:
        print(f"FAIL random kills: {failure}")
        return 1
    print(f"PASS random kills: {counts['killed']} runs killed at a random time, each converged")
    return 0


def main(argv):
    global FIX
    kit.BIN_DIR = Path(os.environ.get("OPS_BIN_DIR", kit.PROJECT / "target" / "crash" / "debug"))
    kit.start("ops-crash-")
    FIX = Fixtures(kit.WORK / "fixtures")
    if argv[:1] == ["points"]:
        names = argv[1:] or list(OPERATIONS)
        unknown = [n for n in names if n not in OPERATIONS]
        if unknown:
            sys.exit(f"unknown operations {unknown}: choose from {list(OPERATIONS)}")
        return every_point(names)
    if argv[:1] == ["random"]:
        rounds = int(argv[1]) if len(argv) > 1 else (400 if FULL else 40)
        seed = int(os.environ.get("OPS_CRASH_SEED", random.randrange(1 << 30)))
        return random_kills(rounds, seed)
    sys.exit(f"usage: {sys.argv[0]} points [OPERATION]... | random [ROUNDS]")


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:]) else 0)
