"""Each module's documentation (collection/plugins/modules/<module>.py)
names exactly the options its binary accepts, and says which it
returns: the binary is asked by an unknown option (it answers with the
list of the parameters it supports, as Ansible's modules do) and the
documentation's YAML is read. Exit status 0 when they agree."""

import json
import re
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

MODULES = Path(__file__).resolve().parents[2] / "collection" / "plugins" / "modules"


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


def main():
    problems = []
    for doc in sorted(MODULES.glob("ops_*.py")):
        name = doc.stem
        text = runpy.run_path(str(doc))
        documentation = yaml.safe_load(text["DOCUMENTATION"])
        yaml.safe_load(text["EXAMPLES"])
        yaml.safe_load(text["RETURN"])
        documented = sorted(documentation.get("options", {}))
        accepted = supported(MODULES / name)
        if documented != accepted:
            problems.append(f"{name}: documented {documented}, the binary accepts {accepted}")
        if documentation.get("module") != name:
            problems.append(f"{name}: DOCUMENTATION says module {documentation.get('module')!r}")
    for binary in sorted(p for p in MODULES.glob("ops_*") if not p.suffix):
        if not (MODULES / f"{binary.name}.py").exists():
            problems.append(f"{binary.name}: no documentation beside the binary")
    if problems:
        print("\n".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
