"""Each module's documentation (collection/plugins/modules/<module>.py,
with its doc fragments) names exactly the options its binaries
(collection/bin/<machine>/<module>, every machine built) accept, each has
its action (plugins/action/), and its YAML parses: each binary is asked
by an unknown option (it answers with the list of the parameters it
supports, as Ansible's modules do), and the options are those ansible-doc
renders. Exit status 0 when they agree."""

import json
import re
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

COLLECTION = Path(__file__).resolve().parents[2] / "collection"
MODULES = COLLECTION / "plugins" / "modules"
BINARIES = COLLECTION / "bin"
ACTIONS = COLLECTION / "plugins" / "action"


def supported(binary):
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"no_such_option_here": 1}, f)
        f.flush()
        out = subprocess.run([str(binary), f.name], capture_output=True, text=True).stdout
    msg = json.loads(out)["msg"]
    listed = re.search(r"Supported parameters include: (.*?)\.(?: |$)", msg)
    if not listed:
        raise SystemExit(f"{binary.name}: no list of parameters in {msg!r}")
    return sorted(listed.group(1).split(", "))


def rendered(name):
    """The module's documentation as ansible-doc gives it (the collection
    must be on ANSIBLE_COLLECTIONS_PATH, as tests/ansible/env.sh sets)."""
    ansible_doc = Path(sys.executable).parent / "ansible-doc"
    out = subprocess.run([str(ansible_doc), "--json", f"ops.onboard.{name}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[f"ops.onboard.{name}"]["doc"]


def main():
    problems = []
    for doc in sorted(MODULES.glob("ops_*.py")):
        name = doc.stem
        text = runpy.run_path(str(doc))
        documentation = yaml.safe_load(text["DOCUMENTATION"])
        yaml.safe_load(text["EXAMPLES"])
        yaml.safe_load(text["RETURN"])
        # The options as Ansible renders them: doc fragments merged.
        documented = sorted(rendered(name)["options"])
        binaries = sorted(BINARIES.glob(f"*/{name}"))
        if not binaries:
            problems.append(f"{name}: no binary built in {BINARIES}")
        for binary in binaries:
            accepted = supported(binary)
            if documented != accepted:
                problems.append(f"{name}: documented {documented}, {binary} accepts {accepted}")
        if not (ACTIONS / f"{name}.py").exists():
            problems.append(f"{name}: no action plugin {ACTIONS / name}.py")
        if documentation.get("module") != name:
            problems.append(f"{name}: DOCUMENTATION says module {documentation.get('module')!r}")
    for binary in sorted(BINARIES.glob("*/*")):
        if not (MODULES / f"{binary.name}.py").exists():
            problems.append(f"{binary}: no documentation in {MODULES}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
