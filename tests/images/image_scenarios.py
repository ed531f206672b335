"""ops_image (and ops_pod's images) against real components: podman, sqv,
an HTTP server on loopback and a booted systemd. One scenario per call,
run inside the sandbox (tests/systemd/sandbox) by tests/systemd/test-images.sh:

    python3 image_scenarios.py FIXTURES_DIR SCENARIO

FIXTURES_DIR holds what tests/images/fixtures.py built (busybox images as
ACI, OCI and Docker archives, layered ones, broken ones) and its index.json.
Each scenario drives the real module binaries the way Ansible does and
checks their results against the store, podman and systemd. Exit status 0
means every assertion held; otherwise the first failed one is printed.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "systemd"))
import scenario_kit as kit  # noqa: E402
from scenario_kit import PROJECT, expect, failed, ok, snapshot  # noqa: E402

ROOT = Path("/var/lib/ops")
WORK = kit.WORK  # set by kit.start() when a scenario runs
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 2 else Path("/nonexistent")
INDEX = json.loads((FIXTURES / "index.json").read_text()) if FIXTURES.exists() else {}
GOOD = [name for name, f in INDEX.items() if not f.get("broken")]
BROKEN = [name for name, f in INDEX.items() if f.get("broken")]
# podman here needs runc, cgroupfs and modest ulimits (see SANDBOX.md).
CONTAINERS_CONF = PROJECT / "tests" / "images" / "containers.conf"
PODMAN_ENV = {"CONTAINERS_CONF": str(CONTAINERS_CONF)}


def ops_image(**args):
    return kit.module("ops_image", process_env=PODMAN_ENV, **args)


def ops_pod(**args):
    args.setdefault("start_timeout", 20)
    return kit.module("ops_pod", process_env=PODMAN_ENV, **args)


def podman(*args):
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env)


def podman_images():
    return sorted(podman("images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}")
                  .stdout.split("\n"))


def fixture(name):
    entry = INDEX[name]
    return entry, FIXTURES / entry["file"]


def assert_tree(rootfs, entry, what):
    rootfs = Path(rootfs)
    for path, digest in entry["files"].items():
        expect((rootfs / path).is_file(), f"{what}: {path} is in the image")
        expect(hashlib.sha256((rootfs / path).read_bytes()).hexdigest() == digest,
               f"{what}: {path} has the image's content")
    for path in entry.get("absent", []):
        expect(not os.path.lexists(rootfs / path), f"{what}: {path} is whited out")
    for path, target in entry.get("symlinks", {}).items():
        expect(os.readlink(rootfs / path) == target, f"{what}: {path} -> {target}")


def every_format_into_systemd():
    """Each good fixture unpacked into the store; a rerun does nothing."""
    for name in GOOD:
        entry, path = fixture(name)
        r = ok(ops_image(id=entry["id"], path=path), True)
        expect(r["format"] == entry["format"], f"{name}: format reported", r)
        expect(r["location"].startswith(str(ROOT / "images/systemd/")), f"{name}: location", r)
        assert_tree(r["location"], entry, name)
        again = ok(ops_image(id=entry["id"], path=path), False)
        expect(again["location"] == r["location"] and again["size"] == r["size"], "same image", again)
        ok(ops_image(id=entry["id"], state="absent"), True)
        expect(not Path(r["location"]).exists(), f"{name}: removed")
    expect(not (ROOT / "staging").exists(), "no staging left behind")


def every_format_into_podman():
    """ACI by podman import with its app as config; OCI and Docker by
    podman load; present already means nothing to do."""
    for name in ["aci", "aci-xz", "oci", "docker", "oci-layers", "docker-layers"]:
        entry, path = fixture(name)
        r = ok(ops_image(id=entry["id"], path=path, runtime="podman"), True)
        location = r["location"]
        expect(podman("image", "exists", location).returncode == 0, f"{name}: podman has {location}", r)
        ok(ops_image(id=entry["id"], path=path, runtime="podman"), False)
        if entry["format"] == "aci":
            config = json.loads(podman("image", "inspect", location).stdout)[0]["Config"]
            expect(config.get("Cmd") == ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                   "the ACI's exec became the image's command", config)
            expect("GREETING=hello" in config.get("Env", []), "the ACI's environment", config)
            expect("8080/tcp" in config.get("ExposedPorts", {}), "the ACI's ports", config)
        else:
            expect(location == entry["id"].split(":")[1], "podman knows it by its id", r)
        exported = WORK / f"export-{name}"
        container = podman("create", location, "/bin/true").stdout.strip()
        exported.mkdir()
        subprocess.run(f"podman export {container} | tar -x -C {exported}", shell=True,
                       check=True, env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})
        podman("rm", container)
        assert_tree(exported, entry, f"{name} in podman")
        ok(ops_image(id=entry["id"], state="absent", runtime="podman"), True)
        expect(podman("image", "exists", location).returncode != 0, f"{name}: podman removed it")


def broken_images_change_nothing():
    """Truncated, corrupt, wrong id, not an image: a clear failure, and the
    store and podman are as they were."""
    # A store with an image in it already (not one the broken ones claim).
    entry, path = fixture("docker")
    ok(ops_image(id=entry["id"], path=path), True)
    store_before, images_before = snapshot(ROOT), podman_images()
    expected = {
        "aci-truncated": "ends early",
        "aci-corrupt": "is not image",
        "oci-bad-layer": "is corrupt",
        "not-an-image": "is not an image",
    }
    for runtime in ["systemd", "podman"]:
        for name in BROKEN:
            entry, path = fixture(name)
            r = ops_image(id=entry["id"], path=path, runtime=runtime)
            if runtime == "podman" and name == "oci-bad-layer":
                # The config is intact; podman load checks the layers.
                failed(r, "Digest did not match")
            else:
                failed(r, str(path), expected[name])
            expect(snapshot(ROOT) == store_before, f"{runtime}/{name}: the store is untouched", r)
            expect(podman_images() == images_before, f"{runtime}/{name}: podman is untouched", r)
        entry, path = fixture("oci")
        wrong = "sha256:" + "0" * 64
        failed(ops_image(id=wrong, path=path, runtime=runtime), f"is not image {wrong}: it is {entry['id']}")
        expect(snapshot(ROOT) == store_before, f"{runtime}: wrong id leaves the store untouched")


def gpg(home, *args):
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--quiet", *args],
                          capture_output=True, text=True, check=True)


def make_key(name):
    home = WORK / f"gnupg-{name}"
    home.mkdir(mode=0o700)
    gpg(home, "--passphrase", "", "--quick-generate-key", f"{name} <{name}@example.com>",
        "ed25519", "sign", "never")
    keyring = WORK / f"{name}.asc"
    keyring.write_text(gpg(home, "--armor", "--export").stdout)
    return home, keyring


def signatures():
    """Good, bad and missing signatures, checked by sqv before anything is
    stored."""
    entry, path = fixture("aci-gz")
    home, keyring = make_key("release")
    _, other_keyring = make_key("stranger")
    image = WORK / "signed.aci"
    shutil.copy(path, image)
    gpg(home, "--armor", "--detach-sign", "--output", f"{image}.asc", str(image))
    _, other_path = fixture("aci")
    gpg(home, "--armor", "--detach-sign", "--output", str(WORK / "other.asc"), str(other_path))
    docker, docker_path = fixture("docker")
    ok(ops_image(id=docker["id"], path=docker_path), True)
    untouched = snapshot(ROOT)
    failed(ops_image(id=entry["id"], path=image, signature=WORK / "other.asc", keyring=keyring),
           "does not verify")
    failed(ops_image(id=entry["id"], path=image, signature=f"{image}.asc", keyring=other_keyring),
           "does not verify")
    failed(ops_image(id=entry["id"], path=image, keyring=keyring, require_signature=True),
           "require_signature is set")
    failed(ops_image(id=entry["id"], path=image, signature=f"{image}.asc"), "no keyring")
    failed(ops_image(id=entry["id"], path=image, signature=WORK / "other.asc", keyring=keyring,
                     check_mode=True), "does not verify")
    expect(snapshot(ROOT) == untouched, "refused signatures left the store untouched")
    r = ok(ops_image(id=entry["id"], path=image, signature=f"{image}.asc", keyring=keyring,
                     require_signature=True), True)
    assert_tree(r["location"], entry, "signed image")


def downloads():
    """http from a loopback server: verified while it streams; 404 and a
    stalled server fail clearly and leave nothing behind."""
    base = kit.serve(FIXTURES)
    entry, path = fixture("aci-xz")
    docker, docker_path = fixture("docker")
    ok(ops_image(id=docker["id"], path=docker_path), True)
    untouched = snapshot(ROOT)
    failed(ops_image(id=entry["id"], uri=f"{base}/missing.aci"), "answered HTTP 404")
    began = time.monotonic()
    failed(ops_image(id=entry["id"], uri=f"{base}/stall/{path.name}", timeout=2), "timeout of 2 s")
    expect(time.monotonic() - began < 15, "the stall was cut off by the timeout")
    failed(ops_image(id="sha512-" + "1" * 128, uri=f"{base}/{path.name}"), "is not image")
    expect(snapshot(ROOT) == untouched, "failed downloads left nothing behind")
    r = ok(ops_image(id=entry["id"], uri=f"{base}/{path.name}"), True)
    assert_tree(r["location"], entry, "downloaded image")
    oci, oci_path = fixture("oci")
    r = ok(ops_image(id=oci["id"], uri=f"{base}/{oci_path.name}", runtime="podman"), True)
    expect(podman("image", "exists", r["location"]).returncode == 0, "downloaded into podman", r)
    layered, layered_path = fixture("oci-layers")
    plan = ok(ops_image(id=layered["id"], uri=f"{base}/{layered_path.name}", check_mode=True), True)
    expect(not Path(plan["location"]).exists(), "check mode downloaded nothing", plan)


WEB = """[Unit]
Description=busybox httpd from the pod's image

[Service]
ExecStartPre=-/bin/busybox touch /www/written-by-the-unit
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:18080 -h /www
"""


def pod_bundle(version, entry, path, unit=WEB, name="site"):
    d = WORK / f"{name}-{version}"
    d.mkdir()
    (d / "web.service").write_text(unit)
    shutil.copy(path, d / path.name)
    pod = {"name": name, "version": version,
           "containers": [{"name": "web", "image": entry["id"],
                           "systemd": {"unit-files": ["web.service"]}}],
           "images": [{"id": entry["id"], "path": path.name}]}
    (d / "pod.json").write_text(json.dumps(pod))
    return d


def fetch(url, attempts=50):
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers at {url}")


def pod_runs_in_its_image():
    """A unit runs busybox httpd from its image via RootDirectory= and
    serves the image's page; the image is read-only to it; it cannot be
    removed while used; undeploying removes it."""
    entry, path = fixture("aci-gz")
    bundle = pod_bundle("1", entry, path)
    plan = ok(ops_pod(bundle=bundle, check_mode=True, diff=True), True)
    expect(plan["actions"][0].startswith(f"import image {entry['id']}"), "import planned first", plan)
    expect(not ROOT.exists(), "check mode imported nothing")
    r = ok(ops_pod(bundle=bundle), True)
    page = fetch("http://127.0.0.1:18080/index.html")
    expect(page == "hello from the aci image\n", f"the image's page is served: {page!r}")
    rootfs = ROOT / "images/systemd" / f"sha512-{entry['id'][7:39]}" / "rootfs"
    expect(rootfs.is_dir(), "the image is in the store", r)
    expect(not (rootfs / "www/written-by-the-unit").exists(), "the unit could not write to its image")
    ok(ops_pod(bundle=bundle), False)
    failed(ops_image(id=entry["id"], state="absent"), "is used by site/1")
    expect(rootfs.is_dir(), "a used image stays")
    ok(ops_pod(name="site", state="stopped", version="1"), True)
    gone = ok(ops_pod(name="site", state="absent"), True)
    expect(any(a.startswith(f"remove image {entry['id']}") for a in gone["actions"]),
           "undeploy removes the unused image", gone)
    expect(not rootfs.exists() and not (ROOT / "images").exists(), "the image is gone")


PODMAN_WEB = """[Unit]
Description=busybox httpd in podman from the pod's image

[Service]
ExecStartPre=-/usr/bin/podman rm -f site-web
ExecStart=/usr/bin/podman run --rm --name site-web --network=host ${OPS_IMAGE} /bin/busybox httpd -f -p 127.0.0.1:18081 -h /www
ExecStop=/usr/bin/podman stop -t 2 site-web
ExecStopPost=-/usr/bin/podman rm -f --ignore site-web
"""


def pod_runs_in_podman():
    """The podman runtime: ops_pod loads the image into podman and the unit
    runs it by the reference in OPS_IMAGE."""
    entry, path = fixture("oci")
    bundle = pod_bundle("1", entry, path, unit=PODMAN_WEB)
    pod = json.loads((bundle / "pod.json").read_text())
    pod["environment"] = {"CONTAINERS_CONF": str(CONTAINERS_CONF)}
    (bundle / "pod.json").write_text(json.dumps(pod))
    r = ok(ops_pod(bundle=bundle, runtime="podman"), True)
    page = fetch("http://127.0.0.1:18081/index.html", attempts=100)
    expect(page == "hello from the oci image\n", f"podman serves the image's page: {page!r}", r)
    failed(ops_pod(bundle=bundle, runtime="systemd"), "runs its images in the podman runtime")
    ok(ops_pod(name="site", state="stopped", version="1"), True)
    ok(ops_pod(name="site", state="absent"), True)
    expect(podman("image", "exists", entry["id"].split(":")[1]).returncode != 0,
           "undeploy removed the image from podman")

    # A container podman keeps (not the unit's: made by hand) holds the
    # image: the pod goes all the same, the image stays, with a warning
    # that names the way out.
    ok(ops_pod(bundle=bundle, runtime="podman"), True)
    ok(ops_pod(name="site", state="stopped", version="1"), True)
    ref = entry["id"].split(":")[1]
    expect(podman("create", "--name", "left-behind", ref, "/bin/true").returncode == 0,
           "a container of the image is made by hand")
    r = ok(ops_pod(name="site", state="absent"), True)
    warnings = " ".join(r.get("warnings", []))
    expect("podman keeps it" in warnings and "podman rm" in warnings,
           "the warning says why the image stays and how to remove it", r)
    expect(podman("image", "exists", ref).returncode == 0, "the image stays in podman")
    expect(not (ROOT / "pods" / "site").exists(), "the pod is gone")
    podman("rm", "left-behind")
    ok(ops_image(id=entry["id"], runtime="podman", state="absent"), True)
    expect(podman("image", "exists", ref).returncode != 0, "then ops_image removes it")


SCENARIOS = {f.__name__: f for f in [
    every_format_into_systemd,
    every_format_into_podman,
    broken_images_change_nothing,
    signatures,
    downloads,
    pod_runs_in_its_image,
    pod_runs_in_podman,
]}

if __name__ == "__main__":
    WORK = kit.start("ops-image-scenario-")
    kit.run(SCENARIOS, sys.argv[2])
