#!/usr/bin/env python3
"""Write the seed inputs of the fuzz targets (issue 19).

Usage:  python3 fuzz/seeds.py OUTDIR

OUTDIR/<target>/ gets one file per seed, for the targets of fuzz/:

* pod_json - every pod.json of tests/fixtures (the good bundles in both
  shapes, and every bad bundle).
* module_args - argument objects of each module: good ones, and ones with
  the wrong types, unknown keys, Ansible's string spellings, k=v strings.
* volume_archive - small volume trees (tests/volumes/fixtures.py's
  writer) in every compression, the escaping archives of those tests, and
  GNU long names, fifos, devices, setuid bits, sparse files.
* image_archive - a small ACI (plain and compressed), OCI and Docker
  archives of the layered image of tests/images/fixtures.py (whiteouts,
  opaque directories, hard links across layers), with a tiny stand-in for
  busybox so the seeds stay small.

Seeds are built, not committed: the committed corpus (fuzz/corpus) is
what fuzzing kept of them, minimized. Only the Python standard library is
used, plus the `zstd` command if there.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name: str, path: Path):
    """A fixtures module by path: both of the tests' are called fixtures."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# tests/volumes/fixtures.py imports tests/images/fixtures.py as `fixtures`.
sys.path.insert(0, str(ROOT / "tests" / "images"))
image_fixtures = load("fixtures", ROOT / "tests" / "images" / "fixtures.py")
volume_fixtures = load("volume_fixtures", ROOT / "tests" / "volumes" / "fixtures.py")


def compressions(name: str, tar: bytes) -> dict[str, bytes]:
    out = {
        f"{name}.tar": tar,
        f"{name}.tar.gz": gzip.compress(tar, compresslevel=9, mtime=0),
        f"{name}.tar.xz": lzma.compress(tar, format=lzma.FORMAT_XZ),
        f"{name}.tar.bz2": bz2.compress(tar, 9),
    }
    if shutil.which("zstd"):
        out[f"{name}.tar.zst"] = subprocess.run(
            ["zstd", "-q", "-c", "-19"], input=tar, capture_output=True, check=True
        ).stdout
    return out


def pod_json() -> dict[str, bytes]:
    seeds = {}
    fixtures = ROOT / "tests" / "fixtures"
    for path in sorted(fixtures.rglob("pod.json")):
        name = "-".join(path.relative_to(fixtures).parent.parts)
        seeds[name + ".json"] = path.read_bytes()
    return seeds


def module_args() -> dict[str, bytes]:
    env = {"GREETING": "hello", "DB_PASSWORD": "s3cret"}
    args = {
        "pod-bundle": {"bundle": "/srv/bundles/web", "state": "started", "keep": 3, "env": env,
                       "root": "/var/lib/ops", "ports": {"http": "assign", "admin": 9000},
                       "port_range": "30000-30100"},
        "pod-repo": {"repo": "https://releases.example.com/pods", "channel": "stable",
                     "label": "team/web", "name": "web", "version": "tip",
                     "_ansible_check_mode": True, "_ansible_diff": "yes"},
        "pod-strings": {"name": "web", "version": "12", "state": "absent", "keep": "2",
                        "rollback": "no", "start_timeout": "30", "env": "A=1 B=two",
                        "ports": ["http", "admin"], "runtime": "podman"},
        "pod-wrapped": {"ANSIBLE_MODULE_ARGS": {"name": "web", "state": "idle",
                                                "_ansible_verbosity": 3}},
        "pod-bad": {"bundle": "/b", "repo": "/r", "keep": -1, "state": "sideways",
                    "unknown": 1, "env": {"1BAD": "x"}, "port_range": "9-1",
                    "lock_timeout": 99999999999},
        "image": {"name": "web", "path": "/srv/images/web.aci",
                  "id": "sha512-" + "a" * 64, "state": "present", "keyring": "/etc/keys",
                  "require_signature": True, "signature": "/srv/images/web.aci.asc"},
        "image-uri": {"name": "web", "uri": "https://images.example.com/web.oci.tar",
                      "id": "sha256:" + "b" * 64, "download_timeout": "60"},
        "volume": {"pod": "web", "version": "3", "name": "static",
                   "archive": "/srv/volumes/static.tar.gz",
                   "checksum": "sha256:" + "c" * 64, "owner": "1000", "group": 1000,
                   "mode": "0750", "allow_special_files": False, "keep_setuid": "false"},
        "volume-replace": {"pod": "web", "version": "3", "name": "data", "state": "replaced",
                           "uri": "https://data.example.com/v.tar.zst",
                           "checksum": "sha512:" + "d" * 128},
        "release": {"bundle": "/srv/bundles/web", "repo": "/srv/repo", "channel": "stable",
                    "label": "team/web", "keep": 5, "promote": "beta"},
        "facts": {"root": "/var/lib/ops", "unit_dir": "/etc/systemd/system",
                  "pods": ["web", "db"]},
        "facts-string-list": {"pods": "web,db", "root": "relative/root"},
        "empty": {},
        "not-an-object": ["name", "web"],
        "unicode": {"name": "wéb\u2028", "version": "\u0661", "bundle": "../../etc"},
    }
    return {name + ".json": json.dumps(value).encode() for name, value in args.items()}


def volume_archive() -> dict[str, bytes]:
    vf = volume_fixtures
    tree = [
        {"name": "./", "kind": "dir", "mode": 0o751},
        {"name": "./hello.txt", "kind": "file", "data": b"hello\n", "uid": 1001, "gid": 1002},
        {"name": "./bin/", "kind": "dir"},
        {"name": "./bin/setuid", "kind": "file", "data": b"suid\n", "mode": 0o4755},
        {"name": "./conf/", "kind": "dir", "mode": 0o500},
        {"name": "./conf/app.ini", "kind": "file", "data": b"[app]\n", "mode": 0o640},
        {"name": "./app.ini", "kind": "link", "target": "conf/app.ini"},
        {"name": "./again.txt", "kind": "hard", "target": "./hello.txt"},
        {"name": "./null", "kind": "char", "mode": 0o666},
    ]
    seeds = compressions("tree", vf.tar_of(tree))
    for name, entries in vf.EVIL.items():
        seeds[name + ".tar"] = vf.tar_of(entries)
    seeds.update(special_tars())
    seeds["empty.tar"] = b"\0" * 1024
    return seeds


def special_tars() -> dict[str, bytes]:
    """Entries the PAX writer of the fixtures does not make."""
    seeds = {}
    for fmt, name in ((tarfile.GNU_FORMAT, "gnu"), (tarfile.USTAR_FORMAT, "ustar")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            long_dir = tarfile.TarInfo("d/" + "x" * 90)
            long_dir.type = tarfile.DIRTYPE
            tar.addfile(long_dir) if fmt == tarfile.GNU_FORMAT else None
            fifo = tarfile.TarInfo("fifo")
            fifo.type = tarfile.FIFOTYPE
            tar.addfile(fifo)
            block = tarfile.TarInfo("block")
            block.type = tarfile.BLKTYPE
            block.devmajor, block.devminor = 7, 0
            tar.addfile(block)
            sticky = tarfile.TarInfo("tmp")
            sticky.type = tarfile.DIRTYPE
            sticky.mode = 0o1777
            tar.addfile(sticky)
            data = tarfile.TarInfo("tmp/f")
            data.size = 3
            data.mode = 0o2755
            tar.addfile(data, io.BytesIO(b"abc"))
        seeds[f"special-{name}.tar"] = buf.getvalue()
    return seeds


def image_archive() -> dict[str, bytes]:
    imf = image_fixtures
    with tempfile.TemporaryDirectory() as tmp:
        busybox = Path(tmp) / "busybox"
        busybox.write_bytes(b"#!/bin/sh\necho busybox\n")
        imf.BUSYBOX = busybox
        out = Path(tmp) / "out"
        out.mkdir()
        index = {}
        index.update(imf.build_aci(out))
        index.update(imf.build_layered(out))
        index.update(imf.build_hardlink_layers(out))
        index.update(imf.build_not_an_image(out))
        seeds = {entry["file"]: (out / entry["file"]).read_bytes() for entry in index.values()}
        layers, _ = imf.layered()
    for i, layer in enumerate(layers):
        seeds[f"layer{i + 1}.tar"] = layer
    oci, _ = imf.oci_archive(layers[1:])
    seeds["oci-two-layers.tar.gz"] = gzip.compress(oci, mtime=0)
    if shutil.which("zstd"):
        seeds["oci-two-layers.tar.zst"] = subprocess.run(
            ["zstd", "-q", "-c"], input=oci, capture_output=True, check=True
        ).stdout
    return seeds


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    for target in (pod_json, module_args, volume_archive, image_archive):
        dest = out / target.__name__
        dest.mkdir(parents=True, exist_ok=True)
        seeds = target()
        for name, data in seeds.items():
            (dest / name).write_bytes(data)
        size = sum(len(d) for d in seeds.values())
        print(f"{target.__name__}: {len(seeds)} seeds, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
