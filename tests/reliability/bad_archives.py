"""Bad input, half of issue 19's item 3: hostile archives and hostile HTTP
servers, fed to the real module binaries (ops_volume, ops_image, ops_pod)
inside a booted systemd (tests/systemd/sandbox). Run by
tests/reliability/bad_archives:

    python3 bad_archives.py [NAME-FILTER]

The store root is a small tmpfs (STORE_MB MiB, STORE_INODES inodes) mounted
inside the sandbox, so free space and inodes run out where a bomb would
take them. Every case is one module run that must fail, and after it:

- the message names the problem (fragments asserted, per case);
- the store root and the unit directory are byte-identical to before
  (scenario_kit.snapshot);
- no ops process is left, and nothing new under /tmp or /var/tmp (outside
  this run's scratch directory), nor in the store's staging/ or trash/
  (the snapshot covers `.ops-tmp` files and partial downloads);
- bounded: each module run has RLIMIT_AS = MEMORY_LIMIT (enforced by the
  kernel), a wall limit of WALL_LIMIT s (killed past it: FAIL), and its
  peak RSS (wait4) must stay under RSS_LIMIT; the store's free space is
  polled while it runs and must never fall to zero.

Three cases are accepted on purpose: setuid, setgid and sticky bits in a
volume are dropped unless keep_setuid (documented): those assert that the
run succeeded with no such bit left in the volume and nothing transient
left; the store changes (the volume is replaced), so they skip the
byte-identical check. Prints `PASS name` / `FAIL name: why` and
`FIGURE bad inputs (archives, http): N`.
"""

import bz2
import io
import json
import lzma
import os
import resource
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "systemd"))
sys.path.insert(0, str(HERE.parent / "images"))
import scenario_kit as kit  # noqa: E402
import fixtures as image_fixtures  # noqa: E402

ROOT = Path("/var/lib/ops-bad")
UNIT_DIR = Path("/etc/systemd/system")
STORE_MB = 10
STORE_INODES = 8000
MEMORY_LIMIT = 1 << 30  # RLIMIT_AS of each module run
RSS_LIMIT = 256 << 20  # peak resident memory of each module run
WALL_LIMIT = 60  # seconds a module run may take before it is killed
HTTP_TIMEOUT = 3  # the modules' own download timeout in the HTTP cases
BIG_TIMEOUT = 45  # ... where the server sends without end (stopped by the free space)
PORT = int(os.environ.get("BAD_ARCHIVES_PORT", "22510"))  # and PORT + 1 (TLS)
PORT_RANGE = "22600-22699"
MTIME = 1_700_000_000
MiB = 1 << 20
# ops leaves 1% of a filesystem, at least 1 MiB, free (library/src/space.rs):
# the store's free space, polled every 10 ms while a module runs, must
# never fall below half of that.
FREE_FLOOR = 512 << 10

WORK = Path("/nonexistent")


# ------------------------------------------------------------ archives

def tar_of(entries, fmt=tarfile.PAX_FORMAT):
    """A tar of (name, kind, extra) entries: kind file (extra: bytes or a
    size of zeros), dir, sym / hard (extra: target), chr, blk, fifo;
    extra2: mode."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for e in entries:
            name, kind, extra = e[0], e[1], e[2] if len(e) > 2 else None
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.mode = e[3] if len(e) > 3 else (0o755 if kind == "dir" else 0o644)
            if kind == "file":
                data = extra if isinstance(extra, bytes) else bytes(extra or 0)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = extra
            if kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    return buf.getvalue()


def header(name, size):
    """A ustar header declaring a regular file of `size` bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, MTIME, 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT)


def compress_stream(kind, chunks):
    """Compress an iterable of byte chunks with gzip, xz, bzip2 or zstd."""
    if kind == "zst":
        proc = subprocess.Popen(["zstd", "-q", "-1", "-c"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        out = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))
        reader.start()
        for c in chunks:
            proc.stdin.write(c)
        proc.stdin.close()
        reader.join()
        proc.wait()
        return out[0]
    if kind == "gz":
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
    elif kind == "xz":
        c = lzma.LZMACompressor(preset=0)
    else:
        c = bz2.BZ2Compressor(1)
    parts = [c.compress(chunk) for chunk in chunks]
    parts.append(c.flush())
    return b"".join(parts)


def compress(kind, data):
    return compress_stream(kind, [data])


def zeros(total):
    left = total
    while left:
        n = min(left, MiB)
        yield bytes(n)
        left -= n


@lru_cache
def single_bomb(kind, size):
    """One file of `size` zero bytes: a few KiB compressed."""
    def chunks():
        yield header("zeros", size)
        yield from zeros(size)
        yield bytes(512 - size % 512 if size % 512 else 0) + bytes(1024)
    return compress_stream(kind, chunks())


def many_bomb(kind, files, size):
    """`files` files of `size` zero bytes each, every one its own
    compressed member (multi-member gzip, xz streams, zstd frames, bzip2
    streams): the decoders read them all as one tar."""
    member = compress(kind, bytes(size))
    out = []
    for n in range(files):
        out.append(compress(kind, header(f"z{n:05}", size)))
        out.append(member)
    out.append(compress(kind, bytes(1024)))
    return b"".join(out)


SMALL = tar_of([("./", "dir"), ("a", "file", b"hello\n" * 1000), ("d", "dir"),
                ("d/b", "file", os.urandom(200_000))])


def truncated(kind):
    data = compress(kind, SMALL) if kind != "tar" else SMALL
    return data[: len(data) * 6 // 10]


def garbage_after(kind):
    data = compress(kind, SMALL) if kind != "tar" else SMALL
    return data + b"\x01GARBAGE AFTER THE END" * 40


def flipped(kind):
    data = bytearray(compress(kind, SMALL))
    for at in range(len(data) // 2, len(data) // 2 + 16):
        data[at] ^= 0x55
    return bytes(data)


MAGIC = {"gz": b"\x1f\x8b", "xz": b"\xfd7zXZ\x00", "zst": b"\x28\xb5\x2f\xfd", "bz2": b"BZh"}


def wrong_magic(kind):
    """The magic bytes of `kind` in front of another compression's stream."""
    other = "xz" if kind != "xz" else "gz"
    body = compress(other, SMALL)
    return MAGIC[kind] + body[len(MAGIC[kind]):]


@lru_cache
def many_entries(n):
    """n empty files in 100 directories (a gzip of a few hundred KiB)."""
    entries = [(f"d{k:02}", "dir") for k in range(100)]
    entries += [(f"d{k % 100:02}/f{k:06}", "file", b"") for k in range(n)]
    return compress("gz", tar_of(entries, tarfile.GNU_FORMAT))


def deep_path(levels):
    name = "/".join(["d"] * levels)
    return tar_of([(name + "/", "dir"), (name + "/f", "file", b"x")])


def pax_record(size):
    """A file whose PAX header carries a comment of `size` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * size}
        tar.addfile(info, io.BytesIO(b""))
    return compress("gz", buf.getvalue())


def pax_bomb(size):
    """A gzip tar whose first PAX record is `size` bytes: tar readers
    hold a record in memory whole."""
    n = size
    length = n + 11
    while len(f"{length} comment=") + n + 1 != length:
        length = len(f"{length} comment=") + n + 1
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size, info.mtime = tarfile.XHDTYPE, length, MTIME

    def chunks():
        yield info.tobuf(format=tarfile.USTAR_FORMAT)
        yield f"{length} comment=".encode()
        left = n
        while left:
            k = min(left, MiB)
            yield b"x" * k
            left -= k
        yield b"\n" + bytes(-length % 512)
        yield header("f", 0) + bytes(1024)
    return compress_stream("gz", chunks())


# ------------------------------------------------------------ images

def image_of(layers):
    """An OCI archive of plain-tar `layers`, and its id."""
    return image_fixtures.oci_archive(layers)


def image_bomb():
    """A layer of one 128 MiB file of zeros, gzip: the image is ~150 KiB."""
    chunks = [header("zeros", 128 * MiB), *zeros(128 * MiB), bytes(1024)]
    layer = compress_stream("gz", chunks)
    # Its diff id needs the plain layer's digest, hashed as it streams.
    import hashlib
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    config = image_fixtures.image_config(["sha256:" + h.hexdigest()])
    manifest = {
        "schemaVersion": 2, "mediaType": image_fixtures.OCI_MANIFEST,
        "config": image_fixtures.descriptor(image_fixtures.OCI_CONFIG, config),
        "layers": [image_fixtures.descriptor(image_fixtures.OCI_LAYER_GZIP, layer)],
    }
    blob = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "manifests": [image_fixtures.descriptor(image_fixtures.OCI_MANIFEST, blob)]}
    members = [(f"blobs/sha256/{image_fixtures.sha256(b)}", b) for b in (layer, config, blob)]
    members += [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", json.dumps(index).encode())]
    return image_fixtures.archive(members), "sha256:" + image_fixtures.sha256(config)


def image_layer(entries):
    return image_of([tar_of(entries)])


def image_many_members(n):
    """A valid OCI image with `n` stray files beside its blobs."""
    layer = tar_of([("f", "file", b"x")])
    config = image_fixtures.image_config(["sha256:" + image_fixtures.sha256(layer)])
    manifest = {
        "schemaVersion": 2, "mediaType": image_fixtures.OCI_MANIFEST,
        "config": image_fixtures.descriptor(image_fixtures.OCI_CONFIG, config),
        "layers": [image_fixtures.descriptor(image_fixtures.OCI_LAYER_TAR, layer)],
    }
    blob = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "manifests": [image_fixtures.descriptor(image_fixtures.OCI_MANIFEST, blob)]}
    members = [(f"junk/{k}", b"") for k in range(n)]
    members += [(f"blobs/sha256/{image_fixtures.sha256(b)}", b) for b in (layer, config, blob)]
    members += [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", json.dumps(index).encode())]
    return image_fixtures.archive(members), "sha256:" + image_fixtures.sha256(config)


# ------------------------------------------------------------ hostile HTTP

GOOD = compress("gz", SMALL)
STOP = threading.Event()


class Hostile(socketserver.BaseRequestHandler):
    """One misbehaviour per path; anything else is a 404."""

    def send(self, data):
        try:
            self.request.sendall(data)
            return True
        except OSError:
            return False

    def trickle(self, data, every):
        for i in range(len(data)):
            if STOP.is_set() or not self.send(data[i:i + 1]):
                return
            time.sleep(every)

    def forever(self, chunk, every=0.0):
        while not STOP.is_set() and self.send(chunk):
            if every:
                time.sleep(every)

    def handle(self):
        self.request.settimeout(30)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                got = self.request.recv(4096)
                if not got:
                    return
                head += got
                if head[:1] == b"\x16":
                    break
        except OSError:
            return
        if head[:1] == b"\x16":  # a TLS handshake: a plain server says 400
            self.send(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            return
        path = head.split(b" ")[1].decode("latin-1") if head.count(b" ") >= 2 else "/"
        path = path.split("?")[0]
        ok = b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
        names = [part.split(".")[0] for part in path.split("/")]
        what = next((n for n in names if n in BEHAVIOURS), "")
        if what == "good":
            self.send(ok + b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD)
        elif what == "slowloris":  # headers at once, then a byte every 0.5 s
            self.send(ok + b"Content-Length: %d\r\n\r\n" % len(GOOD))
            self.trickle(GOOD, 0.5)
        elif what == "slowheaders":  # even the status line trickles
            self.trickle(ok + b"Content-Length: %d\r\n\r\n" % len(GOOD), 0.5)
        elif what == "silent":  # reads the request, never answers
            STOP.wait(WALL_LIMIT)
        # Every answer says Connection: close, as the connection is closed
        # after it: a client must not race a reuse of it.
        elif what == "loop":  # redirects to itself
            self.send(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                      % path.encode())
        elif what in ("pingA", "pingB"):  # two paths redirecting to each other
            other = path.replace(what, "pingB" if what == "pingA" else "pingA")
            self.send(b"HTTP/1.1 301 Moved\r\nLocation: %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                      % other.encode())
        elif what == "truncated":  # declares all of it, sends 60 %, closes
            self.send(ok + b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD[: len(GOOD) * 6 // 10])
        elif what == "shortlength":  # declares 60 %, sends all of it
            self.send(ok + b"Content-Length: %d\r\n\r\n" % (len(GOOD) * 6 // 10) + GOOD)
        elif what == "longlength":  # declares twice what it sends
            self.send(ok + b"Content-Length: %d\r\n\r\n" % (2 * len(GOOD)) + GOOD)
        elif what == "endless":  # no length, zeros until the client gives up
            self.send(ok + b"\r\n")
            self.forever(bytes(256 << 10))
        elif what == "chunked":  # chunked zeros, for ever
            self.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = bytes(256 << 10)
            self.forever(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        elif what == "hugelength":  # declares 16 GiB, sends zeros
            self.send(ok + b"Content-Length: %d\r\n\r\n" % (16 << 30))
            self.forever(bytes(256 << 10))
        elif what == "badchunk":
            self.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZZ\r\n" + GOOD)
        elif what == "reset":  # closes at once, nothing said
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif what == "nonsense":
            self.send(b"HELLO THERE\r\n\r\n" + GOOD)
        elif what == "error500":
            self.send(b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 4\r\n\r\noops")
        elif what == "bomb":  # a gzip body of 1 GiB of zeros, with the length of the gzip
            self.send(ok + b"Content-Length: %d\r\n\r\n" % len(HTTP_BOMB) + HTTP_BOMB)
        else:
            self.send(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")


BEHAVIOURS = {"good", "slowloris", "slowheaders", "silent", "loop", "pingA", "pingB", "truncated",
              "shortlength", "longlength", "endless", "chunked", "hugelength", "badchunk", "reset",
              "nonsense", "error500", "bomb"}


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_hostile():
    server = Server(("127.0.0.1", PORT), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve_self_signed():
    """An HTTPS server with a self-signed certificate for 127.0.0.1,
    serving the good archive at every path."""
    key, cert = WORK / "tls.key", WORK / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class TLS(Server):
        def get_request(self):
            sock, addr = super().get_request()
            sock.settimeout(10)
            try:
                return context.wrap_socket(sock, server_side=True), addr
            except (ssl.SSLError, OSError):
                sock.close()
                raise OSError("handshake refused")

    server = TLS(("127.0.0.1", PORT + 1), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


HTTP_BOMB = b""


# ------------------------------------------------------------ one run, watched

def ops_processes():
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if exe.startswith(str(kit.BIN_DIR)):
                found.append(f"{pid} {exe}")
    return found


def scratch_listing():
    """Every path under /tmp and /var/tmp but this run's scratch dir."""
    paths = set()
    for top in ("/tmp", "/var/tmp"):
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath == "/var/tmp":
                dirnames[:] = [d for d in dirnames if Path("/var/tmp", d) != WORK]
            paths.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return paths


def free_bytes():
    st = os.statvfs(ROOT)
    return st.f_bavail * st.f_frsize


def run_module(binary, args):
    """Run a module under the bounds; (result, seconds, peak RSS bytes,
    least free bytes of the store seen while it ran)."""
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    args.update(_ansible_check_mode=False, _ansible_diff=False)
    argfile = WORK / "args.json"
    argfile.write_text(json.dumps(args))
    out, err = WORK / "stdout", WORK / "stderr"

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    least = [free_bytes()]
    hwm = [0]
    done = threading.Event()
    pid = [None]

    def watch():
        # The child's own peak (VmHWM of its address space after exec; the
        # wait4 figure would count this Python's pages at the fork).
        while not done.wait(0.01):
            least[0] = min(least[0], free_bytes())
            try:
                with open(f"/proc/{pid[0]}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            hwm[0] = max(hwm[0], int(line.split()[1]) * 1024)
            except (OSError, ValueError, TypeError):
                pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    began = time.monotonic()
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([str(kit.BIN_DIR / binary), str(argfile)], stdout=o, stderr=e,
                                preexec_fn=limits)
    pid[0] = proc.pid
    timer = threading.Timer(WALL_LIMIT, lambda: os.kill(proc.pid, signal.SIGKILL))
    timer.start()
    # WNOWAIT first: /proc/PID/status stays readable for a last look.
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    done.set()
    watcher.join()
    try:
        for line in open(f"/proc/{proc.pid}/status"):
            if line.startswith("VmHWM:"):
                hwm[0] = max(hwm[0], int(line.split()[1]) * 1024)
    except OSError:
        pass
    _, status = os.waitpid(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    timer.cancel()
    seconds = time.monotonic() - began
    text = out.read_text()
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        result = {"died": True, "returncode": proc.returncode, "stdout": text[-2000:],
                  "stderr": err.read_text()[-2000:]}
    return result, seconds, hwm[0], least[0]


# ------------------------------------------------------------ the cases

CASES = []  # (name, runner); runner returns None or raises AssertionError


def case(name, binary, args, *says, accept=None):
    CASES.append((name, binary, args, says, accept))


def archive_file(name, data):
    path = WORK / "in" / "".join(c if c.isalnum() or c in "-." else "-" for c in name)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data() if callable(data) else data)
    return path


def volume(name, data, *says, accept=None, **extra):
    """ops_volume replacing pod bad version 1's volume `data` with the
    archive `data` (bytes, or a function making them), or a URI."""
    def args():
        source = data if isinstance(data, str) else archive_file(name, data)
        return dict(pod="bad", version="1", name="data", data=source, replace=True, root=ROOT,
                    timeout=timeout_of(data) if isinstance(data, str) else 60, **extra)
    case(f"volume {name}", "ops_volume", args, *says, accept=accept)


def image(name, made, *says, uri=None):
    """ops_image importing the archive `made()` returns ((bytes, id)),
    or the URI `uri` (with any id)."""
    def args():
        if uri:
            return dict(id="sha256:" + "1" * 64, uri=uri, root=ROOT, timeout=timeout_of(uri))
        data, image_id = made()
        return dict(id=image_id, path=archive_file(name, data), root=ROOT, timeout=60)
    case(f"image {name}", "ops_image", args, *says)


def bundle_dir(version, volume_data):
    d = WORK / f"bundle-{version}"
    d.mkdir(exist_ok=True)
    (d / "idle.service").write_text(IDLE)
    vol = {"name": "data", "path": "/srv/data"}
    if volume_data is not None:
        vol["data"] = volume_data
    pod = {"name": "bad", "version": version, "volumes": [vol],
           "containers": [{"name": "idle", "systemd": {"unit-files": ["idle.service"]}}]}
    (d / "pod.json").write_text(json.dumps(pod))
    return d


def pod_volume(name, data, *says):
    """ops_pod deploying a new version whose volume is `data` (bytes: a
    file beside pod.json; a str: its URI)."""
    def args():
        version = "v-" + "".join(c if c.isalnum() else "-" for c in name)[:40]
        if isinstance(data, str):
            d = bundle_dir(version, data)
        else:
            d = bundle_dir(version, "data.tar")
            (d / "data.tar").write_bytes(data() if callable(data) else data)
        return dict(bundle=d, root=ROOT, port_range=PORT_RANGE,
                    download_timeout=timeout_of(data) if isinstance(data, str) else 60,
                    start_timeout=20)
    case(f"pod volume {name}", "ops_pod", args, *says)


def pod_repo(name, path, *says):
    def args():
        return dict(repo=f"http://127.0.0.1:{PORT}{path}", name="bad", channel="stable",
                    root=ROOT, port_range=PORT_RANGE, download_timeout=HTTP_TIMEOUT)
    case(f"pod repo {name}", "ops_pod", args, *says)


IDLE = "[Unit]\nDescription=idle\n[Service]\nExecStart=/bin/sleep infinity\n"
FULL = "more than the free space of the filesystem of"


def define_cases():
    # Compressed archives, every compression ops reads.
    for kind in ("gz", "xz", "zst", "bz2"):
        size = 256 * MiB if kind in ("gz", "zst") else 64 * MiB
        volume(f"{kind} bomb, one file of {size // MiB} MiB", lambda k=kind, s=size: single_bomb(k, s),
               'entry "zeros"', FULL)
        volume(f"{kind} bomb, 16 files of 1 MiB", lambda k=kind: many_bomb(k, 16, MiB), FULL)
        volume(f"{kind} truncated stream", lambda k=kind: truncated(k), "ends early")
        volume(f"{kind} garbage after the end", lambda k=kind: garbage_after(k), "cannot extract")
        volume(f"{kind} damaged in the middle", lambda k=kind: flipped(k), "cannot extract")
        volume(f"{kind} magic before another compression", lambda k=kind: wrong_magic(k),
               "cannot extract")
    volume("plain tar larger than the free space (12 MiB)",
           lambda: tar_of([("big", "file", 12 * MiB)]), 'entry "big"', FULL)
    volume("plain tar of many files filling the free space",
           lambda: tar_of([(f"f{n}", "file", MiB) for n in range(12)]), FULL)
    volume("plain tar truncated", lambda: truncated("tar"), "ends early")
    volume("plain tar followed by 17 MiB of zeros", SMALL + bytes(17 * MiB), "follow the end of the tar archive")
    volume("header declaring 1 PiB", header("huge", 1 << 50) + bytes(1024), 'entry "huge"', "1.0 PiB", FULL)
    volume("100k entries (more than the store's inodes)", lambda: many_entries(100_000), "no inode left")
    volume("deep path (2100 levels)", lambda: deep_path(2100), "cannot extract")
    volume("long name (300 bytes)", tar_of([("n" * 300, "file", b"x")]), "cannot extract")
    volume("PAX header of 2 MiB", lambda: pax_record(2 * MiB), "headers", "take more than 1024 KiB")
    volume("PAX record of 512 MiB (a memory bomb)", lambda: pax_bomb(512 * MiB), "headers",
           "take more than 1024 KiB")
    volume("char device node", tar_of([("null", "chr")]), 'entry "null"', "allow_special_files is off")
    volume("block device node", tar_of([("disk", "blk")]), 'entry "disk"', "allow_special_files is off")
    volume("fifo", tar_of([("pipe", "fifo")]), 'entry "pipe"', "allow_special_files is off")
    volume("hard link to ../../etc/passwd", tar_of([("p", "hard", "../../etc/passwd")]),
           'entry "p"', "goes up with '..'")
    volume("hard link to /etc/shadow", tar_of([("p", "hard", "/etc/shadow")]),
           'entry "p"', "absolute path")
    volume("hard link to a symlink that leads out where the link lands",
           tar_of([("a", "dir"), ("a/up", "sym", ".."), ("up", "hard", "a/up")]),
           'entry "up"', "a hard link to the symlink a/up")
    volume("symlink to /etc, then a file through it",
           tar_of([("etc", "sym", "/etc"), ("etc/ops-bad", "file", b"x")]), 'entry "etc', "symlink")
    volume("symlink up out of the volume", tar_of([("up", "sym", "../../../../..")]),
           'entry "up"', "outside the volume")
    volume("symlink chain leading out",
           tar_of([("a", "dir"), ("a/b", "sym", ".."), ("c", "sym", "a/b/..")]),
           "outside the volume")
    volume("symlink loop", tar_of([("x", "sym", "y"), ("y", "sym", "x")]), "loop of symlinks")
    volume("setuid and setgid files (dropped: keep_setuid is off)",
           tar_of([("s", "file", b"x", 0o4755), ("g", "file", b"x", 0o2755), ("both", "file", b"x", 0o6755)]),
           accept=no_bits(0o6000))
    volume("setgid and sticky directories (dropped)",
           tar_of([("g", "dir", None, 0o2775), ("t", "dir", None, 0o1777), ("g/s", "file", b"", 0o4700)]),
           accept=no_bits(0o7000))
    volume("setuid top directory ./ (dropped)", tar_of([("./", "dir", None, 0o7777), ("f", "file", b"")]),
           accept=no_bits(0o7000))
    volume("dot-dot entry", tar_of([("../ops-bad-escape", "file", b"x")]), "goes up with '..'")
    volume("absolute entry", tar_of([("/tmp/ops-bad-escape", "file", b"x")]), "an absolute path")
    # Images.
    image("gzip layer bomb (128 MiB file)", image_bomb, 'entry "zeros"', FULL)
    image("layer of 100k entries", lambda: image_of([tar_of(
        [(f"f{n:06}", "file", b"") for n in range(100_000)], tarfile.GNU_FORMAT)]), "no inode left")
    image("layer of a 12 MiB file", lambda: image_layer([("big", "file", 12 * MiB)]), 'entry "big"', FULL)
    image("whiteout of '..'", lambda: image_layer([(".wh...", "file", b"")]), ".wh..")
    image("whiteout with no name", lambda: image_layer([("d", "dir"), ("d/.wh.", "file", b"")]), ".wh.")
    image("whiteout that is a directory", lambda: image_layer([(".wh.etc", "dir")]), ".wh.etc")
    image("whiteout that is a symlink", lambda: image_layer([(".wh.etc", "sym", "/etc")]), ".wh.etc")
    image("whiteout going up", lambda: image_layer([("../.wh.etc", "file", b"")]), "goes up with '..'")
    image("hard link out of the layer", lambda: image_layer([("p", "hard", "../../etc/passwd")]),
          "goes up with '..'")
    image("deep path (2100 levels)", lambda: image_of([deep_path(2100)]), "cannot")
    image("10001 stray members", lambda: image_many_members(10_001), "more than 10000")
    image("archive followed by 20 MiB of zeros",
          lambda: (lambda d, i: (d + bytes(20 * MiB), i))(*image_layer([("f", "file", b"x")])),
          "follow the end of the tar archive")
    image("truncated archive", lambda: (lambda d, i: (d[: len(d) // 2], i))(*image_layer([("f", "file", os.urandom(100_000))])),
          "ends early")
    image("gzip magic before a plain tar", lambda: (lambda d, i: (MAGIC["gz"] + d[2:], i))(*image_layer([("f", "file", b"x")])),
          "gzip")
    image("xz archive damaged", lambda: (lambda d, i: (flipped_bytes(compress("xz", d)), i))(*image_layer([("f", "file", os.urandom(100_000))])),
          "xz")
    # Hostile HTTP servers: ops_volume.
    for what, says in HTTP.items():
        volume(f"http {what}", uri_of(what), *says)
    # ... ops_image, ops_pod's bundle volumes, ops_pod's repository.
    for what in ("slowloris", "silent", "loop", "truncated", "endless", "tls-plain", "tls-self-signed"):
        image(f"http {what}", None, *IMAGE.get(what, HTTP[what]), uri=uri_of(what))
    for what in ("slowloris", "loop", "truncated", "hugelength", "bomb", "tls-self-signed"):
        pod_volume(f"http {what}", uri_of(what), *HTTP[what])
    for what in ("slowheaders", "silent", "pingA", "endless", "nonsense"):
        pod_repo(f"http {what}", f"/{what}", *REPO.get(what, HTTP[what]))
    pod_volume("local gzip bomb", lambda: single_bomb("gz", 256 * MiB), 'entry "zeros"', FULL)
    pod_volume("local 100k entries", lambda: many_entries(100_000), "no inode left")


DATA = ROOT / "pods/bad/1/volumes/data/data"


def no_bits(bits):
    """An accept check: nothing in the volume has these mode bits."""
    def check_bits():
        found = [f"{p} {oct(p.lstat().st_mode)}" for p in [DATA, *DATA.rglob("*")]
                 if p.lstat().st_mode & bits]
        return [f"mode bits {oct(bits)} kept: {found}"] if found else []
    return check_bits


def flipped_bytes(data):
    data = bytearray(data)
    for at in range(len(data) // 2, len(data) // 2 + 16):
        data[at] ^= 0x55
    return bytes(data)


TIMEOUT = f"within the timeout of {HTTP_TIMEOUT} s"
# A repository's documents are small: read up to a bound, not to the free space.
REPO = {"endless": ["larger than"]}
# An unsigned image is unpacked as it streams (never written whole): an
# endless body is stopped by the bound on what follows the archive's end.
IMAGE = {"endless": ["follow the end of the tar archive"]}
HTTP = {
    "slowloris": [TIMEOUT],
    "slowheaders": [TIMEOUT],
    "silent": [TIMEOUT],
    "loop": ["redirect"],
    "pingA": ["redirect"],
    "truncated": ["truncated.tar.gz", ("Peer disconnected", "ends early")],
    "shortlength": ["ends early"],
    "longlength": ["cannot download"],
    "endless": ["too large"],
    "chunked": ["too large"],
    "hugelength": ["too large"],
    "badchunk": ["cannot download"],
    "reset": ["cannot download"],
    "nonsense": ["cannot download"],
    "error500": ["HTTP 500"],
    "bomb": [FULL],
    "tls-plain": ["TLS failed"],
    "tls-self-signed": ["TLS failed", "certificate"],
}


BIG = ("endless", "chunked", "hugelength", "bomb")


def timeout_of(uri):
    """The download timeout of a case: short where the server stalls, long
    enough where it sends a lot, so that the free-space bound stops it."""
    return BIG_TIMEOUT if any(f"/{b}" in uri for b in BIG) else HTTP_TIMEOUT


def uri_of(what):
    if what == "tls-plain":
        return f"https://127.0.0.1:{PORT}/good.tar.gz"
    if what == "tls-self-signed":
        return f"https://127.0.0.1:{PORT + 1}/good.tar.gz"
    return f"http://127.0.0.1:{PORT}/{what}.tar.gz"


# ------------------------------------------------------------ setup and checks

def setup():
    """A 64 MiB store on its own tmpfs, pod bad version 1 deployed with an
    empty volume `data` (what ops_volume replaces)."""
    global HTTP_BOMB
    ROOT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STORE_MB}m,nr_inodes={STORE_INODES}",
                    "ops-bad", str(ROOT)], check=True)
    HTTP_BOMB = single_bomb("gz", 256 * MiB)
    r, *_ = run_module("ops_pod", dict(bundle=bundle_dir("1", None), root=ROOT,
                                       port_range=PORT_RANGE, start_timeout=20))
    kit.ok(r, True)


def check(name, binary, make_args, says, accept):
    args = make_args()
    before = kit.snapshot(ROOT, UNIT_DIR)
    scratch = scratch_listing()
    result, seconds, rss, least = run_module(binary, args)
    why = []
    if accept:
        # Taken on purpose, the dangerous part removed: the store changes
        # (the volume is replaced), nothing transient stays.
        if result.get("failed") or result.get("died"):
            why.append(f"failed: {json.dumps(result)[:400]}")
        else:
            why += accept()
        for d in ("staging", "trash"):
            if (ROOT / d).exists() and any((ROOT / d).iterdir()):
                why.append(f"left in {ROOT / d}: {sorted(os.listdir(ROOT / d))[:4]}")
        before = kit.snapshot(ROOT, UNIT_DIR)
    elif result.get("died"):
        why.append(f"no JSON result (exit {result['returncode']}): {result['stderr'][-300:]}")
    elif not result.get("failed"):
        why.append(f"did not fail: {json.dumps(result)[:300]}")
    else:
        msg = result.get("msg", "")
        # A tuple of fragments: any one of them will do.
        missing = [s for s in says
                   if not any(f in msg for f in (s if isinstance(s, tuple) else (s,)))]
        if missing:
            why.append(f"the message lacks {missing}: {msg[:600]}")
        if "No space left" in msg:
            why.append(f"the filesystem was filled: {msg[:300]}")
    if kit.snapshot(ROOT, UNIT_DIR) != before:
        after = kit.snapshot(ROOT, UNIT_DIR)
        diff = sorted(set(after.items()) ^ set(before.items()))[:4]
        why.append(f"the store or unit dir changed: {diff}")
    left = ops_processes()
    if left:
        why.append(f"processes left: {left}")
    new = sorted(scratch_listing() - scratch)
    if new:
        why.append(f"left in /tmp or /var/tmp: {new[:4]}")
    if seconds >= WALL_LIMIT:
        why.append(f"killed after {WALL_LIMIT} s")
    if rss > RSS_LIMIT:
        why.append(f"peak RSS {rss >> 20} MiB > {RSS_LIMIT >> 20} MiB")
    if least < FREE_FLOOR:
        why.append(f"the store's free space fell to {least} bytes during the run")
    return why, seconds, rss, result.get("msg", "")


def main():
    global WORK
    # A /var/tmp of this sandbox's own: the host's (the overlay's lower
    # layer) changes under other programs, and what ops leaves is sought here.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "ops-bad-var-tmp", "/var/tmp"], check=True)
    WORK = kit.start("ops-bad-archives-")
    kit.WORK = WORK
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    serve_hostile()
    serve_self_signed()
    setup()
    define_cases()
    passed = failed = 0
    slowest = (0, "")
    peak = (0, "")
    for name, binary, make_args, says, accept in CASES:
        if only and only not in name:
            continue
        try:
            why, seconds, rss, msg = check(name, binary, make_args, says, accept)
        except Exception as e:  # a broken case is a failed case, not a stop
            why, seconds, rss, msg = [f"{type(e).__name__}: {e}"], 0, 0, ""
        slowest = max(slowest, (seconds, name))
        peak = max(peak, (rss, name))
        if why:
            failed += 1
            print(f"FAIL {name}: {'; '.join(why)}", flush=True)
        else:
            passed += 1
            print(f"PASS {name} ({seconds:.1f} s, {rss >> 20} MiB): {msg[:160]}", flush=True)
    STOP.set()
    print(f"bounds: RLIMIT_AS {MEMORY_LIMIT >> 20} MiB, peak RSS <= {RSS_LIMIT >> 20} MiB, "
          f"wall <= {WALL_LIMIT} s a run; store {STORE_MB} MiB / {STORE_INODES} inodes")
    print(f"slowest: {slowest[1]} ({slowest[0]:.1f} s); most memory: {peak[1]} ({peak[0] >> 20} MiB)")
    print(f"FIGURE bad inputs (archives, http): {passed + failed}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
