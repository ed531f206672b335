#!/usr/bin/env python3
"""Build the archives that the volume tests extract.

Usage:  python3 tests/volumes/fixtures.py OUTDIR

Every archive is written into OUTDIR, with OUTDIR/index.json describing
what a test needs to know about each::

    {"content.tar.gz": {"file": "content.tar.gz", "digest": "sha256:...",
                        "tree": "content"},
     "trees": {"content": {"files": {...}, "modes": {...}, ...}}, ...}

The archives, and why each exists:

* `content.tar`, `.tar.gz`, `.tar.xz`, `.tar.bz2`, `.tar.zst` - one tree in
  every compression ops_volume reads (`.tar.zst` only when the `zstd`
  command is installed; `zstd_missing` says so otherwise). The tree has a
  `./` top entry (mode 0751), nested and empty directories, files of
  several modes, a setuid file (the bit must be dropped), a symlink, a hard
  link, a 3 MiB file, and entries owned by several uids and gids.
* `v1.tar.gz`, `v2.tar.gz` - two generations of a volume, for replace.
* `conf.tar.gz`, `state.tar.gz` - a read-only and a read-write volume of a
  pod whose services use them.
* `evil-*.tar` - archives that try to write outside the volume: a `..`
  entry, an absolute path, a write through a symlink to `/tmp`, a symlink
  leading out, hard links to `/etc/passwd`, hard links to a symlink that
  would lead out where the link lands (directly and through a chain of
  hard links), and a device node (refused
  unless allow_special_files). The files they would create are named
  `ops-escape-*`, so a test can look for them.
* the busybox ACI of the image tests (`aci-gz.aci`, from
  tests/images/fixtures.py), for a unit that runs in an image.

Only the Python standard library is used, plus the `zstd` command if there.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "images"))
import fixtures as image_fixtures  # noqa: E402

MTIME = 1_700_000_000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(entries: list[dict]) -> bytes:
    """A PAX tar of entries: dicts with name, kind (dir, file, link, hard,
    char), data, target, mode, uid, gid."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.mtime = MTIME
            info.mode = e.get("mode", 0o755 if e["kind"] == "dir" else 0o644)
            info.uid = e.get("uid", 0)
            info.gid = e.get("gid", 0)
            info.uname = info.gname = ""
            kind = e["kind"]
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = e["target"]
                tar.addfile(info)
            elif kind == "hard":
                info.type = tarfile.LNKTYPE
                info.linkname = e["target"]
                tar.addfile(info)
            elif kind == "char":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
                tar.addfile(info)
            else:
                data = e["data"]
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def describe(entries: list[dict]) -> dict:
    """What a test checks of the extracted tree: paths relative to the
    volume's data directory."""

    def rel(name: str) -> str:
        return name[2:] if name.startswith("./") else name

    tree: dict = {"files": {}, "modes": {}, "symlinks": {}, "dirs": [], "hardlinks": {},
                  "owners": {}, "entries": 0, "bytes": 0, "top_mode": None}
    for e in entries:
        path = rel(e["name"]).rstrip("/")
        if path in ("", "."):
            tree["top_mode"] = e.get("mode", 0o755) & 0o777
            continue
        tree["entries"] += 1
        tree["owners"][path] = [e.get("uid", 0), e.get("gid", 0)]
        if e["kind"] == "dir":
            tree["dirs"].append(path)
            tree["modes"][path] = e.get("mode", 0o755) & 0o777
        elif e["kind"] == "link":
            tree["symlinks"][path] = e["target"]
        elif e["kind"] == "hard":
            tree["hardlinks"][path] = rel(e["target"])
        else:
            tree["files"][path] = sha256(e["data"])
            # Without keep_setuid, setuid, setgid and sticky bits are dropped.
            tree["modes"][path] = e.get("mode", 0o644) & 0o777
            tree["bytes"] += len(e["data"])
    return tree


def content_tree() -> list[dict]:
    big = random.Random(7).randbytes(3 << 20)
    return [
        {"name": "./", "kind": "dir", "mode": 0o751},
        {"name": "./hello.txt", "kind": "file", "data": b"hello from the volume\n",
         "uid": 1001, "gid": 1002},
        {"name": "./bin/", "kind": "dir", "mode": 0o755},
        {"name": "./bin/run.sh", "kind": "file", "data": b"#!/bin/sh\necho run\n", "mode": 0o755},
        {"name": "./bin/setuid", "kind": "file", "data": b"not really setuid\n", "mode": 0o4755},
        {"name": "./conf/", "kind": "dir", "mode": 0o750, "uid": 1003, "gid": 1003},
        {"name": "./conf/app.ini", "kind": "file", "data": b"[app]\nport = 8080\n", "mode": 0o640,
         "uid": 1003, "gid": 1004},
        {"name": "./conf/secret", "kind": "file", "data": b"s3cret\n", "mode": 0o600},
        {"name": "./empty/", "kind": "dir", "mode": 0o700, "uid": 1005, "gid": 1005},
        {"name": "./deep/", "kind": "dir"},
        {"name": "./deep/a/", "kind": "dir"},
        {"name": "./deep/a/b/", "kind": "dir"},
        {"name": "./deep/a/b/c.txt", "kind": "file", "data": b"deep\n", "uid": 2000, "gid": 2000},
        {"name": "./app.ini", "kind": "link", "target": "conf/app.ini", "uid": 1006, "gid": 1007},
        {"name": "./hello-again.txt", "kind": "hard", "target": "./hello.txt", "uid": 1001,
         "gid": 1002},
        {"name": "./big.bin", "kind": "file", "data": big},
    ]


def simple(files: dict[str, bytes]) -> list[dict]:
    entries: list[dict] = []
    seen: set[str] = set()
    for name, data in files.items():
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in seen:
                seen.add(parent)
                entries.append({"name": parent + "/", "kind": "dir"})
        entries.append({"name": name, "kind": "file", "data": data})
    return entries


# Archives that try to leave the volume; each would create its marker.
EVIL = {
    "evil-dotdot": [
        {"name": "fine.txt", "kind": "file", "data": b"fine\n"},
        {"name": "../../../../../../../../../../tmp/ops-escape-dotdot", "kind": "file",
         "data": b"escaped\n"},
    ],
    "evil-up-one": [
        {"name": "../ops-escape-up-one", "kind": "file", "data": b"escaped\n"},
    ],
    "evil-absolute": [
        {"name": "/tmp/ops-escape-absolute", "kind": "file", "data": b"escaped\n"},
    ],
    "evil-through-symlink": [
        {"name": "out", "kind": "link", "target": "../../../../../../../../../../tmp"},
        {"name": "out/ops-escape-through-symlink", "kind": "file", "data": b"escaped\n"},
    ],
    "evil-symlink-chain": [
        # Each link alone stays inside; followed together they lead out.
        {"name": "a/", "kind": "dir"},
        {"name": "a/up", "kind": "link", "target": ".."},
        {"name": "b", "kind": "link", "target": "a/up/a/up/a/up/../../../../../../tmp"},
        {"name": "b/ops-escape-symlink-chain", "kind": "file", "data": b"escaped\n"},
    ],
    "evil-symlink-chain-only": [
        # The same links, nothing written through them: caught once all exist.
        {"name": "a/", "kind": "dir"},
        {"name": "a/up", "kind": "link", "target": ".."},
        {"name": "b", "kind": "link", "target": "a/up/a/up/a/up/../../../../../../tmp"},
    ],
    "evil-hardlink": [
        {"name": "passwd", "kind": "hard", "target": "../../../../../../../../../../etc/passwd"},
    ],
    "evil-hardlink-absolute": [
        {"name": "passwd", "kind": "hard", "target": "/etc/passwd"},
    ],
    # link() on a symlink makes another symlink: a hard link to a symlink
    # that is fine where it is plants one to the volume's parent.
    "evil-hardlink-symlink": [
        {"name": "a/", "kind": "dir"},
        {"name": "a/up", "kind": "link", "target": ".."},
        {"name": "up", "kind": "hard", "target": "a/up"},
        {"name": "up/ops-escape-hardlink-symlink", "kind": "file", "data": b"escaped\n"},
    ],
    # The same through a chain of hard links.
    "evil-hardlink-chain": [
        {"name": "a/b/", "kind": "dir"},
        {"name": "a/b/up", "kind": "link", "target": ".."},
        {"name": "a/b/h1", "kind": "hard", "target": "a/b/up"},
        {"name": "h2", "kind": "hard", "target": "a/b/h1"},
    ],
    # Not an escape, but refused unless allow_special_files is set.
    "evil-device": [
        {"name": "dev-null", "kind": "char", "mode": 0o666},
    ],
}


def write(out: Path, name: str, data: bytes, index: dict, **more) -> None:
    (out / name).write_bytes(data)
    index[name] = {"file": name, "digest": "sha256:" + sha256(data), **more}


def build(outdir: str) -> dict:
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    index: dict = {"trees": {}}

    content = content_tree()
    index["trees"]["content"] = describe(content)
    tar = tar_of(content)
    formats = {
        "content.tar": tar,
        "content.tar.gz": gzip.compress(tar, compresslevel=6, mtime=0),
        "content.tar.xz": lzma.compress(tar, format=lzma.FORMAT_XZ),
        "content.tar.bz2": bz2.compress(tar, 9),
    }
    if shutil.which("zstd"):
        formats["content.tar.zst"] = subprocess.run(["zstd", "-q", "-c", "-19"], input=tar,
                                                    capture_output=True, check=True).stdout
    else:
        index["zstd_missing"] = True
    for name, data in formats.items():
        write(out, name, data, index, tree="content", format=name.split(".", 1)[1])
    index["formats"] = list(formats)

    gens = {
        "v1": {"version.txt": b"1\n", "old/only-in-v1.txt": b"old\n", "shared.txt": b"from v1\n"},
        "v2": {"version.txt": b"2\n", "new/only-in-v2.txt": b"new\n", "shared.txt": b"from v2\n"},
        "conf": {"hello.txt": b"read me, do not write me\n", "sub/app.ini": b"[app]\n"},
        "state": {"seed.txt": b"seeded state\n"},
    }
    for name, files in gens.items():
        entries = simple(files)
        index["trees"][name] = describe(entries)
        write(out, f"{name}.tar.gz", gzip.compress(tar_of(entries), mtime=0), index, tree=name)

    for name, entries in EVIL.items():
        write(out, f"{name}.tar", tar_of(entries), index, evil=True)

    # The busybox ACI of the image tests (the ACIs only: no podman needed).
    for name, entry in image_fixtures.build_aci(out).items():
        if name == "aci-gz":
            index["aci"] = entry
        else:
            (out / entry["file"]).unlink()

    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / "index.json")
    return index


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    index = build(argv[1])
    for name, entry in sorted(index.items()):
        if isinstance(entry, dict) and "digest" in entry:
            print(f"{name:28} {entry['digest'][:23]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
