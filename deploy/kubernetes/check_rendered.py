#!/usr/bin/env python3
"""watchnext's own rules for a rendered kustomize entry point.

Run by scripts/validate-deploy.sh after the schema check (kubernetes-validate,
which knows what Kubernetes accepts but not what watchnext needs):

    check_rendered.py SHAPE RENDERED.yaml EXAMPLE_TOML

SHAPE is the entry point's name: all-in-one, split-cpu, split-gpu (overlays),
nats, base. Prints one line per rule group and every violation; exits 1 if
there is any. Needs PyYAML (installed with kubernetes-validate) and tomllib
(Python 3.11+) or tomli.
"""

import re
import sys

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

NAMESPACE = "watchnext"
GRPC_PORT = 50051
METRICS_PORT = 9464
WATCHNEXT_UID = 10001
# Secrets the operator creates (deploy/README.md); the manifests only refer
# to them. watchnext-nats-creds may be absent (optional volume).
EXTERNAL_SECRETS = {"watchnext-admin", "watchnext-role", "watchnext-nats-creds"}
OPTIONAL_SECRETS = {"watchnext-nats-creds"}
SPLIT_ROLES = {
    "recommender": "watchnext.v1.Recommender",
    "ranker": "watchnext.v1.Ranker",
    "topic": "watchnext.v1.CandidateGenerator",
    "cowatch": "watchnext.v1.CandidateGenerator",
    "sequence": "watchnext.v1.CandidateGenerator",
    "context": "watchnext.v1.CandidateGenerator",
    "feedback": "watchnext.v1.Feedback",
}
BACKEND_ROLES = ["ranker", "topic", "cowatch", "sequence", "context"]
# Tables whose keys are free-form (task names).
FREE_TABLES = ("recommender.combiner.weights",)


class Report:
    def __init__(self, shape):
        self.shape = shape
        self.errors = []

    def group(self, title, problems):
        problems = list(problems)
        status = "ok" if not problems else "FAILED"
        print(f"  [{status}] {title}")
        for p in problems:
            print(f"      - {p}")
        self.errors.extend(problems)


def kn(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_template(obj):
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return obj["spec"]["template"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return None


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels + matchExpressions) against labels."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def flatten(table, prefix=""):
    out = {}
    for k, v in table.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


def known_config_keys(example_path):
    """Every key of deploy/watchnext.example.toml, commented-out ones too."""
    text = open(example_path, encoding="utf-8").read()
    keys = set(flatten(tomllib.loads(text)))
    section = ""
    for line in text.splitlines():
        m = re.match(r"^\s*\[\[?([A-Za-z0-9_.]+)\]\]?\s*$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^#\s*([a-z_][a-z0-9_]*)\s*=", line)
        if m and section:
            keys.add(f"{section}.{m.group(1)}")
    return keys


def port_of(container, name):
    for p in container.get("ports") or []:
        if p.get("name") == name:
            return p["containerPort"]
    return None


class Rendered:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self.objects = [o for o in yaml.safe_load_all(f) if o]
        self.by_kind = {}
        for o in self.objects:
            self.by_kind.setdefault(o["kind"], []).append(o)

    def kind(self, kind):
        return self.by_kind.get(kind, [])

    def get(self, kind, name):
        for o in self.kind(kind):
            if o["metadata"]["name"] == name:
                return o
        return None

    def workloads(self):
        return [o for o in self.objects if pod_template(o) is not None]

    def pods(self):
        """(workload, pod labels) for every pod template."""
        return [(w, pod_template(w)["metadata"].get("labels") or {}) for w in self.workloads()]


def check_identity(r, rep):
    problems = []
    seen = set()
    for o in r.objects:
        key = (o["kind"], o["metadata"]["name"])
        if key in seen:
            problems.append(f"{kn(o)} defined twice")
        seen.add(key)
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != NAMESPACE:
            problems.append(f"{kn(o)}: namespace is {o['metadata'].get('namespace')!r}, not {NAMESPACE!r}")
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "watchnext":
            problems.append(f"{kn(o)}: no app.kubernetes.io/part-of=watchnext label")
    rep.group(f"{len(r.objects)} objects: unique names, namespace {NAMESPACE}, part-of label", problems)


def check_references(r, rep):
    problems = []
    configmaps = {o["metadata"]["name"] for o in r.kind("ConfigMap")}
    pvcs = {o["metadata"]["name"] for o in r.kind("PersistentVolumeClaim")}
    accounts = {o["metadata"]["name"] for o in r.kind("ServiceAccount")}
    for w in r.workloads():
        spec = pod_template(w)["spec"]
        claim_templates = {t["metadata"]["name"] for t in (w["spec"].get("volumeClaimTemplates") or [])}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        sa = spec.get("serviceAccountName")
        if sa not in accounts:
            problems.append(f"{kn(w)}: serviceAccountName {sa!r} is not defined here")
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problems.append(f"{kn(w)}: volume {v['name']}: ConfigMap {v['configMap']['name']} missing")
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in pvcs:
                problems.append(f"{kn(w)}: volume {v['name']}: PVC {v['persistentVolumeClaim']['claimName']} missing")
            if "secret" in v:
                name = v["secret"]["secretName"]
                if name not in EXTERNAL_SECRETS:
                    problems.append(f"{kn(w)}: secret {name} is not one deploy/README.md tells operators to create")
                if name in OPTIONAL_SECRETS and not v["secret"].get("optional"):
                    problems.append(f"{kn(w)}: secret volume {name} must be optional")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes and m["name"] not in claim_templates:
                    problems.append(f"{kn(w)}: container {c['name']} mounts undefined volume {m['name']}")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and (ref["name"] not in EXTERNAL_SECRETS or ref["key"] != "token"):
                    problems.append(f"{kn(w)}: env {e['name']} reads secret {ref['name']}/{ref['key']}")
    pods = r.pods()
    for svc in r.kind("Service"):
        sel = svc["spec"].get("selector")
        if not any(selector_matches({"matchLabels": sel}, labels) for _, labels in pods):
            problems.append(f"{kn(svc)}: selector {sel} matches no pod template")
    for pdb in r.kind("PodDisruptionBudget"):
        if not any(selector_matches(pdb["spec"]["selector"], labels) for _, labels in pods):
            problems.append(f"{kn(pdb)}: selector matches no pod template")
    for hpa in r.kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if r.get(ref["kind"], ref["name"]) is None:
            problems.append(f"{kn(hpa)}: target {ref['kind']}/{ref['name']} missing")
    for w in r.workloads():
        if w["kind"] in ("Deployment", "StatefulSet"):
            labels = pod_template(w)["metadata"].get("labels") or {}
            if not selector_matches(w["spec"]["selector"], labels):
                problems.append(f"{kn(w)}: selector does not match its own pod template")
    rep.group("references: ConfigMaps, PVCs, ServiceAccounts, secrets, selectors, HPA targets", problems)


def check_pod_security(r, rep):
    problems = []
    for w in r.workloads():
        spec = pod_template(w)["spec"]
        psc = spec.get("securityContext") or {}
        is_watchnext = (pod_template(w)["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "watchnext"
        if psc.get("runAsNonRoot") is not True:
            problems.append(f"{kn(w)}: pod securityContext.runAsNonRoot is not true")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{kn(w)}: automountServiceAccountToken is not false")
        if is_watchnext and psc.get("runAsUser") != WATCHNEXT_UID:
            problems.append(f"{kn(w)}: pod runAsUser is not {WATCHNEXT_UID}")
        pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            where = f"{kn(w)} container {c['name']}"
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: capabilities do not drop ALL")
            if (sc.get("capabilities") or {}).get("add"):
                problems.append(f"{where}: adds capabilities")
            if ((sc.get("seccompProfile") or {}).get("type") or pod_seccomp) != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if is_watchnext and sc.get("runAsUser", psc.get("runAsUser")) != WATCHNEXT_UID:
                problems.append(f"{where}: runAsUser is not {WATCHNEXT_UID}")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if what not in (res.get(part) or {}):
                        problems.append(f"{where}: no {part}.{what}")
            if is_watchnext:
                tmp = [m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/tmp"]
                if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                    problems.append(f"{where}: /tmp is not a writable emptyDir")
    rep.group(
        f"pod security of {len(r.workloads())} workloads: non-root (watchnext uid {WATCHNEXT_UID}), "
        "read-only root, no escalation, drop ALL, RuntimeDefault seccomp, requests+limits, /tmp emptyDir",
        problems,
    )


def watchnext_config(r):
    cms = [cm for cm in r.kind("ConfigMap") if cm["metadata"]["name"].startswith("watchnext-config")]
    if len(cms) != 1 or "watchnext.toml" not in cms[0].get("data", {}):
        return None
    return tomllib.loads(cms[0]["data"]["watchnext.toml"])


def check_config(r, rep, example_keys):
    problems = []
    config = watchnext_config(r)
    if config is None:
        rep.group("watchnext.toml: exactly one watchnext-config ConfigMap with a watchnext.toml", ["not found"])
        return None
    for key in flatten(config):
        if key in example_keys or any(key.startswith(t + ".") for t in FREE_TABLES):
            continue
        problems.append(f"unknown key {key} (not in deploy/watchnext.example.toml)")
    server = config.get("server", {})
    if server.get("listen") != f"0.0.0.0:{GRPC_PORT}":
        problems.append(f"server.listen is {server.get('listen')!r}, not 0.0.0.0:{GRPC_PORT}")
    if server.get("metrics_listen") != f"0.0.0.0:{METRICS_PORT}":
        problems.append(f"server.metrics_listen is {server.get('metrics_listen')!r}, not 0.0.0.0:{METRICS_PORT}")
    if config.get("data", {}).get("dir") != "/var/lib/watchnext":
        problems.append("data.dir is not /var/lib/watchnext (the data volume's mount)")
    grace = server.get("shutdown_grace_seconds", 30)
    for d in r.kind("Deployment"):
        spec = d["spec"]["template"]["spec"]
        if (d["spec"]["template"]["metadata"].get("labels") or {}).get("app.kubernetes.io/name") != "watchnext":
            continue
        pre = ((spec["containers"][0].get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        if spec.get("terminationGracePeriodSeconds", 30) <= grace + pre:
            problems.append(
                f"{kn(d)}: terminationGracePeriodSeconds must exceed preStop ({pre}s) + shutdown_grace_seconds ({grace}s)"
            )
    backend = config.get("event_log", {}).get("backend", "embedded")
    if backend not in ("embedded", "nats"):
        problems.append(f"event_log.backend {backend!r} is neither embedded nor nats")
    rep.group("watchnext.toml: known keys, listen/metrics ports, data dir, drain fits the grace period", problems)
    return config


def check_watchnext_deployments(r, rep, config):
    problems = []
    for d in r.kind("Deployment"):
        tpl = d["spec"]["template"]
        labels = tpl["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/name") != "watchnext":
            continue
        c = [c for c in tpl["spec"]["containers"] if c["name"] == "watchnext"]
        if len(c) != 1:
            problems.append(f"{kn(d)}: no container named watchnext")
            continue
        c = c[0]
        comp = labels.get("app.kubernetes.io/component")
        want = "watchnext.v1.Recommender" if comp == "all" else SPLIT_ROLES.get(comp)
        if want is None:
            problems.append(f"{kn(d)}: unknown component {comp!r}")
            continue
        args = c.get("args") or []
        if comp != "all" and args[:3] != ["serve", "--role", comp]:
            problems.append(f"{kn(d)}: args {args} do not start with serve --role {comp}")
        if "--config" not in args or args[args.index("--config") + 1] != "/etc/watchnext/watchnext.toml":
            problems.append(f"{kn(d)}: not started with --config /etc/watchnext/watchnext.toml")
        for probe, service in (("startupProbe", ""), ("livenessProbe", ""), ("readinessProbe", want)):
            g = (c.get(probe) or {}).get("grpc")
            if not g or g.get("port") != GRPC_PORT or g.get("service", "") != service:
                problems.append(f"{kn(d)}: {probe} is not the gRPC probe on {GRPC_PORT} service {service!r}")
        if port_of(c, "grpc") != GRPC_PORT or port_of(c, "metrics") != METRICS_PORT:
            problems.append(f"{kn(d)}: ports grpc/metrics are not {GRPC_PORT}/{METRICS_PORT}")
        ann = tpl["metadata"].get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(METRICS_PORT):
            problems.append(f"{kn(d)}: no Prometheus scrape annotations for port {METRICS_PORT}")
        env = {e["name"] for e in c.get("env") or []}
        if "WATCHNEXT__ADMIN__TOKEN" not in env:
            problems.append(f"{kn(d)}: no WATCHNEXT__ADMIN__TOKEN")
        if comp != "all" and "WATCHNEXT__AUTH__ROLE_TOKEN" not in env:
            problems.append(f"{kn(d)}: no WATCHNEXT__AUTH__ROLE_TOKEN (split roles present and check it)")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        if "/etc/watchnext" not in mounts or "/var/lib/watchnext" not in mounts:
            problems.append(f"{kn(d)}: config or data volume not mounted")
    for cj in r.kind("CronJob"):
        if cj["spec"].get("concurrencyPolicy") != "Forbid":
            problems.append(f"{kn(cj)}: concurrencyPolicy is not Forbid")
    rep.group("watchnext Deployments: role args, gRPC probes (readiness on the role's service), ports, "
              "tokens, mounts; CronJobs Forbid", problems)


class Peer:
    """Who connects: pod labels in this namespace, or None for 'outside'."""

    def __init__(self, labels=None, namespace_labels=None):
        self.labels = labels
        self.namespace_labels = namespace_labels


def allowed(r, peer, dst_labels, port):
    """Whether the NetworkPolicies let peer reach a pod with dst_labels on port."""
    policies = [
        p for p in r.kind("NetworkPolicy")
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and selector_matches(p["spec"]["podSelector"], dst_labels)
    ]
    if not policies:
        return True
    for p in policies:
        for rule in p["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("port") == port for pp in ports):
                continue
            froms = rule.get("from")
            if not froms:
                return True
            for f in froms:
                if "ipBlock" in f:
                    if peer.labels is None:
                        return True
                    continue
                ns_sel = f.get("namespaceSelector")
                pod_sel = f.get("podSelector")
                if peer.labels is None:
                    continue
                ns_labels = peer.namespace_labels or {"kubernetes.io/metadata.name": NAMESPACE}
                if ns_sel is None:
                    # A podSelector alone means pods of the policy's namespace.
                    if ns_labels.get("kubernetes.io/metadata.name") != NAMESPACE:
                        continue
                elif not selector_matches(ns_sel, ns_labels):
                    continue
                if pod_sel is not None and not selector_matches(pod_sel, peer.labels):
                    continue
                return True
    return False


def check_network(r, rep, shape):
    problems = []
    deny = [
        p for p in r.kind("NetworkPolicy")
        if p["spec"]["podSelector"] == {} and p["spec"].get("policyTypes") == ["Ingress"] and not p["spec"].get("ingress")
    ]
    # base holds the default deny; ../nats alone is applied next to it.
    if shape != "nats" and r.workloads() and not deny:
        problems.append("no default-deny ingress policy (podSelector {}, no rules)")
    pods = {w["metadata"]["name"]: labels for w, labels in r.pods()}
    outside = Peer()
    prometheus = Peer({"app.kubernetes.io/name": "prometheus"}, {"kubernetes.io/metadata.name": "monitoring"})
    stranger = Peer({"app.kubernetes.io/name": "something-else"})
    for name, labels in pods.items():
        if labels.get("app.kubernetes.io/name") == "watchnext" and labels.get("app.kubernetes.io/component") != "trainer":
            if not allowed(r, prometheus, labels, METRICS_PORT):
                problems.append(f"Prometheus cannot scrape {name}:{METRICS_PORT}")
    comp_pods = {labels.get("app.kubernetes.io/component"): labels for labels in pods.values()}
    if shape == "all-in-one":
        if not allowed(r, outside, comp_pods["all"], GRPC_PORT):
            problems.append(f"clients cannot reach the all-in-one pod on {GRPC_PORT}")
    if shape.startswith("split"):
        recommender = Peer(comp_pods["recommender"])
        for role in ("recommender", "feedback"):
            if not allowed(r, outside, comp_pods[role], GRPC_PORT):
                problems.append(f"clients cannot reach {role} on {GRPC_PORT}")
        if not allowed(r, recommender, comp_pods["feedback"], GRPC_PORT):
            problems.append("the recommender cannot reach feedback (impressions)")
        for role in BACKEND_ROLES:
            if not allowed(r, recommender, comp_pods[role], GRPC_PORT):
                problems.append(f"the recommender cannot reach {role} on {GRPC_PORT}")
            if allowed(r, outside, comp_pods[role], GRPC_PORT) or allowed(r, stranger, comp_pods[role], GRPC_PORT):
                problems.append(f"{role} is reachable by others than the recommender")
    nats = [labels for labels in pods.values() if labels.get("app.kubernetes.io/name") == "nats"]
    for labels in nats:
        for name, src in pods.items():
            if src.get("app.kubernetes.io/name") == "watchnext" and not allowed(r, Peer(src), labels, 4222):
                problems.append(f"{name} cannot reach NATS on 4222")
        if not allowed(r, Peer(labels), labels, 6222):
            problems.append("NATS servers cannot reach each other on 6222")
        if allowed(r, stranger, labels, 4222) or allowed(r, outside, labels, 4222):
            problems.append("NATS 4222 is open to others than watchnext pods")
        if allowed(r, stranger, labels, 6222):
            problems.append("NATS 6222 is open to others than NATS pods")
    rep.group("NetworkPolicies: default deny; clients, recommender -> roles, roles -> NATS 4222, "
              "NATS 6222, Prometheus -> 9464 (and nothing wider)", problems)


def check_all_in_one(r, rep, config):
    problems = []
    deps = r.kind("Deployment")
    if len(deps) != 1:
        problems.append(f"{len(deps)} Deployments, expected 1")
    for d in deps:
        if d["spec"].get("replicas") != 1:
            problems.append(f"{kn(d)}: replicas is not 1")
        if d["spec"].get("strategy", {}).get("type") != "Recreate":
            problems.append(f"{kn(d)}: strategy is not Recreate")
    pvcs = r.kind("PersistentVolumeClaim")
    if [p["spec"]["accessModes"] for p in pvcs] != [["ReadWriteOnce"]]:
        problems.append("expected one ReadWriteOnce PVC")
    if r.kind("StatefulSet") or any("nats" in o["metadata"]["name"] for o in r.objects):
        problems.append("NATS objects in the all-in-one shape")
    if config and config.get("event_log", {}).get("backend", "embedded") != "embedded":
        problems.append("event_log.backend is not embedded")
    if config and config.get("server", {}).get("role", "all") != "all":
        problems.append("server.role is not all")
    rep.group("all-in-one: one Deployment, replicas 1, Recreate, RWO volume, embedded log, no NATS", problems)


def check_nats(r, rep, config):
    problems = []
    sts = r.get("StatefulSet", "watchnext-nats")
    if sts is None:
        rep.group("NATS JetStream StatefulSet", ["StatefulSet/watchnext-nats missing"])
        return
    spec = sts["spec"]
    if spec.get("replicas") != 3:
        problems.append("replicas is not 3")
    c = spec["template"]["spec"]["containers"][0]
    if not c["image"].startswith("nats:2.10"):
        problems.append(f"image {c['image']} is not nats:2.10*")
    if not spec.get("volumeClaimTemplates"):
        problems.append("no volumeClaimTemplates for JetStream")
    headless = r.get("Service", spec.get("serviceName"))
    if headless is None or headless["spec"].get("clusterIP") != "None":
        problems.append(f"serviceName {spec.get('serviceName')} is not a headless Service")
    elif not any(p["port"] == 6222 for p in headless["spec"]["ports"]):
        problems.append("the headless Service has no cluster port 6222")
    client = r.get("Service", "watchnext-nats")
    if client is None or not any(p["port"] == 4222 for p in client["spec"]["ports"]):
        problems.append("no Service watchnext-nats on 4222")
    conf = [cm for cm in r.kind("ConfigMap") if cm["metadata"]["name"].startswith("watchnext-nats-config")]
    if len(conf) != 1:
        problems.append("no watchnext-nats-config ConfigMap")
    else:
        text = conf[0]["data"]["nats.conf"]
        if "jetstream" not in text or "store_dir" not in text:
            problems.append("nats.conf does not enable JetStream with a store_dir")
        mount = [m for m in c.get("volumeMounts") or [] if m["name"] == spec["volumeClaimTemplates"][0]["metadata"]["name"]]
        store = re.search(r"store_dir:\s*(\S+)", text)
        if not mount or not store or store.group(1) != mount[0]["mountPath"]:
            problems.append("JetStream store_dir is not the claim template's mount path")
        for i in range(spec.get("replicas", 0)):
            route = f"nats://{sts['metadata']['name']}-{i}.{spec.get('serviceName')}:6222"
            if route not in text:
                problems.append(f"nats.conf has no route {route}")
    if not any(selector_matches(p["spec"]["selector"], spec["template"]["metadata"]["labels"])
               for p in r.kind("PodDisruptionBudget")):
        problems.append("no PodDisruptionBudget for NATS")
    if config is not None:
        nats = config.get("event_log", {}).get("nats", {})
        m = re.match(r"^nats://([a-z0-9-]+):(\d+)$", nats.get("url", ""))
        if not m or r.get("Service", m.group(1)) is None or int(m.group(2)) != 4222:
            problems.append(f"event_log.nats.url {nats.get('url')!r} is not a Service here on 4222")
        if not isinstance(nats.get("replicas"), int) or not 1 <= nats["replicas"] <= spec.get("replicas", 0):
            problems.append("event_log.nats.replicas is not between 1 and the NATS servers")
        for key in ("stream", "subject"):
            if not nats.get(key):
                problems.append(f"event_log.nats.{key} is empty")
    rep.group("NATS: 3-node JetStream StatefulSet, headless routes, client Service 4222, PDB, config matches", problems)


def check_split(r, rep, config, gpu):
    problems = []
    for role, service in SPLIT_ROLES.items():
        name = f"watchnext-{role}"
        d = r.get("Deployment", name)
        if d is None:
            problems.append(f"Deployment/{name} missing")
            continue
        labels = d["spec"]["template"]["metadata"]["labels"]
        if "replicas" in d["spec"]:
            problems.append(f"{kn(d)}: sets replicas although an HPA owns the count")
        svc = r.get("Service", name)
        if svc is None or svc["spec"].get("clusterIP") != "None":
            problems.append(f"Service/{name} missing or not headless")
        elif not selector_matches({"matchLabels": svc["spec"]["selector"]}, labels):
            problems.append(f"Service/{name} does not select {kn(d)}")
        hpas = [h for h in r.kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
        if len(hpas) != 1 or hpas[0]["apiVersion"] != "autoscaling/v2":
            problems.append(f"{kn(d)}: expected one autoscaling/v2 HPA")
        else:
            h = hpas[0]["spec"]
            cpu = [m for m in h.get("metrics") or []
                   if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
                   and m["resource"]["target"]["type"] == "Utilization"]
            if not cpu:
                problems.append(f"HPA/{name}: no CPU utilisation target")
            if h.get("minReplicas", 1) > h["maxReplicas"]:
                problems.append(f"HPA/{name}: minReplicas > maxReplicas")
        if not any(selector_matches(p["spec"]["selector"], labels) for p in r.kind("PodDisruptionBudget")):
            problems.append(f"{kn(d)}: no PodDisruptionBudget")
        c = d["spec"]["template"]["spec"]["containers"][0]
        gpu_req = (c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu")
        if gpu and role == "ranker":
            if str(gpu_req) != "1" or str(c["resources"].get("requests", {}).get("nvidia.com/gpu")) != "1":
                problems.append(f"{kn(d)}: does not request and limit nvidia.com/gpu: 1")
            if not c["image"].endswith(":cuda"):
                problems.append(f"{kn(d)}: image {c['image']} is not the CUDA build (:cuda)")
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            if env.get("WATCHNEXT__ONNX__EXECUTION_PROVIDER") != "cuda":
                problems.append(f"{kn(d)}: onnx.execution_provider is not cuda")
            tol = d["spec"]["template"]["spec"].get("tolerations") or []
            if not any(t.get("key") == "nvidia.com/gpu" for t in tol):
                problems.append(f"{kn(d)}: no toleration for nvidia.com/gpu")
        elif gpu_req is not None or c["image"].endswith(":cuda"):
            problems.append(f"{kn(d)}: asks for a GPU or the CUDA image")
    if config is not None:
        if config.get("event_log", {}).get("backend") != "nats":
            problems.append("event_log.backend is not nats")
        for role, url in config.get("endpoints", {}).items():
            m = re.match(r"^http://([a-z0-9-]+):(\d+)$", url)
            svc = r.get("Service", m.group(1)) if m else None
            if svc is None or svc["spec"].get("clusterIP") != "None" or int(m.group(2)) != GRPC_PORT:
                problems.append(f"endpoints.{role} {url!r} is not a headless Service here on {GRPC_PORT}")
            elif svc["spec"]["selector"].get("app.kubernetes.io/component") != role:
                problems.append(f"endpoints.{role} points at another role's Service")
        missing = set(SPLIT_ROLES) - {"recommender"} - set(config.get("endpoints", {}))
        if missing:
            problems.append(f"no endpoints for {sorted(missing)}")
    pvcs = r.kind("PersistentVolumeClaim")
    if [p["spec"]["accessModes"] for p in pvcs] != [["ReadWriteMany"]]:
        problems.append("expected one ReadWriteMany PVC (the shared data volume)")
    if r.get("CronJob", "watchnext-train") is None:
        problems.append("no retraining CronJob watchnext-train")
    rep.group(
        "split roles: Deployment + headless Service + HPA (v2, CPU) + PDB each; endpoints; RWX volume; "
        + ("GPU ranker (nvidia.com/gpu, :cuda, cuda provider, toleration)" if gpu else "no GPUs"),
        problems,
    )


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    shape, path, example = argv[1:]
    r = Rendered(path)
    rep = Report(shape)
    example_keys = known_config_keys(example)
    check_identity(r, rep)
    check_references(r, rep)
    check_pod_security(r, rep)
    config = None
    if shape in ("all-in-one", "split-cpu", "split-gpu", "base"):
        config = check_config(r, rep, example_keys)
    if shape in ("all-in-one", "split-cpu", "split-gpu"):
        check_watchnext_deployments(r, rep, config)
    check_network(r, rep, shape)
    if shape == "all-in-one":
        check_all_in_one(r, rep, config)
    if shape in ("split-cpu", "split-gpu"):
        check_split(r, rep, config, gpu=shape == "split-gpu")
    if shape in ("split-cpu", "split-gpu", "nats"):
        check_nats(r, rep, config)
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
