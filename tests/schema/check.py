"""The published JSON Schemas against the bundle corpus, with a standard
validator (Python's jsonschema, Draft 2020-12).

Every good bundle (tests/fixtures/bundles, playbooks/bundles) validates:
a native pod.json against collection/schemas/pod.schema.json, with and
without a "$schema" key; an Appc manifest's `ops` annotation, decoded,
against collection/schemas/ops-annotation.schema.json. Every bad bundle of
tests/fixtures/bad-bundles is either one whose fault the schema expresses
(it must fail the schema, at the field named here) or one named as beyond
the schema, with why (it must pass the schema: a bundle listed as beyond
that starts failing it belongs in the other list). A bad bundle in neither
list fails the test, so a new one is classified when it is added.

Prints PASS name / FAIL name lines; exits 1 on any FAIL.
"""

import json
import pathlib
import sys

from jsonschema import Draft202012Validator

PROJECT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = PROJECT / "collection" / "schemas"

# Bad bundles the schema refuses, and a field path (JSONPath as jsonschema
# reports it) it refuses them at.
EXPRESSED = {
    "absolute-path": "$.images[0].path",
    "appc-unit-uri": "$.systemd-units[1].unit-file",
    "appc-unknown-annotation-field": "$",
    "appc-unknown-field-and-more": "$.name",
    "bad-digest": "$.images[0].id",
    "bad-instance-list": "$.containers[0].replication",
    "bad-mount-point": "$.volumes[0].path",
    "bad-pod-name": "$.name",
    "bad-ports": "$.ports",
    "bad-unit-name": "$.containers[0].systemd.unit-files[0]",
    "bad-version": "$.version",
    "empty-instance-list": "$.containers[0].replication",
    "environment-unrepresentable": "$.environment",
    "many-problems": "$.volumes[0].name",
    "missing-name": "$",
    "negative-version": "$.version",
    "not-an-object": "$",
    "reserved-environment": "$.environment",
    "short-digest": "$.images[0].id",
    "unit-file-is-a-directory": "$.containers[0].systemd.unit-files[0]",
    "unknown-field": "$",
    "unknown-field-and-more": "$.containers[0].systemd",
    "unknown-field-nested": "$.containers[0].systemd",
    "volume-path-unit-syntax": "$.volumes[0].path",
    "wrong-type": "$.containers[0].replication",
    "zero-instances": "$.containers[0].replication",
}

# Bad bundles beyond what a schema of one JSON document can say.
BEYOND = {
    "appc-annotation-not-json": "the annotation's value is not JSON text (no JSON to validate)",
    "appc-no-ops-annotation": "the Appc manifest itself is the Appc spec's, not ours",
    "appc-unit-image-not-listed": "a cross-reference: a unit's image among the pod's images",
    "appc-unknown-volume": "a cross-reference to the manifest's volumes",
    "appc-unmounted-volume": "a cross-reference to the manifest's mounts",
    "appc-uri-without-scheme-ambiguous": "how a URI without a scheme is read",
    "appc-wrong-kind": "the Appc manifest's acKind is the Appc spec's",
    "bad-uri": "which URI schemes and forms ops reads",
    "both-path-and-uri": "one of path or uri (a null is the same as leaving it out)",
    "duplicate-container": "uniqueness of names across entries",
    "duplicate-unit": "uniqueness of unit names across containers",
    "duplicate-volume": "uniqueness of names across entries",
    "image-without-source-used-by-unit": "a cross-reference: an image a unit uses has a source",
    "malformed-json": "not JSON",
    "neither-path-nor-uri": "an image's source, depending on its use",
    "path-escaping": "a path that leaves the bundle (.. through the files)",
    "replicated-plain-unit-twice": "templates derived from plain units across containers",
    "symlink-escaping": "a symlink that leaves the bundle (the files)",
    "template-without-instances": "a template needs instances from its container",
    "unit-file-missing": "the files of the bundle",
    "unit-image-not-listed": "a cross-reference: a unit's image among the pod's images",
    "uri-credentials-hidden": "which URI schemes ops reads",
}

failures = 0


def check(name, ok, detail=""):
    global failures
    if ok:
        print(f"PASS {name}")
    else:
        failures += 1
        print(f"FAIL {name}{': ' + detail if detail else ''}")


def validator(file):
    schema = json.loads((SCHEMAS / file).read_text())
    Draft202012Validator.check_schema(schema)
    check(f"{file} is a valid Draft 2020-12 schema with an $id", schema.get("$id", "").startswith("urn:ops:"))
    return Draft202012Validator(schema)


POD = validator("pod.schema.json")
ANNOTATION = validator("ops-annotation.schema.json")


def errors(path):
    """The schema errors of a pod.json (of its ops annotation if Appc), or None
    if there is no JSON document to validate."""
    try:
        value = json.loads(path.read_bytes())
    except ValueError:
        return None
    if isinstance(value, dict) and "acKind" in value:
        annotations = [a for a in value.get("annotations", []) if isinstance(a, dict) and a.get("name") == "ops"]
        if not annotations:
            return None
        try:
            value = json.loads(annotations[0]["value"])
        except (ValueError, TypeError, KeyError):
            return None
        return list(ANNOTATION.iter_errors(value))
    return list(POD.iter_errors(value))


good = sorted((PROJECT / "tests" / "fixtures" / "bundles").glob("**/pod.json"))
good += sorted((PROJECT / "playbooks" / "bundles").glob("*/pod.json"))
check("the good corpus is found", len(good) >= 10, str(len(good)))
for path in good:
    name = path.parent.relative_to(PROJECT)
    found = errors(path)
    check(f"good {name} validates", found == [], "; ".join(f"{e.json_path}: {e.message}" for e in found or []))
    value = json.loads(path.read_bytes())
    if "acKind" not in value:
        value["$schema"] = "../collection/schemas/pod.schema.json"
        found = list(POD.iter_errors(value))
        check(f"good {name} with a $schema validates", found == [], "; ".join(e.message for e in found))
        value["$schema"] = 7
        check(f"good {name} with a $schema that is a number fails", list(POD.iter_errors(value)) != [])

# Edge values of every bound and pattern (tests/fixtures/schema-edges.json):
# the schema accepts a pod exactly when ops does (library/tests/bundles.rs
# checks ops' side).
edges = json.loads((PROJECT / "tests" / "fixtures" / "schema-edges.json").read_text())["cases"]
check("the edge values are found", len(edges) >= 10, str(len(edges)))
for edge in edges:
    found = list(POD.iter_errors(edge["pod"]))
    verdict = "validates" if edge["ops"] else "fails"
    check(f"edge {edge['case']} {verdict}", (found == []) == edge["ops"],
          "; ".join(f"{e.json_path}: {e.message[:80]}" for e in found) or "it validates")
# Linux's limit on one variable (NAME=value, 131071 bytes), with a
# one-letter name: too long to keep in the edge file.
for length, ok in [(131069, True), (131070, False)]:
    pod = {"name": "p", "version": 1, "environment": {"A": "x" * length}}
    check(f"edge an environment value of {length} characters {'validates' if ok else 'fails'}",
          (list(POD.iter_errors(pod)) == []) == ok)

bad = sorted(d.name for d in (PROJECT / "tests" / "fixtures" / "bad-bundles").iterdir() if d.is_dir())
check("every bad bundle is classified", set(bad) == set(EXPRESSED) | set(BEYOND),
      f"unclassified {sorted(set(bad) - set(EXPRESSED) - set(BEYOND))}, gone {sorted(set(EXPRESSED) | set(BEYOND) - set(bad))}")
check("no bad bundle is in both lists", not set(EXPRESSED) & set(BEYOND))
for name in bad:
    path = PROJECT / "tests" / "fixtures" / "bad-bundles" / name / "pod.json"
    found = errors(path) if path.is_file() else None
    if name in EXPRESSED:
        at = [e.json_path for e in found or []]
        check(f"bad {name} fails the schema at {EXPRESSED[name]}", EXPRESSED[name] in at, f"errors at {at}")
    elif name in BEYOND:
        check(f"bad {name} is beyond the schema ({BEYOND[name]})", not found,
              "it fails the schema now: move it to EXPRESSED" if found else "")

sys.exit(1 if failures else 0)
