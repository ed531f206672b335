"""Hostile store roots against the pivot, on a real systemd (run by
tests/reliability/pivot_roots inside the sandbox).

Each version's drop-in carries ConditionPathExists=<root>/pods/<pod>/
current/is-version-<version>, so the root is written into unit files. The
cargo tests check the text ops writes; only systemd can say how it reads it.
systemd drops a condition it cannot take (a path holding `..`, too long)
with no more than a journal line, and the version's units then start
whatever `current` names: a root with `..` under a directory not there yet
did that (atomic::resolve). For each root that must work: version 1 then 2
deployed, and with 2 current a start of version 1's unit is skipped by its
condition and a start of the pod's target runs version 2 alone. For each
root that must be refused: the message names the store root and why, and
nothing under /var/lib or the unit directory changed. And a `current`
that is not a symlink is refused saying so, changing nothing.

Prints `PASS name` / `FAIL name` and `FIGURE` lines.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(os.environ.get("OPS_PROJECT", Path(__file__).resolve().parents[2]))
BIN = Path(os.environ.get("OPS_BIN_DIR", PROJECT / "target" / "debug"))
UNITS = Path("/etc/systemd/system")
PORTS = "20450-20499"  # within this helper's range (the network is shared)
WORK = Path("/nonexistent")
passes = failures = 0

# Roots that must deploy and keep the pivot: systemd's specifiers (%),
# quoting and escapes it must not interpret, a line separator that is not
# a control character, a component of 255 bytes, and `..` after a
# directory that does not exist yet.
GOOD = {
    "specifiers, quotes, backslash, comment signs": "/var/lib/pr ops %n %% $X 'q' \"d\" \\b ;#x",
    "unicode line separator": "/var/lib/pr-\u2028-é",
    "a component of 255 bytes": "/var/lib/" + "p" * 255,
    "`..` after a directory not there yet": "/var/lib/pr-not-there/../pr-dotdot",
}
BAD = {
    "newline": "/var/lib/pr\nx",
    "carriage return": "/var/lib/pr\rx",
    "escape": "/var/lib/pr\x1bx",
    "delete": "/var/lib/pr\x7fx",
    "next line (U+0085)": "/var/lib/pr\u0085x",
}


def report(ok, name, detail=""):
    global passes, failures
    if ok:
        passes += 1
        print(f"PASS {name}")
    else:
        failures += 1
        print(f"FAIL {name}")
        for line in str(detail).splitlines()[:20]:
            print(f"    {line}")
    sys.stdout.flush()


def module(binary, **args):
    fd, name = tempfile.mkstemp(suffix=".json", dir=WORK)
    with os.fdopen(fd, "w") as f:
        json.dump({**args, "_ansible_check_mode": False, "_ansible_diff": False}, f)
    p = subprocess.run([str(BIN / binary), name], capture_output=True, text=True, timeout=120)
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError:
        return {"died": True, "returncode": p.returncode, "stderr": p.stderr[-2000:]}


def pod(root, **extra):
    return {"root": root, "unit_dir": str(UNITS), "port_range": PORTS, "start_timeout": 20,
            "min_up_time": 0, **extra}


def bundle(version):
    d = WORK / f"shop-{version}"
    (d / "units").mkdir(parents=True, exist_ok=True)
    (d / "units" / "web@.service").write_text(
        f"[Unit]\nDescription=web %i of shop {version}\n\n[Service]\n"
        "ExecStart=/bin/sh -c 'exec sleep infinity'\n")
    (d / "pod.json").write_text(json.dumps({"name": "shop", "version": version, "containers": [
        {"name": "web", "replication": 1, "systemd": {"unit-files": ["units/web@.service"]}}]}))
    return str(d)


def picture(*tops):
    out = {}
    for top in tops:
        for dirpath, dirs, files in os.walk(top):
            for p in [Path(dirpath)] + [Path(dirpath) / n for n in dirs + files]:
                st = p.lstat()
                if p.is_symlink():
                    out[str(p)] = ("link", os.readlink(p))
                elif p.is_file():
                    out[str(p)] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
                else:
                    out[str(p)] = ("other", st.st_mode)
    return out


def changed(before, after):
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def show(unit):
    out = subprocess.run(["systemctl", "show", unit, "-p", "ActiveState,ConditionResult"],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def good_root(label, root):
    resolved = os.path.normpath(root)
    r1 = module("ops_pod", **pod(root, bundle=bundle("1")))
    # The first deploy's drop-in too (the next run rewrites it): with
    # `current` gone, as after a cut before it was made, version 1 must
    # not start.
    current = Path(resolved, "pods/shop/current")
    subprocess.run(["systemctl", "stop", "shop-1-web@1.service"], capture_output=True)
    if os.path.lexists(current):
        os.rename(current, f"{current}.away")
    subprocess.run(["systemctl", "start", "shop-1-web@1.service"], capture_output=True)
    v1 = show("shop-1-web@1.service")
    report(v1 == {"ActiveState": "inactive", "ConditionResult": "no"},
           f"pivot root {label}: the first version does not start without current", v1)
    if os.path.lexists(f"{current}.away"):
        os.rename(f"{current}.away", current)
    r2 = module("ops_pod", **pod(root, bundle=bundle("2")))
    report(r1.get("changed") is True and r2.get("changed") is True and not r1.get("failed")
           and not r2.get("failed"), f"pivot root {label}: versions 1 and 2 deploy", f"{r1}\n{r2}")
    dropin = UNITS / "shop-1-web@1.service.d" / "50-ops.conf"
    text = dropin.read_text() if dropin.exists() else ""
    report(Path(resolved, "pods/shop/2/is-version-2").is_file() and "ConditionPathExists=" in text,
           f"pivot root {label}: the store is at the root as given, the drop-in carries the pivot",
           text)
    subprocess.run(["systemctl", "start", "shop-1-web@1.service"], capture_output=True)
    v1 = show("shop-1-web@1.service")
    report(v1 == {"ActiveState": "inactive", "ConditionResult": "no"},
           f"pivot root {label}: a start of version 1 while 2 is current is skipped by systemd", v1)
    subprocess.run(["systemctl", "stop", "shop-2-web@1.service"], capture_output=True)
    subprocess.run(["systemctl", "start", "ops-shop.target"], capture_output=True)
    v1, v2 = show("shop-1-web@1.service"), show("shop-2-web@1.service")
    report(v1["ActiveState"] == "inactive" and v2["ActiveState"] == "active",
           f"pivot root {label}: the pod's target runs version 2 alone", f"{v1} {v2}")
    if ".." in root:
        stray = root.split("/..")[0]
        report(not os.path.lexists(stray), f"pivot root {label}: no directory made on the way up",
               stray)
    r = module("ops_pod", **pod(root, name="shop", state="absent"))
    report(r.get("changed") is True and not r.get("failed"), f"pivot root {label}: removed", r)


def bad_root(label, root):
    before = picture("/var/lib", str(UNITS))
    r = module("ops_pod", **pod(root, bundle=bundle("1")))
    diff = changed(before, picture("/var/lib", str(UNITS)))
    msg = r.get("msg", "")
    report(r.get("failed") is True and r.get("changed") is False and "store root" in msg
           and "control character" in msg and not diff,
           f"pivot root refused: {label}, naming the store root, nothing changed", f"{r}\n{diff[:5]}")


def pointer_not_a_link():
    root = "/var/lib/pr-pointer"
    module("ops_pod", **pod(root, bundle=bundle("1")))
    current = Path(root, "pods/shop/current")
    current.unlink()
    current.write_text("1\n")
    before = picture("/var/lib", str(UNITS))
    for binary, args in (("ops_pod", pod(root, bundle=bundle("1"))),
                         ("ops_facts", {"root": root, "unit_dir": str(UNITS)})):
        r = module(binary, **args)
        diff = changed(before, picture("/var/lib", str(UNITS)))
        report(r.get("failed") is True and str(current) in r.get("msg", "")
               and "it is a regular file, not the symlink to a version ops makes" in r.get("msg", "")
               and not diff, f"pivot {binary}: a current that is a file is refused saying so, nothing changed",
               f"{r}\n{diff[:5]}")
    current.unlink()
    current.symlink_to("1")
    module("ops_pod", **pod(root, name="shop", state="absent"))


def long_unit_names():
    """Installed names near the limit: `<pod>-<version>-<unit>` of 253
    characters deploys (its temporary's name is cut to fit, its drop-in
    directory `<name>.d` is 255); 254 is refused before anything is
    written (they failed mid-way with "File name too long")."""
    pod_name, version = "p" * 64, "v" * 64
    for length in (253, 254):
        stem = "w" * (length - len(f"{pod_name}-{version}-.service"))
        d = WORK / f"long-{length}"
        (d / "units").mkdir(parents=True)
        (d / "units" / f"{stem}.service").write_text(
            "[Service]\nExecStart=/bin/sh -c 'exec sleep infinity'\n")
        (d / "pod.json").write_text(json.dumps({"name": pod_name, "version": version, "containers": [
            {"name": "web", "systemd": {"unit-files": [f"units/{stem}.service"]}}]}))
        root = f"/var/lib/pr-long-{length}"
        before = picture("/var/lib", str(UNITS))
        r = module("ops_pod", **pod(root, bundle=str(d)))
        if length == 253:
            unit = f"{pod_name}-{version}-{stem}.service"
            report(r.get("changed") is True and not r.get("failed")
                   and show(unit)["ActiveState"] == "active",
                   f"pivot unit name of {length} characters deploys and runs", r)
            module("ops_pod", **pod(root, name=pod_name, state="absent"))
        else:
            diff = changed(before, picture("/var/lib", str(UNITS)))
            report(r.get("failed") is True and f"is {length} characters, longer than 253" in r.get("msg", "")
                   and not diff, f"pivot unit name of {length} characters refused, nothing changed",
                   f"{r}\n{diff[:5]}")


def main():
    global WORK
    WORK = Path(tempfile.mkdtemp(prefix="ops-pivot-roots.", dir="/var/tmp"))
    try:
        for label, root in GOOD.items():
            good_root(label, root)
        for label, root in BAD.items():
            bad_root(label, root)
        pointer_not_a_link()
        long_unit_names()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"FIGURE pivot roots: {len(GOOD)} kept, {len(BAD)} refused")
    print(f"pivot roots: {passes} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
