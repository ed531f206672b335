"""Bad input, by the hundred: module arguments of all five modules, bundles
and images, each refused with a clear error and nothing changed.

    python3 bad_input.py [--list] [NAME-FRAGMENT...]

Run inside the sandbox (tests/systemd/sandbox) by tests/reliability/bad_input,
which says why. It first deploys a pod (an image unpacked in the store, a
volume, a fixed port, a secret) and publishes it to a release repository,
so that "the store did not change" is said of a real store. Then each case
runs one real module binary the way Ansible does and asserts:

* the result is `failed: true`, its `msg` holds the case's fragments (the
  option, or the file and field, or the file and the problem) and stays
  short (MAX_MSG bytes: a clear error, not an echo of the input);
* the store, the unit directory, the release repository, /var/lib's own
  entries and the case's input files are byte-identical before and after
  (content, mode, owner, symlink targets), and the pod's units are in the
  same states;
* no process is left (this script is the child subreaper, so anything the
  module left running is re-parented to it and seen) and no file is left
  in /tmp or /var/tmp (the scratch directory's own inputs aside);
* the run ended within WALL_SECONDS of wall time and under MAX_RSS of
  resident memory, under an address-space limit of ADDRESS_SPACE set by
  setrlimit (a module that asks for more fails its allocation).

Cases are generated (every option of every module from its documented type,
every bad-bundle fixture, mutations of the good fixture bundles, truncations
of image archives) and hand-written (paths, special files, signatures,
keyrings). It prints `PASS group: case` or `FAIL group: case` with the
reasons, then the figures, and exits 1 if any case failed.
"""

import ctypes
import gzip
import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
sys.path.insert(0, str(PROJECT / "tests" / "images"))
import fixtures as image_fixtures  # noqa: E402

BIN_DIR = Path(os.environ.get("OPS_BIN_DIR", PROJECT / "target" / "debug"))
ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")
REPO = Path("/var/lib/ops-repo")
POD = "sturdy"
PORT = 22010
PORT_RANGE = "22000-22499"
# A port of the range nothing listens on (a refused connection).
DEAD_PORT = 22499

WALL_SECONDS = 30
ADDRESS_SPACE = 1 << 30
MAX_RSS = 256 << 20
MAX_MSG = 16 << 10
# Files bigger than this are pictured by size and mtime, not content (the
# 1 GB sparse pod.json).
HASH_LIMIT = 16 << 20

WORK = Path("/nonexistent")
GOOD = Path("/nonexistent")
FIX = {}


# --------------------------------------------------------------------------
# Running one module under bounds


@dataclass
class Case:
    group: str  # args | bundles | images
    name: str
    module: str
    args: dict | None = None
    expect: list = field(default_factory=list)  # every fragment is in msg
    any_of: list = field(default_factory=list)  # one of them is in msg
    hidden: list = field(default_factory=list)  # never in msg (secrets)
    raw: bytes | None = None  # the args file's bytes, instead of args
    check_mode: bool = False
    watch: list = field(default_factory=list)  # inputs that must not change
    cwd: str | None = None


def limits():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_CPU, (WALL_SECONDS, WALL_SECONDS))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def invoke(module, args=None, raw=None, check_mode=False, cwd=None):
    """Run a module binary; (result or None, stdout, stderr, seconds, peak
    RSS in bytes, timed out)."""
    args_dir = WORK / "args"
    args_dir.mkdir(exist_ok=True)
    if raw is None:
        full = dict(args or {})
        full.setdefault("_ansible_check_mode", check_mode)
        full.setdefault("_ansible_diff", False)
        raw = json.dumps(full, default=str).encode()
    fd, args_file = tempfile.mkstemp(suffix=".json", dir=args_dir)
    os.write(fd, raw)
    os.close(fd)
    out = (args_dir / (Path(args_file).stem + ".out")).open("w+b")
    err = (args_dir / (Path(args_file).stem + ".err")).open("w+b")
    began = time.monotonic()
    proc = subprocess.Popen([str(BIN_DIR / module), args_file], stdout=out, stderr=err,
                            stdin=subprocess.DEVNULL, preexec_fn=limits,
                            start_new_session=True, cwd=cwd or "/")
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - began > WALL_SECONDS:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - began
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    out.close()
    err.close()
    try:
        result = json.loads(stdout)
    except json.JSONDecodeError:
        result = None
    return result, stdout, stderr, seconds, usage.ru_maxrss * 1024, timed_out


def module(name, check_mode=False, **args):
    """Run a module in the setup (no bounds asserted); its result."""
    result, stdout, stderr, *_ = invoke(name, args, check_mode=check_mode)
    if result is None:
        raise AssertionError(f"{name} printed no JSON: {stdout!r} {stderr!r}")
    return result


def ok(result, what):
    if result.get("failed"):
        raise AssertionError(f"{what}: {result.get('msg')}")
    return result


# --------------------------------------------------------------------------
# Pictures of the host


DIGESTS = {}


def digest(p, st):
    """A file's sha256, computed again only when its inode, size, mtime or
    ctime changed (ops replaces files by rename: a new inode)."""
    key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in DIGESTS:
        DIGESTS[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return DIGESTS[key]


def picture(*tops):
    """Every entry under tops: content digest (size and mtime above
    HASH_LIMIT), mode, owner, symlink target."""
    seen = {}
    for top in map(Path, tops):
        if not os.path.lexists(top):
            seen[str(top)] = "absent"
            continue
        stack = [top]
        while stack:
            p = stack.pop()
            st = p.lstat()
            key = (st.st_mode, st.st_uid, st.st_gid)
            if stat.S_ISLNK(st.st_mode):
                seen[str(p)] = (*key, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                if st.st_size > HASH_LIMIT:
                    seen[str(p)] = (*key, st.st_size, st.st_mtime_ns)
                else:
                    seen[str(p)] = (*key, digest(p, st))
            elif stat.S_ISDIR(st.st_mode):
                seen[str(p)] = key
                stack.extend(p.iterdir())
            else:
                seen[str(p)] = (*key, st.st_rdev)
    return seen


def temp_files():
    """Every path under /tmp and /var/tmp but this run's scratch directory."""
    found = set()
    for top in ("/tmp", "/var/tmp"):
        for dirpath, dirs, files in os.walk(top):
            if Path(dirpath) == WORK.parent:
                dirs[:] = [d for d in dirs if Path(dirpath, d) != WORK]
            # systemd's PrivateTmp= directories come and go with services.
            found.update(os.path.join(dirpath, n) for n in dirs + files
                         if not n.startswith("systemd-private-"))
    return found


def unit_states():
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "--no-pager", f"{POD}*", "ops-*"], capture_output=True, text=True)
    return sorted(out.stdout.splitlines())


def host_state():
    """What no case may change (its own inputs aside), and the temp files."""
    return {
        "store, unit dir, repository": picture(ROOT, UNIT_DIR, REPO),
        "/var/lib": sorted(os.listdir("/var/lib")),
        "units": unit_states(),
    }, temp_files()


def my_children():
    """Processes whose parent is this script (the subreaper): leftovers."""
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat_text = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat_text.rsplit(")", 1)[1].split()
        if fields[1] == me:
            found.append((int(pid), fields[0], cmd.strip()))
    return found


# --------------------------------------------------------------------------
# One case


def check(case, host):
    """Run a case on the host as `host` (host_state()) pictured it; the
    list of what went wrong (empty: it passed), its seconds and RSS, and
    the host's state after it (the next case's before)."""
    (before, temps), inputs = host, picture(*case.watch)
    result, stdout, stderr, seconds, rss, timed_out = invoke(
        case.module, case.args, case.raw, case.check_mode, case.cwd)
    wrong = []
    if timed_out:
        wrong.append(f"still running after {WALL_SECONDS} s: killed")
    if result is None:
        wrong.append(f"no JSON result (exit {stdout!r}, stderr {stderr[-2000:]!r})")
        result = {}
    msg = result.get("msg", "")
    if result.get("failed") is not True:
        wrong.append(f"did not fail: changed={result.get('changed')} msg={msg[:500]!r}")
    elif result.get("changed") is not False:
        wrong.append("failed with changed=true")
    for fragment in case.expect:
        if fragment not in msg:
            wrong.append(f"msg lacks {fragment!r}: {msg[:1500]!r}")
    if case.any_of and not any(f in msg for f in case.any_of):
        wrong.append(f"msg has none of {case.any_of}: {msg[:1500]!r}")
    for secret in case.hidden:
        if secret in stdout:
            wrong.append(f"the result shows {secret!r}")
    if len(msg.encode()) > MAX_MSG:
        wrong.append(f"msg is {len(msg.encode())} bytes (over {MAX_MSG}): {msg[:300]!r}...")
    if "internal error" in msg or "panicked" in stderr:
        wrong.append(f"a panic: {msg[:500]!r}")
    after, after_temps = host_state()
    for what in before:
        if before[what] != after[what]:
            wrong.append(f"{what} changed: {diff(before[what], after[what])}")
    if picture(*case.watch) != inputs:
        wrong.append(f"its inputs changed: {diff(inputs, picture(*case.watch))}")
    left = after_temps - temps
    if left:
        wrong.append(f"left in /tmp or /var/tmp: {sorted(left)[:5]}")
    children = my_children()
    if children:
        wrong.append(f"processes left behind: {children}")
        for pid, _, _ in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
    if seconds > WALL_SECONDS:
        wrong.append(f"took {seconds:.1f} s")
    if rss > MAX_RSS:
        wrong.append(f"peak RSS {rss >> 20} MiB over {MAX_RSS >> 20} MiB")
    return wrong, seconds, rss, (after, after_temps)


def diff(a, b):
    if isinstance(a, dict):
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return ", ".join(f"{k}: {a.get(k)} -> {b.get(k)}" for k in changed[:4])
    return f"{a} -> {b}"


# --------------------------------------------------------------------------
# Setup: a pod deployed, an image in the store, a repository


WEB = """[Unit]
Description=web of the sturdy pod, in its image

[Service]
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:${PORT_HTTP} -h /www
"""

KEEPER = """[Unit]
Description=keeper of the sturdy pod, on the host

[Service]
ExecStart=/bin/sleep infinity
"""


def small_tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def good_pod(version="1", image=None):
    """The deployed pod: its image the hard-linked ACI, so that the plain
    ACI is one the store lacks (the image cases import it)."""
    image = image or FIX["aci-hardlinks"]
    return {
        "name": POD,
        "version": version,
        "containers": [
            {"name": "web", "image": image["id"],
             "systemd": {"unit-files": ["units/web.service"]}},
            {"name": "keeper", "systemd": {"unit-files": ["units/keeper.service"]}},
        ],
        "images": [{"id": image["id"], "path": "images/web.aci"}],
        "volumes": [{"name": "data", "path": "/srv/data", "data": "data.tar"}],
        "ports": {"http": PORT},
        "environment": {"GREETING": "hello"},
    }


def write_bundle(d, pod, image=None):
    (d / "units").mkdir(parents=True)
    (d / "images").mkdir()
    (d / "units" / "web.service").write_text(WEB)
    (d / "units" / "keeper.service").write_text(KEEPER)
    shutil.copy(image or FIX["aci-hardlinks"]["path"], d / "images" / "web.aci")
    (d / "data.tar").write_bytes(small_tar({"index.html": b"data\n"}))
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def gpg(home, *args):
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--quiet", *args],
                          capture_output=True, text=True, check=True)


def make_keys():
    """A release key and a stranger's; the ACI signed by each; every
    gpg-agent stopped before the cases start."""
    for who in ("release", "stranger"):
        home = WORK / f"gnupg-{who}"
        home.mkdir(mode=0o700)
        gpg(home, "--passphrase", "", "--quick-generate-key", f"{who} <{who}@example.com>",
            "ed25519", "sign", "never")
        (WORK / f"{who}.asc").write_text(gpg(home, "--armor", "--export").stdout)
        gpg(home, "--armor", "--detach-sign", "--output", str(WORK / f"aci.by-{who}.asc"),
            str(FIX["aci"]["path"]))
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


def setup():
    global WORK, GOOD
    WORK = Path(tempfile.mkdtemp(prefix="ops-bad-input.", dir="/var/tmp"))
    images = WORK / "images"
    images.mkdir()
    index = {}
    index.update(image_fixtures.build_aci(images))
    index.update(image_fixtures.build_layered(images))
    index.update(image_fixtures.build_not_an_image(images))
    for name, entry in index.items():
        FIX[name] = {**entry, "path": images / entry["file"]}
    make_keys()
    GOOD = write_bundle(WORK / "good", good_pod())
    r = ok(module("ops_pod", bundle=GOOD, port_range=PORT_RANGE, start_timeout=20), "deploy")
    if not r["changed"]:
        raise AssertionError("the first deploy changed nothing")
    ok(module("ops_release", repo=REPO, bundle=GOOD, channel="stable"), "publish")
    page = fetch(PORT)
    if "hello from the aci image" not in page:
        raise AssertionError(f"the pod serves {page!r}")


def fetch(port):
    import urllib.request
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --------------------------------------------------------------------------
# Base requests: each succeeds and changes nothing (checked as controls)


def bases():
    aci = FIX["aci-hardlinks"]
    return {
        "ops_pod": {"bundle": str(GOOD), "port_range": PORT_RANGE, "start_timeout": 20},
        "ops_image": {"id": aci["id"], "path": str(aci["path"])},
        "ops_volume": {"pod": POD, "version": "1", "name": "data",
                       "data": str(GOOD / "data.tar")},
        "ops_facts": {},
        "ops_release": {"repo": str(REPO), "bundle": str(GOOD), "channel": "stable"},
    }


def controls():
    """Each base request, run as the cases run: success, nothing changed."""
    wrong = []
    for name, args in bases().items():
        state = host_state()
        result, *_ = invoke(name, args)
        if not result or result.get("failed") or result.get("changed"):
            wrong.append(f"{name}: {result}")
        if host_state() != state:
            wrong.append(f"{name}: the host changed")
    return wrong


# --------------------------------------------------------------------------
# Module arguments, generated from each module's documented options


def documented_options(module):
    """The options of a module as its DOCUMENTATION (and fragments) give
    them: name -> {type, choices, ...}."""
    import importlib.util

    import yaml
    plugins = PROJECT / "collection" / "plugins"
    text = (plugins / "modules" / f"{module}.py").read_text()
    doc = yaml.safe_load(re.search(r'DOCUMENTATION = r"""(.*?)"""', text, re.S).group(1))
    options = dict(doc.get("options") or {})
    for fragment in doc.get("extends_documentation_fragment", []):
        parts = fragment.split(".")[2:]  # ops.onboard.store.units -> store, units
        spec = importlib.util.spec_from_file_location(parts[0], plugins / "doc_fragments" / f"{parts[0]}.py")
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        attr = parts[1].upper() if len(parts) > 1 else "DOCUMENTATION"
        options.update(yaml.safe_load(getattr(loaded.ModuleDocFragment, attr)).get("options") or {})
    return options


def supported_by_binary(module):
    """The options the binary itself accepts (from its own refusal)."""
    result, *_ = invoke(module, {"zz_unknown_option": 1})
    listed = result["msg"].split("Supported parameters include: ")[1].split(".")[0]
    return set(listed.split(", "))


TYPE_ERRORS = {
    # type -> [(case, value, fragment after "argument 'OPT' ")]
    "int": [("word", "many", "unable to convert to int"), ("list", [1], "of type list"),
            ("float", 1.5, "unable to convert to int"), ("2**70", 2 ** 70, "unable to convert to int"),
            ("400 digits", "9" * 400, "unable to convert to int"), ("dict", {"a": 1}, "of type dict")],
    "bool": [("maybe", "maybe", "not a valid boolean"), ("2", 2, "not a valid boolean"),
             ("list", [], "of type list"), ("dict", {"a": 1}, "of type dict")],
    "str": [("list", ["a"], "of type list"), ("dict", {"a": "b"}, "of type dict")],
    "path": [("list", ["/a"], "of type list"), ("dict", {"a": "b"}, "of type dict")],
    "dict": [("list", ["A=1"], "of type list"), ("not k=v", "no pairs here", "unable to convert to dict"),
             ("int", 7, "unable to convert to dict"), ("list value", {"A": [1]}, "key 'A'")],
    "list": [("dict", {"a": 1}, "of type dict"), ("bool", True, "cannot be converted to a list"),
             ("nested list", [["a"]], "element 0")],
    "raw": [],
}

# Values no name, version, id, channel or volume name may have.
BAD_NAMES = {
    "empty": "", "dotdot": "../etc", "NUL": "a\x00b", "newline": "a\nb",
    "escape": "\x1b[31mred", "unicode": "ünïcödé-名前", "long": "a" * 100_000,
}
NAME_OPTIONS = {
    "ops_pod": ["name", "bundle_name", "version", "channel"],
    "ops_image": ["id"],
    "ops_volume": ["pod", "version", "name", "checksum", "mode", "owner", "group"],
    "ops_release": ["channel", "name", "version"],
    "ops_facts": [],
}
# Paths that must be absolute.
ABSOLUTE = {"ops_pod": ["root", "unit_dir"], "ops_image": ["root"], "ops_volume": ["root"],
            "ops_facts": ["root", "unit_dir"], "ops_release": ["repo"]}


def show(value):
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + f"..({len(text)})"


def argument_cases():
    cases = []
    base = bases()
    for module, defaults in base.items():
        options = documented_options(module)
        binary = supported_by_binary(module)
        if set(options) != binary:
            raise AssertionError(f"{module}: documented {sorted(options)}, binary {sorted(binary)}")
        for opt, doc in sorted(options.items()):
            kind = doc.get("type", "str")
            for label, value, fragment in TYPE_ERRORS[kind]:
                cases.append(Case("args", f"{module} {opt}: {kind} given {label}", module,
                                  {**defaults, opt: value}, [f"argument '{opt}'", fragment]))
            if kind == "int":
                for label, value in (("-1", -1), ("a year of seconds", 365 * 24 * 3600)):
                    cases.append(Case("args", f"{module} {opt}: {label}", module,
                                      {**defaults, opt: value}, [f"value of {opt} must be between"]))
            for choice_value in ("gone", "", "PRESENT", "présent") if doc.get("choices") else ():
                cases.append(Case("args", f"{module} {opt}: choice {choice_value!r}", module,
                                  {**defaults, opt: choice_value}, [f"value of {opt} must be one of"]))
        for opt in NAME_OPTIONS[module]:
            for label, value in BAD_NAMES.items():
                cases.append(Case("args", f"{module} {opt}: {label}", module,
                                  {**defaults, opt: value}, [f"{opt}"], hidden=[]))
        for opt in ABSOLUTE[module]:
            for label, value in (("relative, existing from cwd /", str({"repo": REPO, "unit_dir": UNIT_DIR}.get(opt, ROOT))[1:]),
                                 ("relative", "nowhere/at/all"), ("empty", "")):
                cases.append(Case("args", f"{module} {opt}: {label}", module,
                                  {**defaults, opt: value}, [opt, "absolute"], cwd="/"))
            cases.append(Case("args", f"{module} {opt}: NUL byte", module,
                              {**defaults, opt: "/var/lib\x00/x"}, [opt]))
        for label, key in (("plain", "bogus"), ("unicode", "nöm"), ("NUL", "na\x00me"),
                           ("case", "Name"), ("long", "k" * 10_000)):
            cases.append(Case("args", f"{module}: unknown key ({label})", module,
                              {**defaults, key: 1}, [f"Unsupported parameters for ({module}) module"]))
        cases += whole_args_cases(module)
    return cases


def nested(depth):
    value = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def whole_args_cases(module):
    """The args file itself: not JSON, not an object, too deep, odd bytes."""
    raw = {
        "not JSON": (b"{", "not valid JSON"),
        "empty file": (b"", "not valid JSON"),
        "a list": (b"[]", "must be a JSON object"),
        "a string": (b'"root"', "must be a JSON object"),
        "null": (b"null", "must be a JSON object"),
        "UTF-8 BOM": (b"\xef\xbb\xbf{}", "module arguments"),
        "UTF-16": ('{"root": "/x"}'.encode("utf-16"), "module arguments"),
        "invalid UTF-8": (b'{"root": "\xff\xfe"}', "not valid JSON"),
        "nesting 100000 deep": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "recursion limit"),
        "lone surrogate": (b'{"root": "\\ud800"}', "not valid JSON"),
    }
    return [Case("args", f"{module}: args file is {label}", module, raw=data,
                 expect=["module arguments", fragment])
            for label, (data, fragment) in raw.items()]


def hand_written_argument_cases():
    b = bases()
    pod, image, volume, release = b["ops_pod"], b["ops_image"], b["ops_volume"], b["ops_release"]
    c = []

    def case(name, module, args, *fragments, **kw):
        c.append(Case("args", name, module, args, list(fragments), **kw))

    case("ops_pod ports: 64 deep nesting", "ops_pod", {**pod, "ports": nested(64)}, "ports")
    case("ops_pod ports: port 70000", "ops_pod", {**pod, "ports": {"http": 70000}}, "ports", "70000")
    case("ops_pod ports: port -1", "ops_pod", {**pod, "ports": {"http": -1}}, "ports")
    case("ops_pod ports: port 2**70", "ops_pod", {**pod, "ports": {"http": 2 ** 70}}, "ports")
    case("ops_pod ports: a bad name", "ops_pod", {**pod, "ports": {"bad name": 22011}}, "ports")
    case("ops_pod ports: a number", "ops_pod", {**pod, "ports": 5}, "ports")
    case("ops_pod ports: word as port", "ops_pod", {**pod, "ports": {"http": "lots"}}, "ports")
    case("ops_pod env: reserved name", "ops_pod", {**pod, "env": {"PORT_HTTP": "1"}}, "env", "PORT_HTTP")
    case("ops_pod env: bad name", "ops_pod", {**pod, "env": {"1X": "v"}}, "env")
    case("ops_pod env: NUL in a secret", "ops_pod", {**pod, "env": {"TOKEN": "s3cr\x00et"}},
         "env.TOKEN", hidden=["s3cr"])
    case("ops_pod env: list value hidden", "ops_pod", {**pod, "env": {"TOKEN": ["hunter2"]}},
         "key 'TOKEN'", hidden=["hunter2"])
    case("ops_pod port_range: backwards", "ops_pod", {**pod, "port_range": "22499-22000"}, "port_range")
    case("ops_pod port_range: word", "ops_pod", {**pod, "port_range": "lots"}, "port_range")
    case("ops_pod port_range: 0-99999", "ops_pod", {**pod, "port_range": "0-99999"}, "port_range")
    case("ops_pod: bundle and repo", "ops_pod", {**pod, "repo": str(REPO)}, "mutually exclusive")
    case("ops_pod: neither bundle nor name", "ops_pod", {"state": "started"}, "one of bundle or name")
    case("ops_pod repo: without channel", "ops_pod", {"repo": str(REPO), "name": POD}, "channel")
    case("ops_pod repo: ftp URL", "ops_pod", {"repo": "ftp://x/y", "name": POD, "channel": "stable"}, "repo")
    case("ops_pod repo: credentials hidden", "ops_pod",
         {"repo": f"http://u:s3cret@127.0.0.1:{DEAD_PORT}/r", "name": POD, "channel": "stable"},
         "127.0.0.1", hidden=["s3cret"])
    case("ops_pod label: with dotdot", "ops_pod", {"repo": str(REPO), "name": POD, "channel": "stable",
                                                   "label": "a/../b"}, "label")
    case("ops_pod bundle_name: differs", "ops_pod", {**pod, "bundle_name": "other"}, "bundle_name")
    case("ops_pod version: reserved current", "ops_pod", {"name": POD, "version": "current"}, "version", "reserved")
    case("ops_volume checksum: mismatch", "ops_volume", {**volume, "checksum": "sha256:" + "0" * 64},
         "checksum")
    case("ops_volume checksum: md5", "ops_volume", {**volume, "checksum": "md5:" + "0" * 32}, "checksum")
    case("ops_volume checksum: without data", "ops_volume",
         {k: v for k, v in volume.items() if k != "data"} | {"checksum": "sha256:" + "0" * 64}, "checksum")
    case("ops_volume mode: 9999", "ops_volume", {**volume, "mode": "9999"}, "mode")
    case("ops_volume mode: 77777", "ops_volume", {**volume, "mode": "77777"}, "mode")
    case("ops_volume owner: 4294967295", "ops_volume", {**volume, "owner": "4294967295"}, "owner")
    case("ops_volume group: -1", "ops_volume", {**volume, "group": "-1"}, "group")
    case("ops_volume owner: 2**70", "ops_volume", {**volume, "owner": str(2 ** 70)}, "owner")
    case("ops_volume name: not in pod.json", "ops_volume", {**volume, "name": "nope"}, "nope")
    case("ops_volume version: not deployed", "ops_volume", {**volume, "version": "9"}, "9")
    case("ops_volume pod: not deployed", "ops_volume", {**volume, "pod": "nopod"}, "nopod")
    case("ops_volume data: ftp URL", "ops_volume", {**volume, "data": "ftp://x/y.tar"}, "data")
    case("ops_image: path and uri", "ops_image", {**image, "uri": "http://127.0.0.1/x"}, "mutually exclusive")
    case("ops_image: id missing", "ops_image", {"path": image["path"]}, "missing required arguments: id")
    case("ops_release label: dotdot", "ops_release", {**release, "label": "a/../b"}, "label")
    case("ops_release label: absolute", "ops_release", {**release, "label": "/a"}, "label")
    case("ops_release label: empty segment", "ops_release", {**release, "label": "a//b"}, "label")
    case("ops_release: bundle and instructions", "ops_release",
         {**release, "instructions": str(WORK / "x.yml")}, "mutually exclusive")
    case("ops_release: present without a bundle", "ops_release", {"repo": str(REPO), "channel": "stable"},
         "neither bundle nor instructions")
    case("ops_release name: differs from pod.json", "ops_release", {**release, "name": "other"}, "other")
    case("ops_release version: differs from pod.json", "ops_release", {**release, "version": "7"}, "7")
    case("ops_release repo: is a file", "ops_release", {**release, "repo": str(GOOD / "pod.json")}, "pod.json")
    case("ops_facts pods: a bad name", "ops_facts", {"pods": ["../x"]}, "pods")
    case("ops_facts pods: empty name", "ops_facts", {"pods": ["ok", ""]}, "pods")
    return c


# --------------------------------------------------------------------------
# Bundles: the bad-bundle corpus, mutations of the good fixtures, special files


def corpus_cases():
    """Each bundle of tests/fixtures/bad-bundles through ops_pod (and a
    sample through ops_release), refused with the message the library's
    snapshot records for it, path made absolute."""
    corpus = PROJECT / "tests" / "fixtures" / "bad-bundles"
    snap = (PROJECT / "library" / "tests" / "snapshots" /
            "bundles__every_bad_bundle_is_refused_with_its_message.snap").read_text()
    messages = json.loads(snap.split("---\n", 2)[2])
    cases = []
    for n, d in enumerate(sorted(p for p in corpus.iterdir() if p.is_dir())):
        expected = messages[d.name].replace("../tests/fixtures/bad-bundles/", f"{corpus}/")
        # The first problem is enough to name file and field; the whole
        # message is asserted by the library's snapshot.
        first = expected.split("; ")[0].split("): ", 1)[-1].replace("invalid bundle: ", "")
        cases.append(Case("bundles", f"corpus {d.name} (ops_pod)", "ops_pod",
                          {"bundle": str(d), "port_range": PORT_RANGE}, ["invalid bundle", first]))
        if n % 4 == 0:
            cases.append(Case("bundles", f"corpus {d.name} (ops_release)", "ops_release",
                              {"repo": str(REPO), "bundle": str(d), "channel": "stable"},
                              ["invalid bundle", first]))
    return cases


def schema():
    return json.loads((PROJECT / "collection" / "schemas" / "pod.schema.json").read_text())


def allowed_types(prop, defs):
    if "$ref" in prop:
        prop = defs[prop["$ref"].rsplit("/", 1)[1]]
    types = set()
    for alt in prop.get("anyOf", []) + prop.get("oneOf", []):
        types |= allowed_types(alt, defs)
    t = prop.get("type")
    types |= set(t if isinstance(t, list) else [t] if t else [])
    if "integer" in types:
        types.add("number")
    return types


def resolve(prop, defs):
    return defs[prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else prop


def walk(value, prop, defs, path):
    """(path, field text, value, schema of it, required?) of every field."""
    prop = resolve(prop, defs)
    if isinstance(value, dict) and "properties" in prop:
        for key, sub in value.items():
            if key in prop["properties"]:
                here = path + [key]
                yield here, field_text(here), sub, prop["properties"][key], key in prop.get("required", [])
                yield from walk(sub, prop["properties"][key], defs, here)
    elif isinstance(value, list) and "items" in prop:
        for i, sub in enumerate(value):
            yield from walk(sub, prop["items"], defs, path + [i])


def field_text(path):
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def set_at(doc, path, value=None, delete=False):
    target = doc
    for p in path[:-1]:
        target = target[p]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def json_type(v):
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            int: "number", float: "number"}[type(v)]


WRONG_VALUES = [{"x": 1}, [1], 42, "x", True]


def mutation_cases():
    """Generated from the schema over every native fixture bundle: each
    required field deleted, each field given a type the schema does not
    allow, numbers too big, names too long; and text mutations: duplicate
    keys, truncations, BOMs, NUL, other encodings."""
    s = schema()
    defs = s["$defs"]
    fixtures = PROJECT / "tests" / "fixtures" / "bundles"
    cases = []
    for fixture in ["native-seed000", "pair/native", "plain-replication/native"]:
        src = fixtures / fixture
        doc = json.loads((src / "pod.json").read_text())
        tag = fixture.replace("/", "-")
        muts = []
        for path, text, value, prop, required in walk(doc, s, defs, []):
            if required:
                muts.append((f"delete {text}", "delete", path, None, [path[-1]]))
            allowed = allowed_types(prop, defs)
            wrong = next(v for v in WRONG_VALUES if json_type(v) not in allowed)
            if allowed:
                muts.append((f"{text} as {json_type(wrong)}", "set", path, wrong, [text]))
            if "number" in allowed and text.split(".")[-1] == "replication" or \
                    (text.startswith("ports.") and isinstance(value, int)):
                for big in (2 ** 64, 1e300, 10 ** 6):
                    muts.append((f"{text} = {show(big)}", "set", path, big, [text]))
        muts += [
            ("name 65 long", "set", ["name"], "a" * 65, ["name"]),
            ("name 900k long", "set", ["name"], "a" * 900_000, ["name"]),
            ("name with NUL", "set", ["name"], "a\x00b", ["name"]),
            ("name with escape", "set", ["name"], "a\x1b[2Jb", ["name"]),
            ("name unicode", "set", ["name"], "ünï", ["name"]),
            ("version 1e300", "set", ["version"], 1e300, ["version"]),
            ("version -1", "set", ["version"], -1, ["version"]),
            ("unit file ../ out", "set", ["containers", 0, "systemd", "unit-files", 0],
             "../../../etc/systemd/system/x.service", ["containers[0].systemd.unit-files[0]"]),
            ("unit file name 300 long", "set", ["containers", 0, "systemd", "unit-files", 0],
             "u" * 300 + ".service", ["containers[0].systemd.unit-files[0]"]),
            ("environment key reserved", "set", ["environment"], {"PORT_X": "v"}, ["environment"]),
            ("environment value with NUL", "set", ["environment"], {"K": "a\x00b"}, ["environment"]),
        ]
        for label, how, path, value, fragments in muts:
            mutated = json.loads(json.dumps(doc))
            set_at(mutated, path, value, delete=(how == "delete"))
            cases.append(mutated_case(src, f"{tag}: {label}", json.dumps(mutated, indent=1).encode(),
                                      fragments))
        text = (src / "pod.json").read_bytes()
        name_at = text.index(b'"name"')
        version_at = text.index(b'"version"')
        raw = [
            ("duplicate key name", text[:name_at] + b'"name": "other", ' + text[name_at:], ["name", "duplicate"]),
            ("duplicate key version", text[:version_at] + b'"version": "7", ' + text[version_at:],
             ["version", "duplicate"]),
            ("truncated to 1 byte", text[:1], ["not valid JSON"]),
            ("truncated at half", text[: len(text) // 2], ["not valid JSON"]),
            ("truncated by 1 byte", text.rstrip()[:-1], ["not valid JSON"]),
            ("empty", b"", ["not valid JSON"]),
            ("UTF-8 BOM", b"\xef\xbb\xbf" + text, ["byte order mark"]),
            ("UTF-16", text.decode().encode("utf-16"), ["UTF-16"]),
            ("NUL bytes appended", text + b"\x00" * 16, ["not valid JSON"]),
            ("trailing garbage", text + b"{}", ["not valid JSON"]),
            ("invalid UTF-8 in a string", text.replace(b'"name": "', b'"name": "\xff', 1), ["not valid JSON"]),
        ]
        for label, data, fragments in raw:
            cases.append(mutated_case(src, f"{tag}: {label}", data, fragments))
    return cases


def mutated_case(src, label, pod_json, fragments):
    d = WORK / "bundles" / re.sub(r"[^a-zA-Z0-9.-]+", "_", label)
    shutil.copytree(src, d)
    (d / "pod.json").write_bytes(pod_json)
    return Case("bundles", f"mutation {label}", "ops_pod",
                {"bundle": str(d), "port_range": PORT_RANGE}, [str(d / "pod.json"), *fragments], watch=[d])


def next_version_bundle(label, image=None):
    """A copy of the good bundle as version 2, its image one the store does
    not hold (so every file of it is read)."""
    d = WORK / "v2" / re.sub(r"[^a-zA-Z0-9.-]+", "_", label)
    image = image or FIX["aci"]
    pod = good_pod("2", image)
    return write_bundle(d, pod, image["path"]), pod


def special(path, kind):
    """Put a special file (or a link to one) at path."""
    if path.exists() or path.is_symlink():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse 1 GB":
        with open(path, "wb") as f:
            f.truncate(1 << 30)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "device":
        os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    else:  # a symlink
        os.symlink({"link to /dev/zero": "/dev/zero", "link to /etc/passwd": "/etc/passwd",
                    "dangling link": "/nonexistent/x", "link loop": path.name,
                    "link to /proc": "/proc/self/status"}[kind], path)


# What a file of the bundle (not pod.json) is refused as.
BUNDLE_WORDS = {
    "fifo": "is not a regular file", "socket": "is not a regular file", "device": "is not a regular file",
    "directory": "is not a regular file", "link to /dev/zero": "outside the bundle",
    "link to /proc": "outside the bundle", "link to /etc/passwd": "outside the bundle",
    "dangling link": "no such file", "link loop": "",
}

SPECIAL_WORDS = {
    "fifo": "FIFO", "socket": "socket", "directory": "directory", "sparse 1 GB": "larger than",
    "device": "device", "link to /dev/zero": "device", "link to /proc": "kernel",
    "dangling link": "No such file", "link loop": "symbolic links",
}


def special_file_cases():
    cases = []
    for kind in ["fifo", "socket", "directory", "sparse 1 GB", "device", "link to /dev/zero",
                 "link to /proc", "dangling link", "link loop", "link to /etc/passwd", "empty"]:
        for what, rel in [("pod.json", "pod.json"), ("unit file", "units/web.service"),
                          ("image file", "images/web.aci"), ("volume data", "data.tar")]:
            if what == "pod.json" and kind == "directory":
                continue  # a bundle path naming a directory reads its pod.json
            if kind == "empty" and what in ("unit file", "volume data"):
                continue  # an empty unit or an empty archive is no error of itself
            d, _ = next_version_bundle(f"{kind} as {what}")
            special(d / rel, kind)
            word = SPECIAL_WORDS.get(kind) if what == "pod.json" else BUNDLE_WORDS.get(kind)
            if kind == "link to /etc/passwd" and what == "pod.json":
                word = "not valid JSON"
            if kind == "empty":
                word = {"pod.json": "not valid JSON"}.get(what, "")
            cases.append(Case("bundles", f"{kind} as {what}", "ops_pod",
                              {"bundle": str(d), "port_range": PORT_RANGE},
                              [rel.split("/")[-1]] + ([word] if word else []), watch=[d]))
    return cases


def bundle_image_cases():
    """Version 2 bundles whose image is wrong: ops_pod refuses them and the
    host keeps version 1 as it was."""
    cases = []
    d, pod = next_version_bundle("wrong image id")
    pod["images"][0]["id"] = pod["containers"][0]["image"] = "sha512-" + "0" * 128
    (d / "pod.json").write_text(json.dumps(pod))
    cases.append(Case("bundles", "image id is not the file's", "ops_pod",
                      {"bundle": str(d), "port_range": PORT_RANGE}, ["web.aci", "is not image"], watch=[d]))
    d, _ = next_version_bundle("truncated image", FIX["aci-truncated"])
    cases.append(Case("bundles", "image file truncated", "ops_pod",
                      {"bundle": str(d), "port_range": PORT_RANGE}, ["web.aci", "ends early"], watch=[d]))
    d, pod = next_version_bundle("stranger signature")
    shutil.copy(WORK / "aci.by-stranger.asc", d / "images" / "web.aci.asc")
    pod["images"][0]["signature"] = "images/web.aci.asc"
    (d / "pod.json").write_text(json.dumps(pod))
    cases.append(Case("bundles", "image signed by a stranger", "ops_pod",
                      {"bundle": str(d), "port_range": PORT_RANGE, "keyring": str(WORK / "release.asc")},
                      ["web.aci", "does not verify"], watch=[d]))
    d, _ = next_version_bundle("unsigned, required")
    cases.append(Case("bundles", "image unsigned, signature required", "ops_pod",
                      {"bundle": str(d), "port_range": PORT_RANGE, "keyring": str(WORK / "release.asc"),
                       "require_signature": True}, ["require_signature"], watch=[d]))
    return cases


def instruction_cases():
    cases = []
    for label, data, fragment in [
            ("not YAML", b"{: [", "instructions"), ("a list", b"- a\n- b\n", "instructions"),
            ("unknown key", b"bundle: x\nchannel: stable\nbogus: 1\n", "bogus"),
            ("bundle ../ out", b"bundle: ../../../../etc\nchannel: stable\n", "bundle"),
            ("empty", b"", "instructions"), ("invalid UTF-8", b"bundle: \xff\xfe\n", "instructions")]:
        path = WORK / "instructions" / (re.sub(r"\W+", "_", label) + ".yml")
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        cases.append(Case("bundles", f"instructions {label}", "ops_release",
                          {"repo": str(REPO), "instructions": str(path)}, [fragment], watch=[path]))
    for kind in ["fifo", "sparse 1 GB", "link to /dev/zero", "directory"]:
        path = WORK / "instructions" / re.sub(r"\W+", "_", kind)
        special(path, kind)
        cases.append(Case("bundles", f"instructions {kind}", "ops_release",
                          {"repo": str(REPO), "instructions": str(path)}, [path.name, SPECIAL_WORDS[kind]]))
    return cases


# --------------------------------------------------------------------------
# Images: wrong ids, truncations, corruption, special files, signatures


def image_cases():
    cases = []
    aci, oci = FIX["aci"], FIX["oci-layers"]
    d = WORK / "image-inputs"
    d.mkdir()

    def case(name, args, *fragments, any_of=(), **kw):
        cases.append(Case("images", name, "ops_image", args, list(fragments), any_of=list(any_of), **kw))

    def file(name, data):
        (d / name).write_bytes(data)
        return str(d / name)

    zeros512 = "sha512-" + "0" * 128
    case("ACI under a wrong id", {"id": zeros512, "path": str(aci["path"])}, "is not image", zeros512)
    case("OCI under a wrong id", {"id": "sha256:" + "0" * 64, "path": str(oci["path"])}, "is not image")
    case("ACI under the OCI's id", {"id": oci["id"], "path": str(aci["path"])}, str(aci["path"]))
    case("OCI under the ACI's id", {"id": aci["id"], "path": str(oci["path"])}, str(oci["path"]))
    case("ACI under a short id prefix of another", {"id": "sha512-" + "1" * 32, "path": str(aci["path"])},
         "is not image")
    for label, bad_id in [("sha384", "sha384:" + "0" * 96), ("upper-case hex", "sha512-" + "A" * 128),
                          ("31 digits", "sha512-" + "a" * 31), ("sha256 dash", "sha256-" + "a" * 64),
                          ("path in id", "sha512-../../etc"), ("empty", "")]:
        case(f"id {label}", {"id": bad_id, "path": str(aci["path"])}, "id: expected")
    # Truncations, generated: the ACI at every interesting offset, the
    # compressed ones, the layered OCI at each tenth.
    data = aci["path"].read_bytes()
    busy_at, busy_size = image_fixtures.data_offset(data, "rootfs/bin/busybox")
    for cut in sorted({0, 1, 511, 512, 1024, busy_at, busy_at + busy_size // 2,
                       len(data) - 1024 - 1}):
        path = file(f"aci-cut-{cut}.aci", data[:cut])
        case(f"ACI truncated at {cut} of {len(data)}", {"id": aci["id"], "path": path}, path,
             any_of=["ends early", "is not", "empty", "not an image", "not a tar archive"])
    for name in ("aci-gz", "aci-xz", "aci-bz2"):
        packed = FIX[name]["path"].read_bytes()
        for frac in (0.1, 0.5, 0.99):
            cut = int(len(packed) * frac)
            path = file(f"{name}-cut-{cut}", packed[:cut])
            case(f"{name} truncated at {cut} of {len(packed)}", {"id": aci["id"], "path": path}, path,
                 any_of=["ends early", "is not", "truncated", "corrupt", "unexpected end", "damaged",
                     "EOF reached"])
    layers = oci["path"].read_bytes()
    for tenth in (1, 3, 5, 7, 9):
        cut = len(layers) * tenth // 10
        path = file(f"oci-cut-{tenth}", layers[:cut])
        case(f"OCI truncated at {tenth}/10", {"id": oci["id"], "path": path}, path,
             any_of=["ends early", "is not", "corrupt", "lacks", "missing", "no "])
    for name, fragment in [("aci-corrupt", "is not image"), ("oci-bad-layer", "is corrupt"),
                           ("not-an-image", "is not an image")]:
        case(f"broken fixture {name}", {"id": FIX[name]["id"], "path": str(FIX[name]["path"])},
             str(FIX[name]["path"]), fragment)
    case("random bytes", {"id": aci["id"], "path": file("random", os.urandom(65536))}, "random")
    case("zeros", {"id": aci["id"], "path": file("zeros", bytes(1 << 20))}, "zeros")
    case("gzip of random bytes", {"id": aci["id"], "path": file("random.gz", gzip.compress(os.urandom(4096)))},
         "random.gz")
    case("pod.json as image", {"id": aci["id"], "path": str(GOOD / "pod.json")}, "pod.json")
    for kind in ["fifo", "directory", "device", "link to /dev/zero", "link to /proc", "dangling link",
                 "link loop", "empty"]:
        path = d / re.sub(r"\W+", "_", kind)
        special(path, kind)
        case(f"image file is {kind}", {"id": aci["id"], "path": str(path)}, path.name,
             any_of=[SPECIAL_WORDS.get(kind, "ends early"), "empty", "not an image", "ends early"])
    case("image file missing", {"id": aci["id"], "path": "/nonexistent/x.aci"}, "/nonexistent/x.aci")
    for label, uri, fragment in [("ftp", "ftp://example.com/x.aci", "uri"),
                                 ("no scheme", "example.com/x.aci", "uri"),
                                 ("unclosed IPv6", "http://[::1/x", "http://[::1/x"),
                                 ("refused", f"http://127.0.0.1:{DEAD_PORT}/x.aci", "127.0.0.1"),
                                 ("file missing", "file:///nonexistent/x.aci", "/nonexistent/x.aci"),
                                 ("NUL", "http://127.0.0.1/\x00", "uri")]:
        case(f"uri {label}", {"id": aci["id"], "uri": uri}, fragment)
    case("uri credentials hidden", {"id": aci["id"], "uri": f"http://me:s3cret@127.0.0.1:{DEAD_PORT}/x"},
         "127.0.0.1", hidden=["s3cret"])
    signature_cases(case, file)
    case("absent: a bad id", {"id": "sha512-zz", "state": "absent"}, "id")
    case("absent: used by the pod", {"id": FIX["aci-hardlinks"]["id"], "state": "absent"}, "used by")
    return cases


def signature_cases(case, file):
    oci = FIX["oci-layers"]
    image = oci["path"]
    release, stranger = str(WORK / "release.asc"), str(WORK / "stranger.asc")
    by_release = WORK / "oci.by-release.asc"
    gpg(WORK / "gnupg-release", "--armor", "--detach-sign", "--output", str(by_release), str(image))
    gpg(WORK / "gnupg-stranger", "--armor", "--detach-sign", "--output", str(WORK / "oci.by-stranger.asc"),
        str(image))
    for who in ("release", "stranger"):
        subprocess.run(["gpgconf", "--homedir", str(WORK / f"gnupg-{who}"), "--kill", "all"],
                       capture_output=True)
    base = {"id": oci["id"], "path": str(image)}
    case("signature by a stranger", {**base, "signature": str(WORK / "oci.by-stranger.asc"),
                                     "keyring": release}, "does not verify")
    case("signature of another file", {**base, "signature": str(WORK / "aci.by-release.asc"),
                                       "keyring": release}, "does not verify")
    case("keyring of a stranger", {**base, "signature": str(by_release), "keyring": stranger},
         "does not verify")
    case("signature is garbage", {**base, "signature": file("garbage.asc", b"-----BEGIN PGP SIGNATURE-----\nxx\n"),
                                  "keyring": release}, "garbage.asc")
    case("signature is empty", {**base, "signature": file("empty.asc", b""), "keyring": release}, "empty.asc")
    case("signature is random bytes", {**base, "signature": file("random.sig", os.urandom(300)),
                                       "keyring": release}, "random.sig")
    case("signature missing", {**base, "signature": "/nonexistent/x.asc", "keyring": release}, "x.asc")
    for kind in ("fifo", "directory", "link to /dev/zero"):
        path = WORK / "image-inputs" / ("sig-" + re.sub(r"\W+", "_", kind))
        special(path, kind)
        case(f"signature is {kind}", {**base, "signature": str(path), "keyring": release}, path.name)
        kpath = WORK / "image-inputs" / ("keyring-" + re.sub(r"\W+", "_", kind))
        special(kpath, kind)
        case(f"keyring is {kind}", {**base, "signature": str(by_release), "keyring": str(kpath)}, kpath.name)
    case("keyring is garbage", {**base, "signature": str(by_release),
                                "keyring": file("garbage.keyring", b"not a key\n")}, "garbage.keyring")
    case("keyring is empty", {**base, "signature": str(by_release), "keyring": file("empty.keyring", b"")},
         "empty.keyring")
    case("keyring missing", {**base, "signature": str(by_release), "keyring": "/nonexistent/k.asc"},
         "k.asc")
    case("signature without a keyring", {**base, "signature": str(by_release)}, "no keyring")
    case("signature required, none given", {**base, "keyring": release, "require_signature": True},
         "require_signature")
    case("signature URI refused", {**base, "signature": f"http://127.0.0.1:{DEAD_PORT}/x.asc",
                                   "keyring": release}, "127.0.0.1")


# --------------------------------------------------------------------------


def all_cases():
    # Images first: a bundle case that wrongly succeeded would import
    # the image the image cases need absent.
    cases = argument_cases() + hand_written_argument_cases() + image_cases()
    cases += corpus_cases() + mutation_cases() + special_file_cases() + bundle_image_cases()
    cases += instruction_cases()
    names = [f"{c.group}: {c.name}" for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise AssertionError(f"duplicate case names: {sorted(duplicates)[:5]}")
    return cases


def set_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def main(argv):
    only = [a for a in argv[1:] if a != "--list"]
    began = time.monotonic()
    setup()
    cases = all_cases()
    for who in ("release", "stranger"):
        subprocess.run(["gpgconf", "--homedir", str(WORK / f"gnupg-{who}"), "--kill", "all"],
                       capture_output=True)
    time.sleep(0.5)
    set_subreaper()
    for leftover in my_children():
        raise AssertionError(f"setup left a process: {leftover}")
    if only:
        cases = [c for c in cases if any(o in f"{c.group}: {c.name}" for o in only)]
    if "--list" in argv:
        for c in cases:
            print(f"{c.group}: {c.name}")
        return 0
    failures = 0
    wrong = controls()
    print(f"{'FAIL' if wrong else 'PASS'} controls: each base request succeeds and changes nothing")
    for w in wrong:
        print(f"    {w}")
    failures += bool(wrong)
    counts, spent, worst_time, worst_rss, times = {}, {}, (0, ""), (0, ""), []
    host = host_state()
    for c in cases:
        wrong, seconds, rss, host = check(c, host)
        name = f"{c.group}: {c.name}"
        counts[c.group] = counts.get(c.group, 0) + 1
        spent[c.group] = spent.get(c.group, 0) + seconds
        worst_time = max(worst_time, (seconds, name))
        times.append((seconds, name))
        worst_rss = max(worst_rss, (rss, name))
        print(f"{'FAIL' if wrong else 'PASS'} {name}".replace("\n", "\\n").replace("\x00", "\\0"))
        for w in wrong:
            print(f"    {w}".replace("\x00", "\\0"))
        failures += bool(wrong)
    page = fetch(PORT)
    still = "hello from the aci image" in page
    print(f"{'PASS' if still else 'FAIL'} the pod still serves its page after every case")
    failures += not still
    print(f"FIGURE bad inputs (args, bundles, images): {len(cases)} "
          f"({counts.get('args', 0)} args, {counts.get('bundles', 0)} bundles, {counts.get('images', 0)} images)")
    print(f"FIGURE slowest case: {worst_time[0]:.2f} s ({worst_time[1][:80]}); bound {WALL_SECONDS} s")
    print(f"FIGURE largest peak RSS: {worst_rss[0] >> 20} MiB ({worst_rss[1][:80]}); bound {MAX_RSS >> 20} MiB"
          f" resident, {ADDRESS_SPACE >> 20} MiB address space")
    print("FIGURE module run time by group: " + ", ".join(f"{g} {t:.0f} s" for g, t in spent.items()))
    for seconds, name in sorted(times, reverse=True)[:5]:
        print(f"    slow: {seconds:.2f} s {name[:80]}")
    print(f"FIGURE bad-input wall time: {time.monotonic() - began:.0f} s, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
