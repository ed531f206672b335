#!/usr/bin/env python3
"""Build the container image archives that the `ops_image` tests import.

Usage:  python3 tests/images/fixtures.py OUTDIR

Every archive is written into OUTDIR, together with OUTDIR/index.json, which
maps a fixture name to what a test needs to know about it::

    {"aci": {"file": "aci.aci", "id": "sha512-...", "format": "aci",
             "files": {"bin/busybox": "<sha256 hex>", ...},
             "absent": ["..."], "symlinks": {"bin/sh": "busybox"}}, ...}

Broken fixtures carry `"broken": true` and the id they *claim* to be, so a
test can assert that importing them fails.

The fixtures, and why each exists:

* `aci` - a plain-tar appc image (`manifest` + `rootfs/`) holding a copy of
  /bin/busybox, a `bin/sh` symlink and `www/index.html`.  Its id is
  `sha512-` + the sha512 of the whole uncompressed tar (end-of-archive blocks
  and record padding included), so the tar is written byte-for-byte
  reproducibly: fixed mtimes, root owner, sorted entries.
* `aci-gz`, `aci-bz2`, `aci-xz` - the same tar compressed; same id, because
  the id is of the uncompressed bytes.
* `oci`, `docker` - real `podman save` output (oci-archive, docker-archive)
  of an image made by `podman import` of the same tree.  Podman stamps a
  creation time into the config, so these ids change from run to run; they
  are read back from podman and checked against the archives' config blobs.
  Podman runs against a private storage under OUTDIR/.podman (removed at the
  end), so the machine's own images are never touched.
* `oci-layers`, `docker-layers` - a three-layer image built by hand (first
  layer gzip, others plain tar) exercising whiteouts (`.wh.NAME`) and an
  opaque directory (`.wh..wh..opq`), once as an OCI image layout and once as
  a Docker archive.  Blobs/layers come before index.json/manifest.json in
  the archive, as podman writes them, so a streaming reader must cope.
* `aci-hardlinks` - the ACI as GNU tar writes a busybox tree: `bin/sh`
  is a hard link whose target is the archive path `rootfs/bin/busybox`
  (rootfs/ included). `hardlinks` in the index maps each link to its
  target: the same inode in the unpacked rootfs.
* `oci-hardlink-layers` - two layers where the upper one hard-links a file
  of the lower one (`bin/ash` -> `bin/busybox`), as the OCI layer format
  allows; applied in order, the link is to the lower file.
* `aci-truncated`, `aci-corrupt`, `oci-bad-layer`, `not-an-image` - broken
  archives: cut short, a content byte flipped (sha512 mismatch), a byte
  flipped in a layer blob (digest mismatch), and a tar that is no image.

Only the Python standard library is used, plus the `podman` command for the
two podman-made fixtures.  `build(outdir)` does the same from other scripts
and returns the index.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Fixed metadata, so that identical trees give identical tar bytes.
MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z
CREATED = "2023-11-14T22:13:20Z"
BUSYBOX = Path("/bin/busybox")

PODMAN_TAG = "localhost/ops-test/web:1"
LAYERS_TAG = "localhost/ops-test/layers:1"

HTTPD = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
PASSWD = b"root:x:0:0:root:/root:/bin/sh\n"

ACI_MANIFEST = {
    "acKind": "ImageManifest",
    "acVersion": "0.8.11",
    "name": "example.com/web",
    "labels": [
        {"name": "os", "value": "linux"},
        {"name": "arch", "value": "amd64"},
    ],
    "app": {
        "exec": HTTPD,
        "user": "0",
        "group": "0",
        "environment": [{"name": "GREETING", "value": "hello"}],
        "ports": [{"name": "http", "protocol": "tcp", "port": 8080}],
    },
}

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


# --------------------------------------------------------------------------
# Trees and tars


@dataclass(frozen=True)
class Entry:
    """One tar member: a directory, a regular file, a symlink or a hard link."""

    path: str
    kind: str  # "dir" | "file" | "link" | "hardlink"
    data: bytes = b""  # file content
    target: str = ""  # symlink target
    mode: int = 0o644


def d(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, "dir", mode=mode)


def f(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, "file", data=data, mode=mode)


def link(path: str, target: str) -> Entry:
    return Entry(path, "link", target=target, mode=0o777)


def hardlink(path: str, target: str) -> Entry:
    return Entry(path, "hardlink", target=target, mode=0o755)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def base_tree(index_html: bytes) -> list[Entry]:
    """The small runnable tree shared by the ACI and the podman images."""
    return [
        d("bin"),
        f("bin/busybox", BUSYBOX.read_bytes(), 0o755),
        link("bin/sh", "busybox"),
        d("dev"),
        d("etc"),
        f("etc/passwd", PASSWD),
        d("proc", 0o555),
        d("run"),
        d("sys", 0o555),
        d("tmp", 0o1777),
        d("www"),
        f("www/index.html", index_html),
    ]


def make_tar(entries: list[Entry]) -> bytes:
    """A reproducible PAX tar of `entries` (in the given order)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.mtime = MTIME
            info.mode = e.mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind in ("link", "hardlink"):
                info.type = tarfile.SYMTYPE if e.kind == "link" else tarfile.LNKTYPE
                info.linkname = e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def data_offset(tar_bytes: bytes, member: str) -> tuple[int, int]:
    """(offset, size) of `member`'s content inside `tar_bytes`."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        info = tar.getmember(member)
        return info.offset_data, info.size


def flip_byte(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0xFF
    return bytes(out)


def expect(entries: list[Entry]) -> tuple[dict[str, str], dict[str, str]]:
    """The `files` and `symlinks` of a final tree."""
    files = {e.path: sha256(e.data) for e in entries if e.kind == "file"}
    links = {e.path: e.target for e in entries if e.kind == "link"}
    return files, links


def write(outdir: Path, name: str, data: bytes) -> str:
    (outdir / name).write_bytes(data)
    return name


# --------------------------------------------------------------------------
# ACI


def build_aci(outdir: Path) -> dict[str, dict]:
    tree = base_tree(b"hello from the aci image\n")
    manifest = (json.dumps(ACI_MANIFEST, indent=2) + "\n").encode()
    rootfs = [Entry("rootfs/" + e.path, e.kind, e.data, e.target, e.mode) for e in tree]
    aci = make_tar([f("manifest", manifest), d("rootfs")] + rootfs)
    aci_id = "sha512-" + hashlib.sha512(aci).hexdigest()
    files, links = expect(tree)
    good = {"id": aci_id, "format": "aci", "files": files, "absent": [], "symlinks": links}

    index: dict[str, dict] = {}
    index["aci"] = {"file": write(outdir, "aci.aci", aci), **good}
    compressed = {
        "aci-gz": ("aci-gz.aci", gzip.compress(aci, compresslevel=9, mtime=0)),
        "aci-bz2": ("aci-bz2.aci", bz2.compress(aci, 9)),
        "aci-xz": ("aci-xz.aci", lzma.compress(aci, format=lzma.FORMAT_XZ)),
    }
    for name, (file, data) in compressed.items():
        index[name] = {"file": write(outdir, file, data), **good}

    # GNU tar's busybox: applets are hard links named by archive path.
    linked = [
        hardlink("rootfs/bin/sh", "rootfs/bin/busybox") if e.path == "rootfs/bin/sh" else e
        for e in rootfs
    ]
    aci_links = make_tar([f("manifest", manifest), d("rootfs")] + linked)
    link_files = dict(files, **{"bin/sh": files["bin/busybox"]})
    index["aci-hardlinks"] = {
        "file": write(outdir, "aci-hardlinks.aci", aci_links),
        "id": "sha512-" + hashlib.sha512(aci_links).hexdigest(),
        "format": "aci",
        "files": link_files,
        "absent": [],
        "symlinks": {k: v for k, v in links.items() if k != "bin/sh"},
        "hardlinks": {"bin/sh": "bin/busybox"},
    }

    offset, size = data_offset(aci, "rootfs/bin/busybox")
    broken = {"id": aci_id, "format": "aci", "broken": True}
    index["aci-truncated"] = {
        "file": write(outdir, "aci-truncated.aci", aci[: offset + size // 2]),
        **broken,
    }
    index["aci-corrupt"] = {
        "file": write(outdir, "aci-corrupt.aci", flip_byte(aci, offset + size // 2)),
        **broken,
    }
    return index


# --------------------------------------------------------------------------
# Hand-made layered images (OCI layout and Docker archive)


def layered() -> tuple[list[bytes], dict]:
    """The three layer tars, and the expected final tree."""
    base = base_tree(b"base\n")
    layer1 = base + [
        f("www/old.html", b"old\n"),
        d("etc/keep"),
        f("etc/keep/a", b"a\n"),
        f("etc/keep/b", b"b\n"),
        d("opt"),
        d("opt/data"),
        f("opt/data/x", b"x\n"),
        f("opt/data/y", b"y\n"),
    ]
    layer1.sort(key=lambda e: e.path.split("/"))
    layer2 = [
        d("opt"),
        d("opt/data"),
        f("opt/data/.wh..wh..opq", b""),
        f("opt/data/z", b"z\n"),
        d("www"),
        f("www/.wh.old.html", b""),
        f("www/index.html", b"hello from the layered image\n"),
    ]
    layer3 = [
        d("etc"),
        d("etc/keep"),
        f("etc/keep/.wh.b", b""),
        d("www"),
        f("www/new.html", b"new\n"),
    ]
    final = {e.path: e for e in layer1}
    for path in ("www/old.html", "opt/data/x", "opt/data/y", "etc/keep/b"):
        del final[path]
    for e in layer2 + layer3:
        if ".wh." not in e.path:
            final[e.path] = e
    files, links = expect(list(final.values()))
    absent = [
        "www/old.html",
        "opt/data/x",
        "opt/data/y",
        "etc/keep/b",
        # Whiteout markers must never show up in the rootfs themselves.
        "www/.wh.old.html",
        "opt/data/.wh..wh..opq",
        "etc/keep/.wh.b",
    ]
    tree = {"files": dict(sorted(files.items())), "absent": absent, "symlinks": links}
    return [make_tar(layer1), make_tar(layer2), make_tar(layer3)], tree


def image_config(diff_ids: list[str]) -> bytes:
    config = {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "GREETING=hello",
            ],
            "Cmd": HTTPD,
            "ExposedPorts": {"8080/tcp": {}},
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": CREATED, "created_by": f"ops fixtures: layer {n}"}
            for n in range(1, len(diff_ids) + 1)
        ],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": "sha256:" + sha256(blob), "size": len(blob)}


def archive(members: list[tuple[str, bytes]]) -> bytes:
    """A tar of plain files (with their parent directories) in this order."""
    entries: list[Entry] = []
    seen: set[str] = set()
    for name, data in members:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in seen:
                seen.add(parent)
                entries.append(d(parent))
        entries.append(f(name, data))
    return make_tar(entries)


def build_layered(outdir: Path) -> dict[str, dict]:
    layers, tree = layered()
    diff_ids = ["sha256:" + sha256(layer) for layer in layers]
    config = image_config(diff_ids)
    config_id = "sha256:" + sha256(config)

    # OCI image layout: layer 1 gzip, 2 and 3 plain.
    blobs = [gzip.compress(layers[0], compresslevel=9, mtime=0), layers[1], layers[2]]
    types = [OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_TAR]
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(t, b) for t, b in zip(types, blobs)],
    }
    manifest_blob = json.dumps(manifest, separators=(",", ":")).encode()
    oci_index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **descriptor(OCI_MANIFEST, manifest_blob),
                "annotations": {"org.opencontainers.image.ref.name": LAYERS_TAG},
            }
        ],
    }
    members = [(f"blobs/sha256/{sha256(b)}", b) for b in blobs + [config, manifest_blob]]
    members += [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(oci_index, separators=(",", ":")).encode()),
    ]
    oci = archive(members)

    # Docker archive: plain layers named by diff id, manifest.json last.
    docker_manifest = [
        {
            "Config": sha256(config) + ".json",
            "RepoTags": [LAYERS_TAG],
            "Layers": [sha256(layer) + ".tar" for layer in layers],
        }
    ]
    name, tag = LAYERS_TAG.rsplit(":", 1)
    repositories = {name: {tag: sha256(layers[-1])}}
    docker = archive(
        [(sha256(layer) + ".tar", layer) for layer in layers]
        + [
            (sha256(config) + ".json", config),
            ("manifest.json", json.dumps(docker_manifest, separators=(",", ":")).encode()),
            ("repositories", json.dumps(repositories, separators=(",", ":")).encode()),
        ]
    )

    # oci-bad-layer: one byte of www/new.html flipped inside layer 3's blob,
    # keeping the blob's (now wrong) file name and the layer tar parseable.
    blob_at, _ = data_offset(oci, f"blobs/sha256/{sha256(layers[2])}")
    file_at, _ = data_offset(layers[2], "www/new.html")
    bad = flip_byte(oci, blob_at + file_at)

    good = {"id": config_id, "tag": LAYERS_TAG, **tree}
    return {
        "oci-layers": {"file": write(outdir, "oci-layers.tar", oci), "format": "oci", **good},
        "docker-layers": {
            "file": write(outdir, "docker-layers.tar", docker),
            "format": "docker",
            **good,
        },
        "oci-bad-layer": {
            "file": write(outdir, "oci-bad-layer.tar", bad),
            "id": config_id,
            "format": "oci",
            "broken": True,
        },
    }


def oci_archive(layers: list[bytes]) -> tuple[bytes, str]:
    """An OCI image layout of plain-tar layers, and its id."""
    config = image_config(["sha256:" + sha256(layer) for layer in layers])
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER_TAR, layer) for layer in layers],
    }
    manifest_blob = json.dumps(manifest, separators=(",", ":")).encode()
    oci_index = {"schemaVersion": 2, "manifests": [descriptor(OCI_MANIFEST, manifest_blob)]}
    members = [(f"blobs/sha256/{sha256(b)}", b) for b in layers + [config, manifest_blob]]
    members += [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(oci_index, separators=(",", ":")).encode()),
    ]
    return archive(members), "sha256:" + sha256(config)


def build_hardlink_layers(outdir: Path) -> dict[str, dict]:
    base = base_tree(b"base\n")
    upper = [
        d("bin"),
        hardlink("bin/ash", "bin/busybox"),
        d("www"),
        f("www/index.html", b"hello from the hard-linked layers\n"),
    ]
    data, image_id = oci_archive([make_tar(base), make_tar(upper)])
    files, links = expect(base + [e for e in upper if e.kind == "file"])
    files["bin/ash"] = files["bin/busybox"]
    return {
        "oci-hardlink-layers": {
            "file": write(outdir, "oci-hardlink-layers.tar", data),
            "id": image_id,
            "format": "oci",
            "files": dict(sorted(files.items())),
            "absent": [],
            "symlinks": links,
            "hardlinks": {"bin/ash": "bin/busybox"},
        }
    }


def build_not_an_image(outdir: Path) -> dict[str, dict]:
    readme = b"This tar is not a container image.\n"
    data = archive([("README", readme)])
    return {
        "not-an-image": {
            "file": write(outdir, "not-an-image.tar", data),
            # There is no real id; claim a well-formed sha256 one.
            "id": "sha256:" + sha256(readme),
            "format": "oci",
            "broken": True,
        }
    }


# --------------------------------------------------------------------------
# Podman-made images


class Podman:
    """podman against a private storage under `root`, never the machine's."""

    def __init__(self, root: Path):
        self.root = root
        self.driver = os.environ.get("OPS_FIXTURES_STORAGE_DRIVER", "overlay")
        # podman refuses a runroot longer than 50 characters; a deep OUTDIR
        # gets a short one of its own under /tmp instead.
        self.runroot = root / "runroot"
        self.own_runroot = len(str(self.runroot)) > 50
        if self.own_runroot:
            self.runroot = Path(tempfile.mkdtemp(prefix="ops-fixtures-", dir="/tmp"))

    def __call__(self, *args: str) -> str:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.runroot.mkdir(mode=0o700, parents=True, exist_ok=True)
        conf = self.root / "storage.conf"
        # A storage.conf of our own, so the machine's storage options (e.g.
        # an overlay mount_program) cannot leak into this private storage.
        conf.write_text(
            f'[storage]\ndriver = "{self.driver}"\n'
            f'graphroot = "{self.root / "root"}"\nrunroot = "{self.runroot}"\n'
        )
        cmd = [
            "podman",
            "--root", str(self.root / "root"),
            "--runroot", str(self.runroot),
            "--tmpdir", str(self.root / "tmp"),
            "--storage-driver", self.driver,
            "--events-backend", "none",
            *args,
        ]
        env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(conf), TMPDIR=str(self.root / "tmp"))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def start(self) -> None:
        """Open the storage, falling back from overlay to vfs if need be."""
        try:
            self("images")
        except RuntimeError:
            if self.driver == "vfs":
                raise
            # overlay is not usable everywhere (nested containers, odd
            # filesystems): start again on vfs.
            self.cleanup()
            self.driver = "vfs"
            self("images")

    def cleanup(self) -> None:
        """Unmount and delete this storage: our own directories only."""
        dirs = [self.root, self.runroot]
        # overlay may leave mounts behind (shm, layers): release those under
        # our own directories only, deepest first, then delete them.
        lines = Path("/proc/self/mounts").read_text().splitlines()
        points = [line.split()[1].replace("\\040", " ") for line in lines]
        mounts = [m for m in points if any(m.startswith(f"{p}/") for p in dirs)]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)


def config_id_of(path: Path, fmt: str) -> str:
    """The config digest of a saved oci- or docker-archive."""
    with tarfile.open(path, "r:") as tar:

        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            assert member is not None, name
            return member.read()

        if fmt == "docker":
            config = read(json.loads(read("manifest.json"))[0]["Config"])
            return "sha256:" + sha256(config)
        index = json.loads(read("index.json"))
        digest = index["manifests"][0]["digest"]
        manifest = json.loads(read("blobs/sha256/" + digest.split(":", 1)[1]))
        return manifest["config"]["digest"]


def build_podman(outdir: Path) -> dict[str, dict]:
    tree = base_tree(b"hello from the oci image\n")
    files, links = expect(tree)
    podman = Podman(outdir / ".podman")
    podman.cleanup()
    try:
        rootfs = outdir / ".podman" / "rootfs.tar"
        rootfs.parent.mkdir(parents=True)
        rootfs.write_bytes(make_tar(tree))
        podman.start()
        changes = [
            "CMD " + json.dumps(HTTPD),
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV GREETING=hello",
            "EXPOSE 8080/tcp",
            "WORKDIR /",
        ]
        podman("import", *[a for c in changes for a in ("--change", c)], str(rootfs), PODMAN_TAG)
        image_id = podman("images", "--no-trunc", "--format", "{{.ID}}", PODMAN_TAG).strip()
        if not image_id.startswith("sha256:"):
            image_id = "sha256:" + image_id
        index = {}
        for name, fmt in (("oci", "oci-archive"), ("docker", "docker-archive")):
            out = outdir / f"{name}.tar"
            out.unlink(missing_ok=True)
            podman("save", "--format", fmt, "-o", str(out), PODMAN_TAG)
            saved = config_id_of(out, name)
            if saved != image_id:
                raise RuntimeError(f"{out}: config {saved} but podman says {image_id}")
            index[name] = {
                "file": out.name,
                "id": image_id,
                "format": name,
                "tag": PODMAN_TAG,
                "files": files,
                "absent": [],
                "symlinks": links,
            }
        return index
    finally:
        podman.cleanup()


# --------------------------------------------------------------------------


def build(outdir: str | os.PathLike) -> dict[str, dict]:
    """Build every fixture into `outdir`, write outdir/index.json, return it."""
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, dict] = {}
    index.update(build_aci(out))
    index.update(build_podman(out))
    index.update(build_layered(out))
    index.update(build_hardlink_layers(out))
    index.update(build_not_an_image(out))
    tmp = tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp")
    with tmp:
        json.dump(index, tmp, indent=2, sort_keys=True)
        tmp.write("\n")
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, out / "index.json")
    return index


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    index = build(argv[1])
    for name, entry in sorted(index.items()):
        flag = "  (broken)" if entry.get("broken") else ""
        print(f"{name:14} {entry['file']:20} {entry['id'][:23]}...{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
