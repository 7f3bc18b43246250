"""The Helm chart, rendered without a helm binary (helm-python-sdk embeds Helm), with the default
values, the CPU profile (`helm/cpu-values.yaml`) and a production-like values file
(`helm/production-values.yaml`):
- every object is valid against the Kubernetes schemas (kubernetes-validate, strict), and
  RayCluster, ServiceMonitor and ScaledObject against the CRD schemas in tests/helm/crds;
- checkov finds nothing that `helm/checkov-accepted.yaml` does not explain;
- every setting the pool and the workers need reaches their environment under a name the
  settings know, and the pool fits the GPUs the RayCluster asks for."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from guardstream.console.settings import ConsoleSettings
from guardstream.runtime import pool_spec
from guardstream.topology.settings import Settings
from guardstream.wire.settings import flat_names
from guardstream.workers.pools.specs import GenSpec, PoolSpec, StreamSpec

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "guardstream"
PRODUCTION = yaml.safe_load((ROOT / "helm" / "production-values.yaml").read_text())
CPU = yaml.safe_load((ROOT / "helm" / "cpu-values.yaml").read_text())
ACCEPTED = yaml.safe_load((ROOT / "helm" / "checkov-accepted.yaml").read_text())
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
KUBERNETES = "1.30"
VALUE_SETS = {"default": {}, "cpu": CPU, "production": PRODUCTION}


def merged(overrides: dict, into: dict | None = None) -> dict:
    """The chart's values with `overrides` on top, as Helm merges them (maps deeply, lists whole)."""
    result = dict(yaml.safe_load((CHART / "values.yaml").read_text()) if into is None else into)
    for key, value in overrides.items():
        result[key] = merged(value, result[key]) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def render(values: dict | None = None) -> list[dict]:
    manifests = helm.Chart.load(CHART).render(values or None, name="guard", namespace="moderation")
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(VALUE_SETS[request.param])


def crd_schemas() -> dict[tuple[str, str], dict]:
    """The upstream CRDs' schemas (tests/helm/crds, unmodified), checked as `kubectl apply` does with
    strict field validation: a field the schema does not name is an error, not silently pruned."""
    schemas = {}
    for path in (ROOT / "tests" / "helm" / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())["spec"]
        for version in crd["versions"]:
            schemas[(f"{crd['group']}/{version['name']}", crd["names"]["kind"])] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def strict(schema):
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def one(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def ray_pod_templates(cluster: dict) -> list[dict]:
    return [cluster["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in cluster["spec"]["workerGroupSpecs"]]


def problems_of(doc: dict, crds: dict) -> list[str]:
    where = f"{doc['kind']} {doc['metadata']['name']}"
    try:
        schema = crds.get((doc["apiVersion"], doc["kind"]))
        if schema is None:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            return []
        jsonschema.Draft202012Validator(schema).validate(doc)
        if doc["kind"] == "RayCluster":
            for template in ray_pod_templates(doc):
                kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"},
                                              "template": template}, KUBERNETES, strict=True)
    except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
        return [f"{where}: {getattr(exc, 'message', exc)}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {doc['apiVersion']} {doc['kind']}"]
    return []


def test_every_object_is_valid_against_its_schema(rendered):
    name, docs = rendered
    crds = crd_schemas()
    assert [p for doc in docs for p in problems_of(doc, crds)] == []
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ConfigMap", "RayCluster", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    if name != "production":
        assert "Secret" in kinds  # the Ray token, made by the chart
    else:
        assert {"ScaledObject", "ServiceMonitor", "Service"} <= kinds


def test_keda_reaches_a_secured_kafka_with_the_workers_credentials_and_ca():
    """As KEDA's Kafka scaler reads them: `sasl` and `tls` in the trigger's metadata, `username`,
    `password` and `ca` from the TriggerAuthentication (a parameter set in both places is an error)."""
    docs = render(PRODUCTION)
    scaled, auth = one(docs, "ScaledObject", "guard-guardstream-moderation"), one(docs, "TriggerAuthentication",
                                                                                  "guard-guardstream-kafka")
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    kafka = PRODUCTION["kafka"]
    assert refs == {"username": (kafka["saslSecret"], "username"), "password": (kafka["saslSecret"], "password"),
                    "ca": (kafka["caSecret"], "ca.crt")}
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "kafka" and trigger["authenticationRef"] == {"name": "guard-guardstream-kafka"}
        assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
        assert not {"username", "password", "ca"} & set(trigger["metadata"])
    plain = render({"autoscaling": {"enabled": True}})
    assert [t["metadata"]["tls"] for t in one(plain, "ScaledObject", "guard-guardstream-moderation")["spec"]["triggers"]] \
        == ["disable", "disable"]
    assert not [d for d in plain if d["kind"] == "TriggerAuthentication"]
    pod = one(docs, "Deployment", "guard-guardstream-moderation")["spec"]["template"]["spec"]
    mounted = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/etc/guardstream/kafka-ca" in mounted and any(v.get("secret", {}).get("secretName") == kafka["caSecret"]
                                                           for v in pod["volumes"])


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    """Every pod template the chart makes, by its Deployment's name or its Ray group."""
    specs = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"}
    cluster = one(docs, "RayCluster", "guard-guardstream-ray")
    specs["ray-head"] = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    specs.update({f"ray-{g['groupName']}": g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]})
    return specs


def test_every_pod_can_be_placed_and_pulled_as_the_operator_says():
    default = pod_specs(render())
    gpu_taint = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert default["ray-models"]["tolerations"] == [gpu_taint]  # tainted GPU nodes take the Ray GPU workers
    assert not [name for name, spec in default.items() if name != "ray-models" and "tolerations" in spec]
    production = pod_specs(render(PRODUCTION))
    assert len(production) == 6
    for name, spec in production.items():
        assert spec["serviceAccountName"] == "guardstream" and spec["automountServiceAccountToken"] is False, name
        assert spec["imagePullSecrets"] == [{"name": "registry-example-com"}], name
    gpu = PRODUCTION["ray"]["cluster"]["modelWorkers"]
    assert production["ray-models"]["nodeSelector"] == gpu["nodeSelector"]
    assert production["ray-models"]["tolerations"] == gpu["tolerations"]
    assert production["guard-guardstream-moderation"]["topologySpreadConstraints"] == \
        PRODUCTION["workers"]["moderation"]["topologySpreadConstraints"]


def test_a_typo_in_a_custom_resource_is_caught():
    cluster = one(render(), "RayCluster", "guard-guardstream-ray")
    cluster["spec"]["workerGroupSpecs"][0]["replica"] = 2
    assert problems_of(cluster, crd_schemas())


def environment(docs: list[dict], component: str) -> dict[str, str]:
    """A Deployment's container environment, ConfigMaps resolved and Secrets as `secret:NAME/KEY`."""
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    (container,) = one(docs, "Deployment", f"guard-guardstream-{component}")["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = f"secret:{ref['name']}/{ref['key']}" if ref else str(var["value"])
    return env


def mounted_secret(pod_spec: dict, path: str) -> str:
    """The Secret mounted where `path` lies."""
    (container,) = pod_spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    return volume["secret"]["secretName"]


def test_the_review_console_is_optional_and_gets_what_it_needs():
    """Off by default; on, it serves on all addresses behind its Service, with the reviewer keys and
    session secret from a Secret, the audit database, and the reviewer principal for Kafka."""
    assert not [d for d in render() if "review" in d["metadata"]["name"]]
    docs = render(PRODUCTION)
    env = environment(docs, "review")
    settings = ConsoleSettings.load({k: v for k, v in env.items() if k.startswith("GUARDSTREAM_")})
    assert (settings.console.host, settings.console.port) == ("0.0.0.0", 8090)
    assert env["GUARDSTREAM_REVIEW_KEYS"] == "secret:guardstream-review/keys.json"
    assert env["GUARDSTREAM_REVIEW_SESSION_SECRET"] == "secret:guardstream-review/session-secret"
    assert env["GUARDSTREAM_AUDIT_URL"] == "secret:guardstream-audit-db/url"
    assert env["GUARDSTREAM_KAFKA_SASL_USERNAME"] == "secret:guardstream-kafka-reviewer/username"  # not the workers'
    pod = one(docs, "Deployment", "guard-guardstream-review")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["review", "serve"] and container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert mounted_secret(pod["spec"], env["GUARDSTREAM_AUDIT_CA_FILE"]) == PRODUCTION["audit"]["caSecret"]
    service = one(docs, "Service", "guard-guardstream-review")["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items() and service["ports"][0]["targetPort"] == "http"
    policy = one(docs, "NetworkPolicy", "guard-guardstream-review")["spec"]
    assert policy["ingress"][0]["from"] == PRODUCTION["review"]["ingressFrom"]
    for broken, why in (({"audit": {"sqlite": True}}, "needs the audit database in PostgreSQL"),
                        ({"review": {"kafkaSaslSecret": ""}}, "review.kafkaSaslSecret")):
        with pytest.raises(Exception, match=why):
            render(merged(broken, PRODUCTION))


def test_every_setting_reaches_the_pool_and_the_workers():
    docs = render(PRODUCTION)
    env = {c: environment(docs, c) for c in ("pool", "moderation", "sinks")}
    for component, variables in env.items():
        unknown = [k for k in variables if k.startswith("GUARDSTREAM_")
                   and k.removeprefix("GUARDSTREAM_").lower() not in flat_names(Settings)]
        assert unknown == [], f"{component}: no such setting"
    pool, moderation, sinks = (Settings.load(env[c]) for c in ("pool", "moderation", "sinks"))

    values = merged(PRODUCTION)
    gen, stream = values["pool"]["gen"], values["pool"]["stream"]
    assert pool_spec(pool, {"gen", "stream"}) == PoolSpec(
        gen=GenSpec(model=gen["model"], actors=gen["actors"], actor_cpus=gen["actorCpus"], actor_gpus=gen["actorGpus"],
                    device=gen["device"], dtype=gen["dtype"], batch_size=gen["batchSize"], backend=gen["backend"],
                    kv_cache_mb=gen["kvCacheMb"]),
        stream=StreamSpec(model=stream["model"], actors=stream["actors"], actor_cpus=stream["actorCpus"],
                          actor_gpus=stream["actorGpus"], device=stream["device"], dtype=stream["dtype"],
                          max_sessions=stream["maxSessions"], kv_cache_mb=stream["kvCacheMb"]))
    # the pool through Ray Client; the moderation workers as drivers on their own Ray node (see below)
    assert pool.pool.ray_address == "ray://guard-guardstream-ray-head-svc:10001"
    assert moderation.pool.ray_address == "guard-guardstream-ray-head-svc:6379"
    assert pool.kafka.app_id == moderation.kafka.app_id != sinks.kafka.app_id  # the pool's Ray namespace is the moderation app's
    assert moderation.pool.mode == "join" and moderation.agents == {"gen", "stream"} and moderation.gen.model is None
    assert sinks.agents == {"enforcement", "audit", "review", "analytics"} and sinks.pool.ray_address is None
    assert sinks.sinks.audit_url == "secret:guardstream-audit-db/url" and moderation.sinks.audit_url is None
    assert str(sinks.sinks.audit_ca_file) == "/etc/guardstream/audit-ca/ca.crt" and moderation.sinks.audit_ca_file is None
    sinks_pod = one(docs, "Deployment", "guard-guardstream-sinks")["spec"]["template"]["spec"]
    assert mounted_secret(sinks_pod, str(sinks.sinks.audit_ca_file)) == "guardstream-audit-db-ca"
    for settings in (moderation, sinks):
        assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
        assert settings.kafka.sasl_password == "secret:guardstream-kafka/password"
        assert str(settings.kafka.ssl_cafile) == "/etc/guardstream/kafka-ca/ca.crt"  # the mounted caSecret
        assert settings.policy.model_dump(mode="json", exclude_defaults=True) == \
            Settings.load({"GUARDSTREAM_POLICY": json.dumps(PRODUCTION["policy"])}).policy.model_dump(mode="json", exclude_defaults=True)

    # one Ray token, from the existing Secret, wherever Ray is spoken
    cluster = one(docs, "RayCluster", "guard-guardstream-ray")
    pods = [one(docs, "Deployment", f"guard-guardstream-{c}")["spec"]["template"]["spec"] for c in ("pool", "moderation")]
    pods += [t["spec"] for t in ray_pod_templates(cluster)]
    for pod in pods:
        variables = {v["name"]: v.get("value") for v in pod["containers"][0]["env"]}
        assert variables["RAY_AUTH_MODE"] == "token"
        assert mounted_secret(pod, variables["RAY_AUTH_TOKEN_PATH"]) == "guardstream-ray-token"
    assert not [d for d in docs if d["kind"] == "Secret"]  # an existing Secret: the chart makes none

    # the pool fits the GPUs the cluster asks for
    (gpus,) = cluster["spec"]["workerGroupSpecs"]
    offered = gpus["replicas"] * gpus["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gen["actors"] * gen["actorGpus"] + stream["actors"] * stream["actorGpus"] <= offered

    # KEDA owns the moderation replicas; the sinks keep theirs
    scaled = one(docs, "ScaledObject", "guard-guardstream-moderation")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "guard-guardstream-moderation"
    assert {t["metadata"]["consumerGroup"] for t in scaled["spec"]["triggers"]} == {moderation.kafka.group_id}
    assert "replicas" not in one(docs, "Deployment", "guard-guardstream-moderation")["spec"]
    assert one(docs, "Deployment", "guard-guardstream-sinks")["spec"]["replicas"] == 3


def test_every_pod_is_probed_limited_and_unprivileged(rendered):
    _, docs = rendered
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        console = deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "review"  # probed on its one port
        port = "http" if console else "health"
        for container in spec["containers"]:
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
            assert {p["name"] for p in container["ports"]} >= ({"http"} if console else {"metrics", "health"})
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]) and container["resources"]["requests"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
        (home,) = [v for v in spec["volumes"] if v["name"] == "home"]
        assert home["emptyDir"]["sizeLimit"].endswith("Mi")  # a full disk evicts the pod, never the node's others
        for sidecar in spec.get("initContainers", []):  # the moderation workers' Ray node
            assert {"cpu", "memory"} <= set(sidecar["resources"]["limits"]) and sidecar["resources"]["requests"]
            assert sidecar["securityContext"] == spec["containers"][0]["securityContext"]


def test_audit_needs_its_secret_unless_sqlite_is_chosen():
    with pytest.raises(helm.HelmRenderError, match="audit.urlSecret"):
        render({"audit": {"urlSecret": ""}})
    sqlite = environment(render({"audit": {"urlSecret": "", "sqlite": True}}), "sinks")
    assert sqlite["GUARDSTREAM_AUDIT_URL"].startswith("sqlite:////var/lib/guardstream/")
    assert environment(render(), "sinks")["GUARDSTREAM_AUDIT_URL"] == "secret:guardstream-audit/url"


def test_checkov_finds_nothing_unexplained(rendered, tmp_path):
    name, docs = rendered
    assert CHECKOV.exists(), f"{CHECKOV} is missing: `make install` builds it from tests/helm/checkov.lock"
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    done = subprocess.run([str(CHECKOV), "-f", str(manifest), "--framework", "kubernetes", "--output", "json",
                           "--skip-download", "--quiet"], capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    report = report if isinstance(report, dict) else report[0]
    failed = {check["check_id"] for check in report["results"]["failed_checks"]}
    assert report["summary"]["passed"] > 100  # it really scanned the objects
    assert failed - set(ACCEPTED) == set(), f"checkov findings without a reason in helm/checkov-accepted.yaml: {failed - set(ACCEPTED)}"
    assert all(len(reason) > 40 for reason in ACCEPTED.values())
    if name == "production":
        assert "CKV_K8S_43" not in failed  # the production values pin the image by digest


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def test_operator_knobs_reach_every_container_that_needs_them():
    docs = render(PRODUCTION)
    specs = pod_specs(docs)
    extra_env = {e["name"]: e["value"] for e in PRODUCTION["extraEnv"]}
    (extra_mount,) = PRODUCTION["extraVolumeMounts"]
    configmap = one(docs, "ConfigMap", "guard-guardstream")["data"]
    for name, spec in specs.items():
        assert {v["name"] for v in spec["volumes"]} >= {"tmp", "home", "corporate-ca"}, name
        for container in containers(spec):
            env = {v["name"]: v.get("value") for v in container.get("env", [])}
            env.update(configmap if container.get("envFrom") else {})
            assert {k: env.get(k) for k in extra_env} == extra_env, (name, container["name"])
            assert extra_mount in container["volumeMounts"], (name, container["name"])
            # HOME is writable under the read-only root filesystem
            home = [m["mountPath"] for m in container["volumeMounts"] if env.get("HOME", "").startswith(m["mountPath"])]
            assert env.get("HOME") == "/var/lib/guardstream" and home, (name, container["name"])
    # the Hugging Face token wherever a checkpoint or a tokenizer is downloaded
    for name in ("ray-models", "guard-guardstream-moderation"):
        (worker,) = specs[name]["containers"]
        token = [v for v in worker["env"] if v["name"] == "HF_TOKEN"]
        assert token == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "guardstream-hf", "key": "token"}}}]
    # the model cache: the claim on the model workers, where HF_HOME points; a sized emptyDir by default
    (models,) = specs["ray-models"]["containers"]
    hf_home = next(v["value"] for v in models["env"] if v["name"] == "HF_HOME")
    (cache,) = [m for m in models["volumeMounts"] if m["mountPath"] == hf_home]
    (volume,) = [v for v in specs["ray-models"]["volumes"] if v["name"] == cache["name"]]
    assert volume["persistentVolumeClaim"] == {"claimName": "guardstream-models"}
    (default_cache,) = [v for v in pod_specs(render())["ray-models"]["volumes"] if v["name"] == cache["name"]]
    assert default_cache["emptyDir"]["sizeLimit"]


def test_the_moderation_workers_drive_the_pool_from_a_ray_node_beside_them():
    """`guardstream bench ray-link`: a driver on a Ray node calls the actors 4-5x cheaper than Ray
    Client. The node is a native sidecar (started before the worker, alive with the pod) with no
    CPUs or GPUs, so no model actor lands on it; it and the worker share /tmp, where Ray keeps the
    node's sockets, and the cluster's pods may connect back to it."""
    docs = render()
    spec = one(docs, "Deployment", "guard-guardstream-moderation")["spec"]["template"]["spec"]
    (node,), (worker,) = spec["initContainers"], spec["containers"]
    address = environment(docs, "moderation")["GUARDSTREAM_RAY_ADDRESS"]
    assert node["restartPolicy"] == "Always" and node["command"][:2] == ["ray", "start"]
    assert {"--block", "--num-cpus=0", "--num-gpus=0", f"--address={address}"} <= set(node["command"])
    assert address == "guard-guardstream-ray-head-svc:6379"
    tmp = {m["name"] for c in (node, worker) for m in c["volumeMounts"] if m["mountPath"] == "/tmp"}
    assert len(tmp) == 1
    assert {v["name"]: v.get("value") for v in node["env"]}["RAY_AUTH_MODE"] == "token"
    store = int(next(a for a in node["command"] if a.startswith("--object-store-memory=")).split("=")[1])
    (shm,) = [v for v in spec["volumes"] if v["name"] == "shm"]
    assert int(shm["emptyDir"]["sizeLimit"].removesuffix("Mi")) << 20 >= store
    policy = one(docs, "NetworkPolicy", "guard-guardstream-ray-drivers")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= \
        one(docs, "Deployment", "guard-guardstream-moderation")["spec"]["template"]["metadata"]["labels"].items()
    assert policy["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": "guard-guardstream-ray"}}}]}]
    # the pool, which calls its actors every few seconds, stays on Ray Client and runs no node
    pool = one(docs, "Deployment", "guard-guardstream-pool")["spec"]["template"]["spec"]
    assert "initContainers" not in pool and environment(docs, "pool")["GUARDSTREAM_RAY_ADDRESS"].startswith("ray://")


def test_the_dashboard_reads_actor_gauges_once_per_actor():
    """Every moderation worker re-exports the same actors' gauges: a sum would count each actor
    once per worker, so actor panels take the max per actor."""
    dashboard = json.loads((CHART / "dashboards" / "guardstream.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    actor = [e for e in expressions if "guardstream_actor_" in e]
    assert len(actor) >= 2 and all(e.startswith("max by (") and "actor" in e.split(")")[0] for e in actor), actor


def test_a_canary_in_the_values_runs_in_the_moderation_workers_only():
    canary = {"gen_model": "Qwen/Qwen3Guard-Gen-4B", "sample": 0.1, "actor_gpus": 1}
    docs = render(merged({"canary": canary}, PRODUCTION))
    moderation, sinks = (Settings.load(environment(docs, c)) for c in ("moderation", "sinks"))
    assert moderation.runs_canary and moderation.canary.model_dump(exclude_defaults=True) == canary
    assert moderation.agents == {"gen", "stream", "canary"} and not sinks.runs_canary
    keyed = render(merged({"canary": canary, "canarySampleSecret": "canary-key"}, PRODUCTION))
    assert environment(keyed, "moderation")["GUARDSTREAM_CANARY_SAMPLE_SECRET"] == "secret:canary-key/sample-secret"
    assert "GUARDSTREAM_CANARY_SAMPLE_SECRET" not in environment(keyed, "sinks")


def test_metrics_are_reachable_only_from_monitoring_and_probes_have_a_port_of_their_own():
    """/metrics names tenants: only the values' scrapers reach it. The probes answer on another
    port, with connections of their own (`topology/health.py`), that kubelet reaches."""
    docs = render()
    policy = one(docs, "NetworkPolicy", "guard-guardstream-workers")["spec"]
    metrics, health = policy["ingress"]
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}],
                       "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}
    assert health == {"ports": [{"port": "health", "protocol": "TCP"}]}
    assert environment(docs, "moderation")["GUARDSTREAM_HEALTH_PORT"] == "9465"
    nodes = [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    scrapers = [{"namespaceSelector": {"matchLabels": {"team": "obs"}}, "podSelector": {"matchLabels": {"app": "prom"}}}]
    narrowed = one(render(merged({"networkPolicy": {"metricsFrom": scrapers, "probesFrom": nodes}})), "NetworkPolicy",
                   "guard-guardstream-workers")["spec"]["ingress"]
    assert [rule["from"] for rule in narrowed] == [scrapers, nodes]


def test_the_state_volume_is_bounded_and_an_alert_fires_before_it_fills():
    docs = render(merged({"prometheusRule": {"enabled": True}, "workers": {"homeSizeLimitMi": 1024}}))
    spec = one(docs, "Deployment", "guard-guardstream-moderation")["spec"]["template"]["spec"]
    (home,) = [v for v in spec["volumes"] if v["name"] == "home"]
    assert home["emptyDir"] == {"sizeLimit": "1024Mi"}
    (rule,) = one(docs, "PrometheusRule", "guard-guardstream")["spec"]["groups"][0]["rules"]
    assert rule["alert"] == "GuardstreamStateDiskNearlyFull"
    assert rule["expr"] == f"guardstream_state_bytes > {int(0.8 * 1024 * 1048576)}"
    assert rule["for"] == "10m" and rule["labels"] == {"severity": "warning"} and set(rule["annotations"]) == {
        "summary", "description"}  # the PrometheusRule fields the operator reads (no CRD here to check them against)
