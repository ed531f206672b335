"""ops_pod against a real systemd: one scenario per call, run inside the
sandbox (tests/systemd/sandbox) by test-pod.sh.

    python3 pod_scenarios.py SCENARIO

Each scenario drives the real ops_pod binary the way Ansible does (an args
file, one JSON result on stdout) and checks the result against what
systemctl, the unit directory and the store say. Exit status 0 means every
assertion held; otherwise the first failed assertion is printed.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT = Path(os.environ.get("OPS_PROJECT", Path(__file__).resolve().parents[2]))
BIN_DIR = Path(os.environ.get("OPS_BIN_DIR", PROJECT / "target" / "debug"))
OPS_POD = BIN_DIR / "ops_pod"
ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
WORK = Path(tempfile.mkdtemp(prefix="ops-pod-scenario-"))

# A service that says who it is (from the drop-in's environment) and runs.
WEB = """[Unit]
Description=web %i of the test pod

[Service]
ExecStart=/bin/sh -c 'echo "up $POD_NAME $POD_VERSION %i secret=$SECRET" > /run/web-$POD_VERSION-%i; exec sleep infinity'
"""

# A service that fails at once, with something to say first.
BROKEN = """[Unit]
Description=web %i that cannot start

[Service]
ExecStart=/bin/sh -c 'echo "cannot open config for %i: no such file" >&2; exit 3'
"""


def bundle(version, unit_text=WEB, instances=2, name="shop", extra_units=None):
    """Write a native bundle and return its directory."""
    d = WORK / f"{name}-{version}-{abs(hash(unit_text)) % 10000}"
    (d / "units").mkdir(parents=True, exist_ok=True)
    (d / "units" / "web@.service").write_text(unit_text)
    containers = [{"name": "web", "replication": instances,
                   "systemd": {"unit-files": ["units/web@.service"]}}]
    for file_name, text in (extra_units or {}).items():
        (d / "units" / file_name).write_text(text)
        containers.append({"name": file_name.split(".")[0],
                           "systemd": {"unit-files": [f"units/{file_name}"]}})
    pod = {"name": name, "version": version, "containers": containers}
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def ops_pod(check_mode=False, diff=False, process_env=None, **args):
    """Run ops_pod as Ansible does; return its parsed result."""
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    args["_ansible_check_mode"] = check_mode
    args["_ansible_diff"] = diff
    args.setdefault("start_timeout", 20)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=WORK, delete=False) as f:
        json.dump(args, f)
    proc = subprocess.run([str(OPS_POD), f.name], capture_output=True, text=True,
                          env={**os.environ, **(process_env or {})})
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        result = {"died": True, "returncode": proc.returncode,
                  "stdout": proc.stdout, "stderr": proc.stderr}
    return result


def active(unit):
    return subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                          text=True).stdout.strip()


def units_of(version, n=2, name="shop"):
    return [f"{name}-{version}-web@{i}.service" for i in range(1, n + 1)]


def snapshot(*paths):
    """Every file, symlink and mode under paths: a byte-level picture."""
    picture = {}
    for top in paths:
        top = Path(top)
        if not top.exists():
            continue
        for p in sorted([top, *top.rglob("*")]):
            st = p.lstat()
            if p.is_symlink():
                picture[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                picture[str(p)] = ("file", st.st_mode, p.read_bytes())
            else:
                picture[str(p)] = ("dir", st.st_mode)
    return picture


def expect(cond, what, result=None):
    if not cond:
        detail = f"\n  result: {json.dumps(result, indent=2)}" if result is not None else ""
        raise AssertionError(f"{what}{detail}")


def ok(result, changed):
    expect(not result.get("failed") and not result.get("died"),
           f"expected success, got failure: {result.get('msg')}", result)
    expect(result["changed"] is changed, f"expected changed={changed}", result)
    return result


def running(version, n=2):
    for u in units_of(version, n):
        expect(active(u) == "active", f"{u} is {active(u)}, expected active")


def stopped(version, n=2):
    for u in units_of(version, n):
        expect(active(u) in ("inactive", "unknown"), f"{u} is {active(u)}, expected inactive")


def current():
    link = ROOT / "pods" / "shop" / "current"
    return os.readlink(link) if link.is_symlink() else None


# ---------------------------------------------------------------- scenarios

def deploy_switch_rollback():
    """v1 with 2 instances; v2; back to v1 by name+version; each rerun a no-op."""
    v1, v2 = bundle("1"), bundle("2")
    r = ok(ops_pod(bundle=v1 / "pod.json"), True)
    expect(r["current"] == "1" and r["previous"] is None, "v1 current", r)
    running("1")
    expect(Path("/run/web-1-2").read_text().startswith("up shop 1 2"),
           "POD_NAME and POD_VERSION reach the service")
    expect((UNIT_DIR / "shop-1-web@.service").is_file(), "unit installed under its versioned name")
    expect((UNIT_DIR / "shop-1-web@1.service.d" / "50-ops.conf").is_file(), "per-instance drop-in")
    expect((UNIT_DIR / "multi-user.target.wants" / "ops-shop.target").is_symlink(),
           "the pod target is enabled for boot")
    expect(active("ops-shop.slice") == "active", "the pod's slice holds its processes")
    ok(ops_pod(bundle=v1), False)

    r = ok(ops_pod(bundle=v2), True)
    expect(r["current"] == "2" and r["previous"] == "1", "v2 current, v1 previous", r)
    running("2")
    stopped("1")
    expect((ROOT / "pods/shop/1/meta.json").is_file(), "v1 retained in the store")
    expect((UNIT_DIR / "shop-1-web@.service").is_file(), "v1 units retained")
    ok(ops_pod(bundle=v2), False)

    r = ok(ops_pod(name="shop", version="1"), True)
    expect(r["current"] == "1" and r["previous"] == "2", "rolled back to v1", r)
    running("1")
    stopped("2")
    r = ok(ops_pod(name="shop", version="1"), False)
    expect(r["pod"]["current"] == "1", "the pod record says v1 is current", r)
    versions = [v["version"] for v in r["pod"]["versions"]]
    expect(versions == ["1", "2"], f"both versions recorded, oldest first: {versions}", r)


SCENARIOS = {f.__name__: f for f in [
    deploy_switch_rollback,
]}

if __name__ == "__main__":
    name = sys.argv[1]
    try:
        SCENARIOS[name]()
    except AssertionError as e:
        print(f"{name}: {e}")
        sys.exit(1)
