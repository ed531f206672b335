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
import threading
import time
from pathlib import Path

import scenario_kit as kit
from scenario_kit import expect, ok, snapshot

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
# Made when a scenario runs (inside the sandbox), not when this is imported.
WORK = Path("/nonexistent")

# A service that says who it is (from the drop-in's environment) and runs.
WEB = """[Unit]
Description=web %i of the test pod

[Service]
ExecStart=/bin/sh -c 'printf %%s "up $POD_NAME $POD_VERSION %i secret=$SECRET" > /run/web-$POD_VERSION-%i; exec sleep infinity'
"""

# A service that fails at once, with something to say first.
BROKEN = """[Unit]
Description=web %i that cannot start

[Service]
ExecStart=/bin/sh -c 'echo "cannot open config for %i: no such file" >&2; exit 3'
"""


def bundle(version, unit_text=WEB, instances=2, name="shop", extra_units=None, environment=None):
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
    if environment is not None:
        pod["environment"] = environment
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def ops_pod(check_mode=False, diff=False, process_env=None, **args):
    """Run ops_pod as Ansible does; return its parsed result."""
    args.setdefault("start_timeout", 20)
    return kit.module("ops_pod", check_mode=check_mode, diff=diff, process_env=process_env, **args)


def active(unit):
    return subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                          text=True).stdout.strip()


def units_of(version, n=2, name="shop"):
    return [f"{name}-{version}-web@{i}.service" for i in range(1, n + 1)]


def running(version, n=2):
    for u in units_of(version, n):
        expect(active(u) == "active", f"{u} is {active(u)}, expected active")


def stopped(version, n=2):
    for u in units_of(version, n):
        expect(active(u) in ("inactive", "unknown"), f"{u} is {active(u)}, expected inactive")


def traces(pattern="*shop*", wait=10):
    """Units systemd still lists for `pattern`, once it had `wait` seconds to
    forget them: it unloads stopped units asynchronously, later under load."""
    deadline = time.monotonic() + wait
    while True:
        listed = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", pattern],
                                capture_output=True, text=True).stdout.strip()
        if not listed or time.monotonic() > deadline:
            return listed
        time.sleep(0.2)


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
    versions = list(r["pod"]["versions"])
    expect(versions == ["1", "2"], f"both versions recorded, oldest first: {versions}", r)


def check_mode_changes_nothing():
    """A change in check mode is reported, and the host stays byte-identical."""
    v1, v2 = bundle("1"), bundle("2")
    r = ok(ops_pod(bundle=v1, check_mode=True, diff=True), True)
    expect(not ROOT.exists(), "check mode on a fresh host creates no store, lock or staging", r)
    expect(not (UNIT_DIR / "shop-1-web@.service").exists(), "nor unit files")
    ok(ops_pod(bundle=v1), True)
    units_before = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend"],
                                  capture_output=True, text=True).stdout
    before = snapshot(ROOT, UNIT_DIR)
    for args in [dict(bundle=v2), dict(bundle=v2, state="stopped"), dict(name="shop", state="absent"),
                 dict(name="shop", version="1", state="restarted", env={"SECRET": "new"}),
                 dict(bundle=v2, keep=1)]:
        r = ok(ops_pod(check_mode=True, diff=True, **args), True)
        expect(r["actions"], "check mode lists the planned actions", r)
        expect(r["msg"].startswith("check mode: "), "check mode says so", r)
        expect("new" not in json.dumps(r["diff"]).replace("\\n", ""), "no secret in the diff", r)
    expect(snapshot(ROOT, UNIT_DIR) == before, "the store and unit directory are byte-identical")
    expect(not (ROOT / "lock").exists() or "lock" in str(before), "no lock file was created")
    expect(not (ROOT / "staging").exists(), "no staging directory")
    after = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend"],
                           capture_output=True, text=True).stdout
    expect(after == units_before, "systemd's units are as they were")
    running("1")
    r = ok(ops_pod(check_mode=True, diff=True, bundle=v2), True)
    files = {d["after_header"] for d in r["diff"]}
    expect("shop-2-web@.service" in files and "ops-shop.target" in files,
           f"the diff shows unit files added and changed: {files}", r)
    summary = r["diff"][0]
    expect("current: 1" in summary["before"] and "current: 2" in summary["after"]
           and "versions: 1, 2" in summary["after"], "the diff shows the current version and versions", r)


def failed_start_rolls_back():
    """v3 exits at once: v2 keeps running, the error quotes the journal."""
    ok(ops_pod(bundle=bundle("2")), True)
    before = snapshot(ROOT, UNIT_DIR)
    r = ops_pod(bundle=bundle("3", BROKEN))
    expect(r.get("failed") is True, "deploying a broken v3 fails", r)
    expect("cannot open config for 1: no such file" in r["msg"]
           or "cannot open config for 2: no such file" in r["msg"],
           "the failure quotes the unit's journal", r)
    expect("rolled back to version 2" in r["msg"], "the failure says it rolled back", r)
    expect(r["changed"] is False, "a complete rollback leaves nothing changed", r)
    expect(r["current"] == "2", "the result says version 2 is current", r)
    expect("undo: stop shop-3-web@1.service shop-3-web@2.service" in r["actions"],
           "the undo is in the actions", r)
    running("2")
    expect(current() == "2", "v2 is still current")
    expect(not (ROOT / "pods/shop/3").exists(), "v3 left the store")
    expect(not (UNIT_DIR / "shop-3-web@.service").exists(), "v3's unit files are gone")
    expect(snapshot(ROOT, UNIT_DIR) == {k: v for k, v in before.items()},
           "store and unit directory are as before")
    failed_units = subprocess.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"],
                                  capture_output=True, text=True).stdout
    expect("shop-3" not in failed_units, f"no failed v3 unit is left behind: {failed_units}")
    ok(ops_pod(bundle=bundle("2")), False)

    # Tried again, the message quotes this run's journal lines, not the
    # earlier run's too (the same unit names failed before).
    r = ops_pod(bundle=bundle("3", BROKEN))
    quoted = [line for line in r["msg"].splitlines() if "cannot open config for" in line]
    expect(r.get("failed") is True and len(quoted) == 1,
           "the second failure quotes only its own run's journal line", r)

    # A service that dies a little after starting is caught too.
    late = WEB.replace("exec sleep infinity", "sleep 0.4; exit 1")
    r = ops_pod(bundle=bundle("4", late))
    expect(r.get("failed") is True and "rolled back to version 2" in r["msg"],
           "a service that dies after 0.4 s does not count as up", r)
    running("2")
    # min_up_time: 0 takes systemd's word at once, so that one counts as up;
    # a longer window catches a service that dies later.
    r = ops_pod(bundle=bundle("4", late), min_up_time=0)
    expect(r.get("failed") is not True and r["changed"] is True and current() == "4",
           "min_up_time 0: a service that dies after 0.4 s counted as up", r)
    ok(ops_pod(bundle=bundle("2")), True)
    later = WEB.replace("exec sleep infinity", "sleep 1.5; exit 1")
    r = ops_pod(bundle=bundle("6", later), min_up_time=3)
    expect(r.get("failed") is True and "rolled back to version 2" in r["msg"],
           "min_up_time 3: a service that dies after 1.5 s does not count as up", r)
    running("2")

    # Without rollback, the failure is left as it is.
    r = ops_pod(bundle=bundle("5", BROKEN), rollback=False)
    expect(r.get("failed") is True and r["changed"] is True and "rollback is off" in r["msg"], "rollback: false", r)
    expect(current() == "5", "v5 stays current without rollback")
    running("2")


def keep_and_absent():
    """keep: 1 prunes all but current; absent of all leaves no trace."""
    for v in ["1", "2", "3"]:
        ok(ops_pod(bundle=bundle(v)), True)
    r = ok(ops_pod(bundle=bundle("4"), keep=1), True)
    expect(sorted(p.name for p in (ROOT / "pods/shop").iterdir()) == ["4", "current", "previous"]
           or sorted(p.name for p in (ROOT / "pods/shop").iterdir()) == ["4", "current"],
           f"only v4 is left: {list((ROOT / 'pods/shop').iterdir())}", r)
    running("4")
    for v in ["1", "2", "3"]:
        expect(not (UNIT_DIR / f"shop-{v}-web@.service").exists(), f"v{v}'s units are gone")
        stopped(v)
    ok(ops_pod(bundle=bundle("4"), keep=1), False)

    # The current running version is not removed on its own.
    before = snapshot(ROOT, UNIT_DIR)
    r = ops_pod(name="shop", version="4", state="absent")
    expect(r.get("failed") is True and "stop it first (state: stopped) or remove every version" in r["msg"],
           "absent of the running current version is refused, saying what to do", r)
    expect(snapshot(ROOT, UNIT_DIR) == before, "a refused request changes nothing")

    ok(ops_pod(bundle=bundle("5"), state="present"), True)
    stopped("5")
    ok(ops_pod(name="shop", version="5", state="absent"), True)
    expect(not (ROOT / "pods/shop/5").exists(), "a non-current version is removed")

    r = ok(ops_pod(name="shop", state="absent"), True)
    expect(not (ROOT / "pods/shop").exists(), "no store directory is left")
    left = [p.name for p in UNIT_DIR.rglob("*") if "shop" in p.name]
    expect(left == [], f"no unit file is left: {left}")
    listed = traces()
    expect(listed == "", f"systemd has no trace of the pod: {listed}")
    ok(ops_pod(name="shop", state="absent"), False)


def states_and_environment():
    """stopped, started, restarted and present; env is secret and applied."""
    r = ok(ops_pod(bundle=bundle("1"), env={"SECRET": 'p"a$s w\\rd%'}), True)
    expect("p\"a$s" not in json.dumps(r), "env values are not returned", r)
    env_file = ROOT / "pods/shop/1/environment"
    expect(oct(env_file.stat().st_mode & 0o777) == "0o600", "the environment file is 0600")
    expect(Path("/run/web-1-1").read_text().strip() == 'up shop 1 1 secret=p"a$s w\\rd%',
           "the secret reaches the service intact: " + Path("/run/web-1-1").read_text())
    for path in UNIT_DIR.rglob("*"):
        if path.is_file():
            expect("p\"a$s" not in path.read_text(errors="replace"), f"no secret in {path}")

    ok(ops_pod(name="shop", version="1", state="stopped"), True)
    stopped("1")
    expect(not (UNIT_DIR / "multi-user.target.wants/ops-shop.target").exists(),
           "a stopped pod does not come back at boot")
    ok(ops_pod(name="shop", version="1", state="stopped"), False)
    ok(ops_pod(name="shop", state="started"), True)
    running("1")

    # A new secret restarts the running version with it.
    r = ok(ops_pod(name="shop", version="1", env={"SECRET": "second"}), True)
    expect(any(a.startswith("restart ") for a in r["actions"]), "a changed env restarts the units", r)
    expect(Path("/run/web-1-2").read_text().strip() == "up shop 1 2 secret=second", "the new secret is used")
    ok(ops_pod(name="shop", version="1", env={"SECRET": "second"}), False)

    pid = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "shop-1-web@1.service"],
                         capture_output=True, text=True).stdout.strip()
    r = ok(ops_pod(name="shop", version="1", state="restarted"), True)
    pid2 = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "shop-1-web@1.service"],
                          capture_output=True, text=True).stdout.strip()
    expect(pid != pid2, "restarted gives new processes")
    ok(ops_pod(name="shop", version="1", state="restarted"), True)

    r = ok(ops_pod(bundle=bundle("2"), state="present"), True)
    expect(r["current"] == "1", "present does not switch", r)
    stopped("2")
    running("1")
    ok(ops_pod(bundle=bundle("2"), state="present"), False)

    # A unit file edited by hand is put back.
    unit = UNIT_DIR / "shop-1-web@.service"
    unit.write_text(unit.read_text() + "# edited\n")
    r = ok(ops_pod(name="shop", version="1"), True)
    expect("# edited" not in unit.read_text(), "the hand edit was repaired", r)

    # A file ops did not write is never overwritten.
    (UNIT_DIR / "shop-3-web@.service").write_text("[Service]\nExecStart=/bin/true\n")
    before = snapshot(ROOT, UNIT_DIR)
    r = ops_pod(bundle=bundle("3"))
    expect(r.get("failed") is True and "is not managed by ops for pod shop" in r["msg"],
           "a foreign unit file is refused", r)
    expect(snapshot(ROOT, UNIT_DIR) == before, "the refusal changed nothing")

    # Same version, different content: refused.
    r = ops_pod(bundle=bundle("2", WEB.replace("infinity", "9999")))
    expect(r.get("failed") is True and "versions are immutable" in r["msg"], "a changed version is refused", r)


def concurrent_runs_are_serialized():
    """Two runs at once: one waits for the other's lock; both succeed."""
    v1 = bundle("1")
    results = [None, None]

    def run(i):
        results[i] = ops_pod(bundle=v1)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        expect(not r.get("failed") and not r.get("died"), "both runs succeed", r)
    expect(sorted(r["changed"] for r in results) == [False, True], "exactly one of them deployed", results)
    running("1")

    # A run that cannot get the lock in time says who holds it.
    import fcntl
    with open(ROOT / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        (ROOT / "lock.holder").write_text("held by pid 4242 since 0 (unix time): a test\n")
        r = ops_pod(bundle=bundle("2"), lock_timeout=1)
    expect(r.get("failed") is True and "pid 4242" in r["msg"] and "lock_timeout" in r["msg"],
           "a lock timeout names the holder", r)


def readiness_is_awaited():
    """Type=notify: up means READY=1, within start_timeout or rolled back."""
    notify = """[Service]
Type=notify
NotifyAccess=all
ExecStart=/bin/sh -c 'sleep 2; systemd-notify --ready; exec sleep infinity'
"""
    began = time.monotonic()
    ok(ops_pod(bundle=bundle("1", notify, instances=1)), True)
    expect(time.monotonic() - began >= 2, "the run waited for readiness")
    expect(active("shop-1-web@1.service") == "active", "ready when ops_pod returns")
    r = ops_pod(bundle=bundle("2", notify, instances=1), start_timeout=1)
    expect(r.get("failed") is True and "did not come up" in r["msg"] and "did not finish within 1 s" in r["msg"]
           and "rolled back to version 1" in r["msg"], "not ready in time: rolled back", r)
    expect(active("shop-1-web@1.service") == "active", "v1 still up")
    expect(active("shop-2-web@1.service") in ("inactive", "unknown"), "v2 stopped")


# Values a bundle or the env option may carry that systemd's parsers treat
# specially: each must reach the service byte for byte, and none may add a
# directive (the CR and LF values try to).
HOSTILE = {
    "CR": "a\rExecStartPre=/bin/touch /run/pwned\rUser=nobody\rb",
    "LF": "a\nExecStartPre=/bin/touch /run/pwned\nINJECTED=yes\nb",
    "CRLF": "x\r\ny",
    "CONTROLS": "".join(chr(c) for c in range(1, 32)) + "\x7f",
    "PERCENT": "50% %n %i %%",
    "DOLLAR": "$HOME ${PATH} $$ `id`",
    "BACKSLASHES": "a\\b\\nc\\x41\\",
    "QUOTES": "\"dq\" 'sq' \\\" \\'",
    "TRAILING_BACKSLASH": "ends with a backslash\\",
    "SPACES": "  lead and trail  ",
    "UNICODE": "h\u00e9llo \u2603 \U0001d11e \u2028 \u0085",
    "COMMENT": "#not a comment ;x",
    "EMPTY": "",
}

# Says everything it was given: its environment, NUL-separated, and its uid.
ENV_DUMP = """[Service]
ExecStart=/bin/sh -c 'cat /proc/$$$$/environ > /run/env-%i; id -u > /run/uid-%i; exec sleep infinity'
"""


def environ(path):
    env = {}
    for item in Path(path).read_bytes().split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode()] = v
    return env


def hostile_environment_arrives_exactly():
    """Bundle environment and env option values reach the service byte
    for byte, through a root whose path has a '%' and non-ASCII; no
    injected directive takes effect."""
    root = Path("/var/lib/ops%n-\u00e9")
    environment = {f"B_{k}": v for k, v in HOSTILE.items()}
    secrets = {f"S_{k}": v for k, v in HOSTILE.items()}
    b = bundle("1", ENV_DUMP, instances=1, environment=environment)
    ok(ops_pod(bundle=b, root=root, env=secrets), True)
    ok(ops_pod(bundle=b, root=root, env=secrets), False)
    got = environ("/run/env-1")
    for name, value in {**environment, **secrets}.items():
        expect(got.get(name) == value.encode(),
               f"{name} arrives exactly: sent {value!r}, got {got.get(name)!r}")
    expect("INJECTED" not in got, "no variable injected through a newline")
    expect(not Path("/run/pwned").exists(), "no ExecStartPre= injected")
    expect(Path("/run/uid-1").read_text().strip() == "0", "no User= injected")
    r = ops_pod(bundle=b, root=root, env={"TOKEN": "secret\0tail"})
    kit.failed(r, "env.TOKEN: the value contains a NUL character")
    expect("secret" not in json.dumps(r), "the refused value is not shown", r)


def continued_references_are_renamed():
    """A sibling named on a continued line of Wants=/Requires=/After= (with
    a comment line inside) is bound under its installed name."""
    web = """[Unit]
Wants=network.target \\
  # the database comes first
  db.service
Requires=cache.service \\
  db.service
After=\\
  db.service
[Service]
ExecStart=/bin/sleep infinity
"""
    sibling = "[Service]\nExecStart=/bin/sleep infinity\n"
    ok(ops_pod(bundle=bundle("1", web, instances=1,
                             extra_units={"db.service": sibling, "cache.service": sibling})), True)
    shown = subprocess.run(["systemctl", "show", "-p", "Wants", "-p", "Requires", "-p", "After",
                            "shop-1-web@1.service"], capture_output=True, text=True, check=True).stdout
    deps = {line.split("=", 1)[0]: line.split("=", 1)[1].split() for line in shown.splitlines()}
    for key in ("Wants", "Requires", "After"):
        expect("shop-1-db.service" in deps[key] and "db.service" not in deps[key],
               f"{key} names the installed sibling: {deps[key]}")
    expect("shop-1-cache.service" in deps["Requires"], f"Requires: {deps['Requires']}")
    expect(active("shop-1-db.service") == "active", "the sibling runs")


def without_lock(picture):
    """A store picture without the lock file (and the directory it needed)."""
    picture = {k: v for k, v in picture.items() if k != str(ROOT / "lock")}
    if not any(k.startswith(str(ROOT) + "/") for k in picture):
        picture.pop(str(ROOT), None)
    return picture


def failed_first_deploy_says_why():
    """A first version whose unit exits: the cause and journal lead, all is undone, every time."""
    before = snapshot(ROOT, UNIT_DIR)
    broken = bundle("1", BROKEN)
    for attempt in ("first", "rerun"):
        r = ops_pod(bundle=broken)
        expect(r.get("failed") is True, f"{attempt}: the deploy fails", r)
        msg = r["msg"]
        expect(msg.startswith("version 1 of pod shop did not come up: shop-1-web@"),
               f"{attempt}: the message leads with the real cause", r)
        journal = msg.split("\n")[1:3]
        expect(journal[0].startswith("last journal lines of shop-1-web@")
               and "cannot open config for" in journal[1] and "no such file" in journal[1],
               f"{attempt}: the unit's journal lines come right after", r)
        expect("not loaded" not in msg and "undoing it failed" not in msg,
               f"{attempt}: the undo did not trip over units never loaded", r)
        expect("rolled back: the pod is as it was before this run; undone: stop shop-1-web@1.service" in msg,
               f"{attempt}: then what was undone", r)
        expect(r["changed"] is False and r["current"] is None and r["pod"] is None,
               f"{attempt}: nothing is left changed", r)
        expect("undo: remove version 1 of pod shop from the store" in r["actions"]
               and r["actions"][-1] == "undo: stop ops-shop.slice",
               f"{attempt}: actions end with the undo, down to the pod's slice", r)
        expect(without_lock(snapshot(ROOT, UNIT_DIR)) == before,
               f"{attempt}: store and unit directory are as before (only the lock file stays)")
        left = traces()
        expect(left == "", f"{attempt}: systemd has no trace of the pod: {left}")
        failed = subprocess.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"],
                                capture_output=True, text=True).stdout
        expect("shop" not in failed, f"{attempt}: no failed unit is left: {failed}")


def volume_bundle(version, volumes, name="shop"):
    """A bundle whose pod has `volumes`: {name: [(path in archive, text)]}, one archive each."""
    import io
    import tarfile
    d = bundle(version, name=name)
    pod = json.loads((d / "pod.json").read_text())
    pod["volumes"] = []
    for vol, entries in volumes.items():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path, text in entries:
                info = tarfile.TarInfo(path)
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text.encode()))
        (d / f"{vol}.tar").write_bytes(buf.getvalue())
        pod["volumes"].append({"name": vol, "path": f"/srv/{vol}", "data": f"{vol}.tar"})
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def failed_switch_reports_what_it_did():
    """v2's second volume archive is refused: v1 untouched, current 1, actions exactly what was done."""
    ok(ops_pod(bundle=bundle("1")), True)
    before = snapshot(ROOT, UNIT_DIR)
    pids = {u: subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", u],
                              capture_output=True, text=True).stdout.strip() for u in units_of("1")}
    v2 = volume_bundle("2", {"conf": [("app.conf", "x")], "data": [("ok", "x"), ("../../escape", "x")]})
    for attempt in ("first", "rerun"):
        r = ops_pod(bundle=v2)
        expect(r.get("failed") is True, f"{attempt}: the switch fails", r)
        expect(r["msg"].startswith("volume data of pod shop version 2: ")
               and "'..'" in r["msg"].split("\n")[0], f"{attempt}: the real cause leads", r)
        expect(r["actions"] == ["extract volume conf of pod shop version 2 from conf.tar",
                                "undo: remove the staged copy of version 2 of pod shop and its volumes"],
               f"{attempt}: actions are what was done and undone, nothing else", r)
        expect(r["current"] == "1" and r["pod"]["current"] == "1", f"{attempt}: version 1 is current", r)
        expect(r["changed"] is False, f"{attempt}: nothing stays changed", r)
        expect(snapshot(ROOT, UNIT_DIR) == before, f"{attempt}: the store and unit directory are as before")
        running("1")
        now = {u: subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", u],
                                 capture_output=True, text=True).stdout.strip() for u in units_of("1")}
        expect(now == pids, f"{attempt}: version 1 was not restarted: {pids} -> {now}")
    expect(not Path("/escape").exists() and not (ROOT / "escape").exists(), "nothing escaped")



def unit_that_fails_before_its_program_says_why():
    """A unit systemd cannot even start (no such User=, no WorkingDirectory=)
    logs nothing of its own: the message carries systemd's exit status and
    what it means."""
    for version, setting, expected in (
        ("1", "User=nosuchuser-ops", "status 217/USER"),
        ("2", "WorkingDirectory=/nonexistent/ops-dir", "status 200/CHDIR"),
        # The first process to fail is a control process: the main one never ran.
        ("3", "User=nosuchuser-ops\nExecStartPre=/bin/true", "status 217/USER"),
    ):
        text = f"[Service]\n{setting}\nExecStart=/bin/sleep infinity\n"
        r = ops_pod(bundle=bundle(version, text, instances=1, name=f"early{version}"))
        expect(r.get("failed") is True and expected in r["msg"],
               f"{setting}: the message says {expected}", r)
        expect(r["changed"] is False, f"{setting}: all undone", r)

SCENARIOS = {f.__name__: f for f in [
    deploy_switch_rollback,
    check_mode_changes_nothing,
    failed_start_rolls_back,
    keep_and_absent,
    states_and_environment,
    concurrent_runs_are_serialized,
    readiness_is_awaited,
    hostile_environment_arrives_exactly,
    continued_references_are_renamed,
    failed_first_deploy_says_why,
    failed_switch_reports_what_it_did,
    unit_that_fails_before_its_program_says_why,
]}

if __name__ == "__main__":
    WORK = kit.start("ops-pod-scenario-")
    kit.run(SCENARIOS, sys.argv[1])
