"""What every real-component scenario script needs: running a module
binary the way Ansible does, byte-level pictures of directories, and
assertions that say what failed.

Scenario scripts (pod_scenarios.py, ../images/image_scenarios.py) import it;
each sets `kit.WORK` (a scratch directory) when it runs.
"""

import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

PROJECT = Path(os.environ.get("OPS_PROJECT", Path(__file__).resolve().parents[2]))
BIN_DIR = Path(os.environ.get("OPS_BIN_DIR", PROJECT / "target" / "debug"))
# Made when a scenario runs (inside the sandbox), not when this is imported.
WORK = Path("/nonexistent")


def start(prefix):
    """Make the scenario's scratch directory (in /var/tmp: the sandbox's
    /tmp is small) and return it."""
    global WORK
    WORK = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    return WORK


def module(binary, check_mode=False, diff=False, process_env=None, **args):
    """Run an ops module binary as Ansible does; return its parsed result
    (or, if it printed no JSON, what it did print)."""
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    args["_ansible_check_mode"] = check_mode
    args["_ansible_diff"] = diff
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=WORK, delete=False) as f:
        json.dump(args, f)
    proc = subprocess.run([str(BIN_DIR / binary), f.name], capture_output=True, text=True,
                          env={**os.environ, **(process_env or {})})
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"died": True, "returncode": proc.returncode,
                "stdout": proc.stdout, "stderr": proc.stderr}


def snapshot(*paths):
    """Every file (by content digest), symlink and mode under paths."""
    picture = {}
    for top in map(Path, paths):
        if not top.exists():
            continue
        for p in sorted([top, *top.rglob("*")]):
            st = p.lstat()
            if p.is_symlink():
                picture[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                picture[str(p)] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                picture[str(p)] = ("dir", st.st_mode)
    return picture


def page(port):
    """What answers on 127.0.0.1:port, retried while the server starts."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                return r.read().decode().strip()
        except OSError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing answers on port {port}: {e}")
            time.sleep(0.1)


def expect(cond, what, result=None):
    if not cond:
        detail = f"\n  result: {json.dumps(result, indent=2)}" if result is not None else ""
        raise AssertionError(f"{what}{detail}")


def ok(result, changed):
    expect(not result.get("failed") and not result.get("died"),
           f"expected success, got failure: {result.get('msg')}", result)
    expect(result["changed"] is changed, f"expected changed={changed}", result)
    return result


def failed(result, *fragments):
    expect(result.get("failed") is True, "expected a failure", result)
    for fragment in fragments:
        expect(fragment in result["msg"], f"the message says {fragment!r}", result)
    return result


def serve(directory, log=None):
    """A loopback HTTP server for `directory`, in a thread; its base URL.
    `/stall/<file>` sends half of the file, then nothing for 30 s. It
    follows symlinks, as common static servers do. The path of each GET is
    appended to `log` when one is given."""
    directory = Path(directory)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            if log is not None:
                log.append(self.path)
            if self.path.startswith("/stall/"):
                data = (directory / self.path[len("/stall/"):]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                time.sleep(30)
                return
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def run(scenarios, name):
    """Run one scenario: exit 0 when every assertion held, else print the
    first that failed and exit 1."""
    try:
        scenarios[name]()
    except (AssertionError, subprocess.CalledProcessError) as e:
        print(f"{name}: {e}")
        sys.exit(1)
