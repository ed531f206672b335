"""Idle and wake against a real systemd: one scenario per call, run inside
the sandbox (tests/systemd/sandbox) by test-idle.sh.

    python3 idle_scenarios.py SCENARIO

Each scenario drives the real ops_pod and ops_facts binaries the way
Ansible does. The pod's service is busybox httpd on the port ops assigned
it (PORT_HTTP), so "armed", "woken" and "served" are checked by connecting
to it. The reboot scenario is two calls, `reboot_before` and
`reboot_after`, with a reboot of the sandbox between them (test-idle.sh
gives the sandbox `--reboot--`). Exit status 0 means every assertion held.
"""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import scenario_kit as kit
from scenario_kit import expect, failed, ok, snapshot

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
UNIT = "shop-1-web.service"

# busybox httpd on PORT_HTTP, serving a page that names the pod version.
WEB = """[Unit]
Description=web of an idle test pod

[Service]
ExecStartPre=/bin/sh -c 'mkdir -p {www} && echo "$POD_NAME $POD_VERSION" > {www}/index.html'
ExecStart=/bin/busybox httpd -f -p {bind}${{PORT_HTTP}} -h {www}
"""


def bundle(ports=True, bind="127.0.0.1:"):
    """shop (on 127.0.0.1 by default; bind="" for every address) or plain."""
    d = kit.WORK / ("shop-1" if ports else "plain-1")
    d.mkdir(parents=True, exist_ok=True)
    web = WEB.format(www=kit.WORK / "www", bind=bind) if ports else "[Service]\nExecStart=/bin/sleep infinity\n"
    (d / "web.service").write_text(web)
    pod = {"name": "shop" if ports else "plain", "version": "1",
           "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}]}
    if ports:
        pod["ports"] = {"http": "assign"}
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def ops_pod(check_mode=False, diff=False, **args):
    args.setdefault("start_timeout", 20)
    # The sandbox shares the host's network: a range of its own keeps clear
    # of other tests' pods on the default one.
    args.setdefault("port_range", "42100-42199")
    return kit.module("ops_pod", check_mode=check_mode, diff=diff, **args)


def facts():
    r = kit.module("ops_facts")
    expect(not r.get("failed") and not r.get("died"), "ops_facts runs", r)
    return r["ansible_facts"]["ops"]


def active(unit):
    return subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                          text=True).stdout.strip()


def port_of(result):
    return [p["port"] for p in result["ports"] if p["name"] == "http"][0]


def listening(port):
    """Something listens on the port (asked of the kernel, `ss`: a connection
    would wake an idle pod)."""
    out = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True,
                         text=True, check=True).stdout
    return out.strip() != ""


def get(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
        return r.read().decode().strip()


def wake_by_connection(port, bound):
    """Connect until served; return (seconds from the first connection until
    served, how many attempts failed). Fails past `bound` seconds."""
    first = time.monotonic()
    refused = 0
    while True:
        try:
            page = get(port)
            expect(page == "shop 1", f"the woken pod serves its page: {page!r}")
            return time.monotonic() - first, refused
        except OSError:
            refused += 1
        elapsed = time.monotonic() - first
        expect(elapsed <= bound, f"served within {bound:.1f} s of the first connection "
                                 f"({refused} attempts failed)")
        time.sleep(0.05)


def armed(port, result=None, where="127.0.0.1"):
    """Idle as it should be: the version stopped, the socket listening
    where the version did (`where`: 127.0.0.1, or "*" for every address),
    the port still the pod's in the facts."""
    expect(active(UNIT) in ("inactive", "unknown"), f"{UNIT} is {active(UNIT)}", result)
    expect(active(f"ops-shop:wake-{port}.socket") == "active", "the socket is armed", result)
    expect(active("ops-shop.target") in ("inactive", "unknown"), "the pod target is stopped")
    f = facts()
    pod = f["pods"]["shop"]
    expect(pod["idle"] is True and pod["started"] is False, "facts: idle, not started", pod)
    expect(f["ports"][str(port)]["pod"] == "shop", f"port {port} is still held by shop", f["ports"])
    expect(listening(port), f"port {port} listens")
    out = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    local = sorted({line.split()[3] for line in out.splitlines()})
    expect(local == [f"{where}:{port}"], f"the socket listens on {where}:{port} only: {local}")
    return pod


def start_time(port):
    """How long the pod takes to start and serve, measured by hand: systemctl
    start of its version, then the first page."""
    subprocess.run(["systemctl", "stop", UNIT], check=True)
    begin = time.monotonic()
    subprocess.run(["systemctl", "start", UNIT], check=True)
    while True:
        try:
            get(port)
            return time.monotonic() - begin
        except OSError:
            expect(time.monotonic() - begin < 20, "the pod serves once started")
            time.sleep(0.05)


def deploy():
    r = ok(ops_pod(bundle=bundle()), True)
    port = port_of(r)
    expect(get(port) == "shop 1", "the deployed pod serves")
    return port


def idle_and_wake():
    """Idle (check mode first, then twice), woken by a connection within the
    pod's start time plus a second; idle again; stopped disarms; started
    un-idles; a pod without ports is refused."""
    port = deploy()
    start = start_time(port)
    picture = snapshot(ROOT / "pods", UNIT_DIR)
    plan = ok(ops_pod(name="shop", state="idle", check_mode=True, diff=True), True)
    expect(snapshot(ROOT / "pods", UNIT_DIR) == picture, "check mode wrote nothing", plan)
    expect(active(UNIT) == "active", "check mode stopped nothing", plan)
    expect(any("idle: yes" in d.get("after", "") for d in plan["diff"]), "the diff says idle", plan)

    idled = ok(ops_pod(name="shop", state="idle"), True)
    expect(idled["pod"]["idle"] is True, "the result says idle", idled)
    pod = armed(port, idled)
    expect(pod["woken_at"] is None, "never woken yet", pod)
    ok(ops_pod(name="shop", state="idle"), False)

    took, refused = wake_by_connection(port, start + 1)
    print(f"woken and served {took:.2f} s after the first connection "
          f"({refused} refused; the pod starts in {start:.2f} s)")
    deadline = time.monotonic() + 20
    while facts()["pods"]["shop"]["idle"] or active("ops-shop.target") != "active":
        expect(time.monotonic() < deadline, "the waker finishes")
        time.sleep(0.2)
    pod = facts()["pods"]["shop"]
    expect(pod["idle"] is False and pod["started"] is True, "facts: woken, started", pod)
    expect(isinstance(pod["woken_at"], int), "facts: woken_at", pod)
    expect(active("ops-shop:wake.service") in ("inactive", "unknown"), "the waker ended")
    expect(not (UNIT_DIR / f"ops-shop:wake-{port}.socket").exists(), "the idle units are gone")
    ok(ops_pod(name="shop"), False)

    ok(ops_pod(name="shop", state="idle"), True)
    armed(port)
    stopped = ok(ops_pod(name="shop", state="stopped"), True)
    expect(stopped["pod"]["idle"] is False, "stopped is not idle", stopped)
    expect(not listening(port), f"stopped disarms: nothing listens on {port}")
    ok(ops_pod(name="shop", state="stopped"), False)

    # Idled while stopped: where it listens cannot be seen, so every
    # address is armed, and the result says so.
    r = ok(ops_pod(name="shop", state="idle"), True)
    expect(any("armed on every address" in w for w in r.get("warnings", [])), "a warning", r)
    armed(port, r, where="*")
    started = ok(ops_pod(name="shop", state="started"), True)
    expect(started["pod"]["idle"] is False and started["pod"]["started"], "started un-idles", started)
    expect(get(port) == "shop 1", "and serves")
    expect(started["pod"]["woken_at"] == pod["woken_at"], "not a wake", started)

    # A pod that declares no port is armed on its default port (PORT).
    plain = ok(ops_pod(bundle=bundle(ports=False)), True)
    default = [p["port"] for p in plain["ports"] if p["kind"] == "default"]
    expect(len(default) == 1, "a pod that declares no port has a default one", plain)
    ok(ops_pod(name="plain", state="idle"), True)
    expect(active(f"ops-plain:wake-{default[0]}.socket") == "active", "its default port is armed")
    expect(listening(default[0]), f"port {default[0]} listens")
    ok(ops_pod(name="plain", state="absent"), True)
    expect(not listening(default[0]), f"nothing listens on {default[0]} once plain is gone")

    # A version an earlier ops deployed has no port at all: refused.
    ok(ops_pod(bundle=bundle(ports=False)), True)
    meta = ROOT / "pods/plain/1/meta.json"
    record = json.loads(meta.read_text())
    for held in record["ports"]:
        (ROOT / "ports" / str(held["port"])).unlink()
    record["ports"] = []
    meta.write_text(json.dumps(record))
    before = snapshot(ROOT, UNIT_DIR)
    r = failed(ops_pod(name="plain", state="idle"),
               "pod plain has no ports to be woken by; use state: stopped")
    expect(r["changed"] is False and snapshot(ROOT, UNIT_DIR) == before, "the refusal changed nothing", r)

    ok(ops_pod(name="shop", state="idle"), True)
    ok(ops_pod(name="shop", state="absent"), True)
    left = sorted(p.name for p in UNIT_DIR.glob("ops-shop*")) + \
        sorted(p.name for p in (UNIT_DIR / "multi-user.target.wants").glob("ops-shop*"))
    expect(left == [], f"absent removes the idle units: {left}")
    expect(not listening(port), f"nothing listens on {port}")


def repairs():
    """What goes wrong around an idle pod, and what a rerun does about it:
    a socket that cannot listen undoes the idle run; a hand-edited socket
    is rewritten and restarted; a waker that failed until systemd's start
    limit is installed again and re-armed; sockets left listening for a
    pod no longer idle are stopped by the first connection."""
    # On every IPv4 address: a socket on [::1] (IPv6 only) beside it can be held.
    port = ok(ops_pod(bundle=bundle(bind="0.0.0.0:"), port_range=REPAIR_RANGE), True)["ports"][0]["port"]
    expect(get(port) == "shop 1", "the deployed pod serves")
    waker = ROOT / "bin" / "ops-wake"

    # The pod listens on 127.0.0.1 (IPv4); a program on [::1] (IPv6 only)
    # beside it: the wake socket, on all addresses, cannot bind.
    holder = socket.socket(socket.AF_INET6)
    holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    holder.bind(("::1", port))
    holder.listen()
    before = snapshot(ROOT / "pods", UNIT_DIR)
    r = failed(ops_pod(name="shop", state="idle"), "the pod is as it was before this run", "undone:")
    holder.close()
    expect(active(UNIT) == "active" and get(port) == "shop 1", "the version runs again", r)
    expect(snapshot(ROOT / "pods", UNIT_DIR) == before, "the idle run was undone", r)
    expect(not waker.exists(), "the waker the run installed is gone", r)

    ok(ops_pod(name="shop", state="idle"), True)
    armed(port, where="*")
    socket_file = UNIT_DIR / f"ops-shop:wake-{port}.socket"
    text = socket_file.read_text()
    socket_file.write_text(text.replace(f"ListenStream={port}", f"ListenStream={port + 1}"))
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    subprocess.run(["systemctl", "restart", socket_file.name], check=True)
    expect(listening(port + 1) and not listening(port), "the hand edit took effect")
    r = ok(ops_pod(name="shop", state="idle"), True)
    expect(socket_file.read_text() == text, "the rerun rewrote the socket", r)
    expect(listening(port) and not listening(port + 1), "and restarted it: it listens on the pod's port", r)
    ok(ops_pod(name="shop", state="idle"), False)

    # A waker that exits at once: each connection starts it again, until
    # systemd's start limit fails the socket.
    shutil.copy("/bin/true", waker)
    deadline = time.monotonic() + 20
    while active(socket_file.name) != "failed":
        expect(time.monotonic() < deadline, "the start limit fails the socket")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
        time.sleep(0.05)
    r = ok(ops_pod(name="shop", state="idle"), True)
    armed(port, r, where="*")
    took, _ = wake_by_connection(port, 20)
    print(f"re-armed after the start limit; woken in {took:.2f} s")
    deadline = time.monotonic() + 20
    while facts()["pods"]["shop"]["idle"]:
        expect(time.monotonic() < deadline, "the waker finishes")
        time.sleep(0.2)

    # Sockets left listening while the record says not idle (removed by
    # hand): the first connection stops them, instead of looping.
    ok(ops_pod(name="shop", state="idle"), True)
    (ROOT / "pods/shop/_idle").unlink()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        pass
    deadline = time.monotonic() + 20
    while listening(port):
        expect(time.monotonic() < deadline, "the waker stops the sockets left listening")
        time.sleep(0.2)
    expect(active("ops-shop:wake.service") != "failed", "the waker did not fail")
    ok(ops_pod(name="shop", state="started"), True)
    expect(get(port) == "shop 1", "started serves again")
    ok(ops_pod(name="shop", state="absent"), True)


# Ports of their own: repairs() runs in the same sandbox as nothing else,
# but the sandbox shares the host's network with other tests.
REPAIR_RANGE = "42200-42299"


# Written before the reboot on /run, a fresh tmpfs at every boot: gone
# after it, it proves the sandbox did reboot.
MARK = Path("/run/ops-idle-before-reboot")


def reboot_before():
    port = deploy()
    ok(ops_pod(name="shop", state="idle"), True)
    armed(port)
    MARK.write_text("")


def reboot_after():
    """After a reboot: armed, not started; then woken by a connection."""
    expect(not MARK.exists(), "the sandbox rebooted (/run is fresh)")
    f = facts()
    port = [int(p) for p, h in f["ports"].items() if h["pod"] == "shop"][0]
    armed(port)
    wake_by_connection(port, 20)
    deadline = time.monotonic() + 20
    while facts()["pods"]["shop"]["idle"]:
        expect(time.monotonic() < deadline, "the waker finishes")
        time.sleep(0.2)
    pod = facts()["pods"]["shop"]
    expect(pod["started"] and isinstance(pod["woken_at"], int), "woken after the reboot", pod)


SCENARIOS = {f.__name__: f for f in [idle_and_wake, repairs, reboot_before, reboot_after]}

if __name__ == "__main__":
    kit.start("ops-idle-scenario-")
    kit.run(SCENARIOS, sys.argv[1])
