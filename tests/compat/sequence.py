"""One fixed sequence of module invocations, run inside a booted sandbox
(tests/systemd/sandbox) with the binaries of OPS_BIN_DIR; prints one JSON
record per invocation on stdout (request, result, whether a check-mode run
left the store and unit directory byte-identical, and a picture of them
after each real run). tests/compat/diff.sh runs it with two builds and
compares the normalised records.

    OPS_BIN_DIR=.../target/debug python3 sequence.py
"""

import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "systemd"))
import scenario_kit as kit  # noqa: E402

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
PROJECT = kit.PROJECT
# The same path in every run, so results naming bundles compare.
WORK = Path("/var/tmp/compat")

WEB = """[Unit]
Description=web %i of the test pod

[Service]
ExecStart=/bin/sh -c 'printf %%s "up $POD_NAME $POD_VERSION %i" > /run/web-$POD_VERSION-%i; exec sleep infinity'
"""
BROKEN = """[Service]
ExecStart=/bin/sh -c 'echo "cannot open config for %i" >&2; exit 3'
"""
PORT_WEB = """[Service]
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:${PORT_HTTP} -h /var/tmp
"""


def picture(*tops):
    """path -> (kind, mode, content digest or link target); never reads a
    FIFO or device, never follows a link."""
    out = {}
    for top in tops:
        if not os.path.lexists(top):
            continue
        for dirpath, dirs, files in os.walk(top, followlinks=False):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirs + files]:
                st = os.lstat(name)
                if stat.S_ISLNK(st.st_mode):
                    out[name] = ("link", os.readlink(name))
                elif stat.S_ISREG(st.st_mode):
                    with open(name, "rb") as f:
                        out[name] = ("file", oct(st.st_mode), hashlib.sha256(f.read()).hexdigest())
                else:
                    out[name] = ("other", oct(st.st_mode))
    return out


def texts(*tops):
    """The text of every small regular file (records, unit files), for the
    comparison of what each build wrote."""
    out = {}
    for path, entry in picture(*tops).items():
        if entry[0] == "file" and os.path.getsize(path) < 8192:
            out[path] = Path(path).read_bytes().decode(errors="replace")
        else:
            out[path] = entry[0] if entry[0] != "link" else ["link", entry[1]]
    return out


STEP = [0]


def module(binary, check_mode, args):
    """kit.module with a bound: a build that blocks (on a FIFO, say) is
    recorded as such instead of stopping the sequence."""
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    args = {**args, "_ansible_check_mode": check_mode, "_ansible_diff": True}
    STEP_FILE.write_text(json.dumps(args))
    try:
        proc = subprocess.run([str(kit.BIN_DIR / binary), str(STEP_FILE)], capture_output=True,
                              text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return {"died": "timeout after 90 s"}
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"died": True, "returncode": proc.returncode, "stdout": proc.stdout,
                "stderr": proc.stderr}


STEP_FILE = WORK / "args.json"


def emit(record):
    STEP[0] += 1
    record["n"] = STEP[0]
    print(json.dumps(record, sort_keys=True), flush=True)


def call(binary, label, check=None, facts=True, **args):
    """Run `binary` in check mode (diff on) and then for real (diff on),
    unless check is True (check mode only) or False (real run only)."""
    modes = [True, False] if check is None else [check]
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    for check_mode in modes:
        before = picture(ROOT, UNIT_DIR)
        lock_before = os.path.lexists(ROOT / "lock")
        r = module(binary, check_mode, args)
        record = {"label": label, "binary": binary, "check_mode": check_mode, "args": args, "result": r}
        if check_mode:
            after = picture(ROOT, UNIT_DIR)
            record["check_mode_touched"] = sorted(
                p for p in set(before) | set(after) if before.get(p) != after.get(p))
            record["lock_created"] = not lock_before and os.path.lexists(ROOT / "lock")
        else:
            record["disk"] = texts(ROOT, UNIT_DIR)
        emit(record)
    if facts:
        emit({"label": label + " / facts", "binary": "ops_facts",
              "result": module("ops_facts", False, {})})


def pod(label, **args):
    args.setdefault("start_timeout", 15)
    call("ops_pod", label, **args)


def bundle(key, version, unit=WEB, name="shop", instances=2, ports=None, volumes=None,
           environment=None, extra=None):
    d = WORK / "b" / key
    (d / "units").mkdir(parents=True, exist_ok=True)
    (d / "units" / "web@.service").write_text(unit)
    p = {"name": name, "version": version,
         "containers": [{"name": "web", "replication": instances,
                         "systemd": {"unit-files": ["units/web@.service"]}}]}
    if ports is not None:
        p["ports"] = ports
    if environment is not None:
        p["environment"] = environment
    if volumes:
        p["volumes"] = []
        for vol, entries in volumes.items():
            (d / f"{vol}.tar").write_bytes(tar(entries))
            p["volumes"].append({"name": vol, "path": f"/srv/{vol}", "data": f"{vol}.tar"})
    if extra:
        p.update(extra)
    (d / "pod.json").write_text(json.dumps(p, indent=2))
    return d


def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for path, text in entries:
            info = tarfile.TarInfo(path)
            data = text.encode()
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def aci():
    """A minimal ACI and its id."""
    manifest = json.dumps({"acKind": "ImageManifest", "acVersion": "0.8.6",
                           "name": "example.com/compat"})
    data = tar([("manifest", manifest), ("rootfs/hello", "hello\n")])
    path = WORK / "compat.aci"
    path.write_bytes(data)
    return path, "sha512-" + hashlib.sha512(data).hexdigest()


def lifecycle():
    v1, v2, v3 = bundle("v1", "1"), bundle("v2", "2"), bundle("v3", "3")
    pod("deploy v1", bundle=v1 / "pod.json")
    pod("rerun v1", bundle=v1)
    pod("deploy v2", bundle=v2)
    pod("rollback to v1 by version", name="shop", version="1")
    pod("stop v1", name="shop", version="1", state="stopped")
    pod("start", name="shop", state="started")
    pod("restart", name="shop", version="1", state="restarted")
    pod("present v3", bundle=v3, state="present")
    pod("absent v2", name="shop", version="2", state="absent")
    pod("absent current while running", name="shop", version="1", state="absent")
    pod("env set", name="shop", version="1", env={"SECRET": "one"})
    pod("env changed", name="shop", version="1", env={"SECRET": "two", "OTHER": "x"})
    pod("env removed", name="shop", version="1", env={})
    pod("env carried to new version", bundle=bundle("v4", "4"), env={"SECRET": "carry"})
    pod("new version without env", bundle=bundle("v5", "5"))
    pod("keep 1", bundle=bundle("v6", "6"), keep=1)
    pod("immutable version", bundle=bundle("v6b", "6", unit=WEB.replace("infinity", "9999")))
    pod("name disagrees", bundle=bundle("v7", "7"), name="other")
    pod("version disagrees", bundle=bundle("v7", "7"), version="8")
    pod("unknown version", name="shop", version="99")
    pod("unknown pod", name="nopod", version="1")
    pod("unknown pod absent", name="nopod", state="absent")
    pod("bad keep", name="shop", keep=-1)
    pod("bad state", name="shop", state="bogus")
    pod("bad runtime", name="shop", runtime="docker")
    pod("unknown option", name="shop", frobnicate=True)
    pod("no bundle no name", state="started")


def failing_units():
    pod("broken v10 rollback on", bundle=bundle("v10", "10", unit=BROKEN))
    pod("broken v11 rollback off", bundle=bundle("v11", "11", unit=BROKEN), rollback=False)
    pod("back to v6", name="shop", version="6")
    pod("broken first deploy", bundle=bundle("broken1", "1", unit=BROKEN, name="broken"))


def ports():
    rng = "41200-41299"
    pod("ports assigned", bundle=bundle("p1", "1", PORT_WEB, name="web", ports={"http": "assign"}),
        port_range=rng)
    pod("ports rerun", bundle=bundle("p1", "1", PORT_WEB, name="web", ports={"http": "assign"}),
        port_range=rng)
    pod("ports v2 assigned", bundle=bundle("p2", "2", PORT_WEB, name="web", ports={"http": "assign"}),
        port_range=rng)
    pod("ports fixed", bundle=bundle("p3", "3", PORT_WEB, name="web", instances=1,
                                     ports={"http": 41350}), port_range=rng)
    pod("ports option overlay", bundle=bundle("p4", "4", PORT_WEB, name="web", instances=1,
                                              ports={"http": "assign"}),
        ports={"http": "41351"}, port_range=rng)
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 41360))
    held.listen()
    pod("ports conflicting with a listener", bundle=bundle("p5", "5", PORT_WEB, name="web", instances=1,
                                                           ports={"http": 41360}), port_range=rng)
    held.close()
    pod("ports conflicting with another pod",
        bundle=bundle("q1", "1", PORT_WEB, name="web2", instances=1, ports={"http": 41351}),
        port_range=rng)
    pod("ports bad range", bundle=bundle("p1", "1", PORT_WEB, name="web", ports={"http": "assign"}),
        port_range="5-1")
    pod("ports option without bundle", name="web", ports={"http": 1})


def volumes():
    b = bundle("vol1", "1", name="vol", volumes={"conf": [("app.conf", "x")], "data": [("a", "1")]})
    pod("volumes deploy", bundle=b)
    bad = bundle("vol2", "2", name="vol", volumes={"conf": [("app.conf", "x")],
                                                   "data": [("ok", "x"), ("../../escape", "x")]})
    pod("volumes escaping archive", bundle=bad)
    arch = WORK / "data2.tar"
    arch.write_bytes(tar([("b", "2")]))
    digest = "sha256:" + hashlib.sha256(arch.read_bytes()).hexdigest()
    call("ops_volume", "volume differs without replace", pod="vol", version="1", name="data",
         data=str(arch))
    call("ops_volume", "volume replace", pod="vol", version="1", name="data", data=str(arch),
         replace=True, checksum=digest)
    call("ops_volume", "volume mode", pod="vol", version="1", name="data", mode="0750")
    call("ops_volume", "volume bad checksum", pod="vol", version="1", name="data", data=str(arch),
         replace=True, checksum="sha256:" + "0" * 64)
    call("ops_volume", "volume unknown", pod="vol", version="1", name="nope")
    call("ops_volume", "volume absent", pod="vol", version="1", name="conf", state="absent")
    call("ops_volume", "volume unknown pod", pod="nopod", version="1", name="x")


def images():
    path, ident = aci()
    call("ops_image", "image present", id=ident, path=str(path))
    call("ops_image", "image rerun", id=ident, path=str(path))
    call("ops_image", "image wrong id", id="sha512-" + "a" * 128, path=str(path))
    call("ops_image", "image missing file", id=ident, path=str(WORK / "nope.aci"))
    call("ops_image", "image absent", id=ident, state="absent")
    call("ops_image", "image bad id", id="sha1-xyz")
    b = bundle("img1", "1", name="img", extra={"images": [{"id": ident, "path": "../../compat.aci"}]})
    pod("pod with image", bundle=b)


def other_pod_corrupt():
    pod("other pod deploy", bundle=bundle("o1", "1", name="other", instances=1))
    (ROOT / "pods/other/1/meta.json").write_text("{not json")
    pod("switch shop with other's meta corrupt", bundle=bundle("v20", "20"))
    call("ops_facts", "facts with other's meta corrupt", check=False, facts=False)
    (ROOT / "pods/other/1/meta.json").unlink()
    os.mkfifo(ROOT / "pods/other/1/meta.json")
    pod("switch shop with other's meta a FIFO", bundle=bundle("v21", "21"))
    (ROOT / "pods/other/1/meta.json").unlink()
    (ROOT / "pods/other/1/meta.json").mkdir()
    pod("switch shop with other's meta a directory", bundle=bundle("v22", "22"))


def bad_bundles():
    for d in sorted((PROJECT / "tests/fixtures/bad-bundles").iterdir()):
        pod(f"bad bundle {d.name}", bundle=d, facts=False)
    fifo = WORK / "fifo"
    os.mkfifo(fifo)
    loop = WORK / "loop"
    os.symlink(loop, loop)
    for label, path in [("nonexistent", WORK / "nope"), ("fifo", fifo), ("symlink loop", loop),
                        ("device", Path("/dev/null")), ("relative", "relative/pod.json"),
                        ("empty", "")]:
        pod(f"bundle path {label}", bundle=path, facts=False)


def main():
    WORK.mkdir(parents=True)
    kit.WORK = WORK
    for part in (lifecycle, failing_units, ports, volumes, images, other_pod_corrupt, bad_bundles):
        part()


if __name__ == "__main__":
    main()
