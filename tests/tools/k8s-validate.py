#!/usr/bin/env python3
"""Validate Kubernetes manifests offline, as the API server's schemas would.

Usage: k8s-validate.py [--kubernetes-version 1.33.0] PATH...

Every YAML document in the given files (directories: every *.yaml in them,
sorted) is checked:

- built-in kinds against the Kubernetes OpenAPI schemas bundled with the
  `kubernetes-validate` package, in strict mode (unknown fields rejected);
- VerticalPodAutoscaler against VPA_SCHEMA below, the fields of the
  autoscaling.k8s.io/v1 CRD that stackc emits (kubernetes-validate has no
  CRD schemas), also rejecting unknown fields;
- for every document: a name that is a DNS label or subdomain, label keys
  and values of valid syntax, annotation keys of valid syntax.

Prints one line per failure and exits 1 if any, else prints a summary.
Exit status 2 means the validator itself is missing (kubernetes-validate,
jsonschema or PyYAML not importable).
"""

import argparse
import os
import re
import sys

try:
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - reported to the caller
    print(f"k8s-validate: missing Python package: {e}", file=sys.stderr)
    sys.exit(2)

QUANTITY = {
    "type": "string",
    "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$",
}
RESOURCES = {
    "type": "object",
    "properties": {"cpu": QUANTITY, "memory": QUANTITY},
    "additionalProperties": False,
}
# The VPA CRD (autoscaling.k8s.io/v1, kubernetes/autoscaler
# vertical-pod-autoscaler/deploy/vpa-v1-crd-gen.yaml), restricted to the
# fields stackc writes; unknown fields are errors.
VPA_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "autoscaling.k8s.io/v1"},
        "kind": {"const": "VerticalPodAutoscaler"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["targetRef"],
            "additionalProperties": False,
            "properties": {
                "targetRef": {
                    "type": "object",
                    "required": ["kind", "name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string", "enum": ["Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job", "CronJob", "ReplicationController"]},
                        "name": {"type": "string", "minLength": 1},
                    },
                },
                "updatePolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "updateMode": {"type": "string", "enum": ["Off", "Initial", "Recreate", "InPlaceOrRecreate", "Auto"]},
                        "minReplicas": {"type": "integer", "minimum": 1},
                    },
                },
                "resourcePolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "containerPolicies": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "containerName": {"type": "string", "minLength": 1},
                                    "mode": {"type": "string", "enum": ["Auto", "Off"]},
                                    "minAllowed": RESOURCES,
                                    "maxAllowed": RESOURCES,
                                    "controlledResources": {
                                        "type": "array",
                                        "items": {"type": "string", "enum": ["cpu", "memory"]},
                                    },
                                    "controlledValues": {"type": "string", "enum": ["RequestsAndLimits", "RequestsOnly"]},
                                },
                            },
                        }
                    },
                },
            },
        },
    },
}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Kinds whose name must be a DNS label (RFC 1123; Services RFC 1035).
LABEL_NAMED = {"Namespace", "Service", "Deployment", "StatefulSet", "CronJob"}


def key_ok(k):
    prefix, _, name = k.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(KEY_NAME.match(name))


def semantic(doc):
    errors = []
    meta = doc.get("metadata") or {}
    name = meta.get("name", "")
    kind = doc.get("kind")
    if kind in LABEL_NAMED:
        if len(name) > 63 or not DNS_LABEL.match(name):
            errors.append(f"name {name!r} is not a DNS label")
        if kind == "Service" and name[:1].isdigit():
            errors.append(f"Service name {name!r} starts with a digit")
    elif len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        errors.append(f"name {name!r} is not a DNS subdomain")

    def labels(where, m):
        for k, v in (m or {}).items():
            if not key_ok(k):
                errors.append(f"{where}: label key {k!r} is invalid")
            if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
                errors.append(f"{where}: label value {v!r} of {k!r} is invalid")

    def annotations(where, m):
        for k in (m or {}):
            if not key_ok(k):
                errors.append(f"{where}: annotation key {k!r} is invalid")

    labels("metadata.labels", meta.get("labels"))
    annotations("metadata.annotations", meta.get("annotations"))
    spec = doc.get("spec") or {}
    templates = []
    if kind in ("Deployment", "StatefulSet"):
        templates.append(spec.get("template") or {})
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        tl = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        for k, v in sel.items():
            if tl.get(k) != v:
                errors.append(f"selector {k}={v} does not match the pod template labels")
    if kind == "CronJob":
        templates.append(((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {})
    for t in templates:
        tm = t.get("metadata") or {}
        labels("template labels", tm.get("labels"))
        annotations("template annotations", tm.get("annotations"))
        pod = t.get("spec") or {}
        names = [c.get("name") for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])]
        if len(names) != len(set(names)):
            errors.append(f"duplicate container names {names}")
        ports = [p.get("name") for c in pod.get("containers") or [] for p in c.get("ports") or [] if p.get("name")]
        if len(ports) != len(set(ports)):
            errors.append(f"duplicate port names {ports}")
        for p in ports:
            if len(p) > 15:
                errors.append(f"port name {p!r} is longer than 15 characters")
        vols = {v.get("name") for v in pod.get("volumes") or []}
        vols |= {c.get("metadata", {}).get("name") for c in spec.get("volumeClaimTemplates") or []}
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in vols:
                    errors.append(f"container {c.get('name')} mounts unknown volume {m.get('name')}")
    return errors


def documents(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files.extend(os.path.join(root, n) for n in names if n.endswith((".yaml", ".yml")))
        else:
            files.append(p)
    for f in sorted(files):
        with open(f, encoding="utf-8") as fh:
            for i, doc in enumerate(yaml.safe_load_all(fh)):
                if doc is not None:
                    yield f, i, doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes-version", default="1.33.0")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    failures = 0
    count = 0
    kinds = {}
    vpa = jsonschema.Draft7Validator(VPA_SCHEMA)
    for f, i, doc in documents(args.paths):
        count += 1
        kind = doc.get("kind", "?")
        kinds[kind] = kinds.get(kind, 0) + 1
        where = f"{f}#{i} {kind}/{(doc.get('metadata') or {}).get('name', '?')}"
        errors = []
        if kind == "VerticalPodAutoscaler":
            errors.extend(
                f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
                for e in vpa.iter_errors(doc)
            )
        else:
            try:
                kubernetes_validate.validate(doc, args.kubernetes_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{'.'.join(str(p) for p in e.path)}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(e.message)
        errors.extend(semantic(doc))
        for e in errors:
            print(f"FAIL {where}: {e}")
            failures += 1
    if count == 0:
        print("FAIL no documents found")
        return 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    print(f"{'FAILED' if failures else 'ok'}: {count} documents ({summary}), {failures} failure(s), Kubernetes {args.kubernetes_version}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
