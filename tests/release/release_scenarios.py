"""Releases against a booted systemd: ops_release publishes bundles into a
repository, ops_pod deploys from it by channel, from the directory and over
HTTP (a loopback static server that follows symlinks and logs what it is
asked for). One scenario per call, run inside the sandbox
(tests/systemd/sandbox) by tests/systemd/test-release.sh:

    python3 release_scenarios.py FIXTURES_DIR SCENARIO

FIXTURES_DIR is what tests/volumes/fixtures.py built (the busybox ACI and
the volume archives). Each scenario drives the real module binaries the way
Ansible does and checks their results against the repository, the store,
the unit files, the server's log and the running services. Exit status 0
means every assertion held; otherwise the first failed one is printed.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "systemd"))
import scenario_kit as kit  # noqa: E402
from scenario_kit import expect, failed, ok, snapshot  # noqa: E402

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 2 else Path("/nonexistent")
INDEX = json.loads((FIXTURES / "index.json").read_text()) if FIXTURES.exists() else {}
CHANNEL, LABEL = "stable", "web"

# Runs in the busybox image and says which version it is and what its
# read-only volume holds.
UNIT = """[Unit]
Description=a release of the release tests

[Service]
ExecStart=/bin/busybox sh -c 'echo "version $POD_VERSION reads: $(/bin/busybox cat /srv/conf/hello.txt)"; exec /bin/busybox sleep 3600'
"""


def variant_aci(path, tag):
    """The busybox ACI with one more file, written to `path`: another
    image, with its own id (sha512 of the uncompressed tar)."""
    with tarfile.open(FIXTURES / INDEX["aci"]["file"]) as original:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as variant:
            for member in original.getmembers():
                data = original.extractfile(member) if member.isfile() else None
                variant.addfile(member, data)
            extra = tarfile.TarInfo("rootfs/etc/variant")
            extra.size = len(tag)
            variant.addfile(extra, io.BytesIO(tag.encode()))
    path.write_bytes(buffer.getvalue())
    return {"id": "sha512-" + hashlib.sha512(buffer.getvalue()).hexdigest(), "file": path.name}


def bundle(version, conf="conf.tar.gz", variant=None):
    """Pod shop at `version`: the busybox image (or a variant of it, with
    its own id), a unit in it, a read-only volume from the fixture
    `conf`."""
    d = kit.WORK / f"bundle-{version}"
    d.mkdir()
    if variant:
        aci = variant_aci(d / "busybox.aci", variant)
    else:
        aci = INDEX["aci"]
        shutil.copy(FIXTURES / aci["file"], d / "busybox.aci")
    shutil.copy(FIXTURES / INDEX[conf]["file"], d / "conf.tar.gz")
    (d / "shop.service").write_text(UNIT)
    pod = {
        "name": "shop", "version": version,
        "containers": [{"name": "shop", "image": aci["id"],
                        "systemd": {"unit-files": ["shop.service"]}}],
        "images": [{"id": aci["id"], "path": "busybox.aci"}],
        "volumes": [{"name": "conf", "path": "/srv/conf", "read-only": True,
                     "data": "conf.tar.gz"}],
    }
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def repo():
    return kit.WORK / "repo"


def publish(version, changed=True, **args):
    args.setdefault("bundle", kit.WORK / f"bundle-{version}")
    r = kit.module("ops_release", repo=repo(), channel=CHANNEL, label=LABEL, **args)
    return ok(r, changed)


def deploy(source, changed=True, check_mode=False, **args):
    r = kit.module("ops_pod", check_mode=check_mode, repo=source, channel=CHANNEL, label=LABEL,
                   name="shop", start_timeout=20, **args)
    return ok(r, changed)


def says(version):
    """The running service of `version` says so, with its volume's text."""
    unit = f"shop-{version}-shop.service"
    want = f"version {version} reads: read me, do not write me"
    for _ in range(50):
        state = subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                               text=True).stdout.strip()
        log = subprocess.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"],
                             capture_output=True, text=True).stdout
        if state == "active" and want in log:
            return
        time.sleep(0.2)
    raise AssertionError(f"{unit} is {state} and its journal lacks {want!r}:\n{log}")


def tip():
    return os.readlink(repo() / "channels" / CHANNEL / LABEL / "shop" / "tip")


ARTIFACTS = (".aci", ".tar.gz")


def artifacts(log):
    return [p for p in log if p.endswith(ARTIFACTS)]


def publish_and_deploy_over_http():
    """Publish, republish (no change), deploy tip over HTTP, a rerun that
    downloads nothing large, move tip, roll forward and back by version."""
    bundle("1")
    r = publish("1")
    expect(r["tip"] == "1" and r["version"] == "1", "version 1 is published and tip", r)
    publish("1", changed=False)
    log = []
    url = kit.serve(repo(), log)
    r = deploy(url)
    expect(r["tip"] == "1" and r["current"] == "1", "tip named version 1, now current", r)
    says("1")
    got = artifacts(log)
    expect(len(got) == 2, f"the image and the volume archive were downloaded once: {got}")
    log.clear()
    deploy(url, changed=False)
    expect(not artifacts(log), f"a rerun downloads no artifact: {log}")
    expect(all(p.endswith(("release.json", "pod.json", ".service")) for p in log),
           f"a rerun fetches the small files only: {log}")

    bundle("2")
    r = publish("2")
    expect(tip() == "2" and r["tip"] == "2", "tip moved to 2", r)
    log.clear()
    r = deploy(url)
    expect(r["tip"] == "2" and r["current"] == "2" and r["previous"] == "1", "tip is 2", r)
    says("2")
    got = artifacts(log)
    expect(got == [f"/channels/{CHANNEL}/{LABEL}/shop/2/conf.tar.gz"],
           f"the image (same id) was not downloaded again, the new volume was: {got}")
    log.clear()
    r = deploy(url, version="1")
    expect(r["current"] == "1" and r["tip"] is None, "rolled back to 1 by version", r)
    says("1")
    expect(not artifacts(log), f"rolling back downloads nothing large: {log}")
    r = deploy(url, version="2")
    expect(r["current"] == "2", "rolled forward to 2", r)
    says("2")
    # The same from the directory.
    deploy(repo(), changed=False, version="2")
    r = deploy(repo(), version="1")
    expect(r["current"] == "1" and r["release"].endswith("shop/1"), "from the directory", r)
    says("1")


def check_mode_fetches_small_files_only():
    """Check mode plans the deploy from the server, fetches release.json,
    pod.json and the unit file only, and changes nothing."""
    bundle("1")
    publish("1")
    log = []
    url = kit.serve(repo(), log)
    before = snapshot(ROOT, UNIT_DIR)
    r = deploy(url, check_mode=True)
    expect(r["tip"] == "1", "check mode says which version tip is", r)
    expect(snapshot(ROOT, UNIT_DIR) == before, "check mode changes nothing")
    expect(not artifacts(log), f"check mode downloads no artifact: {log}")
    expect(not list(Path("/tmp").glob("ops-release-*")), "no fetched files are left")


def tampered_repository_refused():
    """Artifacts changed in the repository after publishing are refused,
    the host stays as it was and keeps serving the running version."""
    bundle("1")
    publish("1")
    url = kit.serve(repo())
    deploy(url)
    says("1")
    bundle("2")
    publish("2")
    bundle("3", conf="state.tar.gz", variant="3")  # its own volume: not the one tampered with
    publish("3")
    # Version 2's volume is stored once, with version 1's: tamper with the
    # archive its link leads to.
    archive = (repo() / "channels" / CHANNEL / LABEL / "shop" / "2" / "conf.tar.gz").resolve()
    shutil.copy(FIXTURES / INDEX["state.tar.gz"]["file"], archive)
    images = repo() / "images" / LABEL
    (image3,) = [p for p in images.rglob("*.aci") if p.parent.name == "3"]
    # Another valid image: the plain busybox ACI, not version 3's id.
    shutil.copy(FIXTURES / INDEX["aci"]["file"], image3)
    # Version 2's image is the one the host has (not downloaded again, so
    # its volume is what is refused); version 3's is new, and not its id.
    for version, why in [("2", "does not match its checksum"), ("3", "sha512-")]:
        for source in (url, repo()):
            before = snapshot(ROOT, UNIT_DIR)
            r = kit.module("ops_pod", repo=source, channel=CHANNEL, label=LABEL, name="shop",
                           version=version, start_timeout=20)
            failed(r, why)
            expect(r["current"] == "1", "version 1 stays current", r)
            now = snapshot(ROOT, UNIT_DIR)
            now.pop(str(ROOT / "lock"), None)
            before.pop(str(ROOT / "lock"), None)
            expect(now == before, f"version {version} from {source}: nothing changed")
            says("1")


def escaping_link_refused():
    """A repository link that leads out of the repository is refused."""
    bundle("1")
    publish("1")
    link = repo() / "channels" / CHANNEL / LABEL / "shop" / "1" / "conf.tar.gz"
    outside = kit.WORK / "outside.tar.gz"
    shutil.copy(FIXTURES / INDEX["conf.tar.gz"]["file"], outside)
    link.unlink()
    link.symlink_to(outside)
    before = snapshot(ROOT, UNIT_DIR)
    r = kit.module("ops_pod", repo=repo(), channel=CHANNEL, label=LABEL, name="shop")
    failed(r, "outside the repository")
    expect(snapshot(ROOT, UNIT_DIR) == before, "nothing changed")


SCENARIOS = {f.__name__: f for f in [
    publish_and_deploy_over_http,
    check_mode_fetches_small_files_only,
    tampered_repository_refused,
    escaping_link_refused,
]}

if __name__ == "__main__":
    kit.start("ops-release-")
    kit.run(SCENARIOS, sys.argv[2])
