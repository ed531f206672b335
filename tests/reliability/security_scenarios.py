"""Security of the store against a booted systemd (issue 19, item 6).
One scenario per call, run inside the sandbox (tests/systemd/sandbox) by
tests/reliability/security:

    python3 security_scenarios.py FIXTURES_DIR SCENARIO

FIXTURES_DIR is what tests/volumes/fixtures.py built (the busybox ACI, the
volume archives). Every step runs the real module binaries as Ansible does.

* modes: a full life (deploy with a secret environment, switch, idle, a
  volume replaced, an image imported, a release published), then every
  path ops wrote under the store, the unit directory and the release
  repository is walked and its mode and owner asserted, by class.
* planted: a symlink (to /etc/shadow, to a FIFO, dangling) is put at each
  record of the store and each unit file ops wrote: by `nobody` where it
  can write, by root where it cannot (checked first). ops_facts and ops_pod
  refuse, naming the path, or leave it alone; neither follows it (nothing
  of /etc/shadow in any result, the FIFO does not block), and nothing else
  changes.
* swapping: a bundle owned by `nobody`, whose unit file, pod.json and a
  volume archive `nobody` keeps swapping (with a link to /etc/shadow, with
  another pod.json, with a link to a tar only root may read) while ops_pod
  deploys from it: every run installs the bytes it validated or is refused
  naming the file; no byte of /etc/shadow or of the private tar reaches
  the store or the unit directory, and a stored version's pod.json is the
  one its record was made from.

Each prints `COUNT name value` lines the driver sums into its FIGURE.
"""

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "systemd"))
import scenario_kit as kit  # noqa: E402
from scenario_kit import expect, ok, snapshot  # noqa: E402

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 2 else Path("/nonexistent")
INDEX = json.loads((FIXTURES / "index.json").read_text()) if FIXTURES.exists() else {}
# The sandbox shares the host's network: ports from this helper's range.
PORTS = "24100-24199"
SECRET = "s3cret-env-value"
SHADOW = Path("/etc/shadow")
NOBODY = pwd.getpwnam("nobody")
PRIVATE_TAR = Path("/root/ops-security-private.tar.gz")
PRIVATE_MARK = b"only-root-may-read-this-4711"

UNIT = """[Unit]
Description=the security tests' service

[Service]
ExecStart=/bin/busybox sh -c 'exec /bin/busybox sleep 3600'
"""
PLAIN_UNIT = "[Service]\nExecStart=/bin/sleep 3600\n"


def count(name, value):
    print(f"COUNT {name} {value}")


def ops(binary, **args):
    if binary == "ops_pod":
        args.setdefault("start_timeout", 20)
        args.setdefault("port_range", PORTS)
    return kit.module(binary, **args)


def bundle(version, image=True):
    """Pod shop at `version`: the busybox image, a unit in it, a port, a
    read-only volume (conf) and a read-write one (state)."""
    d = kit.WORK / f"bundle-{version}"
    d.mkdir()
    aci = INDEX["aci"]
    pod = {"name": "shop", "version": version, "ports": {"http": "assign"},
           "containers": [{"name": "shop", "systemd": {"unit-files": ["shop.service"]}}],
           "volumes": [{"name": "conf", "path": "/srv/conf", "read-only": True, "data": "conf.tar.gz"},
                       {"name": "state", "path": "/srv/state", "data": "state.tar.gz"}]}
    shutil.copy(FIXTURES / INDEX["conf.tar.gz"]["file"], d / "conf.tar.gz")
    shutil.copy(FIXTURES / INDEX["state.tar.gz"]["file"], d / "state.tar.gz")
    if image:
        shutil.copy(FIXTURES / aci["file"], d / "busybox.aci")
        pod["containers"][0]["image"] = aci["id"]
        pod["images"] = [{"id": aci["id"], "path": "busybox.aci"}]
        (d / "shop.service").write_text(UNIT)
    else:
        (d / "shop.service").write_text(PLAIN_UNIT)
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def full_life():
    """Everything ops writes, once: deploy (secret env), switch, a volume
    replaced, an image imported by ops_image, idle, a release published."""
    v1, v2 = bundle("1"), bundle("2")
    ok(ops("ops_pod", bundle=v1, env={"SECRET": SECRET}), True)
    ok(ops("ops_pod", bundle=v2, env={"SECRET": SECRET}), True)
    ok(ops("ops_volume", pod="shop", version="2", name="state",
           data=FIXTURES / INDEX["v1.tar.gz"]["file"], replace=True), True)
    ok(ops("ops_image", path=FIXTURES / INDEX["aci"]["file"], id=INDEX["aci"]["id"]), False)
    ok(ops("ops_pod", name="shop", state="idle"), True)
    ok(ops("ops_release", repo=kit.WORK / "repo", channel="stable", label="web", bundle=v2), True)


def ops_paths():
    """Every path ops wrote: the store, the release repository, and in the
    unit directory what is the pod's (named after it, or the boot link)."""
    paths = []
    for top in (ROOT, kit.WORK / "repo"):
        paths += [top, *sorted(top.rglob("*"))]
    for p in sorted(UNIT_DIR.rglob("*")):
        rel = p.relative_to(UNIT_DIR)
        if rel.parts[0].startswith(("shop-", "ops-shop")) or p.name.startswith("ops-shop"):
            paths.append(p)
    return paths


def classify(p):
    """The class of a path, and the modes it may have (mask, allowed)."""
    rel = str(p)
    if "/volumes/" in rel and "/data" in rel.split("/volumes/", 1)[1]:
        return "volume data (the archive's own modes)", None
    if "/rootfs" in rel and rel.startswith(str(ROOT / "images")):
        return "image root filesystem (the image's own modes)", None
    if p.is_symlink():
        return "symlink", None
    if p.name == "environment":
        return "secret environment (0600 root)", {0o600}
    if p.is_dir():
        return "directory (not group/other-writable)", "dir"
    if p == ROOT / "bin" / "ops-wake":
        return "waker binary (0755 root)", {0o755}
    if p.name == "lock":
        return "lock file", "file"
    return "file (not group/other-writable)", "file"


def modes():
    kit.start("ops-security-")
    full_life()
    classes = {}
    problems = []
    for p in ops_paths():
        st = p.lstat()
        name, allowed = classify(p)
        classes[name] = classes.get(name, 0) + 1
        mode = stat.S_IMODE(st.st_mode)
        if allowed is None:
            # Content of an image or a volume: as shipped, but never
            # world-writable without the sticky bit, and nothing ops
            # owns there as another user's but what the archive says.
            if not p.is_symlink() and mode & 0o002 and not mode & 0o1000:
                problems.append(f"{p}: world-writable {oct(mode)}")
            continue
        if st.st_uid != 0:
            problems.append(f"{p}: owned by uid {st.st_uid}, not root")
        if allowed == "dir" or allowed == "file":
            if mode & 0o022:
                problems.append(f"{p}: {oct(mode)} is group or other writable")
            if mode & 0o7000:
                problems.append(f"{p}: {oct(mode)} has setuid/setgid/sticky")
        elif mode not in allowed:
            problems.append(f"{p}: {oct(mode)}, expected {' or '.join(map(oct, allowed))}")
    for name, n in sorted(classes.items()):
        print(f"  {n:5d}  {name}")
    envs = [p for p in ROOT.rglob("environment")]
    expect(envs, "the secret environment was written")
    for p in ROOT.rglob("*"):
        if p.is_file() and not p.is_symlink() and "/rootfs/" not in str(p) and p.stat().st_mode & 0o004:
            expect(SECRET.encode() not in p.read_bytes(), f"{p} is world-readable and holds the secret")
    for p in UNIT_DIR.rglob("*"):
        if p.is_file() and not p.is_symlink():
            expect(SECRET.encode() not in p.read_bytes(), f"{p} holds the secret")
    count("paths", sum(classes.values()))
    expect(not problems, "modes:\n  " + "\n  ".join(problems))


def fifo_at(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path, 0o600)


def as_nobody_can_plant(at):
    """Whether `nobody` can put a link at `at` (it tries)."""
    r = subprocess.run(["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
                        "--clear-groups", "ln", "-s", "/etc/shadow", str(at) + ".probe"],
                       capture_output=True, text=True)
    if r.returncode == 0:
        Path(str(at) + ".probe").unlink()
    return r.returncode == 0


def plant_sites():
    """Each record of the store and each unit file ops wrote (pod shop,
    current version 2 after full_life)."""
    image_dir = next((ROOT / "images" / "systemd").iterdir())
    port = next((ROOT / "ports").iterdir())
    store = [ROOT / "layout-version", ROOT / "lock.holder", port,
             ROOT / "pods/shop/2/meta.json", ROOT / "pods/shop/2/environment",
             ROOT / "pods/shop/2/pod.json", ROOT / "pods/shop/2/units/shop.service",
             ROOT / "pods/shop/1/meta.json", ROOT / "pods/shop/_idle",
             ROOT / "pods/shop/2/volumes/conf/volume.json", image_dir / "image.json"]
    units = [UNIT_DIR / "shop-2-shop.service", UNIT_DIR / "shop-2-shop.service.d/50-ops.conf",
             UNIT_DIR / "ops-shop.target"]
    return [p for p in store + units if p.exists() or p == ROOT / "lock.holder"]


def shadow_leaked(result):
    text = json.dumps(result)
    lines = [ln for ln in SHADOW.read_text().splitlines() if ln.count(":") > 3]
    return any(ln.split(":")[1] and ln.split(":")[1] in text and len(ln.split(":")[1]) > 2
               for ln in lines) or any(ln in text for ln in lines)


def planted():
    """Run after modes(), on the store its full life left."""
    fifo = kit.WORK / "fifo"
    os.mkfifo(fifo, 0o644)
    shadow_before = SHADOW.read_bytes()
    refused = ignored = 0
    by_nobody = by_root = 0
    problems = []
    for site in plant_sites():
        for kind, target in (("shadow", SHADOW), ("fifo", fifo), ("dangling", Path("/nonexistent/x"))):
            label = f"{site} -> {kind}"
            saved = kit.WORK / "saved"
            had = site.exists() and not site.is_symlink()
            if had:
                shutil.copy2(site, saved)
            if as_nobody_can_plant(site):
                by_nobody += 1
                subprocess.run(["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
                                "--clear-groups", "ln", "-sfn", str(target), str(site)], check=True)
            else:
                by_root += 1
                if site.exists() or site.is_symlink():
                    site.unlink()
                site.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, site)
            before = snapshot(ROOT, UNIT_DIR)
            results = {}
            try:
                refused, ignored = try_site(site, target, fifo, label, before, shadow_before,
                                            results, refused, ignored)
            except AssertionError as e:
                problems.append(str(e).splitlines()[0])
            site.unlink()
            if had:
                shutil.move(saved, site)
        print(f"  {site}: " + ", ".join(
            f"{n}: {'refused' if r.get('failed') else 'left alone'}" for n, r in results.items()))
    count("planted_by_nobody", by_nobody)
    count("planted_by_root", by_root)
    count("refused", refused)
    count("ignored", ignored)
    expect(not problems, "planted links:\n  " + "\n  ".join(problems))
    # The store works again once the links are gone.
    ok(ops("ops_facts"), False)


def try_site(site, target, fifo, label, before, shadow_before, results, refused, ignored):
    """Run the modules against one planted link; the updated counts."""
    runs = [("facts", "ops_facts", {}), ("pod", "ops_pod", {"name": "shop", "state": "idle"})]
    if target == SHADOW:
        # Check mode refuses as the run does (library/tests/pod.rs): once
        # per site is enough here.
        runs.append(("pod check", "ops_pod", {"name": "shop", "state": "started", "check_mode": True}))
    for name, binary, args in runs:
        started = time.monotonic()
        r = ops(binary, **args)
        took = time.monotonic() - started
        expect(took < 30, f"{label}: {name} took {took:.0f} s (blocked?)")
        expect(not r.get("died"), f"{label}: {name} died", r)
        expect(not shadow_leaked(r), f"{label}: {name} shows /etc/shadow", r)
        results[name] = r
    expect(os.readlink(site) == str(target), f"{label}: the link was replaced")
    expect(snapshot(ROOT, UNIT_DIR) == before, f"{label}: something changed")
    expect(SHADOW.read_bytes() == shadow_before, f"{label}: /etc/shadow changed")
    expect(stat.S_ISFIFO(fifo.lstat().st_mode), f"{label}: the FIFO was replaced")
    for name, r in results.items():
        if r.get("failed"):
            expect(str(site) in r["msg"] or str(site.parent) in r["msg"],
                   f"{label}: {name} fails without naming the path", r)
            refused += 1
        else:
            ignored += 1
    return refused, ignored


def swapper(bundle_dir, counts):
    """As nobody: swap the unit file with a link to /etc/shadow, and
    pod.json with another version's, back and forth, as fast as it can."""
    script = f"""
import os, shutil, time
d = {str(bundle_dir)!r}
# Kept aside: the good copies. Each swap is one rename over the name, so
# the name always holds something (a link or a regular file).
unit, pj, vol = d + '/shop.service', d + '/pod.json', d + '/state.tar.gz'
for name in (unit, pj, vol):
    shutil.copy(name, name + '.good')
open(pj + '.other', 'w').write(open(pj).read().replace('"version": "7"', '"version": "8"'))
def put_link(name, target):
    os.symlink(target, name + '.new'); os.replace(name + '.new', name)
def put_file(name, source):
    os.link(source, name + '.new'); os.replace(name + '.new', name)
n = 0
while not os.path.exists(d + '/stop'):
    put_link(unit, '/etc/shadow'); put_file(pj, pj + '.other')
    put_link(vol, {str(PRIVATE_TAR)!r})
    time.sleep(0.002)
    put_file(unit, unit + '.good'); put_file(pj, pj + '.good'); put_file(vol, vol + '.good')
    time.sleep(0.002)
    n += 1
print(n)
"""
    r = subprocess.run(["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
                        "--clear-groups", "python3", "-c", script], capture_output=True, text=True)
    counts["swaps"] = r.stdout.strip() or r.stderr


def private_tar():
    """A tar only root may read, holding a marker: what a swapped link to
    it would get extracted into a volume."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("private.txt")
        info.size = len(PRIVATE_MARK)
        tar.addfile(info, io.BytesIO(PRIVATE_MARK))
    PRIVATE_TAR.write_bytes(buf.getvalue())
    os.chmod(PRIVATE_TAR, 0o600)


def swap():
    kit.start("ops-security-")
    private_tar()
    d = bundle("7", image=False)
    validated = {(d / "pod.json").read_bytes(),
                 (d / "pod.json").read_bytes().replace(b'"version": "7"', b'"version": "8"')}
    for p in [d, *d.rglob("*")]:
        os.lchown(p, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(kit.WORK, 0o755)
    counts = {}
    t = threading.Thread(target=swapper, args=(d, counts))
    t.start()
    outcomes = {"deployed": 0, "refused": 0}
    samples = {}
    runs = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runs += 1
        r = ops("ops_pod", bundle=d, state="present")
        expect(not r.get("died"), "ops_pod died", r)
        expect(not shadow_leaked(r), "a result shows /etc/shadow", r)
        if r.get("failed"):
            expect(any(f in r["msg"] for f in ("shop.service", "pod.json", "state.tar.gz")),
                   "a refusal names the file", r)
            outcomes["refused"] += 1
            stage = ("at validation" if "outside the bundle" in r["msg"] or "resolves" in r["msg"]
                     else "at the copy (a symlink now)" if "symlink" in r["msg"] else "other")
            outcomes[stage] = outcomes.get(stage, 0) + 1
            samples.setdefault(stage, r["msg"].splitlines()[0][:240])
        else:
            outcomes["deployed"] += 1
        for version in ("7", "8"):
            gone = ops("ops_pod", name="shop", version=version, state="absent")
            expect(not gone.get("failed"), f"version {version} removed", gone)
    (d / "stop").touch()
    t.join()
    no_private_bytes()
    print(f"  {runs} runs against {counts.get('swaps')} swap rounds: {outcomes}")
    for stage, msg in samples.items():
        print(f"    refused {stage}, e.g.: {msg}")
    count("swap_runs", runs)
    count("swap_refused", outcomes["refused"])


def no_private_bytes():
    """No file ops wrote holds /etc/shadow or the private tar's marker."""
    shadow = SHADOW.read_bytes()
    for top in (ROOT, UNIT_DIR):
        for p in top.rglob("*"):
            if p.is_file() and not p.is_symlink() and p.stat().st_size:
                data = p.read_bytes()
                expect(shadow[:64] not in data, f"{p} holds /etc/shadow")
                expect(PRIVATE_MARK not in data, f"{p} holds the private tar's file")


def swap_stores_what_it_validated():
    """Last, without removals: a deploy under swapping stores the pod.json
    and unit file it validated (the store's copy matches its record)."""
    kit.start("ops-security-")
    d = bundle("7", image=False)
    for p in [d, *d.rglob("*")]:
        os.lchown(p, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(kit.WORK, 0o755)
    counts = {}
    t = threading.Thread(target=swapper, args=(d, counts))
    t.start()
    deployed = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and len(deployed) < 2:
        r = ops("ops_pod", bundle=d, state="present")
        if not r.get("failed"):
            deployed.append(sorted(p.name for p in (ROOT / "pods/shop").iterdir()))
    (d / "stop").touch()
    t.join()
    no_private_bytes()
    for v in ("7", "8"):
        vd = ROOT / "pods/shop" / v
        if not vd.exists():
            continue
        meta = json.loads((vd / "meta.json").read_text())
        stored = json.loads((vd / "pod.json").read_text())
        expect(stored["version"] == meta["pod"]["version"] == v,
               f"version {v}: the stored pod.json is the one validated")
        expect((vd / "units/shop.service").read_text() == PLAIN_UNIT,
               f"version {v}: the stored unit file is the bundle's")
    print(f"  deployed under swapping: {deployed}")


def swapping():
    """swap, then swap_stores_what_it_validated, in one sandbox."""
    swap()
    swap_stores_what_it_validated()


def store():
    """modes, then planted on the store it leaves, in one sandbox."""
    modes()
    planted()


SCENARIOS = {"store": store, "swapping": swapping}

if __name__ == "__main__":
    kit.run(SCENARIOS, sys.argv[2])
