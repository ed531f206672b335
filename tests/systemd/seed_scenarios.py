"""The seeds' own examples against a real systemd: one scenario per call,
run inside the sandbox (tests/systemd/sandbox) by test-seeds.sh.

    python3 seed_scenarios.py SCENARIO

Each scenario deploys the example pod.json of a seed (shared/seeds/000 and
001) as written there, without its comments and with its placeholders
(`...`, `sha512-XXX`, `path/to/...`) filled with real files: a busybox ACI
built as tests/images/fixtures.py builds its fixtures, a data archive, a
unit file. The unit is busybox httpd on the PORT ops gives each instance,
serving the volume's data, so "running" is checked by fetching the page of
every instance. Exit status 0 means every assertion held.
"""

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import scenario_kit as kit
from scenario_kit import expect, ok, page

sys.path.insert(0, str(kit.PROJECT / "tests" / "images"))
import fixtures  # noqa: E402  (tests/images, for the ACI)

PORTS = [8080, 8081, 8082]

# The seeds' unit: plain (not a template), as seed 000 ships example.service;
# PORT is the instance's own (its name), the volume comes as OPS_VOLUME_*.
UNIT = """[Unit]
Description=the seeds' example service

[Service]
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:${PORT} -h ${OPS_VOLUME_VOLUME_NAME}
"""


def aci(directory, name, greeting):
    """A busybox ACI written to directory/name; its id."""
    tree = fixtures.base_tree(greeting.encode())
    manifest = (json.dumps(fixtures.ACI_MANIFEST, indent=2) + "\n").encode()
    rootfs = [fixtures.Entry("rootfs/" + e.path, e.kind, e.data, e.target, e.mode) for e in tree]
    data = fixtures.make_tar([fixtures.f("manifest", manifest), fixtures.d("rootfs")] + rootfs)
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return "sha512-" + hashlib.sha512(data).hexdigest()


def data_archive(path, text, gz=False):
    """A tar (gzip when gz) holding index.html with `text`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        info = tarfile.TarInfo("index.html")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())



def active(unit):
    return subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                          text=True).stdout.strip()


def deploy_twice(bundle, pod, version, text, facts_check):
    """Deploy `bundle` (check mode first: nothing written), see every
    instance serve `text`, check the facts, rerun: changed=false."""
    planned = kit.module("ops_pod", check_mode=True, bundle=bundle, state="started")
    ok(planned, True)
    expect(not Path("/var/lib/ops/pods").joinpath(pod).exists(), "check mode stored nothing", planned)
    r = ok(kit.module("ops_pod", bundle=bundle, state="started", start_timeout=20), True)
    for port in PORTS:
        unit = f"{pod}-{version}-example{'-pod' if pod == 'example-pod' else ''}@{port}.service"
        expect(active(unit) == "active", f"{unit} is active", r)
        expect(page(port) == text, f"port {port} serves the volume's page")
    facts = ok(kit.module("ops_facts", pods=[pod]), False)["ansible_facts"]["ops"]
    facts_check(facts["pods"][pod]["versions"][str(version)], r)
    again = ok(kit.module("ops_pod", bundle=bundle, state="started", start_timeout=20), False)
    expect(again["actions"] == [], "the rerun does nothing", again)
    return r


def seed000_example():
    """Seed 000's example pod.json: example.service replicated on 8080-8082."""
    b = kit.WORK / "seed000"
    b.mkdir()
    (b / "example.service").write_text(UNIT)
    image_id = aci(b, "example.aci", "the seed 000 image\n")
    data_archive(b / "data.tar", "seed 000 data")
    # As seed 000 writes it; the placeholders filled: the image's id, its
    # path (a path or a uri, not both), no signature (optional).
    pod = {
        "name": "example",
        "version": 1001,
        "containers": [
            {
                "name": "frontend",
                "replication": [8080, 8081, 8082],
                "systemd": {
                    "unit-files": [
                        "example.service",
                    ],
                },
            },
        ],
        "images": [
            {
                "id": image_id,
                "path": "example.aci",
            },
        ],
        "volumes": [
            {
                "name": "volume-name",
                "path": "/var/lib/example",
                "read-only": True,
                "data": "data.tar",
            },
        ],
    }
    (b / "pod.json").write_text(json.dumps(pod, indent=4))

    def facts_check(version, r):
        unit = version["units"][0]
        expect(unit["name"] == "example@.service" and unit["shipped_as"] == "example.service"
               and unit["installed_as"] == "example-1001-example@.service",
               "the plain unit is installed as its template", version)
        expect([i["instance"] for i in unit["instances"]] == ["8080", "8081", "8082"],
               "one instance per port", version)
        expect(version["images"] == [image_id], "the image is the pod's", version)
        held = sorted((p["instance"], p["port"], p["kind"]) for p in r["ports"])
        expect(held == [(str(p), p, "instance") for p in PORTS], "the ports are held", r)

    deploy_twice(b, "example", 1001, "seed 000 data", facts_check)


def write_seed001(b, unit_file, image, version=1001):
    """Seed 001's pod manifest in bundle `b`, with the `ops` annotation as
    the seed writes it, its unit file and image as given."""
    ops = {
        "name": "example-pod",
        "version": version,
        "systemd-units": [
            {
                "unit-file": unit_file,
                "start": True,
                "instances": [8080, 8081, 8082],
            },
        ],
        "images": [
            image,
        ],
        "volumes": [
            {
                "volume": "volume-name",
                "data": "path/to/data.tar.gz",
            },
        ],
    }
    manifest = {
        "acVersion": "0.8.6",
        "acKind": "PodManifest",
        "annotations": [{"name": "ops", "value": json.dumps(ops, indent=4)}],
        "apps": [{"name": "web", "mounts": [{"volume": "volume-name", "path": "/var/lib/example"}]}],
        "volumes": [{"name": "volume-name", "kind": "host", "readOnly": True}],
    }
    (b / "pod.json").write_text(json.dumps(manifest, indent=4))


def seed001_example():
    """Seed 001's Appc example: instances on a plain unit, an image without id."""
    b = kit.WORK / "seed001"
    (b / "path" / "to").mkdir(parents=True)
    # The unit file by URI ("either a path or an URI"), from an HTTP server.
    served = kit.WORK / "served"
    served.mkdir()
    (served / "example-pod.service").write_text(UNIT)
    fetched = []
    unit_uri = kit.serve(served, log=fetched) + "/example-pod.service"
    image_id = aci(b, "path/to/image.aci", "the seed 001 image\n")
    data_archive(b / "path" / "to" / "data.tar.gz", "seed 001 data", gz=True)
    # The `ops` annotation as seed 001 writes it; the unit file is given by
    # URI, the image's optional id and signature are left out. The `...` of
    # the manifest: the app that mounts the volume, and the volume.
    write_seed001(b, unit_uri, {"path": "path/to/image.aci"})

    def facts_check(version, r):
        unit = version["units"][0]
        expect(unit["name"] == "example-pod@.service"
               and unit["shipped_as"] == "example-pod.service",
               "the plain unit is installed as its template", version)
        expect(version["images"] == [image_id], "the image's id is computed from its file", version)
        expect(any("pod.json gives no id, so ops computed " + image_id in w
                   for w in r.get("warnings", [])), "adding it warns that nothing pinned it", r)
        meta = json.loads(Path("/var/lib/ops/pods/example-pod/1001/meta.json").read_text())
        expect(meta["pod"]["images"][0] == {"id": image_id, "source": {"path": "path/to/image.aci"},
                                            "signature": None, "computed": True},
               "meta.json records the computed id", meta)
        expect(meta["pod"]["units"][0]["uri"] == unit_uri, "meta.json keeps the unit's URI", meta)
        stored = Path("/var/lib/ops/pods/example-pod/1001/units/example-pod@.service")
        expect(stored.read_text() == UNIT, "the fetched unit file is stored with the version")
        rootfs = Path(f"/var/lib/ops/images/systemd/{image_id[:7 + 32]}/rootfs")
        expect((rootfs / "www" / "index.html").read_text() == "the seed 001 image\n",
               "the image is imported")

    deploy_twice(b, "example-pod", 1001, "seed 001 data", facts_check)
    # Check mode and the run fetched it; the rerun used the stored copy.
    expect(fetched == ["/example-pod.service"] * 2, f"fetched to plan and to run only: {fetched}")


def seed001_image_by_uri():
    """Seed 001's image given by `uri` ("could be without scheme" aside:
    over HTTP here) and without its optional id: check mode downloads
    nothing, the run downloads it once to compute its id, a rerun (the same
    uri: the same image) downloads nothing, per the server's log."""
    b = kit.WORK / "seed001-uri"
    (b / "path" / "to").mkdir(parents=True)
    (b / "path" / "to" / "example-pod.service").write_text(UNIT)
    served = kit.WORK / "served-images"
    served.mkdir()
    fetched = []
    image_uri = kit.serve(served, log=fetched) + "/image.aci"
    image_id = aci(served, "image.aci", "the seed 001 image by uri\n")
    data_archive(b / "path" / "to" / "data.tar.gz", "seed 001 data", gz=True)
    write_seed001(b, "path/to/example-pod.service", {"uri": image_uri})

    planned = kit.module("ops_pod", check_mode=True, bundle=b, state="started")
    ok(planned, True)
    expect(planned["actions"][0].startswith(f"download image {image_uri} and compute its id "
                                            "(pod.json gives none: unknown until downloaded"),
           "check mode says the id is unknown until downloaded", planned)
    expect(fetched == [], f"check mode downloads nothing: {fetched}")

    def facts_check(version, r):
        expect(r["actions"][0] == f"download image {image_uri} to compute its id "
               f"(pod.json gives none): {image_id}", "the run downloads it first", r)
        expect(f"import image {image_id} from {image_uri} (the copy downloaded to compute its id) "
               "into systemd" in r["actions"], "and imports that copy", r)
        expect(version["images"] == [image_id], "the image's id is computed from the download",
               version)
        expect(any("pod.json gives no id, so ops computed " + image_id in w
                   for w in r.get("warnings", [])), "adding it warns that nothing pinned it", r)
        meta = json.loads(Path("/var/lib/ops/pods/example-pod/1001/meta.json").read_text())
        expect(meta["pod"]["images"][0] == {"id": image_id, "source": {"uri": image_uri},
                                            "signature": None, "computed": True},
               "meta.json records the computed id", meta)
        rootfs = Path(f"/var/lib/ops/images/systemd/{image_id[:7 + 32]}/rootfs")
        expect((rootfs / "www" / "index.html").read_text() == "the seed 001 image by uri\n",
               "the downloaded copy is imported")
        expect(not Path("/var/lib/ops/staging").exists(), "the downloaded copy is gone")

    deploy_twice(b, "example-pod", 1001, "seed 001 data", facts_check)
    expect(fetched == ["/image.aci"], f"downloaded once, by the run only: {fetched}")

    # A new version whose image stalls past download_timeout: refused,
    # naming pod.json and the field, the store as it was.
    stalled = image_uri.replace("/image.aci", "/stall/image.aci")
    write_seed001(b, "path/to/example-pod.service", {"uri": stalled}, version=1002)
    before = kit.snapshot("/var/lib/ops", "/etc/systemd/system")
    r = kit.module("ops_pod", bundle=b, state="started", download_timeout=2)
    expect(r.get("failed") and "pod.json: annotations[0].value.images[0].uri: cannot download "
           + stalled in r["msg"] and "timeout of 2 s" in r["msg"], "a stalled download is refused", r)
    expect(kit.snapshot("/var/lib/ops", "/etc/systemd/system") == before,
           "the store and unit files are as they were", r)


SCENARIOS = {f.__name__: f for f in [
    seed000_example,
    seed001_example,
    seed001_image_by_uri,
]}

if __name__ == "__main__":
    kit.start("ops-seed-scenario-")
    kit.run(SCENARIOS, sys.argv[1])
