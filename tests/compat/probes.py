"""Hostile hosts for ops_pod's observation: each probe plants something in
the store or the unit directory, runs a fixed set of requests (check mode
ones must leave both byte-identical and create no lock) and undoes the
plant. Run inside the sandbox like sequence.py; prints JSON lines."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sequence as s  # noqa: E402

ROOT, UNIT_DIR, WORK = s.ROOT, s.UNIT_DIR, s.WORK
RANGE = os.environ.get("OPS_PORT_RANGE", "41400-41499")
PODS = ROOT / "pods"


def run(label, binary, check_mode, timeout=30, **args):
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    before = s.picture(ROOT, UNIT_DIR)
    lock_before = os.path.lexists(ROOT / "lock")
    full = {**args, "_ansible_check_mode": check_mode, "_ansible_diff": True}
    s.STEP_FILE.write_text(json.dumps(full))
    began = time.monotonic()
    try:
        proc = subprocess.run([str(s.kit.BIN_DIR / binary), str(s.STEP_FILE)],
                              capture_output=True, text=True, timeout=timeout)
        try:
            r = json.loads(proc.stdout)
        except json.JSONDecodeError:
            r = {"died": True, "returncode": proc.returncode, "stdout": proc.stdout[-2000:],
                 "stderr": proc.stderr[-2000:]}
    except subprocess.TimeoutExpired:
        r = {"died": f"timeout after {timeout} s"}
    took = round(time.monotonic() - began, 1)
    rec = {"label": label, "binary": binary, "check_mode": check_mode, "args": args, "result": r,
           "seconds": took}
    if check_mode:
        after = s.picture(ROOT, UNIT_DIR)
        rec["check_mode_touched"] = sorted(p for p in set(before) | set(after)
                                           if before.get(p) != after.get(p))
        rec["lock_created"] = not lock_before and os.path.lexists(ROOT / "lock")
    s.emit(rec)
    return r


def requests(label, v2):
    run(f"{label}: rerun", "ops_pod", True, name="shop")
    run(f"{label}: restarted", "ops_pod", True, name="shop", state="restarted")
    run(f"{label}: stopped", "ops_pod", True, name="shop", state="stopped")
    run(f"{label}: deploy v2", "ops_pod", True, bundle=v2, port_range=RANGE)
    run(f"{label}: absent", "ops_pod", True, name="shop", state="absent")
    run(f"{label}: rerun (real)", "ops_pod", False, name="shop", start_timeout=15)
    run(f"{label}: facts", "ops_facts", False)


def rm(p):
    p = Path(p)
    if p.is_symlink() or p.is_file() or (os.path.lexists(p) and not p.is_dir()):
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def main():
    WORK.mkdir(parents=True)
    s.kit.WORK = WORK
    v1 = s.bundle("v1", "1", s.PORT_WEB, ports={"http": "assign"})
    v2 = s.bundle("v2", "2", s.PORT_WEB, ports={"http": "assign"})
    o1 = s.bundle("o1", "1", s.PORT_WEB, name="other", instances=1, ports={"http": "assign"})
    run("setup shop v1", "ops_pod", False, bundle=v1, port_range=RANGE, start_timeout=15)
    run("setup other v1", "ops_pod", False, bundle=o1, port_range=RANGE, start_timeout=15)
    requests("baseline", v2)

    meta = PODS / "other/1/meta.json"
    saved = meta.read_bytes()

    def restore_meta():
        rm(meta)
        meta.write_bytes(saved)

    rm(meta)
    os.mkfifo(meta)
    requests("other meta.json is a FIFO", v2)
    restore_meta()

    meta.write_text("{not json")
    requests("other meta.json corrupt", v2)
    restore_meta()

    rec = json.loads(saved)
    for label, value in [("deployed_at 2^64", 2 ** 64), ("deployed_at -1", -1),
                         ("deployed_at 1e400", "1e400"), ("sequence 2^64", None)]:
        text = json.dumps(rec)
        if value is None:
            text = text.replace(f'"sequence": {rec["sequence"]}', '"sequence": 18446744073709551616')
        else:
            text = text.replace(f'"deployed_at": {rec["deployed_at"]}', f'"deployed_at": {value}')
        meta.write_text(text)
        requests(f"other meta {label}", v2)
        restore_meta()
    shop_meta = PODS / "shop/1/meta.json"
    shop_saved = shop_meta.read_bytes()
    shop_meta.write_text(shop_saved.decode().replace('"sequence": 1', '"sequence": 18446744073709551615'))
    requests("shop meta sequence u64::MAX", v2)
    shop_meta.write_bytes(shop_saved)

    other = PODS / "other"
    aside = WORK / "other-aside"
    shutil.move(other, aside)
    for label, plant in [
        ("pods/other -> /etc", lambda: os.symlink("/etc", other)),
        ("pods/other -> pods/shop", lambda: os.symlink(PODS / "shop", other)),
        ("pods/other -> itself (loop)", lambda: os.symlink(other, other)),
        ("pods/other a regular file", lambda: other.write_text("x")),
        ("pods/other a FIFO", lambda: os.mkfifo(other)),
        ("pods/other -> moved real dir", lambda: os.symlink(aside, other)),
    ]:
        plant()
        requests(label, v2)
        rm(other)
    shutil.move(aside, other)

    for label, name in [("pod dir with ESC and newline", "bad\x1b[31m\nname"),
                        ("pod dir with an uppercase name", "Other"),
                        ("pod dir with a 300-byte name", "a" * 250)]:
        d = PODS / name
        shutil.copytree(other, d, symlinks=True)
        requests(label, v2)
        shutil.rmtree(d)

    cur = other / "current"
    target = os.readlink(cur)
    cur.unlink()
    os.symlink("nonexistent", cur)
    requests("other current dangling", v2)
    cur.unlink()
    os.symlink(cur, cur)
    requests("other current a loop", v2)
    cur.unlink()
    os.symlink(target, cur)

    ports = ROOT / "ports"
    for label, name, text in [("port record 99999", "99999", "pod: other\nname: http\ninstance: 1\n"),
                              ("port record abc", "abc", "x"),
                              ("port record 18446744073709551616", "18446744073709551616", "x"),
                              ("port record garbage content", "41450", "\x00\xff garbage\n"),
                              ("port record a FIFO", "41451", None),
                              ("port record a directory", "41452", "DIR")]:
        p = ports / name
        if text is None:
            os.mkfifo(p)
        elif text == "DIR":
            p.mkdir()
        else:
            p.write_text(text)
        requests(label, v2)
        rm(p)

    many = [UNIT_DIR / f"unrelated-{i}.service" for i in range(5000)]
    for p in many:
        p.write_text("[Service]\nExecStart=/bin/true\n")
    requests("5000 unrelated unit files", v2)
    for p in many:
        p.unlink()

    for label, name, plant in [
        ("unit dir: shop-2-web@.service -> /etc/passwd", "shop-2-web@.service",
         lambda p: os.symlink("/etc/passwd", p)),
        ("unit dir: shop-2-web@.service a FIFO", "shop-2-web@.service", lambda p: os.mkfifo(p)),
        ("unit dir: shop-2-web@.service a loop", "shop-2-web@.service", lambda p: os.symlink(p, p)),
        ("unit dir: shop-2-web@1.service.d -> /var/tmp/compat/planted", "shop-2-web@1.service.d",
         lambda p: ((WORK / "planted").mkdir(exist_ok=True), os.symlink(WORK / "planted", p))),
        ("unit dir: shop-\\x1b name", "shop-\x1b[31m\n.service", lambda p: p.write_text("x")),
        ("unit dir: ops-shop.slice a FIFO", None, None),
    ]:
        if name is None:
            p = UNIT_DIR / "ops-shop.slice"
            keep = p.read_bytes()
            p.unlink()
            os.mkfifo(p)
        else:
            p = UNIT_DIR / name
            plant(p)
        requests(label, v2)
        if name is not None and "shop-2" in name:
            r = run(f"{label}: deploy v2 (real)", "ops_pod", False, bundle=v2, port_range=RANGE,
                    start_timeout=15)
            s.emit({"label": f"{label}: /etc/passwd head",
                    "text": Path("/etc/passwd").read_text()[:60],
                    "planted": sorted(os.listdir(WORK / "planted")) if (WORK / "planted").is_dir() else None})
            if not r.get("failed"):
                run(f"{label}: back to v1", "ops_pod", False, name="shop", version="1", start_timeout=15)
                run(f"{label}: remove v2", "ops_pod", False, name="shop", version="2", state="absent")
        if name is None:
            rm(p)
            p.write_bytes(keep)
        elif os.path.lexists(p):
            rm(p)

    fresh = Path("/var/lib/ops-fresh")
    for binary, args in [("ops_pod", dict(bundle=v1, port_range=RANGE)),
                         ("ops_pod", dict(name="shop", state="absent")),
                         ("ops_facts", {}),
                         ("ops_volume", dict(pod="shop", version="1", name="x")),
                         ("ops_image", dict(id="sha512-" + "a" * 128, state="absent"))]:
        r = run(f"fresh root: {binary} {sorted(args)}", binary, True, root=fresh, **args)
        s.emit({"label": f"fresh root after {binary} check: exists", "exists": fresh.exists()})

    fifo_bundle = s.bundle("vf", "3", name="shop", volumes={"data": [("a", "1")]})
    (fifo_bundle / "data.tar").unlink()
    os.mkfifo(fifo_bundle / "data.tar")
    run("volume archive a FIFO", "ops_pod", True, bundle=fifo_bundle, port_range=RANGE)
    (fifo_bundle / "data.tar").unlink()
    os.symlink("/dev/zero", fifo_bundle / "data.tar")
    run("volume archive -> /dev/zero", "ops_pod", True, bundle=fifo_bundle, port_range=RANGE)


if __name__ == "__main__":
    main()
