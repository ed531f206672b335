"""Named deployments against a real systemd (seed 004): one bundle rolled
out as `myapp-staging` and `myapp-production` on one host, one scenario per
call, run inside the sandbox (tests/systemd/sandbox) by
test-deployments.sh.

    python3 deployment_scenarios.py SCENARIO

The bundle's service is busybox httpd on its default PORT (the pod names
no port), serving a page it writes from its environment: POD_NAME,
POD_BUNDLE, POD_VERSION and the deployment's own STAGE (a secret `env`).
So every assertion about a deployment is checked by asking its service.
Exit status 0 means every assertion held.
"""

import json
import subprocess
import sys
from pathlib import Path

import scenario_kit as kit
from scenario_kit import expect, failed, ok, page, snapshot

ROOT = Path("/var/lib/ops")
UNIT_DIR = Path("/etc/systemd/system")

WEB = """[Unit]
Description=web of myapp

[Service]
ExecStartPre=/bin/sh -c 'mkdir -p {www}/%n && echo "$POD_NAME $POD_BUNDLE $POD_VERSION $STAGE PORT=$PORT" > {www}/%n/index.html'
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:${{PORT}} -h {www}/%n
"""

BROKEN = """[Service]
ExecStart=/bin/sh -c 'echo "myapp cannot start" >&2; exit 1'
"""


def bundle(version, web=None):
    """Bundle myapp at `version`: a plain web.service, no ports declared."""
    d = kit.WORK / f"myapp-{version}-{'broken' if web else 'ok'}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "web.service").write_text(web or WEB.format(www=kit.WORK / "www"))
    pod = {"name": "myapp", "version": version,
           "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}]}
    (d / "pod.json").write_text(json.dumps(pod, indent=2))
    return d


def ops_pod(**args):
    args.setdefault("start_timeout", 20)
    return kit.module("ops_pod", **args)


def deploy(name, version, stage, **args):
    return ops_pod(bundle=bundle(version, args.pop("web", None)), name=name,
                   env={"STAGE": stage}, **args)



def port_of(result):
    ports = result["ports"]
    expect(len(ports) == 1 and ports[0]["kind"] == "default" and ports[0]["name"] is None,
           "one default port", result)
    return ports[0]["port"]


def serves(port, name, version, stage):
    want = f"{name} myapp {version} {stage} PORT={port}"
    got = page(port)
    expect(got == want, f"port {port} serves {want!r}, got {got!r}")


def active(unit):
    return subprocess.run(["systemctl", "is-active", "--quiet", unit]).returncode == 0


def side_by_side_with_independent_rollbacks_and_removal():
    staging = ok(deploy("myapp-staging", "1", "staging"), True)
    production = ok(deploy("myapp-production", "1", "production"), True)
    s_port, p_port = port_of(staging), port_of(production)
    expect(s_port != p_port, "each deployment has its own port")
    serves(s_port, "myapp-staging", "1", "staging")
    serves(p_port, "myapp-production", "1", "production")
    for r, name in [(staging, "myapp-staging"), (production, "myapp-production")]:
        expect(r["pod"]["bundle_name"] == "myapp", f"{name} came from myapp", r)
        expect(r["pod"]["target"] == f"ops-{name}.target", "a target of its own", r)
        expect(active(f"{name}-1-web.service"), f"{name}'s unit runs")
    facts = kit.module("ops_facts")["ansible_facts"]["ops"]["pods"]
    expect(sorted(facts) == ["myapp-production", "myapp-staging"], "facts show both", facts)
    expect(facts["myapp-staging"]["versions"]["1"]["bundle_name"] == "myapp", "per version", facts)

    # Staging gets version 2; it comes up; production is untouched.
    production_store = snapshot(ROOT / "pods/myapp-production")
    production_units = snapshot(*UNIT_DIR.glob("myapp-production-*"))
    ok(deploy("myapp-staging", "2", "staging"), True)
    serves(s_port, "myapp-staging", "2", "staging")
    serves(p_port, "myapp-production", "1", "production")

    # Version 3 of staging does not come up: rolled back to 2, production
    # still untouched.
    bad = failed(deploy("myapp-staging", "3", "staging", web=BROKEN), "rolled back to version 2")
    expect(bad["current"] == "2", "staging is back on 2", bad)
    serves(s_port, "myapp-staging", "2", "staging")
    serves(p_port, "myapp-production", "1", "production")

    # Staging rolled back by name and version to 1.
    back = ok(ops_pod(name="myapp-staging", version="1"), True)
    expect(back["current"] == "1" and back["previous"] == "2", "staging on 1", back)
    serves(s_port, "myapp-staging", "1", "staging")
    expect(snapshot(ROOT / "pods/myapp-production") == production_store,
           "production's store is as it was")
    expect(snapshot(*UNIT_DIR.glob("myapp-production-*")) == production_units,
           "production's units are as they were")

    # A rerun of each changes nothing.
    ok(ops_pod(name="myapp-staging", version="1"), False)
    ok(deploy("myapp-production", "1", "production"), False)

    # Removing staging leaves production running.
    gone = ok(ops_pod(name="myapp-staging", state="absent"), True)
    expect(gone["pod"] is None, "staging is gone", gone)
    expect(not (ROOT / "pods/myapp-staging").exists(), "its store entry is gone")
    expect(not list(UNIT_DIR.glob("myapp-staging-*")) and
           not (UNIT_DIR / "ops-myapp-staging.target").exists(), "its units are gone")
    expect(active("myapp-production-1-web.service"), "production still runs")
    serves(p_port, "myapp-production", "1", "production")
    ok(ops_pod(name="myapp-staging", state="absent"), False)


def another_bundle_under_a_deployment_name_is_refused():
    ok(deploy("myapp-staging", "1", "staging"), True)
    before = snapshot(ROOT, UNIT_DIR)
    other = kit.WORK / "other-2"
    other.mkdir(parents=True, exist_ok=True)
    (other / "web.service").write_text(WEB.format(www=kit.WORK / "www"))
    (other / "pod.json").write_text(json.dumps({
        "name": "other", "version": "2",
        "containers": [{"name": "web", "systemd": {"unit-files": ["web.service"]}}]}))
    failed(ops_pod(bundle=other, name="myapp-staging"),
           "pod myapp-staging is a deployment of bundle myapp (versions 1), not of bundle other")
    failed(ops_pod(bundle=other, name="x", bundle_name="myapp"),
           "the bundle is pod other but bundle_name is myapp")
    expect(snapshot(ROOT, UNIT_DIR) == before, "nothing changed")


SCENARIOS = {f.__name__: f for f in [
    side_by_side_with_independent_rollbacks_and_removal,
    another_bundle_under_a_deployment_name_is_refused,
]}

if __name__ == "__main__":
    kit.start("ops-deployment-scenario-")
    kit.run(SCENARIOS, sys.argv[1])
