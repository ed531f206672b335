"""Power cuts during deploy, upgrade, switch and publish: run inside a real
systemd (tests/systemd/sandbox) by tests/reliability/power, which explains
the disk model. One line per check: `PASS name` / `FAIL name`, then
`FIGURE name: value` lines.

    python3 power_cuts.py

The disk is ext4 on a loop device whose backing file is a plain file: what
the backing file holds is what ext4 has sent to the device. Mounted with
commit=600 (no journal commit but the ones a sync forces) and
noauto_da_alloc (no flush ext4 adds on its own when a file is renamed over
another), with every run a few seconds long (far below the 30 s after which
the kernel writes dirty pages back), the device receives what was synced and
little else. A copy of the backing file taken while the run is stopped at a
crash point is the disk a power cut at that moment leaves; mounting the copy
replays its journal, as the reboot would. The control checks prove the
model on this machine; a canary written without a sync before each run
proves, at every cut, that nothing flushed the disk from outside (a `sync`
by another process would hide a missing fsync, never invent one).

Environment: OPS_BIN_DIR (the crash-points build); OPS_POWER_ALL=1 (a cut
at every crash point that leaves a distinct disk, instead of the commits,
the points right after them and OPS_POWER_CUTS more spread evenly, default
1); OPS_POWER_KEEP=1 (keep the images of failed cuts in the work
directory).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(os.environ.get("OPS_PROJECT", Path(__file__).resolve().parents[2]))
BIN = Path(os.environ.get("OPS_BIN_DIR", PROJECT / "target" / "crash" / "debug"))
DISK = Path("/var/lib/ops-power")  # the mount point of every image
ROOT = DISK / "store"
UNITS = Path("/etc/systemd/system")  # the image's units/, bound over it
REPO = DISK / "repo"
PORTS = "21000-21099"  # within this helper's range (the network is shared)
CANARY = b"canary written without a sync: a flush from outside reached the disk\n"
WORK = Path("/nonexistent")

passes = failures = 0
figures = {}


def report(ok, name, detail=""):
    global passes, failures
    if ok:
        passes += 1
        print(f"PASS {name}", flush=True)
    else:
        failures += 1
        print(f"FAIL {name}", flush=True)
        for line in str(detail).splitlines():
            print(f"    {line}", flush=True)


def sh(*argv, check=True, timeout=60):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


# ------------------------------------------------------------ the disk

def mkfs(image):
    """A fresh ext4 image holding a copy of the sandbox's unit directory
    (its masks keep the host's heavy services off). Inode tables and the
    journal are initialised now: no lazy-init thread writes later."""
    with open(image, "wb") as f:
        f.truncate(48 << 20)
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
    mount(image, bind=False)
    shutil.copytree(UNITS, DISK / "units", symlinks=True)
    unmount(bind=False)


def mount(image, bind=True):
    """Mount an image at DISK (replaying its journal) with the options of
    the model; its units/ is bound over UNITS and systemd reloaded. `-o
    loop` sets autoclear: the loop device goes with the last unmount,
    whatever ends the sandbox."""
    DISK.mkdir(parents=True, exist_ok=True)
    sh("mount", "-o", "loop,commit=600,noauto_da_alloc", str(image), str(DISK))
    if bind:
        sh("mount", "--bind", str(DISK / "units"), str(UNITS))
        sh("systemctl", "daemon-reload")


def unmount(bind=True):
    """Take the image away: the pod's units stopped (they run off it), the
    bind and the mount undone (systemd reloads when the next is mounted)."""
    if bind:
        sh("systemctl", "stop", "shop-*", "ops-shop*", check=False)
        sh("systemctl", "reset-failed", "shop-*", "ops-shop*", check=False)
        sh("umount", str(UNITS), check=False)
    for _ in range(50):
        if sh("umount", str(DISK), check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"cannot unmount {DISK}")


def copy(src, dst):
    """The device's content at this moment: read through the page cache,
    so it holds every block ext4 has written to the device, synced or
    not (a sync only makes the block reach the host's disk)."""
    sh("cp", "--sparse=always", str(src), str(dst))


def boot():
    """What a reboot does for the pod: systemd reads the units and starts
    what multi-user.target wants (ops-shop.target once it is enabled). The
    units were read when the disk was mounted."""
    return sh("systemctl", "start", "multi-user.target", check=False, timeout=60)


# ------------------------------------------------------------ the modules

def bundle(version):
    d = WORK / f"shop-{version}"
    (d / "units").mkdir(parents=True, exist_ok=True)
    (d / "units" / "web@.service").write_text(
        f"[Unit]\nDescription=web %i of shop {version}\n\n[Service]\n"
        "ExecStart=/bin/sh -c 'exec sleep infinity'\n")
    pod = {"name": "shop", "version": version,
           "containers": [{"name": "web", "replication": 2,
                           "systemd": {"unit-files": ["units/web@.service"]}}]}
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def args_file(args):
    fd, name = tempfile.mkstemp(suffix=".json", dir=WORK)
    with os.fdopen(fd, "w") as f:
        json.dump({**args, "_ansible_check_mode": False, "_ansible_diff": False}, f)
    return name


def module(binary, args, env=None):
    proc = subprocess.run([str(BIN / binary), args_file(args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"died": True, "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}


def pod_args(**extra):
    return {"root": str(ROOT), "unit_dir": str(UNITS), "port_range": PORTS,
            "start_timeout": 20, "min_up_time": 0, "lock_timeout": 10, **extra}


def facts():
    r = module("ops_facts", {"root": str(ROOT), "unit_dir": str(UNITS), "units": False})
    if r.get("failed") or r.get("died"):
        raise Check(f"ops_facts fails on the disk: {r.get('msg') or r}")
    return r["ansible_facts"]["ops"]


class Check(Exception):
    """What a cut broke, said in one line."""


# ------------------------------------------------------------ pictures

def picture(top, pick=lambda p: True):
    """Every file (digest), symlink and directory under top, by relative path."""
    out = {}
    if not top.exists():
        return out
    for p in sorted(top.rglob("*")):
        rel = str(p.relative_to(top))
        if not pick(rel):
            continue
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.name == "meta.json":
            # The record, but for the time it was written at (each run's own).
            record = json.loads(p.read_text())
            record.pop("deployed_at", None)
            out[rel] = ("record", p.stat().st_mode & 0o7777, record)
        elif p.is_file():
            out[rel] = ("file", p.stat().st_mode & 0o7777, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[rel] = ("dir", p.stat().st_mode & 0o7777)
    return out


def pod_picture(version):
    """The whole of a version as ops leaves it: its store directory and its
    unit files; and the pod's own units (target, slice, enablement)."""
    return {
        "store": picture(ROOT / "pods" / "shop" / version),
        "units": picture(UNITS, lambda r: r.startswith(f"shop-{version}-")),
        "pod-units": picture(UNITS, lambda r: r.startswith("ops-shop")
                             or r == "multi-user.target.wants/ops-shop.target"),
    }


def leftovers():
    """Temporary, staging and trash entries anywhere on the disk."""
    found = [str(p) for p in DISK.rglob("*") if ".ops-tmp" in p.name]
    found += [str(ROOT / d) for d in ("staging", "trash") if (ROOT / d).exists()]
    return found


def release_state():
    """The published versions (each checked whole against its release.json)
    and tip. A version directory that is there but not whole is a Check."""
    pod = REPO / "channels" / "stable" / "shop"
    versions = {}
    if pod.is_dir():
        for d in sorted(pod.iterdir()):
            if d.name.startswith(".") or d.is_symlink():
                continue
            record = json.loads((d / "release.json").read_text())
            listed = {"pod.json": record["pod.json"], **record["files"]}
            for rel, want in listed.items():
                data = (d / rel).read_bytes()
                if hashlib.sha256(data).hexdigest() != want["sha256"] or len(data) != want["size"]:
                    raise Check(f"published {d.name}/{rel} does not match its release.json")
            versions[d.name] = picture(d)
    tip = os.readlink(pod / "tip") if (pod / "tip").is_symlink() else None
    if tip is not None and tip not in versions:
        raise Check(f"tip names {tip}, which is not a whole published version")
    return {"versions": versions, "tip": tip}


# ------------------------------------------------------------ operations

class Operation:
    """One request cut short: the disk it starts from, what it asks, and
    how the recovered disk is judged (old or new, nothing else)."""

    def __init__(self, name, base, binary, args, old, new):
        self.name, self.base, self.binary, self.args = name, base, binary, args
        self.old, self.new = old, new  # states (from `state()`) before and after

    def run(self, env=None):
        return module(self.binary, self.args, env)

    def state(self):
        """The state of the mounted disk, as this operation judges it."""
        return pod_state() if self.binary == "ops_pod" else release_state()

    def judge(self, got):
        """ "old" or "new"; a Check when it is neither."""
        return judge_pod(self, got) if self.binary == "ops_pod" else judge_release(self, got)


def pod_state():
    f = facts()
    pod = f["pods"].get("shop")
    current = pod and pod.get("current")
    return {"current": current, "whole": pod_picture(current) if current else None}


def judge_pod(op, got):
    """The current version's store directory and unit files must be those
    of the old state or of the new one. The pod's own units (its target,
    slice, enablement) may be either state's whatever `current` says: the
    target wants every installed version's units and `current` alone
    decides which start (their ConditionPathExists=), so a target written
    before `current` moved is no half state; what boots is checked by
    booted()."""
    for state, word in ((op.new, "new"), (op.old, "old")):
        if got["current"] != state["current"]:
            continue
        if got["whole"] == state["whole"]:
            return word
        pod_units = [s["whole"]["pod-units"] for s in (op.old, op.new) if s["whole"]]
        if got["whole"] and {k: w for k, w in got["whole"].items() if k != "pod-units"} == \
                {k: w for k, w in state["whole"].items() if k != "pod-units"} and \
                got["whole"]["pod-units"] in pod_units:
            return word
    raise Check(f"half: current is {got['current']!r} (old {op.old['current']!r}, new "
                f"{op.new['current']!r}) and its files match neither"
                + diff_hint(got["whole"], op.new["whole"] if got["current"] == op.new["current"]
                            else op.old["whole"]))


def diff_hint(got, want):
    if not got or not want:
        return ""
    lines = []
    for part in want:
        g, w = got.get(part, {}), want.get(part, {})
        for k in sorted(set(g) | set(w)):
            if g.get(k) != w.get(k):
                lines.append(f"{part}/{k}: {g.get(k)} != {w.get(k)}")
    return "; " + "; ".join(lines[:6])


def judge_release(op, got):
    old_v, new_v = op.old["versions"], op.new["versions"]
    extra = set(got["versions"]) - set(new_v)
    if extra:
        raise Check(f"versions nobody published: {sorted(extra)}")
    for v, pic in got["versions"].items():
        if pic != new_v[v]:
            raise Check(f"published {v} differs from what the full run publishes")
    if got["tip"] not in (op.old["tip"], op.new["tip"]):
        raise Check(f"tip is {got['tip']!r}: neither {op.old['tip']!r} nor {op.new['tip']!r}")
    missing = set(old_v) - set(got["versions"])
    if missing:
        raise Check(f"published versions lost: {sorted(missing)}")
    return "new" if got == op.new else "old"


def proc_state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


def cut_at(op, point, image, snap):
    """Run op from its base disk, stopped before crash point `point` (None:
    after it returned), and copy the device then. Returns the copy's
    result: what the run said when it finished first, else None."""
    copy(op.base, image)
    mount(image)
    boot()
    # The canary: the oldest dirty data on the disk, written back first by
    # any flush that is not the run's own syncs.
    (DISK / "canary").write_bytes(CANARY)
    env = {} if point is None else {"OPS_CRASH_AT": str(point), "OPS_CRASH_SIGNAL": "STOP"}
    out = WORK / "run.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([str(BIN / op.binary), args_file(op.args)], stdout=f,
                                stderr=subprocess.DEVNULL, env={**os.environ, **env})
    deadline = time.monotonic() + 60
    while proc.poll() is None and proc_state(proc.pid) != "T":
        if time.monotonic() > deadline:
            proc.kill()
            raise Check(f"the run neither stopped at point {point} nor ended within 60 s")
        time.sleep(0.01)
    copy(image, snap)  # the power cut
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    unmount()
    return json.loads(out.read_text()) if finished else None


def recover(op, snap, finished):
    """Boot the copy and judge it; rerun the request on it. Returns
    "old" or "new"; raises Check."""
    mount(snap)
    try:
        if (DISK / "canary").read_bytes() != b"":
            raise Outside()
        (DISK / "canary").unlink()
    except FileNotFoundError:
        pass
    boot()
    got = op.state()
    seen = op.judge(got)
    if finished is not None and not finished.get("failed") and seen != "new":
        raise Check("the run returned success, yet the disk after the cut holds the old state")
    if op.binary == "ops_pod":
        booted(got["current"])
    first = op.run()
    if first.get("failed") or first.get("died"):
        raise Check(f"the rerun fails: {first.get('msg') or first}")
    again = op.run()
    if again.get("failed") or again.get("changed") is not False:
        raise Check(f"a second rerun is not changed=false: {again.get('msg') or again}")
    if op.judge(op.state()) != "new":
        raise Check("the rerun did not converge on the new state")
    left = leftovers()
    if left:
        raise Check(f"leftovers after the rerun: {left}")
    return seen


def booted(current):
    """After the reboot, the current version runs, and nothing else of the
    pod: what boots is what ops's record says is current."""
    listed = sh("systemctl", "list-units", "--state=active", "--plain", "--no-legend",
                "shop-*").stdout.split()
    running = sorted(u for u in listed if u.endswith(".service"))
    want = [] if current is None else [f"shop-{current}-web@{i}.service" for i in (1, 2)]
    if running != want:
        # What systemd says of each unit that should run and does not: a
        # failed start, a condition, a job still queued tell different stories.
        states = [sh("systemctl", "show", "-p", "ActiveState,SubState,Result,ConditionResult,"
                     "NRestarts", "--value", u, check=False).stdout.split() for u in want
                  if u not in running]
        raise Check(f"after the reboot the running units are {running or 'none'}; the current "
                    f"version is {current!r} (wants {want or 'none'}; systemd on the missing: "
                    f"{states})")


class Outside(Exception):
    """The canary reached the disk: something flushed it during the cut."""


def points_of(op):
    """Every crash point of op, by running it once from its base disk:
    [(n, kind, subject)]."""
    log = WORK / f"{op.name}.points"
    log.unlink(missing_ok=True)
    copy(op.base, WORK / "enum.img")
    mount(WORK / "enum.img")
    boot()
    r = op.run({"OPS_CRASH_LOG": str(log)})
    unmount()
    if r.get("failed") or r.get("died"):
        raise Check(f"{op.name} fails from its base disk: {r.get('msg') or r}")
    return [tuple(line.split("\t", 2)) for line in log.read_text().splitlines()]


def distinct(points):
    """The points whose disk differs from the point before: a point right
    after a program ran (systemctl) sees the disk the point before saw,
    and a power cut erases what systemd did in between."""
    return [int(n) for i, (n, _kind, _s) in enumerate(points)
            if i == 0 or points[i - 1][1] != "run"]


COMMITS = ("rename", "symlink", "exchange")


def spread(cuts, points, k):
    """Every point, with OPS_POWER_ALL=1; else the commits (the renames and
    link swaps that make a new state visible: the moments where old turns
    into new), the points right after them, and k more spread evenly."""
    if os.environ.get("OPS_POWER_ALL") == "1" or len(cuts) <= k:
        return cuts
    kinds = {int(n): kind for n, kind, _s in points}

    def disk_at(n):  # the cut whose disk is the disk at point n
        return max(c for c in cuts if c <= n)
    commits = [int(n) for n, kind, _s in points if kind in COMMITS]
    chosen = {disk_at(n) for n in commits} | {disk_at(n + 1) for n in commits if n + 1 in kinds}
    step = (len(cuts) - 1) / max(k - 1, 1)
    chosen |= {cuts[round(i * step)] for i in range(k)}
    return sorted(chosen)


# ------------------------------------------------------------ the model's proof

def control(name, act, expect):
    """Cut the power right after act(disk) on a fresh disk; expect(disk)
    on the recovered copy says whether the model held."""
    image, snap = WORK / "control.img", WORK / "control.snap"
    copy(WORK / "empty.img", image)
    mount(image, bind=False)
    act(DISK)
    copy(image, snap)
    unmount(bind=False)
    mount(snap, bind=False)
    try:
        report(expect(DISK), f"power model: {name}")
    finally:
        unmount(bind=False)


def write(path, data, sync):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    if sync:
        os.fsync(fd)
    os.close(fd)


def sync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def read(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def controls():
    def unsynced_and_synced(d):
        write(d / "unsynced", b"unsynced data\n", sync=False)
        write(d / "synced", b"synced data\n", sync=True)
        sync_dir(d)
    control("data written without fsync is not on the disk after the cut", unsynced_and_synced,
            lambda d: read(d / "unsynced") in (None, b""))
    control("data written with fsync (and its directory synced) is on the disk", unsynced_and_synced,
            lambda d: read(d / "synced") == b"synced data\n")

    def renamed(dir_synced):
        def act(d):
            write(d / "f", b"old\n", sync=True)
            sync_dir(d)
            write(d / "f.tmp", b"new\n", sync=True)
            os.rename(d / "f.tmp", d / "f")
            if dir_synced:
                sync_dir(d)
        return act
    control("a rename whose directory is not synced is undone by the cut", renamed(False),
            lambda d: read(d / "f") == b"old\n" and read(d / "f.tmp") == b"new\n")
    control("a rename whose directory is synced survives the cut", renamed(True),
            lambda d: read(d / "f") == b"new\n" and read(d / "f.tmp") is None)

    def renamed_unsynced(d):
        write(d / "f", b"old\n", sync=True)
        sync_dir(d)
        write(d / "f.tmp", b"new\n", sync=False)
        os.rename(d / "f.tmp", d / "f")
        sync_dir(d)
    control("a file renamed over another without its fsync is not whole after the cut "
            "(noauto_da_alloc: ext4 does not flush it on rename)", renamed_unsynced,
            lambda d: read(d / "f") not in (b"new\n", b"old\n"))


# ------------------------------------------------------------ main

def make_bases(b1, b2):
    """empty: a fresh disk; v1: shop 1 deployed and published; v2: then
    shop 2 deployed over it and published."""
    mkfs(WORK / "empty.img")
    for base, version, b in (("v1", "1", b1), ("v2", "2", b2)):
        src = WORK / ("empty.img" if version == "1" else "v1.img")
        copy(src, WORK / f"{base}.img")
        mount(WORK / f"{base}.img")
        boot()
        for binary, args in (("ops_pod", pod_args(bundle=str(b))),
                             ("ops_release", {"repo": str(REPO), "bundle": str(b), "channel": "stable"})):
            r = module(binary, args)
            if r.get("failed") or r.get("died"):
                raise SystemExit(f"cannot make the base disk {base}: {binary}: {r.get('msg') or r}")
        unmount()


def state_of(op, image):
    mount(image)
    boot()
    try:
        return op.state()
    finally:
        unmount()


def operations(b1, b2):
    publish = {"repo": str(REPO), "channel": "stable"}
    return [
        Operation("deploy", WORK / "empty.img", "ops_pod", pod_args(bundle=str(b1)), None, None),
        Operation("upgrade", WORK / "v1.img", "ops_pod", pod_args(bundle=str(b2)), None, None),
        Operation("switch", WORK / "v2.img", "ops_pod", pod_args(name="shop", version="1"), None, None),
        Operation("publish-first", WORK / "empty.img", "ops_release", {**publish, "bundle": str(b1)},
                  None, None),
        Operation("publish", WORK / "v1.img", "ops_release", {**publish, "bundle": str(b2)}, None, None),
    ]


def main():
    global WORK
    started = time.monotonic()
    WORK = Path(tempfile.mkdtemp(prefix="ops-power.", dir="/var/tmp"))
    if DISK.is_mount():
        raise SystemExit(f"{DISK} is already mounted: another power test in this sandbox?")
    b1, b2 = bundle("1"), bundle("2")
    mkfs(WORK / "empty.img")
    controls()
    make_bases(b1, b2)
    per_op = int(os.environ.get("OPS_POWER_CUTS", "1"))
    total_points = states = cuts = 0
    seen = {"old": 0, "new": 0}
    for op in operations(b1, b2):
        op.old = state_of(op, op.base)
        points = points_of(op)
        op.new = state_of(op, WORK / "enum.img")
        total_points += len(points)
        chosen = distinct(points)
        states += len(chosen)
        kinds = {int(n): (k, s) for n, k, s in points}
        for point in spread(chosen, points, per_op) + [None]:
            where = "after it returned" if point is None else \
                f"before point {point} ({kinds[point][0]} {kinds[point][1]})"
            name = f"power cut {op.name} {where}"
            cuts += 1
            for attempt in range(3):
                try:
                    finished = cut_at(op, point, WORK / "cut.img", WORK / "cut.snap")
                    try:
                        result = recover(op, WORK / "cut.snap", finished)
                    finally:
                        unmount()
                    seen[result] += 1
                    report(True, f"{name}: comes back {result}, rerun converges")
                except Outside:
                    figures["outside"] = figures.get("outside", 0) + 1
                    if attempt < 2:
                        continue
                    report(False, name, "a flush from outside reached the disk three times")
                except (Check, subprocess.CalledProcessError, OSError, ValueError) as e:
                    if DISK.is_mount():
                        unmount(bind=UNITS.is_mount())
                    if os.environ.get("OPS_POWER_KEEP") == "1":
                        shutil.copy(WORK / "cut.snap", WORK / f"failed-{op.name}-{point}.img")
                    report(False, name, e)
                break
    print(f"FIGURE power crash points enumerated: {total_points}")
    print(f"FIGURE power distinct disk states: {states}")
    print(f"FIGURE power cuts: {cuts}")
    print(f"FIGURE power cuts back old: {seen['old']}")
    print(f"FIGURE power cuts back new: {seen['new']}")
    print(f"FIGURE power cuts redone (a flush from outside): {figures.get('outside', 0)}")
    print(f"FIGURE power seconds: {time.monotonic() - started:.0f}")
    print(f"power: {passes} passed, {failures} failed")
    if failures == 0 and os.environ.get("OPS_POWER_KEEP") != "1":
        shutil.rmtree(WORK, ignore_errors=True)
    return 0 if failures == 0 else 1


def teardown():
    """Whatever ended the run: the bind and the mount undone (the loop
    device goes with the mount: autoclear)."""
    for path in (UNITS, DISK):
        if path.is_mount():
            sh("umount", "-l", str(path), check=False)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        teardown()
