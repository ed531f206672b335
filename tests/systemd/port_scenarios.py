"""Named ports against a real systemd: one scenario per call, run inside
the sandbox (tests/systemd/sandbox) by test-ports.sh.

    python3 port_scenarios.py SCENARIO

Each scenario drives the real ops_pod binary the way Ansible does. Its
services are busybox httpd, listening on the port ops gave them through
PORT_HTTP, so every assertion about a port is checked by connecting to it:
the page that answers says which pod, version and instance serves it.
Exit status 0 means every assertion held.
"""

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import scenario_kit as kit
from scenario_kit import expect, failed, ok, page, snapshot

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
PORTS = ROOT / "ports"

# busybox httpd on the instance's PORT_HTTP, serving a page that names
# who serves it (written by ExecStartPre, so the page is the unit's own).
WEB = """[Unit]
Description=web %i of a port test pod

[Service]
ExecStartPre=/bin/sh -c 'mkdir -p {www}/%n && echo "$POD_NAME $POD_VERSION %i PORT=$PORT" > {www}/%n/index.html'
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:${{PORT_HTTP}} -h {www}/%n
"""


def bundle(name, version, instances=2, ports=None):
    """A native bundle: web@.service with `instances`, and `ports`
    (default: an assigned http)."""
    d = kit.WORK / f"{name}-{version}-{abs(hash(json.dumps(ports))) % 10000}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "web@.service").write_text(WEB.format(www=kit.WORK / "www"))
    pod = {"name": name, "version": version,
           "containers": [{"name": "web", "replication": instances,
                           "systemd": {"unit-files": ["web@.service"]}}],
           "ports": ports if ports is not None else {"http": "assign"}}
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def ops_pod(check_mode=False, diff=False, **args):
    args.setdefault("start_timeout", 20)
    return kit.module("ops_pod", check_mode=check_mode, diff=diff, **args)


def http_ports(result):
    """{instance: port} of the result's http ports."""
    return {p["instance"]: p["port"] for p in result["ports"] if p["name"] == "http"}



def nothing_on(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def record(port):
    path = PORTS / str(port)
    return path.read_text() if path.exists() else None


def serves(result, pod, version):
    """Each http port of the result answers with the page of its instance."""
    for instance, port in http_ports(result).items():
        got = page(port)
        expect(got == f"{pod} {version} {instance} PORT={port}",
               f"port {port} is served by {pod} {version} instance {instance}: got {got!r}", result)


def distinct_ports_kept_across_versions_and_freed():
    """Two pods with two instances each: four distinct ports, each served;
    v2 keeps v1's ports, so does the rollback; removing a pod frees its
    ports and a new pod gets them."""
    a1 = ok(ops_pod(bundle=bundle("alpha", "1")), True)
    b1 = ok(ops_pod(bundle=bundle("beta", "1")), True)
    ports = list(http_ports(a1).values()) + list(http_ports(b1).values())
    expect(len(ports) == 4 and len(set(ports)) == 4, f"four distinct ports: {ports}", [a1, b1])
    expect(all(30000 <= p <= 32767 for p in ports), f"from the default range: {ports}")
    serves(a1, "alpha", "1")
    serves(b1, "beta", "1")
    for instance, port in http_ports(a1).items():
        expect(record(port) is not None and f"pod: alpha\nname: http\ninstance: {instance}\n" in record(port),
               f"{PORTS}/{port} names alpha's http {instance}: {record(port)!r}")
    ok(ops_pod(bundle=bundle("alpha", "1")), False)

    a2 = ok(ops_pod(bundle=bundle("alpha", "2")), True)
    expect(http_ports(a2) == http_ports(a1), "version 2 keeps version 1's ports", [a1, a2])
    serves(a2, "alpha", "2")
    back = ok(ops_pod(name="alpha", version="1"), True)
    expect(http_ports(back) == http_ports(a1), "the rollback keeps them", back)
    serves(a1, "alpha", "1")

    ok(ops_pod(name="alpha", state="stopped"), True)
    gone = ok(ops_pod(name="alpha", state="absent"), True)
    expect(gone["ports"] == [], "no port is left to alpha", gone)
    for port in http_ports(a1).values():
        expect(record(port) is None, f"{PORTS}/{port} is gone")
        expect(nothing_on(port), f"nothing listens on {port} any more")
    expect(sorted(int(p.name) for p in PORTS.iterdir()) == sorted(http_ports(b1).values()),
           f"only beta's ports are recorded: {sorted(p.name for p in PORTS.iterdir())}")
    g = ok(ops_pod(bundle=bundle("gamma", "1", instances=1)), True)
    expect(http_ports(g)["1"] == min(http_ports(a1).values()),
           "a new pod gets the lowest freed port", [a1, g])
    serves(g, "gamma", "1")


BROKEN = """[Service]
ExecStart=/bin/sh -c 'echo "no config for %i" >&2; exit 3'
"""


def failed_version_gives_the_ports_back():
    """Version 2 shares version 1's ports, so version 1 stops before it
    starts; when version 2 does not come up, version 1 is started again
    and serves on the same ports."""
    v1 = ok(ops_pod(bundle=bundle("alpha", "1")), True)
    serves(v1, "alpha", "1")
    broken = bundle("alpha", "2")
    (broken / "web@.service").write_text(BROKEN)
    r = ops_pod(bundle=broken, start_timeout=5)
    failed(r, "version 2 of pod alpha did not come up", "rolled back to version 1")
    units = "alpha-1-web@1.service alpha-1-web@2.service"
    expect(r["actions"][:1] == [f"stop {units}"] or f"stop {units}" in r["actions"],
           "version 1 let go of its ports first", r)
    expect(f"undo: start {units} again" in r["actions"], "and was started again", r)
    expect(r["current"] == "1", "version 1 is current", r)
    serves(v1, "alpha", "1")


def fixed_conflict_changes_nothing():
    """A fixed port another pod holds: refused before any change, naming
    the holder."""
    a = ok(ops_pod(bundle=bundle("alpha", "1", instances=1, ports={"http": 18080})), True)
    expect(http_ports(a) == {"1": 18080}, "the fixed port", a)
    serves(a, "alpha", "1")
    before = snapshot(ROOT, UNIT_DIR)
    r = ops_pod(bundle=bundle("beta", "1", instances=1, ports={"http": 18080}))
    failed(r, "port 18080 for http (instance 1) of pod beta is held by pod alpha's http (instance 1) in version 1")
    expect(snapshot(ROOT, UNIT_DIR) == before, "nothing changed", r)
    expect(subprocess.run(["systemctl", "list-units", "--all", "--no-legend", "beta-*"],
                          capture_output=True, text=True).stdout.strip() == "",
           "systemd knows no unit of beta")
    expect(page(18080) == "alpha 1 1 PORT=18080", "alpha still serves its port")


def listened_port_is_skipped():
    """A port an unrelated process listens on is not assigned."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 31000))
        squatter.listen()
        r = ok(ops_pod(bundle=bundle("alpha", "1"), port_range="31000-31010"), True)
        expect(sorted(http_ports(r).values()) == [31001, 31002],
               "31000 is skipped, the next ones assigned", r)
        serves(r, "alpha", "1")


def check_mode_assigns_nothing():
    """Check mode reports the ports it would assign and records nothing."""
    ok(ops_pod(bundle=bundle("alpha", "1")), True)
    before = snapshot(ROOT, UNIT_DIR)
    plan = ok(ops_pod(bundle=bundle("beta", "1"), check_mode=True, diff=True), True)
    expect(len(http_ports(plan)) == 2, "the planned ports are reported", plan)
    expect(snapshot(ROOT, UNIT_DIR) == before, "check mode wrote nothing", plan)
    headers = [d["after_header"] for d in plan["diff"]]
    for port in http_ports(plan).values():
        expect(str(PORTS / str(port)) in headers, f"the diff shows {PORTS}/{port} added", plan)
    done = ok(ops_pod(bundle=bundle("beta", "1")), True)
    expect(http_ports(done) == http_ports(plan), "the run assigns what check mode said", [plan, done])


def concurrent_deploys_share_no_port():
    """Eight pods deployed at once, each with two instances: sixteen
    distinct ports, each served by its own instance."""
    bundles = [bundle(f"pod{i}", "1") for i in range(8)]
    results = [None] * 8

    def deploy(i):
        results[i] = ops_pod(bundle=bundles[i], lock_timeout=120)

    threads = [threading.Thread(target=deploy, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        ok(r, True)
    ports = [p for r in results for p in http_ports(r).values()]
    expect(len(ports) == 16 and len(set(ports)) == 16, f"sixteen distinct ports: {sorted(ports)}", results)
    for i, r in enumerate(results):
        serves(r, f"pod{i}", "1")
    expect(len(list(PORTS.iterdir())) == 16, "each is recorded")


SCENARIOS = {f.__name__: f for f in [
    distinct_ports_kept_across_versions_and_freed,
    failed_version_gives_the_ports_back,
    fixed_conflict_changes_nothing,
    listened_port_is_skipped,
    check_mode_assigns_nothing,
    concurrent_deploys_share_no_port,
]}

if __name__ == "__main__":
    kit.start("ops-port-scenario-")
    kit.run(SCENARIOS, sys.argv[1])
