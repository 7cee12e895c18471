#!/usr/bin/env python3
"""Meaning checks of the ociregistry Helm chart.

Renders the chart with a real helm binary over the values files in
helm/tests/values/ (and a few --set variations), validates every rendered
object against the Kubernetes OpenAPI schemas offline (kubernetes-validate),
and asserts what each value does. Every key of the original chart's values
table (CONTRACT below) must keep its name, type and default and have at least
one passing assertion of its effect.

Prints PASS/FAIL lines and, last, "check.py: N passed, M failed"; exits 1 on
any failure. With --emit-run DIR it also writes, for the server run test, the
container args and the config file of a few renderings (DIR/<name>.args, one
arg a line, and DIR/<name>.config.yaml).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

# The values table of the original chart (its README): key -> (type, default
# as the table prints it). The chart's README table must list each with the
# same type and default.
CONTRACT = {
    "affinity": ("object", "`{}`"),
    "configs": ("object", "See sub-fields"),
    "configs.configPath": ("string", '`""`'),
    "configs.imagePath": ("string", '`""`'),
    "configs.logLevel": ("string", '`"info"`'),
    "configs.port": ("string", "`nil`"),
    "configs.pullTimeout": ("string", '`""`'),
    "fullnameOverride": ("string", '`""`'),
    "image": ("object", "see sub-fields"),
    "image.digest": ("string", "`nil`"),
    "image.pullPolicy": ("string", '`"IfNotPresent"`'),
    "image.registry": ("string", '`"quay.io"`'),
    "image.repository": ("string", '`"appzygy/ociregistry"`'),
    "image.tag": ("string", '`"1.2.0"`'),
    "imagePullSecrets": ("list", "`[]`"),
    "ingress": ("object", "See sub-fields"),
    "nameOverride": ("string", '`""`'),
    "nodeSelector": ("object", "`{}`"),
    "persistence": ("object", "See sub-fields"),
    "persistence.emptyDir": ("object", "See sub-fields"),
    "persistence.emptyDir.enabled": ("bool", "`true`"),
    "persistence.emptyDir.sizeLimit": ("string", '`"2Gi"`'),
    "persistence.hostPath": ("object", "See sub-fields"),
    "persistence.hostPath.enabled": ("bool", "`false`"),
    "persistence.hostPath.path": ("string", '`"/var/lib/ociregistry"`'),
    "persistence.persistentVolumeClaim": ("object", "See sub-fields"),
    "persistence.persistentVolumeClaim.enabled": ("bool", "`false`"),
    "persistence.persistentVolumeClaim.existingClaimName": ("string", '`""`'),
    "persistence.persistentVolumeClaim.newClaimSpec": ("object", "See sub-fields"),
    "persistence.persistentVolumeClaim.newClaimSpec.accessModes": ("list", '`["ReadWriteOnce"]`'),
    "persistence.persistentVolumeClaim.newClaimSpec.resources": ("object", '`{"requests":{"storage":"2Gi"}}`'),
    "persistence.persistentVolumeClaim.newClaimSpec.selector": ("object", "`{}`"),
    "persistence.persistentVolumeClaim.newClaimSpec.storageClassName": ("string", '`""`'),
    "persistence.persistentVolumeClaim.newClaimSpec.volumeMode": ("string", '`"Filesystem"`'),
    "podAnnotations": ("object", "`{}`"),
    "podLabels": ("object", "`{}`"),
    "podSecurityContext": ("object", "`{}`"),
    "resources": ("object", "`{}`"),
    "securityContext": ("object", "`{}`"),
    "service": ("object", "See sub-fields"),
    "serviceAccount": ("object", "See sub-fields"),
    "serviceAccount.annotations": ("object", "`{}`"),
    "serviceAccount.automount": ("bool", "`true`"),
    "serviceAccount.create": ("bool", "`true`"),
    "serviceAccount.name": ("string", '`""`'),
    "tolerations": ("list", "`[]`"),
    "upstreamConfig": ("object", "`{}`"),
    "volumeMounts": ("list", "See sub-fields"),
    "volumeMounts[0]": ("object", '`{"mountPath":"/var/lib/ociregistry","name":"images","readOnly":false}`'),
    "volumeMounts[0].mountPath": ("string", '`"/var/lib/ociregistry"`'),
    "volumes": ("list", "`[]`"),
}

# Kinds that are custom resources: no schema in kubernetes-validate.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Kubernetes versions the rendered objects are validated against.
K8S_VERSIONS = ["1.25.0", "1.37.0"]

DIGEST = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


# --------------------------------------------------------------------------
# README values table, generated from the "# --" comments of values.yaml
# (the helm-docs convention), so the README can be checked against it.

def _fmt_default(value):
    if value is None:
        return "`nil`"
    return "`" + json.dumps(value, separators=(",", ":")) + "`"


def _type_of(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return "string"


def _lookup(values, key):
    cur = values
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("["):
            cur = cur[int(part[1:-1])]
        else:
            cur = cur[part]
    return cur


def values_table_rows(values_path):
    """[(key, type, default, description)] for every documented key."""
    with open(values_path) as f:
        text = f.read()
    values = yaml.safe_load(text)
    rows = []
    stack = []  # (indent, key path) of the enclosing keys
    comment = None  # lines of a "# --" block being collected
    list_index = {}  # key path of a list -> index of its current item
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped:
            comment = None
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if body.startswith("--"):
                comment = [body[2:].strip()]
            elif comment is not None:
                comment.append(body)
            continue
        item = stripped.startswith("- ")
        content = stripped[2:] if item else stripped
        key_indent = indent + 2 if item else indent
        while stack and stack[-1][0] >= (indent if item else key_indent):
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if item:
            idx = list_index.get(parent, -1) + 1
            list_index[parent] = idx
            item_path = f"{parent}[{idx}]"
            stack.append((indent, item_path))
            if comment is not None:
                _add_row(rows, values, item_path, comment)
                comment = None
            parent = item_path
        m = re.match(r"^([A-Za-z0-9_.\-/]+):(\s|$)", content)
        if not m:
            comment = None
            continue
        path = f"{parent}.{m.group(1)}" if parent else m.group(1)
        stack.append((key_indent, path))
        if comment is not None:
            _add_row(rows, values, path, comment)
            comment = None
    return sorted(rows, key=lambda r: r[0])


def _add_row(rows, values, path, comment):
    default = None
    desc = []
    for c in comment:
        if c.startswith("@default --"):
            default = c[len("@default --"):].strip()
        else:
            desc.append(c)
    value = _lookup(values, path)
    rows.append((path, _type_of(value), default or _fmt_default(value), " ".join(desc).strip()))


def values_table_markdown(values_path):
    out = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, typ, default, desc in values_table_rows(values_path):
        out.append(f"| {key} | {typ} | {default} | {desc} |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------

class Checker:
    def __init__(self, helm, chart, values_dir, label, kv):
        self.helm = helm
        self.chart = chart
        self.values_dir = values_dir
        self.label = label
        self.kv = kv  # the kubernetes_validate module, or None
        self.passed = 0
        self.failed = 0
        self.covered = set()
        self.rendered_files = set()
        self.tmp = tempfile.mkdtemp(prefix="ociregistry-check-")
        # A copy of the chart whose NOTES.txt is also rendered as a
        # ConfigMap, because `helm template` does not render NOTES and helm
        # v3's `install --dry-run` needs a cluster.
        self.notes_chart = os.path.join(self.tmp, "ociregistry")
        shutil.copytree(chart, self.notes_chart)
        with open(os.path.join(chart, "templates", "NOTES.txt")) as f:
            notes = f.read()
        with open(os.path.join(self.notes_chart, "templates", "_test_notes.tpl"), "w") as f:
            f.write('{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n")
        with open(os.path.join(self.notes_chart, "templates", "test-notes.yaml"), "w") as f:
            f.write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: test-notes\n"
                    "data:\n  NOTES.txt: {{ include \"test.notes\" . | quote }}\n")

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- reporting ---------------------------------------------------------
    def check(self, name, cond, keys=(), detail=""):
        if cond:
            self.passed += 1
            self.covered.update(keys)
            print(f"PASS  [{self.label}] {name}")
        else:
            self.failed += 1
            print(f"FAIL  [{self.label}] {name}" + (f"\n      {detail}" if detail else ""))
        return cond

    def eq(self, name, got, want, keys=()):
        return self.check(name, got == want, keys, f"got {got!r}, want {want!r}")

    # -- rendering ---------------------------------------------------------
    def helm_template(self, files=(), sets=(), set_strings=(), release="ociregistry",
                      namespace="ociregistry", chart=None):
        cmd = [self.helm, "template", release, chart or self.chart, "-n", namespace]
        for f in files:
            cmd += ["-f", os.path.join(self.values_dir, f)]
        for s in sets:
            cmd += ["--set", s]
        for s in set_strings:
            cmd += ["--set-string", s]
        p = subprocess.run(cmd, capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr

    def render(self, files=(), sets=(), set_strings=(), release="ociregistry", validate=True):
        """The rendered objects of a values set that must render."""
        self.rendered_files.update(files)
        rc, out, err = self.helm_template(files, sets, set_strings, release)
        what = " ".join(list(files) + [f"--set {s}" for s in sets] + [f"--set-string {s}" for s in set_strings]) or "defaults"
        if rc != 0:
            self.check(f"helm template ({what})", False, detail=err.strip()[-600:])
            return Render([])
        docs = [d for d in yaml.safe_load_all(out) if d]
        if validate:
            self.validate(docs, what)
        return Render(docs)

    def notes(self, files=(), sets=()):
        rc, out, err = self.helm_template(files, sets, chart=self.notes_chart)
        if rc != 0:
            self.check("render NOTES.txt", False, detail=err.strip()[-600:])
            return ""
        for d in yaml.safe_load_all(out):
            if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "test-notes":
                return d["data"]["NOTES.txt"]
        return ""

    def validate(self, docs, what):
        if self.kv is None:
            return
        problems = []
        for d in docs:
            if d.get("kind") in CUSTOM_KINDS:
                continue
            for v in K8S_VERSIONS:
                try:
                    self.kv.validate(d, v, strict=True)
                except Exception as e:  # ValidationError, SchemaNotFoundError
                    problems.append(f"{d.get('kind')}/{d.get('metadata', {}).get('name')} @ {v}: {str(e)[:300]}")
        self.check(f"schema-valid ({what}): {len(docs)} objects, Kubernetes {'/'.join(K8S_VERSIONS)}, strict",
                   not problems, detail="\n      ".join(problems))


class Render:
    def __init__(self, docs):
        self.docs = docs

    def all(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind, name=None):
        for d in self.all(kind):
            if name is None or d["metadata"]["name"] == name:
                return d
        return {}

    def kinds(self):
        return sorted(d["kind"] for d in self.docs)

    @property
    def workload(self):
        servers = [x for x in self.all("DaemonSet") if not x["metadata"]["name"].endswith(("-node-config", "-node-cleanup"))]
        return self.one("Deployment") or (servers[0] if servers else {})

    @property
    def pod(self):
        return self.workload.get("spec", {}).get("template", {})

    @property
    def spec(self):
        return self.pod.get("spec", {})

    @property
    def container(self):
        cs = self.spec.get("containers") or [{}]
        return cs[0]

    @property
    def args(self):
        return self.container.get("args", [])

    def arg(self, flag):
        a = self.args
        return a[a.index(flag) + 1] if flag in a and a.index(flag) + 1 < len(a) else None

    def global_flags(self):
        a = self.args
        return a[:a.index("serve")] if "serve" in a else a

    def serve_flags(self):
        a = self.args
        return a[a.index("serve") + 1:] if "serve" in a else []

    def port(self, name):
        for p in self.container.get("ports", []):
            if p["name"] == name:
                return p
        return {}

    def volume(self, name):
        for v in self.spec.get("volumes", []):
            if v["name"] == name:
                return v
        return {}

    def mount(self, name):
        for m in self.container.get("volumeMounts", []):
            if m["name"] == name:
                return m
        return {}

    @property
    def service(self):
        return self.one("Service")

    def svc_port(self, name):
        for p in self.service.get("spec", {}).get("ports", []):
            if p["name"] == name:
                return p
        return {}

    def config_secret(self):
        """(secret, key, parsed config file) of the Secret the pod mounts as 'config'."""
        vol = self.volume("config")
        name = vol.get("secret", {}).get("secretName")
        sec = self.one("Secret", name) if name else {}
        data = sec.get("data", {})
        if len(data) != 1:
            return sec, None, None
        key, b64 = next(iter(data.items()))
        return sec, key, base64.b64decode(b64).decode()


# --------------------------------------------------------------------------

def run_checks(c, emit_dir):
    chart_values = os.path.join(c.chart, "values.yaml")
    with open(chart_values) as f:
        values = yaml.safe_load(f)

    # ---- the values table: names, types, defaults ------------------------
    rows = {r[0]: r for r in values_table_rows(chart_values)}
    for key, (typ, default) in CONTRACT.items():
        r = rows.get(key)
        c.check(f"values.yaml documents contract key {key} as {typ} {default}",
                r is not None and r[1] == typ and r[2] == default,
                detail=f"values.yaml has {r[1:3] if r else 'no such documented key'}")
    with open(os.path.join(c.chart, "README.md")) as f:
        readme = f.read()
    c.check("README.md values table is the one values.yaml's comments generate",
            values_table_markdown(chart_values) in readme,
            detail="regenerate: python3 helm/tests/check.py --print-values-table")
    quick_start = ["helm -n ociregistry install ociregistry", "--create-namespace",
                   'config_path = "/etc/containerd/certs.d"', "/etc/containerd/certs.d/_default/hosts.toml",
                   '[host."http://localhost:31080"]', 'capabilities = ["pull", "resolve"]',
                   "crictl pull docker.io/hello-world:latest"]
    c.check("README.md has the three-step quick start (install, containerd config_path + _default/hosts.toml, crictl pull)",
            all(q in readme for q in quick_start), detail=str([q for q in quick_start if q not in readme]))
    with open(os.path.join(c.chart, "Chart.yaml")) as f:
        chart_yaml = yaml.safe_load(f)
    cargo = open(os.path.join(c.chart, "..", "..", "Cargo.toml")).read()
    m = re.search(r'(?ms)^\[package\].*?^version\s*=\s*"([^"]+)"', cargo)
    c.check("Chart.yaml: apiVersion v2, name ociregistry, appVersion = Cargo.toml version",
            chart_yaml.get("apiVersion") == "v2" and chart_yaml.get("name") == "ociregistry"
            and m is not None and chart_yaml.get("appVersion") == m.group(1),
            detail=f"appVersion {chart_yaml.get('appVersion')!r}, Cargo.toml {m.group(1) if m else None!r}")

    # ---- defaults ------------------------------------------------------
    d = c.render(["defaults.yaml"])
    c.eq("defaults: objects rendered", d.kinds(), ["Deployment", "Secret", "Service", "ServiceAccount"])
    c.check("defaults: no ConfigMap anywhere (the config holds passwords)", not d.all("ConfigMap"), ["upstreamConfig"])
    c.eq("defaults: image quay.io/appzygy/ociregistry:1.2.0", d.container.get("image"),
         "quay.io/appzygy/ociregistry:1.2.0", ["image.registry", "image.repository", "image.tag"])
    c.eq("defaults: imagePullPolicy IfNotPresent", d.container.get("imagePullPolicy"), "IfNotPresent", ["image.pullPolicy"])
    c.eq("defaults: args", d.args,
         ["--config-file", "/etc/ociregistry/registry-config.yaml", "--log-level", "info", "serve"],
         ["configs.logLevel"])
    c.check("defaults: empty configs.port/imagePath/pullTimeout leave the server's defaults (no flag)",
            not {"--port", "--image-path", "--pull-timeout"} & set(d.args),
            ["configs.port", "configs.imagePath", "configs.pullTimeout"])
    c.eq("defaults: Deployment with 1 replica", (d.workload.get("kind"), d.workload["spec"].get("replicas")), ("Deployment", 1))
    c.eq("defaults: strategy Recreate", d.workload["spec"].get("strategy"), {"type": "Recreate"})
    c.eq("defaults: Service NodePort 31080, port 8080 -> 8080",
         (d.service["spec"]["type"], d.svc_port("http").get("nodePort"), d.svc_port("http").get("port"),
          d.svc_port("http").get("targetPort")), ("NodePort", 31080, 8080, 8080), ["service"])
    c.eq("defaults: containerPort 8080", d.port("http").get("containerPort"), 8080)
    c.check("defaults: Service selects the pod",
            d.service["spec"]["selector"].items() <= d.pod["metadata"]["labels"].items()
            and d.workload["spec"]["selector"]["matchLabels"].items() <= d.pod["metadata"]["labels"].items())
    c.eq("defaults: names = release name (contains the chart name)",
         {x["metadata"]["name"] for x in d.docs}, {"ociregistry", "ociregistry-config"}, ["fullnameOverride", "nameOverride"])
    emptydir = d.volume("images")
    c.eq("defaults: cache is an emptyDir of 2Gi", emptydir.get("emptyDir"), {"sizeLimit": "2Gi"},
         ["persistence.emptyDir.enabled", "persistence.emptyDir.sizeLimit", "persistence"])
    c.eq("defaults: images volume mounted read-write at /var/lib/ociregistry (the server's default cache)",
         d.mount("images"), {"name": "images", "mountPath": "/var/lib/ociregistry", "readOnly": False},
         ["volumeMounts", "volumeMounts[0]", "volumeMounts[0].mountPath"])
    c.check("defaults: no PVC, no hostPath, no init container, no hostPort",
            not d.all("PersistentVolumeClaim") and "hostPath" not in emptydir
            and "initContainers" not in d.spec and "hostPort" not in d.port("http")
            and "hostNetwork" not in d.spec,
            ["persistence.hostPath.enabled", "persistence.persistentVolumeClaim.enabled"])
    sec, key, cfg = d.config_secret()
    c.check("defaults: the server config file is a Secret mounted as 'config'", bool(sec) and key is not None,
            ["upstreamConfig"])
    c.eq("defaults: config file has no upstream registries", yaml.safe_load(cfg or "null"), {"registries": []}, ["upstreamConfig"])
    c.eq("defaults: Secret mounted read-only at /etc/ociregistry, --config-file is its file",
         (d.mount("config").get("mountPath"), d.mount("config").get("readOnly"), d.arg("--config-file")),
         ("/etc/ociregistry", True, f"/etc/ociregistry/{key}"), ["configs.configPath"])
    c.check("defaults: a checksum/config annotation", bool(d.pod["metadata"].get("annotations", {}).get("checksum/config")))
    psc = d.spec.get("securityContext", {})
    c.eq("defaults: pod securityContext", psc,
         {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
          "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}},
         ["podSecurityContext"])
    c.eq("defaults: container securityContext", d.container.get("securityContext"),
         {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": True,
          "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
          "seccompProfile": {"type": "RuntimeDefault"}}, ["securityContext"])
    c.eq("defaults: Secret file mode 0440 (group fsGroup 65532 reads it)",
         d.volume("config").get("secret", {}).get("defaultMode"), 0o440)
    c.eq("defaults: ServiceAccount created, automount true; pod automountServiceAccountToken false",
         (d.one("ServiceAccount").get("automountServiceAccountToken"), d.spec.get("serviceAccountName"),
          d.spec.get("automountServiceAccountToken")), (True, "ociregistry", False),
         ["serviceAccount.create", "serviceAccount.automount", "serviceAccount.name", "serviceAccount"])
    for probe, period, path in (("livenessProbe", 10, "/health"), ("readinessProbe", 5, "/ready")):
        p = d.container.get(probe, {})
        c.eq(f"defaults: {probe} GET {path} on the http port (plain HTTP)", (p.get("httpGet"), p.get("periodSeconds")),
             ({"path": path, "port": "http"}, period))
    c.check("defaults: no --metrics, --health, --log-format; no metrics/health port; no serverTls volume or config key",
            not {"--metrics", "--health", "--log-format"} & set(d.args) and not d.port("health")
            and not d.volume("server-tls") and not d.mount("server-tls") and "serverTlsConfig" not in (cfg or ""),
            detail=f"args {d.args}")
    c.eq("defaults: terminationGracePeriodSeconds 45 = shutdownDelay 5s + drainTimeout 30s + 10",
         d.spec.get("terminationGracePeriodSeconds"), 45)
    r = c.render(sets=["terminationGracePeriodSeconds=120"])
    c.eq("terminationGracePeriodSeconds=120", r.spec.get("terminationGracePeriodSeconds"), 120)
    r = c.render(sets=["upstreamConfig.drainTimeout=2m", "upstreamConfig.shutdownDelay=15s"])
    c.eq("terminationGracePeriodSeconds follows upstreamConfig's drainTimeout (2m) and shutdownDelay (15s)",
         r.spec.get("terminationGracePeriodSeconds"), 145)
    rc, _, err = c.helm_template([], sets=["upstreamConfig.drainTimeout=soon"])
    c.check("a drainTimeout the chart cannot read asks for terminationGracePeriodSeconds",
            rc != 0 and "set terminationGracePeriodSeconds" in err, detail=err[-300:])
    c.check("defaults: no optional pod settings",
            not any(k in d.spec for k in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity", "priorityClassName"))
            and not any(k in d.container for k in ("resources", "env", "envFrom")),
            ["imagePullSecrets", "nodeSelector", "tolerations", "affinity", "resources"])
    c.check("defaults: no metrics port, no ServiceMonitor, no Ingress",
            not d.port("metrics") and not d.svc_port("metrics") and not d.all("ServiceMonitor") and not d.all("Ingress"),
            ["ingress"])
    c.eq("defaults: pod annotations are only the checksum; labels only the chart's",
         (sorted(d.pod["metadata"].get("annotations", {})), sorted(d.pod["metadata"]["labels"])),
         (["checksum/config"], sorted(d.workload["metadata"]["labels"])), ["podAnnotations", "podLabels"])
    notes = c.notes(["defaults.yaml"])
    c.check("defaults NOTES: containerd config_path and _default/hosts.toml for http://localhost:31080 (pull, resolve)",
            'config_path = "/etc/containerd/certs.d"' in notes and "/etc/containerd/certs.d/_default/hosts.toml" in notes
            and '[host."http://localhost:31080"]' in notes and 'capabilities = ["pull", "resolve"]' in notes,
            detail=notes)
    c.check("defaults NOTES: verify with crictl pull docker.io/hello-world:latest",
            "crictl pull docker.io/hello-world:latest" in notes)
    if emit_dir:
        emit(emit_dir, "defaults", d)

    # ---- configs.* -------------------------------------------------------
    r = c.render(["configs.yaml"])
    c.eq("configs: global flags before serve", r.global_flags(),
         ["--config-file", "/etc/ociregistry/registry-config.yaml", "--image-path", "/data/cache", "--log-level", "debug"],
         ["configs.imagePath", "configs.logLevel"])
    c.eq("configs: serve flags (port, pullTimeout in ms, extraArgs)", r.serve_flags(),
         ["--port", "9000", "--pull-timeout", "120000", "--default-ns", "docker.io"], ["configs.port", "configs.pullTimeout"])
    c.eq("configs.port=9000: containerPort 9000", r.port("http").get("containerPort"), 9000, ["configs.port"])
    c.eq("configs.port=9000: Service targetPort 9000 while service.port stays 80 (nodePort 31080)",
         (r.svc_port("http").get("targetPort"), r.svc_port("http").get("port"), r.svc_port("http").get("nodePort")),
         (9000, 80, 31080), ["configs.port", "service"])
    c.eq("configs.port=9000: probes on the http port", r.container["livenessProbe"]["httpGet"]["port"], "http")
    c.eq("configs.imagePath=/data/cache: images volume mounted there", r.mount("images").get("mountPath"), "/data/cache",
         ["configs.imagePath", "volumeMounts[0].mountPath"])
    r = c.render(set_strings=["configs.port=9000", "configs.pullTimeout=5000"])
    c.eq("configs.port as a string (the table's type): --port 9000, containerPort 9000, targetPort 9000",
         (r.arg("--port"), r.port("http").get("containerPort"), r.svc_port("http").get("targetPort"), r.arg("--pull-timeout")),
         ("9000", 9000, 9000, "5000"), ["configs.port", "configs.pullTimeout"])
    r = c.render(sets=["configs.configPath=/etc/custom/server.yaml",
                       "volumes[0].name=custom,volumes[0].configMap.name=custom-config",
                       "volumeMounts[0].name=images,volumeMounts[0].mountPath=/var/lib/ociregistry",
                       "volumeMounts[1].name=custom,volumeMounts[1].mountPath=/etc/custom"])
    c.check("configs.configPath of your own file: --config-file it, no chart Secret, no checksum",
            r.arg("--config-file") == "/etc/custom/server.yaml" and not r.all("Secret") and not r.volume("config")
            and "checksum/config" not in r.pod["metadata"].get("annotations", {}),
            ["configs.configPath"], detail=f"args {r.args}")
    c.check("volumes/volumeMounts: your volume is added and mounted",
            r.volume("custom").get("configMap") == {"name": "custom-config"} and r.mount("custom").get("mountPath") == "/etc/custom",
            ["volumes", "volumeMounts"])
    r = c.render(sets=["configs.configPath=/etc/ociregistry"])
    c.eq("configs.configPath = the mount directory: --config-file its registry-config.yaml",
         (r.arg("--config-file"), bool(r.config_secret()[0])), ("/etc/ociregistry/registry-config.yaml", True), ["configs.configPath"])
    r = c.render(sets=["configs.logLevel=trace"])
    c.eq("configs.logLevel=trace: --log-level trace", r.arg("--log-level"), "trace", ["configs.logLevel"])
    r = c.render(sets=["configs.logLevel="])
    c.check("configs.logLevel empty: no --log-level", "--log-level" not in r.args, ["configs.logLevel"])
    r = c.render(sets=["configs.logFormat=json"])
    c.eq("configs.logFormat=json: global flags --log-level info --log-format json", r.global_flags()[2:],
         ["--log-level", "info", "--log-format", "json"])
    if emit_dir:
        emit(emit_dir, "configs", c.render(["configs.yaml"], validate=False))

    # ---- upstreamConfig: basic auth + mTLS -------------------------------
    u = c.render(["upstream-auth-mtls.yaml"])
    sec, key, cfg = u.config_secret()
    parsed = yaml.safe_load(cfg or "null") or {}
    with open(os.path.join(c.values_dir, "upstream-auth-mtls.yaml")) as f:
        want = yaml.safe_load(f)["upstreamConfig"]
    c.check("upstreamConfig: in a Secret (type Opaque), never in a ConfigMap",
            sec.get("type") == "Opaque" and not u.all("ConfigMap"), ["upstreamConfig"])
    c.eq("upstreamConfig: the Secret's file is upstreamConfig without mountPath",
         parsed, {k: v for k, v in want.items() if k != "mountPath"}, ["upstreamConfig"])
    c.eq("upstreamConfig: basic auth and mTLS of the first registry reach the file",
         (parsed.get("registries", [{}])[0].get("auth"), parsed.get("registries", [{}])[0].get("tls", {}).get("cert")),
         ({"user": "frobozz", "password": "flathead"}, "/etc/pki/certs/client.crt"), ["upstreamConfig"])
    c.eq("upstreamConfig.mountPath + configs.configPath: Secret mounted there, --config-file its file",
         (u.mount("config").get("mountPath"), u.arg("--config-file")),
         ("/etc/ociregistry/upstream", f"/etc/ociregistry/upstream/{key}"), ["configs.configPath", "upstreamConfig"])
    c.check("upstreamConfig: no password in the Deployment", "flathead" not in json.dumps(u.workload))
    c.eq("env: passwordFromEnv variable from a secretKeyRef", u.container.get("env"),
         [{"name": "EXAMPLE_REGISTRY_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "example-registry", "key": "password"}}}])
    c.eq("envFrom: secretRef", u.container.get("envFrom"), [{"secretRef": {"name": "ociregistry-extra-env"}}])
    c.eq("volumes/volumeMounts: certificate Secret mounted at /etc/pki/certs read-only",
         (u.volume("upstream-certs").get("secret"), u.mount("upstream-certs").get("mountPath"), u.mount("upstream-certs").get("readOnly")),
         ({"secretName": "my-upstream-certs"}, "/etc/pki/certs", True), ["volumes", "volumeMounts"])
    c.eq("upstreamConfig set, configs.configPath empty: same mount, same --config-file",
         c.render(["upstream-auth-mtls.yaml"], sets=["configs.configPath="], validate=False).arg("--config-file"),
         f"/etc/ociregistry/upstream/{key}", ["upstreamConfig"])
    if emit_dir:
        emit(emit_dir, "upstream-auth-mtls", u)
    sum1 = u.pod["metadata"].get("annotations", {}).get("checksum/config")
    u2 = c.render(["upstream-auth-mtls.yaml"], sets=["upstreamConfig.registries[0].auth.password=changed"], validate=False)
    sum2 = u2.pod["metadata"].get("annotations", {}).get("checksum/config")
    c.check("checksum/config stays when only what the server reloads changes (a password): no restart",
            sum1 and sum2 and sum1 == sum2 and u.config_secret()[2] != u2.config_secret()[2],
            ["upstreamConfig"], detail=f"{sum1} {sum2}")
    for setting in ["upstreamConfig.drainTimeout=60s", "objectStorage.enabled=true",
                    "serverTls.enabled=true"]:
        r = c.render(["upstream-auth-mtls.yaml"],
                     sets=[setting, "objectStorage.bucket=b", "serverTls.secretName=tls"], validate=False)
        c.check(f"checksum/config changes with a setting that needs a restart ({setting})",
                r.pod["metadata"].get("annotations", {}).get("checksum/config") not in (None, sum1))
    r = c.render(sets=["upstreamConfig.defaultNs=docker.io", "upstreamConfig.airGapped=true"])
    c.eq("upstreamConfig: other server keys pass through; registries defaults to []",
         yaml.safe_load(r.config_secret()[2]), {"defaultNs": "docker.io", "airGapped": True, "registries": []}, ["upstreamConfig"])

    # ---- persistence -----------------------------------------------------
    h = c.render(["persistence-hostpath.yaml"])
    c.eq("persistence.hostPath: images volume is that host path (DirectoryOrCreate)",
         h.volume("images").get("hostPath"), {"path": "/mnt/ociregistry", "type": "DirectoryOrCreate"},
         ["persistence.hostPath.enabled", "persistence.hostPath.path", "persistence.hostPath"])
    c.eq("persistence.hostPath: mounted at the server's cache path (configs.imagePath default)",
         h.mount("images").get("mountPath"), "/var/lib/ociregistry", ["persistence.hostPath.enabled"])
    c.check("persistence.hostPath: emptyDir not used", "emptyDir" not in h.volume("images"), ["persistence.emptyDir.enabled"])
    init = (h.spec.get("initContainers") or [{}])[0]
    c.check("persistence.hostPath: init container chowns the cache dir to 65532:65532 as root with CHOWN only",
            init.get("name") == "volume-permissions" and init["command"][-2:] == ["/var/lib/ociregistry", "65532:65532"]
            and init["securityContext"]["runAsUser"] == 0
            and init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_READ_SEARCH"]}
            and {"name": "images", "mountPath": "/var/lib/ociregistry"} in init.get("volumeMounts", []),
            detail=json.dumps(init))
    r = c.render(["persistence-hostpath.yaml"], sets=["configs.imagePath=/srv/cache", "volumeMounts[0].name=images",
                                                      "volumeMounts[0].mountPath=/srv/cache"], validate=False)
    c.eq("persistence.hostPath + configs.imagePath=/srv/cache: host path mounted at /srv/cache, --image-path /srv/cache",
         (r.volume("images")["hostPath"]["path"], r.mount("images").get("mountPath"), r.arg("--image-path"),
          r.spec["initContainers"][0]["command"][-2]),
         ("/mnt/ociregistry", "/srv/cache", "/srv/cache", "/srv/cache"), ["persistence.hostPath.enabled", "configs.imagePath"])
    r = c.render(["persistence-hostpath.yaml"], sets=["podSecurityContext.runAsUser=1000", "securityContext.runAsUser=1000",
                                                      "securityContext.runAsGroup=2000"], validate=False)
    c.eq("persistence.hostPath: init container chowns to the container's runAsUser:runAsGroup",
         r.spec["initContainers"][0]["command"][-1], "1000:2000")
    r = c.render(["persistence-hostpath.yaml"], sets=["volumePermissions.enabled=false"], validate=False)
    c.check("volumePermissions.enabled=false: no init container", "initContainers" not in r.spec)

    p = c.render(["persistence-pvc.yaml"])
    pvc = p.one("PersistentVolumeClaim")
    c.eq("persistence.persistentVolumeClaim: new claim from newClaimSpec", pvc.get("spec"),
         {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem", "resources": {"requests": {"storage": "50Gi"}},
          "storageClassName": "fast-ssd", "selector": {"matchLabels": {"tier": "registry-cache"}}},
         ["persistence.persistentVolumeClaim.enabled", "persistence.persistentVolumeClaim.newClaimSpec",
          "persistence.persistentVolumeClaim.newClaimSpec.accessModes", "persistence.persistentVolumeClaim.newClaimSpec.volumeMode",
          "persistence.persistentVolumeClaim.newClaimSpec.resources", "persistence.persistentVolumeClaim.newClaimSpec.storageClassName",
          "persistence.persistentVolumeClaim.newClaimSpec.selector", "persistence.persistentVolumeClaim"])
    c.eq("persistence.persistentVolumeClaim: images volume is that claim, mounted at the cache path",
         (p.volume("images").get("persistentVolumeClaim"), p.mount("images").get("mountPath")),
         ({"claimName": pvc.get("metadata", {}).get("name")}, "/var/lib/ociregistry"), ["persistence.persistentVolumeClaim.enabled"])
    c.check("persistence.persistentVolumeClaim: no emptyDir, no init container",
            "emptyDir" not in p.volume("images") and "initContainers" not in p.spec, ["persistence.emptyDir.enabled"])
    r = c.render(sets=["persistence.persistentVolumeClaim.enabled=true"])
    c.eq("persistence.persistentVolumeClaim defaults: RWO, Filesystem, 2Gi, default class (no storageClassName), no selector",
         r.one("PersistentVolumeClaim").get("spec"),
         {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem", "resources": {"requests": {"storage": "2Gi"}}},
         ["persistence.persistentVolumeClaim.newClaimSpec.storageClassName", "persistence.persistentVolumeClaim.newClaimSpec.selector",
          "persistence.persistentVolumeClaim.newClaimSpec.accessModes", "persistence.persistentVolumeClaim.newClaimSpec.resources"])
    e = c.render(["persistence-pvc-existing.yaml"])
    c.check("persistence.persistentVolumeClaim.existingClaimName: that claim, no new PVC",
            e.volume("images").get("persistentVolumeClaim") == {"claimName": "registry-cache"} and not e.all("PersistentVolumeClaim"),
            ["persistence.persistentVolumeClaim.existingClaimName"])
    r = c.render(["persistence-emptydir.yaml"])
    c.eq("persistence.emptyDir.sizeLimit=10Gi", r.volume("images").get("emptyDir"), {"sizeLimit": "10Gi"},
         ["persistence.emptyDir.sizeLimit"])

    # ---- ingress ---------------------------------------------------------
    i = c.render(["ingress-tls.yaml"])
    ing = i.one("Ingress")
    c.eq("ingress: class, annotations", (ing.get("spec", {}).get("ingressClassName"), ing.get("metadata", {}).get("annotations")),
         ("nginx", {"nginx.ingress.kubernetes.io/proxy-body-size": "0"}), ["ingress"])
    c.eq("ingress: TLS", ing.get("spec", {}).get("tls"), [{"hosts": ["registry.example.com"], "secretName": "registry-example-com-tls"}], ["ingress"])
    c.eq("ingress: host/path routed to the Service's own port",
         ing.get("spec", {}).get("rules"),
         [{"host": "registry.example.com", "http": {"paths": [{"path": "/v2", "pathType": "Prefix", "backend": {
             "service": {"name": i.service["metadata"]["name"], "port": {"number": 5000}}}}]}}], ["ingress", "service"])
    c.eq("service.type=ClusterIP, port 5000: no nodePort, targets the container's 8080",
         (i.service["spec"]["type"], "nodePort" in i.svc_port("http"), i.svc_port("http")["port"], i.svc_port("http")["targetPort"]),
         ("ClusterIP", False, 5000, 8080), ["service"])
    notes = c.notes(["ingress-tls.yaml"])
    c.check("ingress NOTES: the https URL", "https://registry.example.com/v2" in notes, detail=notes)

    # ---- daemonset mode --------------------------------------------------
    ds = c.render(["daemonset-mirror.yaml"])
    c.eq("mode=daemonset: a DaemonSet, no Deployment, no PVC", ds.kinds(), ["DaemonSet", "Secret", "Service", "ServiceAccount"])
    c.eq("mode=daemonset: hostPort 31080 on the http port (containerd reaches localhost:31080)",
         (ds.port("http").get("hostPort"), ds.port("http").get("containerPort")), (31080, 8080))
    c.eq("mode=daemonset: hostPath cache at persistence.hostPath.path, mounted at the cache path",
         (ds.volume("images").get("hostPath"), ds.mount("images").get("mountPath")),
         ({"path": "/var/lib/ociregistry", "type": "DirectoryOrCreate"}, "/var/lib/ociregistry"), ["persistence.hostPath.path"])
    c.eq("mode=daemonset: Service is ClusterIP (no NodePort on the hostPort)",
         (ds.service["spec"]["type"], "nodePort" in ds.svc_port("http")), ("ClusterIP", False))
    c.eq("upstreamMirror: top-level key of the config file",
         yaml.safe_load(ds.config_secret()[2] or "null"),
         {"registries": [], "upstreamMirror": "http://ociregistry.ociregistry.svc.cluster.local:8080"})
    c.check("mode=daemonset: no strategy field, init container chowns the host path",
            "strategy" not in ds.workload["spec"] and ds.spec.get("initContainers", [{}])[0].get("name") == "volume-permissions")
    c.eq("priorityClassName, tolerations", (ds.spec.get("priorityClassName"), ds.spec.get("tolerations")),
         ("system-node-critical", [{"operator": "Exists"}]), ["tolerations"])
    notes = c.notes(["daemonset-mirror.yaml"])
    c.check("mode=daemonset NOTES: hosts.toml for http://localhost:31080",
            '[host."http://localhost:31080"]' in notes and "hostPort 31080" in notes, detail=notes)
    if emit_dir:
        emit(emit_dir, "daemonset-mirror", ds)
    hn = c.render(["daemonset-hostnetwork.yaml"])
    c.eq("daemonset.hostNetwork: host network, server on --port 5001, containerPort 5001, no hostPort field",
         (hn.spec.get("hostNetwork"), hn.spec.get("dnsPolicy"), hn.arg("--port"), hn.port("http").get("containerPort"),
          "hostPort" in hn.port("http")), (True, "ClusterFirstWithHostNet", "5001", 5001, False))
    c.eq("daemonset: updateStrategy, hostPath.path",
         (hn.workload["spec"].get("updateStrategy"), hn.volume("images")["hostPath"]["path"]),
         ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}, "/var/cache/ociregistry"), ["persistence.hostPath.path"])
    c.eq("daemonset.hostNetwork: Service targets port 5001", hn.svc_port("http").get("targetPort"), 5001)
    notes = c.notes(["daemonset-hostnetwork.yaml"])
    c.check("daemonset.hostNetwork NOTES: hosts.toml for http://localhost:5001", '[host."http://localhost:5001"]' in notes, detail=notes)

    # ---- image -----------------------------------------------------------
    im = c.render(["image-digest.yaml"])
    c.eq("image.digest with tag: registry/repository:tag@digest, pullPolicy Always",
         (im.container.get("image"), im.container.get("imagePullPolicy")),
         (f"registry.example.com/mirror/ociregistry:0.1.0@{DIGEST}", "Always"),
         ["image.digest", "image.registry", "image.repository", "image.tag", "image.pullPolicy", "image"])
    c.eq("imagePullSecrets", im.spec.get("imagePullSecrets"), [{"name": "registry-example-com"}], ["imagePullSecrets"])
    r = c.render(sets=[f"image.digest={DIGEST}", "image.tag="])
    c.eq("image.digest without tag: pulled by digest only", r.container.get("image"), f"quay.io/appzygy/ociregistry@{DIGEST}",
         ["image.digest"])
    r = c.render(sets=["image.tag="])
    c.eq("image.tag empty, no digest: the chart's appVersion", r.container.get("image"),
         f"quay.io/appzygy/ociregistry:{chart_yaml['appVersion']}", ["image.tag"])
    r = c.render(sets=["image.registry=", "image.repository=ociregistry", "image.tag=latest"])
    c.eq("image.registry empty: repository:tag", r.container.get("image"), "ociregistry:latest", ["image.registry", "image.repository", "image.tag"])

    # ---- names, service account, pod settings -----------------------------
    ps = c.render(["pod-settings.yaml"])
    c.eq("nameOverride=mirror: objects named <release>-mirror, app.kubernetes.io/name mirror",
         (ps.workload["metadata"]["name"], ps.service["metadata"]["name"], ps.pod["metadata"]["labels"]["app.kubernetes.io/name"]),
         ("ociregistry-mirror", "ociregistry-mirror", "mirror"), ["nameOverride"])
    sa = ps.one("ServiceAccount")
    c.eq("serviceAccount.name/annotations/automount=false",
         (sa.get("metadata", {}).get("name"), sa.get("metadata", {}).get("annotations"), sa.get("automountServiceAccountToken"),
          ps.spec.get("serviceAccountName")),
         ("registry-sa", {"example.com/role": "registry"}, False, "registry-sa"),
         ["serviceAccount.name", "serviceAccount.annotations", "serviceAccount.automount"])
    c.eq("automountServiceAccountToken=true: pod mounts a token", ps.spec.get("automountServiceAccountToken"), True)
    c.eq("podAnnotations added beside checksum/config",
         {k: v for k, v in ps.pod["metadata"]["annotations"].items() if k != "checksum/config"}, {"example.com/scrape": "false"}, ["podAnnotations"])
    c.check("podLabels on the pod, not in the selector",
            ps.pod["metadata"]["labels"].get("team") == "platform" and "team" not in ps.workload["spec"]["selector"]["matchLabels"],
            ["podLabels"])
    c.eq("podSecurityContext: keys replace the defaults, others stay",
         ps.spec.get("securityContext"),
         {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 65532, "fsGroup": 65532, "fsGroupChangePolicy": "OnRootMismatch",
          "seccompProfile": {"type": "RuntimeDefault"}, "supplementalGroups": [4000]}, ["podSecurityContext"])
    c.eq("securityContext: keys replace the defaults, others stay",
         ps.container.get("securityContext"),
         {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": False,
          "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
          "seccompProfile": {"type": "RuntimeDefault"}}, ["securityContext"])
    c.eq("resources", ps.container.get("resources"), {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
         ["resources"])
    with open(os.path.join(c.values_dir, "pod-settings.yaml")) as f:
        pv = yaml.safe_load(f)
    c.eq("nodeSelector, affinity, tolerations", (ps.spec.get("nodeSelector"), ps.spec.get("affinity"), ps.spec.get("tolerations")),
         (pv["nodeSelector"], pv["affinity"], pv["tolerations"]), ["nodeSelector", "affinity", "tolerations"])
    c.eq("strategy override", ps.workload["spec"].get("strategy"), pv["strategy"])

    # ---- replicas on a shared bucket ---------------------------------------
    o = c.render(["object-storage.yaml"])
    c.eq("objectStorage: 3 replicas, a surge-first rolling update",
         (o.workload["spec"].get("replicas"), o.workload["spec"].get("strategy")),
         (3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}))
    ocfg = yaml.safe_load(o.config_secret()[2] or "null") or {}
    c.eq("objectStorage: the server's storage and localCache",
         (ocfg.get("storage"), ocfg.get("localCache")),
         ({"kind": "s3", "bucket": "ociregistry", "prefix": "cache", "endpoint": "http://minio.minio:9000",
           "region": "us-east-1", "pathStyle": True}, {"maxSize": "1536Mi"}))
    creds = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in o.container.get("env", [])}
    c.eq("objectStorage.existingSecret: the credentials as AWS_* variables from the Secret, never in the config",
         (creds.get("AWS_ACCESS_KEY_ID"), creds.get("AWS_SECRET_ACCESS_KEY"), "secret" in (o.config_secret()[2] or "").lower()),
         ({"name": "ociregistry-s3", "key": "accessKeyId"}, {"name": "ociregistry-s3", "key": "secretAccessKey"}, False))
    c.check("objectStorage: each replica's local directory is its own emptyDir",
            "emptyDir" in o.volume("images") and not o.all("PersistentVolumeClaim"))
    pdbs = o.all("PodDisruptionBudget")
    c.eq("replicaCount 3: a PodDisruptionBudget of maxUnavailable 1 selecting the pods",
         [(p["spec"].get("maxUnavailable"), p["spec"]["selector"]["matchLabels"].items() <= o.pod["metadata"]["labels"].items())
          for p in pdbs], [(1, True)])
    spread = o.spec.get("topologySpreadConstraints", [])
    c.eq("replicaCount 3: replicas spread over nodes by default",
         [(t.get("topologyKey"), t.get("maxSkew"), t.get("whenUnsatisfiable")) for t in spread],
         [("kubernetes.io/hostname", 1, "ScheduleAnyway")])
    r = c.render(["object-storage.yaml"], sets=["persistence.hostPath.enabled=true"])
    c.check("replicaCount 3 on a bucket with a hostPath: each pod its own host directory",
            r.workload["spec"].get("replicas") == 3 and "hostPath" in r.volume("images"))
    r = c.render(["object-storage.yaml"], sets=["podDisruptionBudget.enabled=false"], validate=False)
    c.check("podDisruptionBudget.enabled=false: no PodDisruptionBudget", not r.all("PodDisruptionBudget"))
    c.check("one replica: no PodDisruptionBudget, no spread constraints",
            not d.all("PodDisruptionBudget") and "topologySpreadConstraints" not in d.spec)
    r = c.render(sets=["objectStorage.enabled=true", "objectStorage.bucket=b", "objectStorage.kind=gcs"], validate=False)
    c.eq("objectStorage without a Secret or options: only kind and bucket, no AWS variables",
         ((yaml.safe_load(r.config_secret()[2] or "null") or {}).get("storage"), r.container.get("env")),
         ({"kind": "gcs", "bucket": "b", "pathStyle": False}, None))
    c.check("probes: liveness port/period set, readiness disabled",
            ps.container.get("livenessProbe", {}).get("httpGet") == {"path": "/v2/", "port": 8080}
            and ps.container["livenessProbe"].get("periodSeconds") == 20 and "readinessProbe" not in ps.container)
    r = c.render(sets=["serviceAccount.create=false", "serviceAccount.name=existing"])
    c.check("serviceAccount.create=false, name=existing: no ServiceAccount, pod uses 'existing'",
            not r.all("ServiceAccount") and r.spec.get("serviceAccountName") == "existing",
            ["serviceAccount.create", "serviceAccount.name"])
    r = c.render(sets=["serviceAccount.create=false"])
    c.eq("serviceAccount.create=false, no name: the namespace's default", r.spec.get("serviceAccountName"), "default",
         ["serviceAccount.create"])
    r = c.render(sets=["fullnameOverride=cache"], release="other")
    c.eq("fullnameOverride=cache: every object named cache (Secret cache-config)",
         sorted({x["metadata"]["name"] for x in r.docs}), ["cache", "cache-config"], ["fullnameOverride"])
    r = c.render(release="edge")
    c.eq("release edge: objects named edge-ociregistry", r.workload["metadata"]["name"], "edge-ociregistry", ["fullnameOverride", "nameOverride"])

    # ---- metrics ---------------------------------------------------------
    mt = c.render(["metrics.yaml"])
    sm = mt.one("ServiceMonitor")
    c.eq("metrics.enabled: the server serves metrics on metrics.port (serve --metrics 9102)", mt.serve_flags(),
         ["--metrics", "9102"])
    c.check("metrics: NOTES name the metrics port and the ServiceMonitor",
            'GET /metrics on port 9102 (Service port "metrics", scraped through ServiceMonitor cache)' in c.notes(["metrics.yaml"]))
    if emit_dir:
        emit(emit_dir, "metrics", mt)
    c.eq("metrics: container port and Service port 9102",
         (mt.port("metrics").get("containerPort"), mt.svc_port("metrics").get("port"), mt.svc_port("metrics").get("targetPort")),
         (9102, 9102, "metrics"))
    c.check("metrics.serviceMonitor: scrapes the Service's metrics port, with its labels",
            sm.get("spec", {}).get("endpoints") == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
            and sm["metadata"]["labels"].get("release") == "prometheus"
            and sm["spec"]["selector"]["matchLabels"].items() <= mt.service["metadata"]["labels"].items()
            and sm["metadata"]["namespace"] == "ociregistry", detail=json.dumps(sm))

    c.check("metrics: no dashboard or alerts unless asked", not mt.all("PrometheusRule")
            and not [x for x in mt.all("ConfigMap") if x["metadata"]["name"].endswith("-dashboard")])
    ob = c.render(["metrics.yaml"], sets=["metrics.grafanaDashboard.enabled=true",
                                          "metrics.grafanaDashboard.annotations.grafana_folder=Registries",
                                          "metrics.prometheusRule.enabled=true",
                                          "metrics.prometheusRule.labels.release=prometheus",
                                          "metrics.prometheusRule.hitRatio=0.7"])
    cm = ob.one("ConfigMap", "cache-dashboard")
    try:
        dash = json.loads(cm.get("data", {}).get("ociregistry.json", ""))
    except ValueError:
        dash = {}
    exprs = [t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", [])]
    c.check("metrics.grafanaDashboard: a ConfigMap the sidecar picks up (grafana_dashboard label, folder), valid JSON, "
            "every panel queries ociregistry metrics",
            cm.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1"
            and cm["metadata"].get("annotations") == {"grafana_folder": "Registries"}
            and len(exprs) >= 10 and all("ociregistry_" in e for e in exprs), detail=json.dumps(cm)[:300])
    rule = ob.one("PrometheusRule")
    rules = [r for g in rule.get("spec", {}).get("groups", []) for r in g.get("rules", [])]
    c.eq("metrics.prometheusRule: the chart's alerts, for this release's job and namespace",
         sorted(r["alert"] for r in rules),
         ["OciregistryCacheWriteFailures", "OciregistryEvictionsThrashing", "OciregistryHitRatioCollapse",
          "OciregistryNoReadyReplica", "OciregistryStoreDown", "OciregistryUpstreamDown"])
    c.check("metrics.prometheusRule: labels, hitRatio and the job substituted",
            rule["metadata"]["labels"].get("release") == "prometheus"
            and any("< 0.7" in r["expr"] for r in rules)
            and any('up{job="cache", namespace="ociregistry"}' in r["expr"] for r in rules),
            detail=json.dumps(rules)[:400])
    if emit_dir:
        os.makedirs(emit_dir, exist_ok=True)
        with open(os.path.join(emit_dir, "alerts.rules.yaml"), "w") as f:
            yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)

    # ---- health port -----------------------------------------------------
    r = c.render(sets=["health.enabled=true"])
    c.eq("health.enabled: serve --health 8082, a health container port", (r.serve_flags(), r.port("health").get("containerPort")),
         (["--health", "8082"], 8082))
    c.eq("health.enabled: probes GET /health and /ready on the health port (plain HTTP)",
         (r.container["livenessProbe"]["httpGet"], r.container["readinessProbe"]["httpGet"]),
         ({"path": "/health", "port": "health"}, {"path": "/ready", "port": "health"}))
    c.check("health.enabled: the Service exposes only the registry port", [p["name"] for p in r.service["spec"]["ports"]] == ["http"])
    r = c.render(sets=["health.enabled=true", "readinessProbe.port=http", "livenessProbe.path=/v2/"], validate=False)
    c.eq("probe port/path set: kept with health.enabled",
         (r.container["livenessProbe"]["httpGet"], r.container["readinessProbe"]["httpGet"]),
         ({"path": "/v2/", "port": "health"}, {"path": "/ready", "port": "http"}))

    # ---- server TLS ------------------------------------------------------
    st = c.render(["server-tls.yaml"])
    _, _, cfg = st.config_secret()
    tls = (yaml.safe_load(cfg or "null") or {}).get("serverTlsConfig")
    c.eq("serverTls: the kubernetes.io/tls Secret is a volume, mounted read-only at /etc/ociregistry-tls",
         (st.volume("server-tls").get("secret"), st.mount("server-tls")),
         ({"secretName": "registry-tls", "defaultMode": 0o440},
          {"name": "server-tls", "mountPath": "/etc/ociregistry-tls", "readOnly": True}))
    c.eq("serverTls: serverTlsConfig of the config file points into the mount (clientAuth none, no ca)", tls,
         {"cert": "/etc/ociregistry-tls/tls.crt", "key": "/etc/ociregistry-tls/tls.key", "clientAuth": "none"})
    c.eq("serverTls: probes GET /health and /ready over HTTPS on the registry port",
         (st.container["livenessProbe"]["httpGet"], st.container["readinessProbe"]["httpGet"]),
         ({"path": "/health", "port": "http", "scheme": "HTTPS"}, {"path": "/ready", "port": "http", "scheme": "HTTPS"}))
    c.check("serverTls: no client CA volume, no other volume", not st.volume("server-client-ca")
            and sorted(v["name"] for v in st.spec["volumes"]) == ["config", "images", "server-tls"])
    c.check("serverTls: checksum/config differs from the defaults' (the pod restarts)",
            st.pod["metadata"]["annotations"]["checksum/config"] != d.pod["metadata"]["annotations"]["checksum/config"])
    notes = c.notes(["server-tls.yaml"])
    c.check("serverTls NOTES: hosts.toml names https://localhost:31080 with the CA, no client certificate",
            '[host."https://localhost:31080"]' in notes and 'ca = "/etc/containerd/certs.d/_default/ca.crt"' in notes
            and '[host."http://' not in notes and "client = " not in notes, detail=notes)
    notes = c.notes(["server-tls.yaml"], sets=["service.nodePort="])
    c.check("serverTls NOTES, allocated node port: https://<address>:<port>", '[host."https://<address>:<port>"]' in notes,
            detail=notes)
    if emit_dir:
        emit(emit_dir, "server-tls", st)
    mt = c.render(["server-tls-mtls.yaml"])
    _, _, cfg = mt.config_secret()
    tls = (yaml.safe_load(cfg or "null") or {}).get("serverTlsConfig")
    c.eq("serverTls.clientAuth=verify + clientCaSecret: ca is the mounted client CA Secret's ca.crt", tls,
         {"cert": "/etc/ociregistry-tls/tls.crt", "key": "/etc/ociregistry-tls/tls.key", "clientAuth": "verify",
          "ca": "/etc/ociregistry-client-ca/ca.crt"})
    c.eq("serverTls.clientCaSecret: a volume mounted read-only at /etc/ociregistry-client-ca",
         (mt.volume("server-client-ca").get("secret"), mt.mount("server-client-ca")),
         ({"secretName": "registry-client-ca", "defaultMode": 0o440},
          {"name": "server-client-ca", "mountPath": "/etc/ociregistry-client-ca", "readOnly": True}))
    c.eq("serverTls verify + health: probes over plain HTTP on the health port",
         (mt.container["livenessProbe"]["httpGet"], mt.container["readinessProbe"]["httpGet"]),
         ({"path": "/health", "port": "health"}, {"path": "/ready", "port": "health"}))
    c.eq("serverTls verify + health + metrics + logFormat json: args", mt.args,
         ["--config-file", "/etc/ociregistry/registry-config.yaml", "--log-level", "info", "--log-format", "json", "serve",
          "--metrics", "9090", "--health", "8082"])
    notes = c.notes(["server-tls-mtls.yaml"])
    c.check("serverTls verify NOTES: hosts.toml with a client certificate",
            'client = [["/etc/containerd/certs.d/_default/client.crt", "/etc/containerd/certs.d/_default/client.key"]]' in notes
            and "Secret registry-client-ca" in notes, detail=notes)
    if emit_dir:
        emit(emit_dir, "server-tls-mtls", mt)
    r = c.render(["server-tls.yaml"], sets=["serverTls.clientAuth=verify", "health.enabled=true"])
    c.eq("serverTls verify without clientCaSecret: ca.crt of the TLS Secret, no client CA volume",
         ((yaml.safe_load(r.config_secret()[2] or "null") or {}).get("serverTlsConfig", {}).get("ca"),
          bool(r.volume("server-client-ca")), bool(r.mount("server-client-ca"))),
         ("/etc/ociregistry-tls/ca.crt", False, False))
    r = c.render(["server-tls.yaml"], sets=["serverTls.clientAuth=verify", "livenessProbe.enabled=false",
                                            "readinessProbe.enabled=false"], validate=False)
    c.check("serverTls verify with the probes disabled renders (no health port needed)",
            "livenessProbe" not in r.container and "readinessProbe" not in r.container
            and r.config_secret()[2] and "clientAuth: verify" in r.config_secret()[2])
    r = c.render(["server-tls.yaml"], sets=["health.enabled=true", "livenessProbe.port=http"], validate=False)
    c.eq("serverTls + health: a probe set on the registry port keeps HTTPS, the other is plain HTTP on health",
         (r.container["livenessProbe"]["httpGet"].get("scheme"), r.container["readinessProbe"]["httpGet"]),
         ("HTTPS", {"path": "/ready", "port": "health"}))
    r = c.render(["server-tls.yaml"], sets=["serverTls.secretName=other-tls", "fullnameOverride=reg"], validate=False)
    c.eq("serverTls.secretName: that Secret is mounted", r.volume("server-tls").get("secret", {}).get("secretName"), "other-tls")

    # ---- nodeConfig --------------------------------------------------------
    c.check("nodeConfig off by default: no node-config objects",
            not [x for x in d.docs if "node-c" in x["metadata"]["name"]])
    nc = c.render(["node-config.yaml"])
    ds = nc.one("DaemonSet", "ociregistry-node-config")
    pod = ds.get("spec", {}).get("template", {}).get("spec", {})
    ctr = (pod.get("containers") or [{}])[0]
    c.eq("nodeConfig: the DaemonSet runs node-config apply on the NodePort mirror, no fallback, every 2m",
         ctr.get("args"),
         ["--log-format", "json", "node-config", "apply", "--root", "/host", "--runtime", "containerd",
          "--mirror", "http://localhost:31080", "--registry", "_default,docker.io,quay.io",
          "--certs-dir", "/etc/containerd/certs.d", "--containerd-config", "/etc/containerd/config.toml",
          "--crio-dir", "/etc/containers/registries.conf.d", "--k3s-file", "/etc/rancher/k3s/registries.yaml",
          "--every", "2m", "--ready-port", "8089"])
    c.eq("nodeConfig: certs.d writable and containerd's directory read-only, under /host, from the node",
         ([(m["mountPath"], m["readOnly"]) for m in ctr.get("volumeMounts", [])],
          [v["hostPath"]["path"] for v in pod.get("volumes", [])]),
         ([("/host/etc/containerd/certs.d", False), ("/host/etc/containerd", True)],
          ["/etc/containerd/certs.d", "/etc/containerd"]))
    c.check("nodeConfig: every taint tolerated, root without capabilities on a read-only root, node-critical, no token",
            pod.get("tolerations") == [{"operator": "Exists"}] and pod["securityContext"]["runAsUser"] == 0
            and ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            and ctr["securityContext"]["readOnlyRootFilesystem"] is True
            and pod.get("priorityClassName") == "system-node-critical"
            and pod.get("automountServiceAccountToken") is False, detail=json.dumps(pod)[:600])
    selector = nc.service["spec"]["selector"]
    c.check("nodeConfig: the registry Service never selects node-config pods",
            not selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items())
    hooks = [x for x in nc.docs if x["metadata"].get("annotations", {}).get("helm.sh/hook") == "post-delete"]
    c.eq("nodeConfig.cleanupOnUninstall: post-delete DaemonSet, headless Service and Job",
         sorted((x["kind"], x["metadata"]["name"]) for x in hooks),
         [("DaemonSet", "ociregistry-node-cleanup"), ("Job", "ociregistry-node-cleanup-wait"),
          ("Service", "ociregistry-node-cleanup")])
    cleanup = nc.one("DaemonSet", "ociregistry-node-cleanup")["spec"]["template"]
    svc = nc.one("Service", "ociregistry-node-cleanup")["spec"]
    job = nc.one("Job", "ociregistry-node-cleanup-wait")["spec"]["template"]["spec"]["containers"][0]
    c.check("nodeConfig cleanup: the DaemonSet removes, the Service publishes its pods unready too, the Job waits on it",
            cleanup["spec"]["containers"][0]["args"][2:4] == ["node-config", "remove"]
            and svc["clusterIP"] == "None" and svc["publishNotReadyAddresses"] is True
            and svc["selector"].items() <= cleanup["metadata"]["labels"].items()
            and not svc["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
            and job["args"] == ["node-config", "wait", "--endpoint",
                                "ociregistry-node-cleanup.ociregistry.svc:8089", "--timeout", "5m"],
            detail=json.dumps(job))
    c.check("nodeConfig NOTES: the nodes are configured, no manual hosts.toml",
            "pointed at http://localhost:31080" in c.notes(["node-config.yaml"])
            and "hosts.toml" not in c.notes(["node-config.yaml"]))
    r = c.render(["daemonset-mirror.yaml"], sets=["nodeConfig.enabled=true", "nodeConfig.runtime=crio",
                                                   "nodeConfig.registries={docker.io}",
                                                   "nodeConfig.cleanupOnUninstall=false"])
    nds = r.one("DaemonSet", "ociregistry-node-config")["spec"]["template"]["spec"]
    args = nds["containers"][0]["args"]
    c.check("nodeConfig in mode daemonset, crio: the hostPort mirror, fallback, the drop-in directory, no hooks",
            args[args.index("--mirror") + 1] == "http://localhost:31080" and "--fallback" in args
            and args[args.index("--dial-timeout") + 1] == "500ms"
            and [v["hostPath"]["path"] for v in nds["volumes"]] == ["/etc/containers/registries.conf.d"]
            and not [x for x in r.docs if "helm.sh/hook" in x["metadata"].get("annotations", {})]
            and r.one("DaemonSet", "ociregistry")["spec"]["template"]["spec"]["containers"][0]["name"] != "node-config",
            detail=json.dumps(args))
    r = c.render(["server-tls.yaml"], sets=["nodeConfig.enabled=true", "nodeConfig.runtime=k3s",
                                            "nodeConfig.overwrite=true"], validate=False)
    args = r.one("DaemonSet", "ociregistry-node-config")["spec"]["template"]["spec"]["containers"][0]["args"]
    vols = r.one("DaemonSet", "ociregistry-node-config")["spec"]["template"]["spec"]["volumes"]
    c.check("nodeConfig with serverTls, k3s, overwrite: https mirror, the registries file's directory",
            args[args.index("--mirror") + 1] == "https://localhost:31080" and "--overwrite" in args
            and [v["hostPath"]["path"] for v in vols] == ["/etc/rancher/k3s"], detail=json.dumps(args))
    r = c.render(sets=["nodeConfig.enabled=true", "nodeConfig.mirror=http://10.0.0.5:5000"], validate=False)
    args = r.one("DaemonSet", "ociregistry-node-config")["spec"]["template"]["spec"]["containers"][0]["args"]
    c.eq("nodeConfig.mirror: as given", args[args.index("--mirror") + 1], "http://10.0.0.5:5000")

    r = c.render(sets=["configs.imagePath=/data/cache"])
    c.eq("configs.imagePath alone: the default images mount follows it, and --image-path",
         (r.mount("images").get("mountPath"), r.arg("--image-path")), ("/data/cache", "/data/cache"),
         ["configs.imagePath", "volumeMounts[0].mountPath"])

    # ---- values.schema.json -------------------------------------------------
    with open(os.path.join(c.chart, "values.schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(c.chart, "values.yaml")) as f:
        values = yaml.safe_load(f)

    def undescribed(value, node, path):
        """Paths of values.yaml the schema does not describe."""
        if not isinstance(value, dict) or "properties" not in node:
            return [] if node.get("type") else [path]
        missing = []
        for k, v in value.items():
            sub = node["properties"].get(k)
            where = f"{path}.{k}" if path else k
            missing += [where] if sub is None else undescribed(v, sub, where)
        return missing

    def described(node, path=""):
        """(path, description) of every schema node that has one."""
        out = [(path, node["description"])] if path and "description" in node else []
        for k, sub in node.get("properties", {}).items():
            out += described(sub, f"{path}.{k}" if path else k)
        return out

    table = {k: d for k, _, _, d in values_table_rows(os.path.join(c.chart, "values.yaml"))}
    stale = [k for k, d in described(schema) if k != "global" and table.get(k) != d]
    c.check("values.schema.json descriptions are the values table's (values.yaml comments)", not stale, detail=str(stale))
    missing = undescribed(values, schema, "")
    c.check("values.schema.json describes every value of values.yaml, with a type", not missing, detail=str(missing))
    for bad in ["service.type=NodPort", "replicaCount=two", "nodeConfig.enabeld=true", "metrics.port=70000",
                "image.pullPolicy=Sometimes", "configs.port=http", "mode=node", "nodeConfig.dialTimeout=soon"]:
        rc, _, err = c.helm_template(sets=[bad])
        c.check(f"schema: --set {bad} is refused before anything renders",
                rc != 0 and "values don't meet the specifications of the schema" in err, detail=err[-300:])
    r = c.render(sets=["image.tag=2", "service.nodePort=", "configs.port=9000", "global.anything=1"], validate=False)
    c.check("schema: a numeric tag, an empty nodePort, a port number and parent charts' global values are accepted",
            r.workload.get("kind") == "Deployment")

    # ---- rendering must fail, with a message -----------------------------
    for f in sorted(os.listdir(c.values_dir)):
        if not f.startswith("fail-"):
            continue
        with open(os.path.join(c.values_dir, f)) as fh:
            first = fh.readline()
        expected = first.split("expect-error:", 1)[1].strip() if "expect-error:" in first else None
        # "A || B": Helm v3's or v4's wording (schema errors differ).
        alternatives = expected.split(" || ") if expected else []
        rc, _, err = c.helm_template([f])
        c.check(f"{f}: rendering fails with: {expected}", rc != 0 and any(a in err for a in alternatives),
                ["persistence.hostPath.enabled", "persistence.persistentVolumeClaim.enabled"] if "hostpath-and-pvc" in f else [],
                detail=err.strip()[-400:])

    # ---- coverage ----------------------------------------------------------
    for f in sorted(os.listdir(c.values_dir)):
        if f.endswith(".yaml") and not f.startswith("fail-"):
            c.check(f"values file {f} is rendered, schema-checked and asserted on", f in c.rendered_files)
    for key in CONTRACT:
        hit = any(k == key or k.startswith(key + ".") or k.startswith(key + "[") for k in c.covered)
        c.check(f"coverage: values-table key {key} has an assertion of its effect", hit)


def emit(emit_dir, name, r):
    """Args and config file of a rendering, for the server run test."""
    os.makedirs(emit_dir, exist_ok=True)
    with open(os.path.join(emit_dir, f"{name}.args"), "w") as f:
        f.write("\n".join(r.args) + "\n")
    _, _, cfg = r.config_secret()
    with open(os.path.join(emit_dir, f"{name}.config.yaml"), "w") as f:
        f.write(cfg or "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--helm", help="helm binary")
    ap.add_argument("--label", default="helm")
    ap.add_argument("--chart", default=os.path.join(here, "..", "ociregistry"))
    ap.add_argument("--values-dir", default=os.path.join(here, "values"))
    ap.add_argument("--emit-run", metavar="DIR")
    ap.add_argument("--no-schema", action="store_true", help="skip kubernetes-validate")
    ap.add_argument("--print-values-table", action="store_true",
                    help="print the README values table generated from values.yaml and exit")
    a = ap.parse_args()
    chart = os.path.normpath(a.chart)
    if a.print_values_table:
        sys.stdout.write(values_table_markdown(os.path.join(chart, "values.yaml")))
        return 0
    if not a.helm:
        ap.error("--helm is required")
    kv = None
    if not a.no_schema:
        import kubernetes_validate.utils as kv  # noqa: F811
    c = Checker(a.helm, chart, os.path.normpath(a.values_dir), a.label, kv)
    try:
        run_checks(c, a.emit_run)
    finally:
        c.close()
    print(f"check.py [{a.label}]: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
