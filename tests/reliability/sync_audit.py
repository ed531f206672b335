"""The durability order of every write, read from the system calls (run by
tests/reliability/sync_audit inside the real-systemd sandbox).

The power part cuts a real disk, but ext4 has one journal: any fsync
commits every earlier rename with it, so a rename whose directory is never
synced passes there whenever a later fsync of anything follows (it did:
with the directory syncs after rename removed from atomic.rs, all 35
default cuts passed). This audit does not depend on the file system: each
module run is traced (strace -ff -y) and, for every path under the store,
the release repository or the unit directory:

- a file renamed into place was fsynced after its last write (data first);
- the directory a rename put an entry into, and the one it took it from,
  is fsynced after the rename, before the process ends (the name lasts).

A syncfs(2) of the file system counts for everything before it.
Prints `PASS name` / `FAIL name` and `FIGURE` lines.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(os.environ.get("OPS_PROJECT", Path(__file__).resolve().parents[2]))
BIN = Path(os.environ.get("OPS_BIN_DIR", PROJECT / "target" / "debug"))
TOP = Path("/var/lib/ops-audit")
ROOT = TOP / "store"
REPO = TOP / "repo"
UNITS = Path("/etc/systemd/system")
PORTS = "20400-20449"  # within this helper's range (the network is shared)
WATCHED = (str(ROOT) + "/", str(REPO) + "/", str(UNITS) + "/")

passes = failures = 0
figures = {"syscalls read": 0, "renames audited": 0, "directory syncs seen": 0}

SYSCALLS = ("rename,renameat,renameat2,fsync,fdatasync,syncfs,write,pwrite64,writev,pwritev,"
            "pwritev2,copy_file_range,sendfile,splice")
LINE = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")
FD = re.compile(r"^\d+<(.*)>$")


def report(ok, name, detail=""):
    global passes, failures
    if ok:
        passes += 1
        print(f"PASS {name}")
    else:
        failures += 1
        print(f"FAIL {name}")
        for line in detail.splitlines():
            print(f"    {line}")
    sys.stdout.flush()


def split_args(text):
    """The top-level comma-separated arguments of one strace call."""
    args, depth, quoted, cur, escape = [], 0, False, "", False
    for c in text:
        if escape:
            cur += c
            escape = False
            continue
        if c == "\\" and quoted:
            cur += c
            escape = True
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "[{<":
            depth += 1
        elif not quoted and c in "]}>":
            depth -= 1
        elif not quoted and depth == 0 and c == ",":
            args.append(cur.strip())
            cur = ""
            continue
        cur += c
    if cur.strip():
        args.append(cur.strip())
    return args


def string_arg(a):
    """A path argument as strace printed it (quoted, C escapes)."""
    if not (a.startswith('"') and a.endswith('"')):
        return None
    return a[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")


def fd_path(a):
    m = FD.match(a)
    return m.group(1) if m else None


def watched(p):
    return p is not None and any(p.startswith(w) for w in WATCHED)


def device_of(path):
    p = Path(path)
    while True:
        try:
            return os.stat(p).st_dev
        except OSError:
            if p == p.parent:
                return None
            p = p.parent


def audit(trace_lines):
    """The violations in one process's calls, in order."""
    dirty = {}  # path -> the line that wrote it last, not yet fsynced
    pending = {}  # directory -> the rename that changed it, not yet fsynced
    problems = []
    for n, line in enumerate(trace_lines):
        m = LINE.match(line)
        if not m or int(m.group(3)) < 0:
            continue
        figures["syscalls read"] += 1
        call, args = m.group(1), split_args(m.group(2))
        if call in ("write", "pwrite64", "writev", "pwritev", "pwritev2"):
            target = fd_path(args[0])
        elif call in ("copy_file_range", "splice"):
            target = fd_path(args[2]) if len(args) > 2 else None
        elif call == "sendfile":
            target = fd_path(args[0])
        else:
            target = None
        if target is not None:
            if watched(target) and int(m.group(3)) > 0:
                dirty[target] = line
            continue
        if call in ("fsync", "fdatasync"):
            p = fd_path(args[0])
            dirty.pop(p, None)
            if call == "fsync" and pending.pop(p, None) is not None:
                figures["directory syncs seen"] += 1
            continue
        if call == "syncfs":
            dev = device_of(fd_path(args[0]) or "/")
            for d in [d for d in pending if device_of(d) == dev]:
                del pending[d]
            for f in [f for f in dirty if device_of(f) == dev]:
                del dirty[f]
            continue
        if call == "rename":
            src, dst = string_arg(args[0]), string_arg(args[1])
        else:  # renameat, renameat2: only absolute paths are ops's way
            src, dst = string_arg(args[1]), string_arg(args[3])
        if not (watched(src) or watched(dst)):
            continue
        figures["renames audited"] += 1
        if src in dirty:
            problems.append(f"{src} renamed to {dst} without an fsync after its last write "
                            f"({dirty.pop(src)})")
        if "EXCHANGE" in line and dst in dirty:
            problems.append(f"{dst} swapped with {src} without an fsync after its last write")
        for d in {os.path.dirname(src), os.path.dirname(dst)}:
            pending[d] = line
    for d, line in pending.items():
        problems.append(f"directory {d} never fsynced after {line}")
    return problems


def module(name, binary, args, trace_dir):
    fd, path = tempfile.mkstemp(suffix=".json", dir=trace_dir)
    with os.fdopen(fd, "w") as f:
        json.dump({**args, "_ansible_check_mode": False, "_ansible_diff": False}, f)
    out = trace_dir / name
    out.mkdir()
    proc = subprocess.run(["strace", "-ff", "-qq", "-y", "-s", "0", "-e", "trace=" + SYSCALLS,
                           "-o", str(out / "t"), str(BIN / binary), path],
                          capture_output=True, text=True, timeout=300)
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        result = {"died": True, "stdout": proc.stdout[-2000:], "stderr": proc.stderr[-2000:]}
    problems = []
    for t in sorted(out.iterdir()):
        problems += audit(t.read_text(errors="replace").splitlines())
    return result, problems


def bundle(work, version, extra_unit=False):
    d = work / f"shop-{version}"
    (d / "units").mkdir(parents=True, exist_ok=True)
    (d / "units" / "web@.service").write_text(
        f"[Unit]\nDescription=web %i of shop {version}\n\n[Service]\n"
        "ExecStart=/bin/sh -c 'exec sleep infinity'\n")
    pod = {"name": "shop", "version": version,
           "containers": [{"name": "web", "replication": 2,
                           "systemd": {"unit-files": ["units/web@.service"]}}]}
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def main():
    work = Path(tempfile.mkdtemp(prefix="ops-sync-audit.", dir="/var/tmp"))
    TOP.mkdir(parents=True, exist_ok=True)
    pod = {"root": str(ROOT), "unit_dir": str(UNITS), "port_range": PORTS,
           "start_timeout": 20, "min_up_time": 0}
    b1, b2 = bundle(work, "1"), bundle(work, "2")
    steps = [
        ("deploy", "ops_pod", {**pod, "bundle": str(b1)}),
        ("upgrade", "ops_pod", {**pod, "bundle": str(b2)}),
        ("switch", "ops_pod", {**pod, "name": "shop", "version": "1"}),
        ("publish first", "ops_release", {"repo": str(REPO), "bundle": str(b1), "channel": "stable"}),
        ("publish second", "ops_release", {"repo": str(REPO), "bundle": str(b2), "channel": "stable"}),
        ("remove", "ops_pod", {**pod, "name": "shop", "state": "absent"}),
    ]
    try:
        for i, (name, binary, args) in enumerate(steps):
            result, problems = module(f"{i}", binary, args, work)
            done = result.get("changed") is True and not result.get("failed")
            report(done, f"sync audit {name}: the run succeeds and changes something",
                   json.dumps(result)[:2000])
            report(not problems, f"sync audit {name}: every rename is synced (data before, directories after)",
                   "\n".join(problems[:20]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(TOP, ignore_errors=True)
    for k, v in figures.items():
        print(f"FIGURE sync audit {k}: {v}")
    print(f"sync audit: {passes} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
