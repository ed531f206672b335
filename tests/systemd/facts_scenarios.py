"""ops_facts against a real systemd: one scenario per call, run inside the
sandbox (tests/systemd/sandbox) by test-facts.sh.

    python3 facts_scenarios.py SCENARIO

Each scenario changes the host with the real ops_pod binary, then runs the
real ops_facts binary and checks its facts field by field against what
systemctl and the store (meta.json, the current/previous symlinks, the
version directories) say. Exit status 0 means every assertion held.
"""

import json
import subprocess
import sys
import threading
from pathlib import Path

import scenario_kit as kit
from scenario_kit import expect, failed, ok

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
SECRET = "facts-secret-value-91731"

WEB = """[Unit]
Description=web %i

[Service]
ExecStart=/bin/sh -c 'exec sleep infinity'
"""

BROKEN = """[Service]
ExecStart=/bin/sh -c 'echo "no config for %i" >&2; exit 3'
"""


def bundle(version, unit=WEB, name="shop"):
    d = kit.WORK / f"{name}-{version}-{abs(hash(unit)) % 10000}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "web@.service").write_text(unit)
    (d / "worker.service").write_text(WEB)
    pod = {"name": name, "version": version,
           "containers": [{"name": "web", "replication": 2,
                           "systemd": {"unit-files": ["web@.service"]}},
                          {"name": "worker", "start": False,
                           "systemd": {"unit-files": ["worker.service"]}}],
           "volumes": [{"name": "data", "path": "/srv/data"}],
           "ports": ["http"]}
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def ops_pod(**args):
    args.setdefault("start_timeout", 20)
    args.setdefault("env", {"API_TOKEN": SECRET})
    return kit.module("ops_pod", **args)


def facts(**args):
    r = kit.module("ops_facts", **args)
    ok(r, False)
    expect(SECRET not in json.dumps(r), "no secret value in the facts", r)
    return r["ansible_facts"]["ops"]


def show(unit):
    out = subprocess.run(["systemctl", "show", "-p", "ActiveState,SubState", unit],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def pointer(pod, which):
    link = ROOT / "pods" / pod / which
    return link.readlink().name if link.is_symlink() else None


def agree(f, pod="shop"):
    """Every field of the pod's facts against the store and systemd."""
    pod_dir = ROOT / "pods" / pod
    stored = sorted(p.name for p in pod_dir.iterdir() if p.is_dir() and not p.is_symlink())
    record = f["pods"][pod]
    expect(sorted(record["versions"]) == stored,
           f"the versions are the store's: {sorted(record['versions'])} vs {stored}", record)
    expect(record["current"] == pointer(pod, "current"), "current is the store's", record)
    expect(record["previous"] == pointer(pod, "previous"), "previous is the store's", record)
    at_boot = (UNIT_DIR / "multi-user.target.wants" / f"ops-{pod}.target").is_symlink()
    expect(record["started"] == (at_boot and record["current"] is not None), "started", record)
    for version, v in record["versions"].items():
        meta = json.loads((pod_dir / version / "meta.json").read_text())
        expect(v["deployed_at"] == meta["deployed_at"] and v["digest"] == meta["digest"],
               f"version {version}'s record is meta.json's", v)
        expect(v["ports"] == meta.get("ports", []), f"version {version}'s ports", v)
        expect(v["current"] == (version == record["current"]), f"version {version} current", v)
        env = pod_dir / version / "environment"
        expect(v["env_keys"] == (["API_TOKEN"] if env.exists() else []), "env keys only", v)
        states = []
        for unit in v["units"]:
            for inst in unit["instances"]:
                real = show(inst["unit"])
                expect(inst["active_state"] == real["ActiveState"] and inst["sub_state"] == real["SubState"],
                       f"{inst['unit']} is {real}", inst)
                expect(inst["enabled"] == (v["current"] and record["started"] and unit["start"]),
                       f"{inst['unit']} enabled", inst)
                states.append((unit["start"], real["ActiveState"]))
        started = [s for start, s in states if start]
        if any(s == "failed" for _, s in states):
            want = "failed"
        elif started and all(s == "active" for s in started):
            want = "running"
        elif any(s in ("active", "activating", "reloading") for _, s in states):
            want = "partial"
        else:
            want = "stopped" if v["current"] else "installed"
        expect(v["state"] == want, f"version {version} is {want}", v)
        for vol in v["volumes"]:
            expect(Path(vol["path"]).is_dir(), f"volume {vol['name']} is at {vol['path']}", vol)
    for port, holder in f["ports"].items():
        text = (ROOT / "ports" / port).read_text()
        expect(f"pod: {holder['pod']}\n" in text and "versions: " + " ".join(holder["versions"]) in text,
               f"port {port} is the record's", [holder, text])
    return record


def facts_follow_the_lifecycle():
    """Deploy, switch, roll back, a failed start (rolled back, and one left
    as it is), a stopped pod, a pruned version: after each, the facts
    agree with systemd and the store, field by field."""
    ok(ops_pod(bundle=bundle("1")), True)
    r = agree(facts())
    expect(r["versions"]["1"]["state"] == "running", "v1 runs", r)
    ok(ops_pod(bundle=bundle("2")), True)
    r = agree(facts())
    expect([r["versions"][v]["state"] for v in ("1", "2")] == ["installed", "running"], "switched", r)
    ok(ops_pod(name="shop", version="1"), True)
    r = agree(facts())
    expect(r["current"] == "1" and r["previous"] == "2", "rolled back", r)
    failed(ops_pod(bundle=bundle("3", BROKEN), start_timeout=5), "rolled back to version 1")
    r = agree(facts())
    expect("3" not in r["versions"] and r["versions"]["1"]["state"] == "running",
           "the failed version left no trace", r)
    failed(ops_pod(bundle=bundle("4", BROKEN), start_timeout=5, rollback=False), "did not come up")
    r = agree(facts())
    expect(r["current"] == "4" and r["versions"]["4"]["state"] == "failed", "v4 failed, current", r)
    ok(ops_pod(name="shop", version="1"), True)
    ok(ops_pod(name="shop", state="stopped"), True)
    r = agree(facts())
    expect(r["versions"]["1"]["state"] == "stopped" and r["started"] is False, "stopped", r)
    ok(ops_pod(name="shop", version="1", keep=2), True)
    r = agree(facts())
    expect(sorted(r["versions"]) == ["1", "4"], "the oldest other versions pruned", r)
    # units: false asks systemd nothing: the states are null.
    bare = facts(units=False)["pods"]["shop"]["versions"]["1"]
    expect(bare["state"] is None and bare["units"][0]["instances"][0]["active_state"] is None,
           "no unit states without units", bare)


def check_mode_and_limits():
    """Check mode gives the same facts; pods limits them; a missing pod is
    a warning."""
    ok(ops_pod(bundle=bundle("1")), True)
    ok(ops_pod(bundle=bundle("1", name="blog")), True)
    plain = kit.module("ops_facts")
    check = kit.module("ops_facts", check_mode=True)
    expect(check["ansible_facts"] == plain["ansible_facts"] and check["changed"] is False,
           "check mode: the same facts", [plain, check])
    only = kit.module("ops_facts", pods=["blog", "nothere"])
    expect(list(only["ansible_facts"]["ops"]["pods"]) == ["blog"], "only blog", only)
    expect(any("nothere" in w for w in only["warnings"]), "a missing pod is said", only)


def consistent_during_deploys():
    """ops_facts run again and again while versions are deployed and
    pruned: every answer is whole (it never fails, never shows a version
    without its record, and its current version is one it lists)."""
    ok(ops_pod(bundle=bundle("1")), True)
    done = threading.Event()
    errors = []

    def deploy():
        try:
            for v in range(2, 7):
                ok(ops_pod(bundle=bundle(str(v)), keep=2), True)
        except AssertionError as e:
            errors.append(str(e))
        finally:
            done.set()

    t = threading.Thread(target=deploy)
    t.start()
    answers = 0
    while not done.is_set() or answers < 5:
        r = kit.module("ops_facts", units=False)
        expect(not r.get("failed") and not r.get("died"), "facts never fail during a deploy", r)
        pod = r["ansible_facts"]["ops"]["pods"].get("shop")
        expect(pod is not None, "the pod is always there", r)
        expect(pod["current"] in pod["versions"], "current is a listed version", pod)
        for v in pod["versions"].values():
            expect(v["digest"].startswith("sha256:") and len(v["units"]) == 2 and v["deployed_at"] > 0,
                   "every version whole", v)
        answers += 1
    t.join()
    expect(not errors, f"the deploys succeeded: {errors}")
    expect(answers >= 5, f"facts ran during the deploys: {answers} answers")
    agree(facts())


SCENARIOS = {f.__name__: f for f in [
    facts_follow_the_lifecycle,
    check_mode_and_limits,
    consistent_during_deploys,
]}

if __name__ == "__main__":
    kit.start("ops-facts-scenario-")
    kit.run(SCENARIOS, sys.argv[1])
