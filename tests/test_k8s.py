"""The deployment files: k8s/ manifests, deploy/Dockerfile, .dockerignore, deploy/run-workers.sh.

Offline and fast. Built-in Kubernetes kinds are validated with kubernetes-validate, whose wheel
ships the Kubernetes JSON Schemas of every supported release (the strict variant: unknown
fields fail). No PyPI package ships schemas for the custom resources (Strimzi, KEDA,
Prometheus Operator, kustomize), so those are validated against the minimal schemas this
project wrote in tests/schemas/ (see its README). Then the invariants the platform relies on:
probes, no secret literals, non-root and read-only root filesystem, resources, and topic
partitions that agree with SESSIONREC_PARTITIONS. Each check is a function returning the
problems it finds, and each is also run on a broken copy to show that it does fail.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
RUN_WORKERS = ROOT / "deploy" / "run-workers.sh"

# The oldest Kubernetes release the manifests target, and the newest the validator knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): "kafka.strimzi.io-v1beta2-kafka.json",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "kafka.strimzi.io-v1beta2-kafkanodepool.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafka.strimzi.io-v1beta2-kafkatopic.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh-v1alpha1-scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com-v1-servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com-v1-prometheusrule.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
        "kustomize.config.k8s.io-v1beta1-kustomization.json",
}
HEALTH_PORT = 6066
SECRET_NAME = "sessionrec-kafka-credentials"
SECRETISH = re.compile(r"PASSW|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL|SASL_JAAS", re.IGNORECASE)
ALERTS = ("SessionrecWorkerDown", "SessionrecWorkerNotReady", "SessionrecConsumerLagGrowing",
          "SessionrecDLQRateHigh", "SessionrecNoClicks")

Doc = dict[str, Any]


# ---------------------------------------------------------------------------------- loading


def load_manifests() -> list[tuple[str, Doc]]:
    """(file name, document) for every YAML document under k8s/."""
    docs: list[tuple[str, Doc]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
                docs.append((path.name, doc))
    return docs


MANIFESTS = load_manifests()


def resources() -> list[Doc]:
    return [doc for _, doc in MANIFESTS if doc.get("kind") != "Kustomization"]


def of_kind(kind: str, docs: list[Doc] | None = None) -> list[Doc]:
    return [d for d in (resources() if docs is None else docs) if d.get("kind") == kind]


def one(kind: str, docs: list[Doc] | None = None) -> Doc:
    found = of_kind(kind, docs)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def doc_id(item: tuple[str, Doc]) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name', '-')}"


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(workload name, pod spec) of every workload with a pod template."""
    for d in docs:
        template = d.get("spec", {}).get("template")
        if d.get("kind") in {"StatefulSet", "Deployment", "DaemonSet", "Job"} and template:
            yield f"{d['kind']}/{d['metadata']['name']}", template["spec"]


def containers(spec: Doc, init: bool = True) -> Iterator[Doc]:
    yield from spec.get("containers", [])
    if init:
        yield from spec.get("initContainers", [])


def configmap_env(docs: list[Doc] | None = None) -> dict[str, str]:
    return {str(k): str(v) for k, v in one("ConfigMap", docs)["data"].items()}


# ------------------------------------------------------------------------------- validation


def _crd_registry() -> Registry:
    common = json.loads((SCHEMAS / "common.json").read_text())
    return Resource.from_contents(common) @ Registry()


CRD_REGISTRY = _crd_registry()


def validate(doc: Doc, k8s_version: str) -> None:
    """Raise jsonschema.ValidationError (or a kubernetes-validate error) if ``doc`` is invalid."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
        jsonschema.Draft202012Validator(schema, registry=CRD_REGISTRY).validate(doc)
    else:
        kubernetes_validate.validate(doc, k8s_version, strict=True)


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("item", MANIFESTS, ids=doc_id)
def test_manifest_is_valid(item: tuple[str, Doc], k8s_version: str) -> None:
    validate(item[1], k8s_version)


def test_crd_schemas_are_valid_json_schemas() -> None:
    for path in SCHEMAS.glob("*.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))
    assert {p.name for p in SCHEMAS.glob("*.json")} == {*CRD_SCHEMAS.values(), "common.json"}


def _broken(kind: str, edit: Any) -> Doc:
    doc = copy.deepcopy(next(d for _, d in MANIFESTS if d["kind"] == kind))
    edit(doc)
    return doc


BROKEN = {
    "statefulset unknown field": ("StatefulSet", lambda d: d["spec"].update(replica=2)),
    "probe port of wrong type": ("StatefulSet", lambda d: d["spec"]["template"]["spec"]["containers"][0]
                                 ["livenessProbe"]["httpGet"].update(port=[6066])),
    "pdb maxUnavailable as list": ("PodDisruptionBudget", lambda d: d["spec"].update(maxUnavailable=[1])),
    "topic partitions as string": ("KafkaTopic", lambda d: d["spec"].update(partitions="12")),
    "topic without cluster label": ("KafkaTopic",
                                    lambda d: d["metadata"]["labels"].pop("strimzi.io/cluster")),
    "misspelt listener field": ("Kafka", lambda d: d["spec"]["kafka"]["listeners"][0].update(tsl=True)),
    "node pool role": ("KafkaNodePool", lambda d: d["spec"].update(roles=["zookeeper"])),
    "keda lag threshold as number": ("ScaledObject", lambda d: d["spec"]["triggers"][0]["metadata"]
                                     .update(lagThreshold=1000)),
    "keda kafka trigger without group": ("ScaledObject", lambda d: d["spec"]["triggers"][0]["metadata"]
                                         .pop("consumerGroup")),
    "servicemonitor interval": ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(interval="15")),
    "alert without expr": ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr")),
    "kustomization typo": ("Kustomization", lambda d: d.update(resource=d["resources"])),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validation_rejects_broken_manifests(case: str) -> None:
    kind, edit = BROKEN[case]
    with pytest.raises(jsonschema.ValidationError):
        validate(_broken(kind, edit), K8S_VERSIONS[0])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = list(kustomization["resources"])
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert not list(K8S.glob("*.yml")), "use .yaml"
    for image in kustomization.get("images", []):
        assert image.get("digest") or image.get("newTag") not in (None, "", "latest"), image


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_build() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(built) == len(resources())
    assert all(d["metadata"].get("namespace") == "sessionrec" for d in built)
    images = {c["image"] for _, spec in pod_specs(built) for c in containers(spec)}
    assert images and all(":" in i.rsplit("/", 1)[-1] and not i.endswith(":latest") for i in images)


# ------------------------------------------------------------------------------- invariants


def _port_number(container: Doc, port: Any) -> Any:
    for p in container.get("ports", []):
        if port == p.get("name"):
            return p["containerPort"]
    return port


def probe_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for workload, spec in pod_specs(docs):
        for c in containers(spec, init=False):
            where = f"{workload}/{c['name']}"
            for kind, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"),
                               ("startupProbe", "/livez")):
                get = c.get(kind, {}).get("httpGet")
                if not get:
                    problems.append(f"{where}: no {kind} over HTTP")
                    continue
                if get.get("path") != path or _port_number(c, get.get("port")) != HEALTH_PORT:
                    problems.append(f"{where}: {kind} is {get}, want {path} on {HEALTH_PORT}")
            startup = c.get("startupProbe", {})
            budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
            if budget < 300:
                problems.append(f"{where}: startupProbe allows {budget}s, less than a group join "
                                "and a changelog recovery need (300s)")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if not 30 <= grace <= 300:
            problems.append(f"{workload}: terminationGracePeriodSeconds {grace}")
    return problems


def secret_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for d in docs:
        if d.get("kind") == "Secret":
            problems.append(f"Secret/{d['metadata']['name']} in the manifests")
        if d.get("kind") == "ConfigMap":
            problems += [f"ConfigMap key {k} looks secret" for k in d.get("data", {}) if SECRETISH.search(k)]
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            for env in c.get("env", []):
                name = env["name"]
                if "value" in env and SECRETISH.search(name):
                    problems.append(f"{workload}/{c['name']}: env {name} has a literal value")
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if SECRETISH.search(name) and not ref:
                    problems.append(f"{workload}/{c['name']}: env {name} is not from a Secret")
                if ref and ref["name"] != SECRET_NAME:
                    problems.append(f"{workload}/{c['name']}: env {name} reads Secret {ref['name']}")
        for volume in spec.get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] != SECRET_NAME:
                problems.append(f"{workload}: volume {volume['name']} reads another Secret")
    # And no credential-looking literal anywhere in the text (key=value, key: value).
    literal = re.compile(r"(password|passwd|token|secret)[\"']?[ \t]*[:=][ \t]*[\"']?[^\s\"'{]{6,}",
                         re.IGNORECASE)
    for d in docs:
        for match in literal.finditer(yaml.safe_dump(d)):
            if SECRET_NAME not in match.group(0):
                problems.append(f"{d['kind']}/{d['metadata']['name']}: {match.group(0)!r}")
    return problems


def security_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for workload, spec in pod_specs(docs):
        pod = spec.get("securityContext", {})
        if pod.get("runAsNonRoot") is not True:
            problems.append(f"{workload}: runAsNonRoot is not true")
        if not isinstance(pod.get("runAsUser"), int) or pod["runAsUser"] <= 0:
            problems.append(f"{workload}: runAsUser must be a non-zero uid")
        if not isinstance(pod.get("fsGroup"), int) or pod["fsGroup"] <= 0:
            problems.append(f"{workload}: fsGroup must be set")
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{workload}: seccompProfile is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{workload}: the service account token is mounted")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{workload}: {key}")
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in containers(spec):
            where = f"{workload}/{c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                problems.append(f"{where}: capabilities must drop ALL and add none")
            if sc.get("privileged") or sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
                problems.append(f"{where}: runs privileged or as root")
            mounts = c.get("volumeMounts", [])
            if not any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in mounts):
                problems.append(f"{where}: no emptyDir on /tmp")
    return problems


_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: Any) -> float:
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in _UNITS, f"not a quantity: {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2)]


def resource_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            where = f"{workload}/{c['name']}"
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for name in ("cpu", "memory"):
                    if name not in res.get(part, {}):
                        problems.append(f"{where}: no {part}.{name}")
            for name in ("cpu", "memory"):
                req, lim = res.get("requests", {}).get(name), res.get("limits", {}).get(name)
                if req is not None and lim is not None and quantity(req) > quantity(lim):
                    problems.append(f"{where}: {name} request {req} above limit {lim}")
            if (c.get("image") or "").endswith(":latest"):
                problems.append(f"{where}: image tag latest")
    return problems


def topic_problems(docs: list[Doc]) -> list[str]:
    """The KafkaTopics against the worker's settings (the ConfigMap)."""
    from streams.settings import Settings

    problems = []
    settings = Settings.from_env(configmap_env(docs))
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind("KafkaTopic", docs)}
    changelog = f"{settings.app_id}-sessions_by_visitor-changelog"
    leader = f"{settings.app_id}-__assignor-__leader"
    deltas = settings.model_deltas_topic
    wanted = {settings.clicks_topic, settings.recommendations_topic, settings.sessions_topic,
              settings.dlq_topic, changelog, leader, deltas}
    if set(topics) != wanted:
        problems.append(f"KafkaTopics {sorted(topics)} != the worker's topics {sorted(wanted)}")
    for name in (settings.clicks_topic, changelog):
        if name in topics and topics[name]["spec"]["partitions"] != settings.partitions:
            problems.append(f"{name} has {topics[name]['spec']['partitions']} partitions, "
                            f"SESSIONREC_PARTITIONS is {settings.partitions}")
    for name in wanted - {leader, deltas}:
        if name in topics and topics[name]["spec"]["partitions"] != settings.partitions:
            problems.append(f"{name}: partitions differ from the visitor-keyed input")
    for name in (leader, deltas):
        if name in topics and topics[name]["spec"]["partitions"] != 1:
            problems.append(f"{name} must have one partition")
    for name, topic in topics.items():
        config = topic["spec"].get("config", {})
        policy = config.get("cleanup.policy")
        if name == changelog:
            if policy != "compact":
                problems.append(f"{name}: cleanup.policy {policy!r}, must be compact")
        elif policy != "delete" or not isinstance(config.get("retention.ms"), int):
            problems.append(f"{name}: needs cleanup.policy delete and a retention.ms")
        if topic["spec"]["replicas"] < 3:
            problems.append(f"{name}: replicas {topic['spec']['replicas']} < 3")
    day = 86_400_000
    expected_days = {settings.clicks_topic: 7, settings.recommendations_topic: 1,
                     settings.sessions_topic: 14, settings.dlq_topic: 30}
    # Every delta is part of the model: a worker without a snapshot replays them all.
    if topics.get(deltas, {}).get("spec", {}).get("config", {}).get("retention.ms") != -1:
        problems.append(f"{deltas}: retention.ms must be -1 (kept for ever)")
    for name, days in expected_days.items():
        got = topics.get(name, {}).get("spec", {}).get("config", {}).get("retention.ms")
        if got != days * day:
            problems.append(f"{name}: retention.ms {got}, expected {days} days")
    return problems


def test_probes() -> None:
    assert probe_problems(resources()) == []


def test_no_secret_literals() -> None:
    assert secret_problems(resources()) == []
    refs = [env["valueFrom"]["secretKeyRef"] for _, spec in pod_specs(resources()) for c in containers(spec)
            for env in c.get("env", []) if "secretKeyRef" in env.get("valueFrom", {})]
    assert refs, "the Kafka credentials are expected by Secret reference"


def test_security_context() -> None:
    assert security_problems(resources()) == []


def test_resources_and_images() -> None:
    assert resource_problems(resources()) == []


def test_topics_match_settings() -> None:
    assert topic_problems(resources()) == []


def _statefulset_pod(d: Doc) -> Doc:
    return d["spec"]["template"]["spec"]


def _worker(d: Doc) -> Doc:
    return _statefulset_pod(d)["containers"][0]


INVARIANT_BREAKS = {
    "no readiness probe": (
        probe_problems, "StatefulSet", lambda d: _worker(d).pop("readinessProbe")),
    "liveness on the wrong path": (
        probe_problems, "StatefulSet", lambda d: _worker(d)["livenessProbe"]["httpGet"].update(path="/x")),
    "short startup": (
        probe_problems, "StatefulSet", lambda d: _worker(d)["startupProbe"].update(failureThreshold=3)),
    "secret object": (
        secret_problems, "ConfigMap", lambda d: d.update(kind="Secret")),
    "password literal": (
        secret_problems, "StatefulSet", lambda d: _worker(d)["env"].append(
            {"name": "SESSIONREC_KAFKA_SASL_PASSWORD", "value": "hunter2hunter2"})),
    "token in configmap": (
        secret_problems, "ConfigMap", lambda d: d["data"].update(API_TOKEN="abc")),
    "password in a url": (
        secret_problems, "ConfigMap", lambda d: d["data"].update(
            SESSIONREC_BROKER="kafka://u:p@host:9092?password=s3cr3t-pw")),
    "other secret": (
        secret_problems, "StatefulSet", lambda d: _statefulset_pod(d)["volumes"].append(
            {"name": "x", "secret": {"secretName": "someone-elses"}})),
    "runs as root": (
        security_problems, "StatefulSet",
        lambda d: _statefulset_pod(d)["securityContext"].update(runAsUser=0)),
    "writable root fs": (
        security_problems, "StatefulSet", lambda d: _statefulset_pod(d)["initContainers"][0]
        ["securityContext"].update(readOnlyRootFilesystem=False)),
    "keeps capabilities": (
        security_problems, "StatefulSet", lambda d: _worker(d)["securityContext"].pop("capabilities")),
    "no memory limit": (
        resource_problems, "StatefulSet", lambda d: _worker(d)["resources"]["limits"].pop("memory")),
    "request above limit": (
        resource_problems, "StatefulSet", lambda d: _worker(d)["resources"]["requests"].update(cpu="3")),
    "latest image": (
        resource_problems, "StatefulSet", lambda d: _worker(d).update(image="sessionrec:latest")),
    "partitions disagree": (
        topic_problems, "ConfigMap", lambda d: d["data"].update(SESSIONREC_PARTITIONS="8")),
    "changelog not compacted": (
        topic_problems, "KafkaTopic:changelog", lambda d: d["spec"]["config"].update(
            {"cleanup.policy": "delete"})),
}


@pytest.mark.parametrize("case", sorted(INVARIANT_BREAKS))
def test_invariant_checks_catch(case: str) -> None:
    check, target, edit = INVARIANT_BREAKS[case]
    docs = copy.deepcopy(resources())
    if target == "KafkaTopic:changelog":
        victim = next(d for d in of_kind("KafkaTopic", docs) if "changelog" in d["spec"].get("topicName", ""))
    else:
        victim = one(target, docs)
    edit(victim)
    assert check(docs), f"{check.__name__} missed: {case}"


def test_configmap_is_the_worker_settings() -> None:
    from dataclasses import fields

    from streams.settings import PREFIX, Settings

    env = configmap_env()
    known = {PREFIX + f.name.upper() for f in fields(Settings)}
    assert set(env) <= known, f"unknown settings: {sorted(set(env) - known)}"
    settings = Settings.from_env(env)  # every value parses
    sts = one("StatefulSet")
    pod = _statefulset_pod(sts)
    worker = next(c for c in pod["containers"] if c["name"] == "worker")
    assert settings.web_port == HEALTH_PORT == _port_number(worker, "http")
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert mounts.get("data") == settings.data_dir and "data" in claims
    for c in containers(pod):
        assert {"configMapRef": {"name": one("ConfigMap")["metadata"]["name"]}} in c.get("envFrom", [])
    kafka = one("Kafka")
    plain = next(listener for listener in kafka["spec"]["kafka"]["listeners"] if not listener["tls"])
    assert settings.broker_address == f"{kafka['metadata']['name']}-kafka-bootstrap:{plain['port']}"


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_objects_point_at_each_other() -> None:
    from streams.settings import Settings

    settings = Settings.from_env(configmap_env())
    sts = one("StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert _matches(sts["spec"]["selector"]["matchLabels"], pod_labels)
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and _matches(headless["spec"]["selector"], pod_labels)
    accounts = {a["metadata"]["name"] for a in of_kind("ServiceAccount")}
    assert _statefulset_pod(sts)["serviceAccountName"] in accounts
    assert "replicas" not in sts["spec"], "KEDA owns spec.replicas"
    assert _matches(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)

    monitor = one("ServiceMonitor")
    scraped = [s for s in services.values() if _matches(monitor["spec"]["selector"]["matchLabels"],
                                                        s["metadata"]["labels"])]
    assert len(scraped) == 1 and scraped[0]["spec"].get("clusterIP") != "None"
    metrics_service = scraped[0]
    assert _matches(metrics_service["spec"]["selector"], pod_labels)
    port_names = {p["name"]: p["port"] for p in metrics_service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert port_names["metrics"] == HEALTH_PORT and monitor["spec"]["endpoints"][0]["path"] == "/metrics"

    scaled = one("ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", sts["metadata"]["name"])
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.app_id
    assert trigger["metadata"]["topic"] == settings.clicks_topic
    assert trigger["metadata"]["bootstrapServers"].split(".")[0] == settings.broker_address.split(":")[0]
    assert 2 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= settings.partitions

    kafka = one("Kafka")
    assert kafka["metadata"]["annotations"].get("strimzi.io/kraft") == "enabled"
    assert kafka["metadata"]["annotations"].get("strimzi.io/node-pools") == "enabled"
    for d in of_kind("KafkaTopic") + of_kind("KafkaNodePool"):
        assert d["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    pool = one("KafkaNodePool")
    assert pool["spec"]["replicas"] >= 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}


def _prometheus_groups() -> list[Doc]:
    return list(one("PrometheusRule")["spec"]["groups"])


def test_prometheus_rule_alerts() -> None:
    rules = {r["alert"]: r for g in _prometheus_groups() for r in g["rules"] if "alert" in r}
    assert set(ALERTS) <= set(rules)
    monitor = one("ServiceMonitor")["spec"]
    services = [s for s in of_kind("Service") if _matches(monitor["selector"]["matchLabels"],
                                                          s["metadata"]["labels"])]
    # The scrape job: the value of the Service's jobLabel label, else the Service's name.
    job = services[0]["metadata"]["labels"].get(monitor.get("jobLabel", ""), services[0]["metadata"]["name"])
    assert job == "sessionrec", "deploy/prometheus and the dashboards select job=\"sessionrec\""
    for name in ALERTS:
        assert f'job="{job}"' in rules[name]["expr"], name
        assert rules[name]["labels"]["severity"] in {"page", "ticket"}
        assert rules[name]["annotations"].get("summary")


def test_prometheus_rule_names_match_deploy_alerts() -> None:
    """Each alert here is one of deploy/prometheus/alerts.yml's (same name, same runbook entry)."""
    alerts_yml = ROOT / "deploy" / "prometheus" / "alerts.yml"
    if not alerts_yml.exists():
        pytest.skip("deploy/prometheus/alerts.yml not there")
    theirs = {r["alert"] for g in yaml.safe_load(alerts_yml.read_text())["groups"] for r in g["rules"]
              if "alert" in r}
    ours = {r["alert"] for g in _prometheus_groups() for r in g["rules"] if "alert" in r}
    assert ours <= theirs, sorted(ours - theirs)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": _prometheus_groups()}))
    out = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_init_container_waits_for_every_topic() -> None:
    """The wait-for-topics script names the same topics as the KafkaTopics (via Settings)."""
    init = _statefulset_pod(one("StatefulSet"))["initContainers"][0]
    script = "\n".join(init["args"])
    compile(script, "wait-for-topics", "exec")
    for attr in ("clicks_topic", "recommendations_topic", "sessions_topic", "dlq_topic",
                 "model_deltas_topic"):
        assert f"s.{attr}" in script
    assert "-sessions_by_visitor-changelog" in script and "-__assignor-__leader" in script


# -------------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its (INSTRUCTION, arguments) list."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
                           words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages and instruction == "ARG":
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    args, stages = parse_dockerfile(text)
    if len(stages) < 2:
        problems.append(f"{len(stages)} stage(s): build wheels in a builder stage")
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:
            continue
        if "@sha256:" in stage.image:
            continue
        last = stage.image.rsplit("/", 1)[-1]
        tag = last.rpartition(":")[2] if ":" in last else ""
        if "$" in stage.image or not tag or tag == "latest" or not re.search(r"\d+\.\d+\.\d+", tag):
            problems.append(f"FROM {stage.image}: not pinned to an exact version tag")
    final = stages[-1] if stages else Stage("", None)
    users = [rest for ins, rest in final.instructions if ins == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("the final stage does not switch to a non-root USER")
    for stage in stages:
        for ins, rest in stage.instructions:
            if ins in {"ENV", "ARG"}:
                for key in re.findall(r"(\w+)=", rest) or [rest.split()[0]]:
                    if SECRETISH.search(key):
                        problems.append(f"{ins} {key}: secrets do not belong in the image")
            if ins == "HEALTHCHECK":
                problems.append("HEALTHCHECK: Kubernetes probes check health")
            if ins == "ADD" and re.search(r"https?://", rest):
                problems.append("ADD from a URL")
    for key in args:
        if SECRETISH.search(key):
            problems.append(f"ARG {key}: secrets do not belong in the image")
    exposed = {p.split("/")[0] for ins, rest in final.instructions if ins == "EXPOSE" for p in rest.split()}
    if str(HEALTH_PORT) not in exposed:
        problems.append(f"EXPOSE {HEALTH_PORT} missing")
    entry = [json.loads(rest) for ins, rest in final.instructions if ins == "ENTRYPOINT"]
    cmd = [json.loads(rest) for ins, rest in final.instructions if ins == "CMD"]
    if (entry[-1] if entry else []) + (cmd[-1] if cmd else []) != ["sessionrec", "worker"]:
        problems.append("the image does not run `sessionrec worker` (exec form)")
    return problems


def test_dockerfile() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("python:3.11.14-slim-bookworm", "python:latest"),
    lambda t: t.replace("python:3.11.14-slim-bookworm", "python:3.11-slim"),
    lambda t: re.sub(r"^USER .*$", "USER root", t, flags=re.MULTILINE),
    lambda t: re.sub(r"^USER .*$", "", t, flags=re.MULTILINE),
    lambda t: t.replace("FROM ${PYTHON_IMAGE} AS runtime", "").replace("COPY --from=builder", "COPY"),
    lambda t: t + "\nENV KAFKA_PASSWORD=hunter2\n",
    lambda t: t + "\nHEALTHCHECK CMD curl -f http://localhost:6066/livez\n",
    lambda t: t.replace("EXPOSE 6066", "EXPOSE 8080"),
    lambda t: t.replace('CMD ["worker"]', 'CMD ["demo"]'),
], ids=["latest", "floating-tag", "root", "no-user", "single-stage", "secret-env", "healthcheck", "port",
        "command"])
def test_dockerfile_checks_catch(edit: Any) -> None:
    text = DOCKERFILE.read_text()
    broken = edit(text)
    assert broken != text, "the edit did not apply: update the test"
    assert dockerfile_problems(broken)


def test_dockerignore_keeps_what_the_image_copies() -> None:
    lines = DOCKERIGNORE.read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    assert patterns[0] in {"*", "**"}, "exclude everything, then re-include what the build needs"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    for stage in stages:
        for ins, rest in stage.instructions:
            if ins in {"COPY", "ADD"} and "--from" not in rest:
                for source in shlex.split(rest)[:-1]:
                    if not source.startswith("--"):
                        assert source.rstrip("/").removeprefix("./") in included, source
                        assert (ROOT / source).exists(), source


# ---------------------------------------------------------------------------- run-workers.sh


def test_run_workers_script_parses() -> None:
    assert RUN_WORKERS.stat().st_mode & 0o111, "deploy/run-workers.sh is not executable"
    out = subprocess.run(["bash", "-n", str(RUN_WORKERS)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    usage = subprocess.run(["bash", str(RUN_WORKERS), "zero"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage" in usage.stderr
