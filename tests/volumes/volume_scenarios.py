"""ops_volume (and ops_pod's volumes) against a booted systemd. One
scenario per call, run inside the sandbox (tests/systemd/sandbox) by
tests/systemd/test-volumes.sh:

    python3 volume_scenarios.py FIXTURES_DIR SCENARIO

FIXTURES_DIR holds what tests/volumes/fixtures.py built (one tree in every
compression, generations of a volume for replace, archives that try to
escape, the busybox ACI of the image tests) and its index.json. Each
scenario drives the real module binaries the way Ansible does and checks
their results against the store (file by file, with lstat), the unit
files and what the services themselves could and could not do. Exit
status 0 means every assertion held; otherwise the first failed one is
printed.
"""

import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "systemd"))
import scenario_kit as kit  # noqa: E402
from scenario_kit import expect, failed, ok, snapshot  # noqa: E402

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
WORK = kit.WORK  # set by kit.start() when a scenario runs
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 2 else Path("/nonexistent")
INDEX = json.loads((FIXTURES / "index.json").read_text()) if FIXTURES.exists() else {}
TREES = INDEX.get("trees", {})

# A service that only runs: something for ops_volume to restart.
IDLE = """[Unit]
Description=an idle service of the volume tests

[Service]
ExecStart=/bin/sleep infinity
"""


def ops_pod(**args):
    args.setdefault("start_timeout", 20)
    return kit.module("ops_pod", **args)


def ops_volume(**args):
    return kit.module("ops_volume", **args)


def fixture(name):
    return FIXTURES / INDEX[name]["file"]


def digest(name):
    return INDEX[name]["digest"]


def data_dir(pod, version, volume):
    return ROOT / "pods" / pod / version / "volumes" / volume / "data"


def record(pod, version, volume):
    return json.loads((ROOT / "pods" / pod / version / "volumes" / volume / "volume.json")
                      .read_text())


def bundle(name, version, volumes, units, images=(), files=()):
    """Write a native bundle: units is {file: (text, image id or None)};
    files are fixtures copied beside pod.json (volumes name them)."""
    d = WORK / f"bundle-{name}-{version}"
    d.mkdir()
    containers = []
    for file, (text, image) in units.items():
        (d / file).write_text(text)
        container = {"name": file.split(".")[0], "systemd": {"unit-files": [file]}}
        if image:
            container["image"] = image
        containers.append(container)
    for f in files:
        shutil.copy(fixture(f), d / INDEX[f]["file"])
    pod = {"name": name, "version": version, "containers": containers, "volumes": volumes}
    if images:
        pod["images"] = [{"id": i["id"], "path": i["file"]} for i in images]
        for i in images:
            shutil.copy(FIXTURES / i["file"], d / i["file"])
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def show(unit, prop):
    return subprocess.run(["systemctl", "show", "-p", prop, "--value", unit],
                          capture_output=True, text=True).stdout.strip()


def journal(unit):
    return subprocess.run(["journalctl", "-u", unit, "--no-pager", "-o", "cat"],
                          capture_output=True, text=True).stdout


def wait_for(path, what, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if Path(path).exists() and Path(path).read_text().endswith("\n"):
            return Path(path).read_text()
        time.sleep(0.05)
    raise AssertionError(f"{what}: {path} did not appear within {seconds} s")


def tree_paths(top):
    top = Path(top)
    return {str(p.relative_to(top)) for p in top.rglob("*")}


def assert_tree(data, tree, what, owner=None):
    """The volume's data directory holds exactly the archive's tree: each
    file's content and mode, each directory, symlink and hard link, and
    every entry's owner (the archive's, or `owner` = (uid, gid) imposed on
    all, the top directory included)."""
    data = Path(data)
    expected = set(tree["files"]) | set(tree["dirs"]) | set(tree["symlinks"]) | set(tree["hardlinks"])
    found = tree_paths(data)
    expect(found == expected, f"{what}: the tree is the archive's: missing "
           f"{sorted(expected - found)}, unexpected {sorted(found - expected)}")
    for path, sha in tree["files"].items():
        p = data / path
        expect(p.is_file() and not p.is_symlink(), f"{what}: {path} is a file")
        expect(hashlib.sha256(p.read_bytes()).hexdigest() == sha, f"{what}: {path} has its content")
    for path, mode in tree["modes"].items():
        actual = stat.S_IMODE((data / path).lstat().st_mode)
        expect(actual == mode, f"{what}: {path} has mode {mode:04o}, found {actual:04o}")
    for path in tree["dirs"]:
        expect((data / path).is_dir() and not (data / path).is_symlink(), f"{what}: {path} is a directory")
    for path, target in tree["symlinks"].items():
        expect((data / path).is_symlink() and os.readlink(data / path) == target,
               f"{what}: {path} -> {target}")
    for path, target in tree["hardlinks"].items():
        a, b = (data / path).lstat(), (data / target).lstat()
        expect((a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), f"{what}: {path} is a hard link to {target}")
    for path, ids in tree["owners"].items():
        st = (data / path).lstat()
        want = tuple(owner) if owner else tuple(ids)
        expect((st.st_uid, st.st_gid) == want,
               f"{what}: {path} is owned by {want}, found {(st.st_uid, st.st_gid)}")
    if owner:
        st = data.lstat()
        expect((st.st_uid, st.st_gid) == tuple(owner), f"{what}: the top directory is owned by {owner}")


def nothing_transient():
    for d in ("staging", "trash"):
        expect(not (ROOT / d).exists() or not any((ROOT / d).iterdir()),
               f"nothing is left in {ROOT / d}: {sorted(tree_paths(ROOT / d))[:5] if (ROOT / d).exists() else ''}")


# ---------------------------------------------------------------- scenarios

def every_format_extracted():
    """tar, tar.gz, tar.xz, tar.bz2 and tar.zst, each into an empty volume
    of a deployed pod version: the tree file by file; a rerun does nothing;
    check mode leaves store and units byte-identical. (The version is
    installed, not started: restarts are replace_restarts_users's.)"""
    names = {f: "v-" + f.split(".", 1)[1].replace(".", "-") for f in INDEX["formats"]}
    volumes = [{"name": v, "path": f"/srv/{v}"} for v in names.values()]
    b = bundle("data", "1", volumes, {"idle.service": (IDLE, None)})
    r = ok(ops_pod(bundle=b, state="present"), True)
    for v in names.values():
        expect(f"create empty volume {v} of pod data version 1" in r["actions"],
               f"ops_pod creates the empty volume {v}", r)
        expect(data_dir("data", "1", v).is_dir() and not any(data_dir("data", "1", v).iterdir()),
               f"{v} is an empty directory")
        expect(record("data", "1", v)["digest"] is None, f"{v}'s record says empty")
    dropin = (UNIT_DIR / "data-1-idle.service.d" / "50-ops.conf").read_text()
    env = show("data-1-idle.service", "Environment")
    for v in names.values():
        var = "OPS_VOLUME_" + v.upper().replace("-", "_")
        expect(f'Environment="{var}={data_dir("data", "1", v)}"' in dropin,
               f"the drop-in names {var}:\n{dropin}")
        expect(f"{var}={data_dir('data', '1', v)}" in env, f"systemd gives the unit {var}: {env}")
    expect("ReadOnlyPaths" not in dropin and "BindPaths" not in dropin,
           f"read-write volumes of a unit outside an image need no mounts:\n{dropin}")

    tree = TREES["content"]
    for file, v in names.items():
        path = fixture(file)
        args = dict(pod="data", version="1", name=v, data=path)
        before = snapshot(ROOT, UNIT_DIR)
        plan = ok(ops_volume(check_mode=True, diff=True, **args), True)
        expect(plan["actions"] and plan["diff"], f"{file}: check mode plans and shows a diff", plan)
        expect(plan["digest"] == digest(file), f"{file}: check mode reports the digest", plan)
        expect(snapshot(ROOT, UNIT_DIR) == before, f"{file}: check mode left the store byte-identical", plan)

        r = ok(ops_volume(**args), True)
        where = data_dir("data", "1", v)
        expect(r["path"] == str(where), f"{file}: path is the data directory", r)
        expect(r["digest"] == digest(file), f"{file}: digest is the archive's sha256", r)
        expect(r["entries"] == tree["entries"] and r["bytes"] == tree["bytes"],
               f"{file}: {tree['entries']} entries and {tree['bytes']} bytes reported", r)
        assert_tree(where, tree, file)
        top = stat.S_IMODE(where.stat().st_mode)
        expect(top == tree["top_mode"], f"{file}: the top directory has the archive's ./ mode "
               f"{tree['top_mode']:04o}, found {top:04o}")
        rec = record("data", "1", v)
        expect(rec["digest"] == digest(file) and rec["source"] == str(path), f"{file}: the record", rec)

        settled = snapshot(ROOT, UNIT_DIR)
        again = ok(ops_volume(**args), False)
        expect(again["digest"] == digest(file) and again["entries"] == tree["entries"],
               f"{file}: a rerun reports the same volume", again)
        expect(not again.get("warnings"), f"{file}: a rerun has nothing to warn about", again)
        ok(ops_volume(check_mode=True, **args), False)
        expect(snapshot(ROOT, UNIT_DIR) == settled, f"{file}: reruns wrote nothing")
    nothing_transient()
    ok(ops_pod(bundle=b, state="present"), False)


def owner_group_and_mode():
    """Without owner/group the archive's owners are kept (ops runs as
    root); with them every entry, symlinks and the top directory included,
    gets them; mode sets the top directory; a change of owner or mode alone
    adjusts the volume in place; setuid bits only with keep_setuid."""
    names = ["kept", "imposed", "named", "adjusted", "setuid", "setuid-owned"]
    b = bundle("owned", "1", [{"name": n, "path": f"/srv/{n}"} for n in names],
               {"idle.service": (IDLE, None)})
    ok(ops_pod(bundle=b, state="present"), True)
    tree = TREES["content"]
    archive = fixture("content.tar.gz")
    volume = dict(pod="owned", version="1", data=archive)

    ok(ops_volume(name="kept", **volume), True)
    assert_tree(data_dir("owned", "1", "kept"), tree, "kept")

    r = ok(ops_volume(name="imposed", owner="4242", group="4343", mode="0750", **volume), True)
    where = data_dir("owned", "1", "imposed")
    assert_tree(where, tree, "imposed", owner=(4242, 4343))
    expect(stat.S_IMODE(where.stat().st_mode) == 0o750, "mode 0750 on the top directory", r)
    rec = record("owned", "1", "imposed")
    expect((rec["owner"], rec["group"], rec["mode"]) == (4242, 4343, 0o750), "the record", rec)
    ok(ops_volume(name="imposed", owner="4242", group="4343", mode="0750", **volume), False)

    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    ok(ops_volume(name="named", owner="nobody", group="nogroup", **volume), True)
    assert_tree(data_dir("owned", "1", "named"), tree, "named", owner=(nobody, nogroup))
    ok(ops_volume(name="named", owner=str(nobody), group=str(nogroup), **volume), False)

    # Extracted as the archive says, then adjusted in place.
    ok(ops_volume(name="adjusted", **volume), True)
    where = data_dir("owned", "1", "adjusted")
    before = snapshot(ROOT, UNIT_DIR)
    plan = ok(ops_volume(name="adjusted", owner="5000", check_mode=True, **volume), True)
    expect(snapshot(ROOT, UNIT_DIR) == before, "check mode changed no owner", plan)
    assert_tree(where, tree, "adjusted, after check mode")
    r = ok(ops_volume(name="adjusted", owner="5000", **volume), True)
    expect(any("the owner of every entry" in a for a in r["actions"]), "the action says so", r)
    expect(r["digest"] == digest("content.tar.gz"), "the contents stay", r)
    owners_by_path = {p: (5000, gid) for p, (_, gid) in tree["owners"].items()}
    for path, want in owners_by_path.items():
        st = (where / path).lstat()
        expect((st.st_uid, st.st_gid) == want,
               f"adjusted: {path} is owned by {want} (owner changed, group kept), "
               f"found {(st.st_uid, st.st_gid)}")
    expect(where.lstat().st_uid == 5000, "adjusted: the top directory's owner too")
    ok(ops_volume(name="adjusted", owner="5000", **volume), False)
    r = ok(ops_volume(name="adjusted", mode="0700", **volume), True)
    expect(any("the mode of its top directory" in a for a in r["actions"]), "the action says so", r)
    expect(stat.S_IMODE(where.stat().st_mode) == 0o700, "mode 0700 set in place")
    expect(where.lstat().st_uid == 5000, "a mode change keeps the owner")
    ok(ops_volume(name="adjusted", mode="0700", owner="5000", **volume), False)

    ok(ops_volume(name="setuid", keep_setuid=True, **volume), True)
    mode = stat.S_IMODE((data_dir("owned", "1", "setuid") / "bin/setuid").lstat().st_mode)
    expect(mode == 0o4755, f"keep_setuid keeps the setuid bit: {mode:04o}")

    # With an owner too (a chown clears setuid bits): what the result and
    # the record say is what lstat finds, after extraction and after an
    # owner change, which for a volume that keeps setuid bits is a new
    # extraction (replace), never a chown in place.
    where = data_dir("owned", "1", "setuid-owned")
    for owner in ("4242", "4545"):
        if owner == "4545":
            failed(ops_volume(name="setuid-owned", keep_setuid=True, owner=owner, group="4343",
                              **volume), "its owner is changed by extracting it again")
        r = ok(ops_volume(name="setuid-owned", keep_setuid=True, owner=owner, group="4343",
                          replace=owner == "4545", **volume), True)
        rec = record("owned", "1", "setuid-owned")
        st = (where / "bin/setuid").lstat()
        found = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        expect(found == (0o4755, int(owner), 4343) and (rec["owner"], rec["group"]) == (int(owner), 4343)
               and rec["keep_setuid"] is True,
               f"owner {owner} with keep_setuid: bin/setuid is {found[0]:04o} {found[1]}:{found[2]}, "
               f"the record says {rec}", r)
        ok(ops_volume(name="setuid-owned", keep_setuid=True, owner=owner, group="4343", **volume),
           False)
    # The same archive with keep_setuid off needs extracting again: refused
    # without replace, done with it.
    before = snapshot(ROOT, UNIT_DIR)
    for check_mode in (True, False):
        failed(ops_volume(name="setuid", check_mode=check_mode, **volume),
               "with keep_setuid: true", "set replace: true")
    expect(snapshot(ROOT, UNIT_DIR) == before, "a refused keep_setuid change changed nothing")
    ok(ops_volume(name="setuid", replace=True, **volume), True)
    mode = stat.S_IMODE((data_dir("owned", "1", "setuid") / "bin/setuid").lstat().st_mode)
    expect(mode == 0o755, f"extracted again without keep_setuid: {mode:04o}")
    ok(ops_volume(name="setuid", replace=True, **volume), False)

    before = snapshot(ROOT, UNIT_DIR)
    failed(ops_volume(name="kept", owner="no-such-user-here", **volume), 'no user named "no-such-user-here"')
    failed(ops_volume(name="kept", mode="0999", **volume), "mode: expected an octal mode")
    for option, value in (("owner", "4294967295"), ("group", "4294967295"), ("owner", "-1")):
        failed(ops_volume(name="kept", **{option: value}, **volume), f"{option}: {value} is not a")
    expect(snapshot(ROOT, UNIT_DIR) == before, "refused options changed nothing")
    nothing_transient()


WRITER = """#!/bin/sh
# Try to write into each volume; say what happened.
if { echo x > "$OPS_VOLUME_CONF/written-by-unit"; } 2>/run/conf-write-error; then
  echo wrote > /run/conf-write
else
  echo refused > /run/conf-write
fi
cat "$OPS_VOLUME_CONF/hello.txt" > /run/conf-read
if echo "from the unit" > "$OPS_VOLUME_APP_STATE/written-by-unit"; then
  echo wrote > /run/state-write
else
  echo refused > /run/state-write
fi
exec sleep infinity
"""

TWO_VOLUMES = [
    {"name": "conf", "path": "/srv/conf", "read-only": True, "data": "conf.tar.gz"},
    {"name": "app-state", "path": "/srv/state", "data": "state.tar.gz"},
]


def read_only_for_services():
    """A service outside any image: a read-only volume is ReadOnlyPaths=
    where it is (the service's write fails, the host sees nothing), a
    read-write one takes its write; both reach it as OPS_VOLUME_<NAME>."""
    script = WORK / "writer.sh"
    script.write_text(WRITER)
    script.chmod(0o755)
    unit = f"[Unit]\nDescription=writes into its volumes\n\n[Service]\nExecStart={script}\n"
    b = bundle("svc", "1", TWO_VOLUMES, {"writer.service": (unit, None)},
               files=["conf.tar.gz", "state.tar.gz"])
    r = ok(ops_pod(bundle=b), True)
    for v in ("conf", "app-state"):
        expect(any(a.startswith(f"extract volume {v} of pod svc version 1 from") for a in r["actions"]),
               f"ops_pod extracts {v} from the bundle", r)
    conf, state = data_dir("svc", "1", "conf"), data_dir("svc", "1", "app-state")
    assert_tree(conf, TREES["conf"], "conf")
    dropin = (UNIT_DIR / "svc-1-writer.service.d" / "50-ops.conf").read_text()
    expect(f"ReadOnlyPaths={conf}\n" in dropin, f"the read-only volume is ReadOnlyPaths=:\n{dropin}")
    expect(f'Environment="OPS_VOLUME_APP_STATE={state}"' in dropin,
           f"app-state is OPS_VOLUME_APP_STATE:\n{dropin}")
    expect(f"ReadOnlyPaths={state}" not in dropin and "BindPaths" not in dropin,
           f"the read-write volume is left as it is:\n{dropin}")

    result = wait_for("/run/conf-write", "the unit reports its write to conf")
    error = Path("/run/conf-write-error").read_text()
    expect(result == "refused\n", f"the unit could not write to the read-only volume: {result!r}")
    expect("Read-only file system" in error, f"because it is mounted read-only: {error!r}")
    expect(not (conf / "written-by-unit").exists(), "nothing reached the host's read-only volume")
    expect(Path("/run/conf-read").read_text() == "read me, do not write me\n",
           "the unit read the read-only volume")
    expect(wait_for("/run/state-write", "the unit reports its write to app-state") == "wrote\n",
           "the unit wrote to the read-write volume")
    expect((state / "written-by-unit").read_text() == "from the unit\n",
           "the unit's write is in the host's volume")
    expect((state / "seed.txt").read_text() == "seeded state\n", "beside the archive's contents")
    # Only the unit sees it read-only: the volume itself stays writable.
    (conf / "host-can-write").write_text("yes\n")
    (conf / "host-can-write").unlink()
    ok(ops_pod(bundle=b), False)


IMAGE_WRITER = """[Unit]
Description=writes into its volumes from inside its image

[Service]
ExecStart=/bin/busybox sh -c 'if echo x > /srv/conf/written-by-unit; then r=wrote; else r=refused; fi; echo "conf-write: $r"; echo "$r" > /srv/state/conf-write; echo "conf-read: $(/bin/busybox cat /srv/conf/hello.txt)"; echo "from the image unit" > /srv/state/written-by-unit; exec /bin/busybox sleep 3600'
"""


def read_only_in_an_image():
    """A unit running in the busybox image: the read-only volume is bind
    mounted read-only at its mount point (writing there fails), the
    read-write one writable; the image's own files are not changed."""
    aci = INDEX["aci"]
    b = bundle("img", "1", TWO_VOLUMES, {"writer.service": (IMAGE_WRITER, aci["id"])},
               images=[aci], files=["conf.tar.gz", "state.tar.gz"])
    r = ok(ops_pod(bundle=b), True)
    conf, state = data_dir("img", "1", "conf"), data_dir("img", "1", "app-state")
    dropin = (UNIT_DIR / "img-1-writer.service.d" / "50-ops.conf").read_text()
    expect(f"BindReadOnlyPaths={conf}:/srv/conf\n" in dropin, f"conf is BindReadOnlyPaths=:\n{dropin}")
    expect(f"BindPaths={state}:/srv/state\n" in dropin, f"app-state is BindPaths=:\n{dropin}")
    result = wait_for(state / "conf-write", "the image unit reports its write to conf")
    expect(result == "refused\n", f"the image unit could not write to /srv/conf: {result!r}")
    expect(not (conf / "written-by-unit").exists(), "nothing reached the host's read-only volume")
    expect((state / "written-by-unit").read_text() == "from the image unit\n",
           "the image unit wrote to the read-write volume at /srv/state")
    log = journal("img-1-writer.service")
    expect("conf-read: read me, do not write me" in log, f"it read /srv/conf:\n{log}")
    ok(ops_pod(bundle=b), False)
    # systemd makes the mount points it needs and the image lacks (here
    # /srv/conf and /srv/state; /proc, /dev, ... for its own mounts) as
    # empty directories in the image's root in the store, which every unit
    # using it shares; nothing else of the image changes and nothing written
    # through them reaches it. Compared with the same image imported afresh,
    # without systemd, entry by entry.
    rootfs = ROOT / "images/systemd" / f"sha512-{aci['id'][7:39]}" / "rootfs"
    fresh = WORK / "fresh-root"
    ok(kit.module("ops_image", id=aci["id"], path=str(FIXTURES / aci["file"]), root=str(fresh)), True)
    pristine = tree_of(fresh / "images/systemd" / f"sha512-{aci['id'][7:39]}" / "rootfs")
    used = tree_of(rootfs)
    changed = sorted(p for p in pristine if used.get(p) != pristine[p])
    expect(not changed, f"the shared image's own entries are unchanged: {changed}")
    added = {p: used[p] for p in used.keys() - pristine.keys()}
    expect(added.get("srv/conf") == added.get("srv/state") == ("dir", 0o755, None),
           f"the volumes' mount points are empty directories: {added}")
    not_empty = sorted(p for p, (kind, _, content) in added.items()
                       if kind != "dir" or (content is not None and p != "srv"))
    expect(not not_empty, f"systemd added only empty directories to the image: {not_empty}")


def tree_of(top):
    """Every entry under `top`: its type, permission bits and content
    (a file's sha256, a link's target)."""
    top, tree = Path(top), {}
    for p in top.rglob("*"):
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            what = ("link", 0, os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            what = ("dir", stat.S_IMODE(st.st_mode), None if not any(p.iterdir()) else "")
        else:
            what = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
        tree[str(p.relative_to(top))] = what
    return tree


READER = """[Unit]
Description=reads its volume at start

[Service]
ExecStart=/bin/sh -c 'cat "$OPS_VOLUME_CONTENT/version.txt" > /run/reader-saw-$POD_VERSION; exec sleep infinity'
"""


def replace_restarts_users():
    """A different archive: without replace the contents stay, with a
    warning; with replace they are swapped whole (old files gone), the
    digest changes and the version's running unit is restarted (a unit of
    another version is not)."""
    volumes = [{"name": "content", "path": "/srv/content", "data": "v1.tar.gz"}]
    b1 = bundle("rep", "1", volumes, {"reader.service": (READER, None)}, files=["v1.tar.gz"])
    ok(ops_pod(bundle=b1), True)
    unit, where = "rep-1-reader.service", data_dir("rep", "1", "content")
    assert_tree(where, TREES["v1"], "v1")
    expect(wait_for("/run/reader-saw-1", "the reader starts") == "1\n", "the unit read v1")
    ids = (show(unit, "InvocationID"), show(unit, "MainPID"))
    args = dict(pod="rep", version="1", name="content", data=fixture("v2.tar.gz"))

    before = snapshot(ROOT, UNIT_DIR)
    for check_mode in (True, False):
        failed(ops_volume(check_mode=check_mode, **args), "set replace: true", digest("v1.tar.gz"),
               digest("v2.tar.gz"))
    expect(snapshot(ROOT, UNIT_DIR) == before, "a refused replacement changed nothing")
    assert_tree(where, TREES["v1"], "v1 after a refused replacement")
    expect((show(unit, "InvocationID"), show(unit, "MainPID")) == ids, "nothing restarted")

    # The bundle of version 1 with another archive under the same name:
    # refused like a changed unit file, in check mode too.
    changed_b1 = WORK / "bundle-rep-1-changed"
    shutil.copytree(b1, changed_b1)
    shutil.copy(fixture("content.tar.gz"), changed_b1 / "v1.tar.gz")
    for check_mode in (True, False):
        failed(ops_pod(bundle=changed_b1, check_mode=check_mode),
               "version 1 of pod rep is already deployed with different data in volume content",
               digest("content.tar.gz"), digest("v1.tar.gz"), "versions are immutable")
    expect(snapshot(ROOT, UNIT_DIR) == before, "a refused bundle changed nothing")

    plan = ok(ops_volume(replace=True, check_mode=True, diff=True, **args), True)
    expect(plan["digest"] == digest("v2.tar.gz"), "check mode reports the new digest", plan)
    expect(snapshot(ROOT, UNIT_DIR) == before, "check mode replaced nothing", plan)
    expect((show(unit, "InvocationID"), show(unit, "MainPID")) == ids, "check mode restarted nothing")

    r = ok(ops_volume(replace=True, **args), True)
    expect(r["digest"] == digest("v2.tar.gz") != digest("v1.tar.gz"), "the digest changed", r)
    expect(f"restart {unit} to use the new contents" in r["actions"], "the unit's restart is reported", r)
    assert_tree(where, TREES["v2"], "v2")
    expect(not (where / "old").exists(), "v1's files are gone")
    now = (show(unit, "InvocationID"), show(unit, "MainPID"))
    expect(now[0] != ids[0] and now[1] != ids[1], f"the unit was restarted: {ids} then {now}")
    expect(show(unit, "ActiveState") == "active", "and runs")
    expect(wait_for("/run/reader-saw-1", "the reader restarts") == "2\n", "the restarted unit read v2")
    expect(record("rep", "1", "content")["digest"] == digest("v2.tar.gz"), "the record says v2")
    nothing_transient()

    ids = now
    ok(ops_volume(replace=True, **args), False)
    expect((show(unit, "InvocationID"), show(unit, "MainPID")) == ids, "a rerun restarts nothing")
    r = ok(ops_pod(bundle=b1), False)
    assert_tree(where, TREES["v2"], "ops_pod's rerun leaves the replaced contents")
    failed(ops_pod(bundle=changed_b1), "already deployed with different data in volume content",
           f"its volume now holds {digest('v2.tar.gz')}")

    # Version 2 installed but not running: replacing its volume restarts
    # nothing, and version 1's unit keeps running untouched.
    b2 = bundle("rep", "2", volumes, {"reader.service": (READER, None)}, files=["v1.tar.gz"])
    ok(ops_pod(bundle=b2, state="present"), True)
    r = ok(ops_volume(replace=True, **{**args, "version": "2"}), True)
    expect(not any(a.startswith("restart") for a in r["actions"]), "no unit of version 2 runs", r)
    assert_tree(data_dir("rep", "2", "content"), TREES["v2"], "version 2's volume")
    expect((show(unit, "InvocationID"), show(unit, "MainPID")) == ids, "version 1's unit untouched")

    # Replacing (or filling) volumes of a running version several times in
    # a row, as a play with a few ops_volume tasks does: each run restarts
    # the unit, and each must succeed and say truthfully what it did.
    for n in range(1, 7):
        generation = "v1.tar.gz" if n % 2 else "v2.tar.gz"
        r = ops_volume(replace=True, **{**args, "data": fixture(generation)})
        holds = record("rep", "1", "content")["digest"]
        expect(not r.get("failed"),
               f"replacement {n} in a row (with {generation}) succeeds; it failed with "
               f"changed={r.get('changed')} while the volume now holds "
               f"{'the new' if holds == digest(generation) else 'the old'} contents ({holds}), and "
               f"{unit} is {show(unit, 'ActiveState')}", r)
        expect(r["changed"] is True and holds == digest(generation), f"replacement {n}", r)
    expect(show(unit, "ActiveState") == "active", f"{unit} runs after the replacements")


def checksum_mismatch():
    """A wrong sha256 or sha512 checksum: a failure naming both digests,
    and the store byte-identical (check mode too); the right ones work."""
    b = bundle("sum", "1", [{"name": "data", "path": "/srv/data"}], {"idle.service": (IDLE, None)})
    ok(ops_pod(bundle=b), True)
    archive = fixture("content.tar.gz")
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    sha512 = hashlib.sha512(archive.read_bytes()).hexdigest()
    args = dict(pod="sum", version="1", name="data", data=archive)
    before = snapshot(ROOT, UNIT_DIR)
    for wrong, right in [("sha256:" + "0" * 64, "sha256:" + sha256),
                         ("sha512:" + "f" * 128, "sha512:" + sha512)]:
        for check_mode in (False, True):
            r = ops_volume(checksum=wrong, check_mode=check_mode, **args)
            failed(r, str(archive), f"expected {wrong}", f"got {right}")
            expect(snapshot(ROOT, UNIT_DIR) == before,
                   f"{wrong[:6]} mismatch (check mode {check_mode}): the store is byte-identical", r)
    expect(not any(data_dir("sum", "1", "data").iterdir()), "the volume is still empty")
    failed(ops_volume(checksum="md5:00", **args), "checksum:")
    r = ok(ops_volume(checksum="sha512:" + sha512.upper(), **args), True)
    assert_tree(data_dir("sum", "1", "data"), TREES["content"], "checked archive")
    ok(ops_volume(checksum="sha256:" + sha256, **args), False)


def downloads():
    """Volumes from a loopback HTTP server, by ops_volume and from a
    bundle; a 404, a stalled server and a wrong checksum fail and leave
    nothing behind."""
    base = kit.serve(FIXTURES)
    volumes = [{"name": "bundled", "path": "/srv/bundled", "data": f"{base}/v1.tar.gz"},
               {"name": "fetched", "path": "/srv/fetched"},
               {"name": "missing", "path": "/srv/missing"}]
    b = bundle("dl", "1", volumes, {"idle.service": (IDLE, None)})
    r = ok(ops_pod(bundle=b), True)
    expect(f"extract volume bundled of pod dl version 1 from {base}/v1.tar.gz" in r["actions"],
           "ops_pod downloads the bundle's volume", r)
    assert_tree(data_dir("dl", "1", "bundled"), TREES["v1"], "downloaded by ops_pod")
    expect(record("dl", "1", "bundled")["digest"] == digest("v1.tar.gz"), "its record has the digest")

    uri = f"{base}/content.tar.xz"
    r = ok(ops_volume(pod="dl", version="1", name="fetched", data=uri), True)
    expect(r["digest"] == digest("content.tar.xz"), "the digest of the download", r)
    assert_tree(data_dir("dl", "1", "fetched"), TREES["content"], "downloaded by ops_volume")
    ok(ops_volume(pod="dl", version="1", name="fetched", data=uri), False)
    nothing_transient()

    before = snapshot(ROOT, UNIT_DIR)
    missing = dict(pod="dl", version="1", name="missing")
    r = failed(ops_volume(data=f"{base}/nothing-here.tar.gz", **missing), "404")
    expect(snapshot(ROOT, UNIT_DIR) == before, "a 404 left nothing behind", r)
    began = time.monotonic()
    r = failed(ops_volume(data=f"{base}/stall/content.tar.gz", timeout=2, **missing), "timeout")
    expect(time.monotonic() - began < 15, "the stall was cut off by the timeout", r)
    expect(snapshot(ROOT, UNIT_DIR) == before, "a stalled download left nothing behind", r)
    r = failed(ops_volume(data=f"{base}/content.tar.gz", checksum="sha256:" + "1" * 64, **missing),
               "does not match its checksum")
    expect(snapshot(ROOT, UNIT_DIR) == before, "a wrong checksum left nothing behind", r)
    r = ok(ops_volume(data=f"{base}/content.tar.gz", checksum=digest("content.tar.gz"), **missing), True)
    assert_tree(data_dir("dl", "1", "missing"), TREES["content"], "downloaded and checked")

    # A bundle whose volume's URI answers 404: the new version fails whole.
    before = snapshot(ROOT, UNIT_DIR)
    invocation = show("dl-1-idle.service", "InvocationID")
    broken = [{"name": "bundled", "path": "/srv/bundled", "data": f"{base}/gone.tar.gz"}]
    r = failed(ops_pod(bundle=bundle("dl", "2", broken, {"idle.service": (IDLE, None)})),
               "volume bundled of pod dl version 2", "404")
    expect(snapshot(ROOT, UNIT_DIR) == before, "the failed version left nothing behind", r)
    expect(show("dl-1-idle.service", "InvocationID") == invocation, "version 1 kept running")


# What each escaping archive's refusal says.
EVIL = {
    "evil-dotdot.tar": ('entry "../../../../../../../../../../tmp/ops-escape-dotdot"', "goes up with '..'"),
    "evil-up-one.tar": ('entry "../ops-escape-up-one"', "goes up with '..'"),
    "evil-absolute.tar": ('entry "/tmp/ops-escape-absolute"', "an absolute path"),
    "evil-through-symlink.tar": ('entry "out"', "outside the volume"),
    "evil-symlink-chain.tar": ('entry "b/ops-escape-symlink-chain"', "under the symlink b"),
    "evil-symlink-chain-only.tar": ('entry "b"', "leads outside the volume once the symlinks"),
    "evil-hardlink.tar": ('entry "passwd"', "goes up with '..'"),
    "evil-hardlink-absolute.tar": ('entry "passwd"', "a hard link to the absolute path /etc/passwd"),
    "evil-hardlink-symlink.tar": ('entry "up"', "a hard link to the symlink a/up"),
    "evil-hardlink-chain.tar": ('entry "h2"', "a hard link to the symlink a/b/h1"),
    "evil-device.tar": ('entry "dev-null"', "allow_special_files is off"),
}
ESCAPES = ["/tmp/ops-escape-dotdot", "/tmp/ops-escape-absolute", "/tmp/ops-escape-through-symlink",
           "/tmp/ops-escape-symlink-chain"]


def escaped_files():
    found = []
    for top in ["/", "/tmp", "/run", "/var/tmp"]:
        out = subprocess.run(["find", top, "-xdev", "-name", "ops-escape-*"],
                             capture_output=True, text=True).stdout.split()
        found += [p for p in out if not p.startswith(str(FIXTURES))]
    return sorted(set(found))


def malicious_archives_refused():
    """Archives that try to write outside the volume (.., absolute paths,
    symlinks and hard links leading out) or hold a device node: a new pod
    version carrying one fails whole, as does ops_volume; the store, the
    unit files and the running version are as they were, and nothing was
    written outside."""
    good = [{"name": "data", "path": "/srv/data", "data": "v1.tar.gz"}]
    ok(ops_pod(bundle=bundle("evil", "1", good, {"idle.service": (IDLE, None)}, files=["v1.tar.gz"])),
       True)
    ok(ops_pod(bundle=bundle("evil", "2", [{"name": "data", "path": "/srv/data"}],
                             {"idle.service": (IDLE, None)}), state="present"), True)
    passwd = Path("/etc/passwd").read_bytes()
    invocation = show("evil-1-idle.service", "InvocationID")
    for archive, says in EVIL.items():
        version = archive.split(".")[0]
        d = bundle("evil", version, [{"name": "data", "path": "/srv/data", "data": archive}],
                   {"idle.service": (IDLE, None)}, files=[archive])
        before = snapshot(ROOT, UNIT_DIR)
        r = failed(ops_pod(bundle=d), f"volume data of pod evil version {version}: cannot extract {archive}",
                   *says)
        expect(snapshot(ROOT, UNIT_DIR) == before, f"{archive} via ops_pod: store and units byte-identical", r)
        expect(os.readlink(ROOT / "pods/evil/current") == "1", f"{archive}: version 1 stays current")
        r = failed(ops_volume(pod="evil", version="2", name="data", data=fixture(archive)),
                   f"cannot extract {fixture(archive)}", *says)
        expect(snapshot(ROOT, UNIT_DIR) == before, f"{archive} via ops_volume: store byte-identical", r)
        for path in ESCAPES:
            expect(not os.path.lexists(path), f"{archive}: nothing was written at {path}")
    expect(show("evil-1-idle.service", "InvocationID") == invocation, "version 1 ran throughout")
    expect(Path("/etc/passwd").read_bytes() == passwd, "/etc/passwd is untouched")
    expect(escaped_files() == [], f"no ops-escape-* file anywhere: {escaped_files()}")
    nothing_transient()
    # A device node is no escape: allowed when asked for.
    ok(ops_volume(pod="evil", version="2", name="data", data=fixture("evil-device.tar"),
                  allow_special_files=True), True)
    node = (data_dir("evil", "2", "data") / "dev-null").lstat()
    expect(stat.S_ISCHR(node.st_mode) and os.major(node.st_rdev) == 1 and os.minor(node.st_rdev) == 3,
           "allow_special_files creates the device node")


def unusable_archives_refused_in_check_mode():
    """Files that are no tar archive, or a damaged one, as far as their
    start tells: check mode refuses them (ops_volume, and ops_pod for a new
    version's volumes) with the message the run gives, and nothing
    changes."""
    volumes = [{"name": "data", "path": "/srv/data"}]
    ok(ops_pod(bundle=bundle("bad", "1", volumes, {"idle.service": (IDLE, None)})), True)
    cases = {
        "text.tar": (b"not a tar at all\n" * 100, ["cannot extract", "not a tar archive"]),
        "garbage.tar.gz": (b"\x1f\x8b" + b"\x07" * 700,
                           ["cannot extract", "gzip compression is damaged"]),
        "cut.tar.gz": (fixture("v1.tar.gz").read_bytes()[:15], ["ends early"]),
    }
    for n, (name, (data, says)) in enumerate(cases.items()):
        path = WORK / name
        path.write_bytes(data)
        before = snapshot(ROOT, UNIT_DIR)
        args = dict(pod="bad", version="1", name="data", data=path)
        planned = failed(ops_volume(check_mode=True, **args), str(path), *says)
        run = failed(ops_volume(**args), str(path), *says)
        expect(planned["msg"] == run["msg"], f"{name}: check mode says what the run says",
               {"check mode": planned, "run": run})
        d = bundle("bad", str(n + 2), [{**volumes[0], "data": name}], {"idle.service": (IDLE, None)})
        shutil.copy(path, d / name)
        planned = failed(ops_pod(bundle=d, check_mode=True), f"volume data of pod bad version {n + 2}",
                         *says)
        run = failed(ops_pod(bundle=d), f"volume data of pod bad version {n + 2}", *says)
        expect(planned["msg"] == run["msg"], f"{name}: ops_pod's check mode says what its run says",
               {"check mode": planned, "run": run})
        expect(snapshot(ROOT, UNIT_DIR) == before, f"{name}: nothing changed")
    nothing_transient()


SCENARIOS = {f.__name__: f for f in [
    every_format_extracted,
    owner_group_and_mode,
    read_only_for_services,
    read_only_in_an_image,
    replace_restarts_users,
    checksum_mismatch,
    downloads,
    malicious_archives_refused,
    unusable_archives_refused_in_check_mode,
]}

if __name__ == "__main__":
    WORK = kit.start("ops-volume-scenario-")
    kit.run(SCENARIOS, sys.argv[2])
