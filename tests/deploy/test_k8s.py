"""The KubeRay manifests of k8s/: they render, validate against the Kubernetes and KubeRay
schemas, serve the application serve_config.yaml describes, and pass checkov."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deployments.args import AppArgs
from ops.k8s_config import SERVE_CONFIG, VARIANTS, patch_path, patch_text
from specvid.config import parse
from tests.deploy.kustomize import to_yaml
from tests.deploy.manifests import (
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    checkov_results,
    one,
    ray_groups,
    ray_pods,
    render_overlay,
    run_checkov,
    serve_config,
    skip_reason,
)

CRD_SCHEMA = json.loads((Path(__file__).parent / "kuberay_rayservice_schema.json").read_text())
CORE_KINDS = {"ServiceAccount", "Ingress", "NetworkPolicy"}
GPU = "nvidia.com/gpu"
# Checks skipped on the Ray pods, each with its reason in the pod annotations (k8s/base).
EXPECTED_K8S_SKIPS = {"CKV_K8S_22", "CKV_K8S_35", "CKV_K8S_40", "CKV_K8S_43"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render_overlay(name) for name in OVERLAYS}


def rayservice(rendered, overlay) -> dict:
    return one(rendered[overlay], "RayService")


def quantity(value) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores, GiB)."""
    value = str(value)
    units = {"m": 1e-3, "Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10}
    for suffix, scale in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * scale
    return float(value)


def resources(pod: dict, kind: str = "limits") -> dict:
    (container,) = pod["spec"]["containers"]
    return container["resources"][kind]


# --- rendering and generation -------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.overlay)
def test_generated_serve_configs_are_current(variant):
    """The committed overlay patches are what `python -m ops.k8s_config` writes now."""
    assert patch_path(variant).read_text() == patch_text(variant, SERVE_CONFIG.read_text())


def test_every_overlay_has_a_generated_serve_config():
    assert sorted(v.overlay for v in VARIANTS) == sorted(OVERLAYS)
    assert sorted(p.name for p in (K8S / "overlays").iterdir()) == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_application(rendered, overlay):
    kinds = sorted(r["kind"] for r in rendered[overlay])
    assert kinds == ["Ingress", "NetworkPolicy", "RayService", "ServiceAccount"]
    for resource in rendered[overlay]:
        assert resource["metadata"]["namespace"] == "specvid"
        assert resource["metadata"]["labels"]["app.kubernetes.io/name"] == "specvid"
    assert yaml.safe_load_all(to_yaml(rendered[overlay]))  # serialises back to YAML


# --- schemas -----------------------------------------------------------------------------------


def test_core_resources_and_ray_pods_validate_against_kubernetes_schemas(rendered):
    validated = 0
    for overlay in OVERLAYS:
        core = [r for r in rendered[overlay] if r["kind"] in CORE_KINDS]
        pods = ray_pods(rayservice(rendered, overlay))
        for resource in core + pods:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
            validated += 1
    # 3 core resources per overlay; pods: head + 1 worker (CPU) or head + 2 workers (GPU).
    assert validated == 3 * 3 + 2 + 3 + 3


def test_kubernetes_schemas_catch_a_bad_pod(rendered):
    (pod, *_) = ray_pods(rayservice(rendered, "cpu-demo"))
    bad = copy.deepcopy(pod)
    bad["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = 52365
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayservice_matches_the_kuberay_crd_structure(rendered, overlay):
    jsonschema.validate(rayservice(rendered, overlay), CRD_SCHEMA)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda rs: rs["spec"]["rayClusterConfig"].update(workerGroupSpec=[]),  # misspelt field
        lambda rs: rs["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
        lambda rs: rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("maxReplicas"),
        lambda rs: rs["spec"]["rayClusterConfig"]["authOptions"].update(mode="password"),
    ],
)
def test_crd_schema_refuses_what_kuberay_would(rendered, spoil):
    spoilt = copy.deepcopy(rayservice(rendered, "cpu-demo"))
    spoil(spoilt)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spoilt, CRD_SCHEMA)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_config_is_a_ray_serve_config_the_application_accepts(rendered, overlay):
    schema = pytest.importorskip("ray.serve.schema")
    config = serve_config(rayservice(rendered, overlay))
    schema.ServeDeploySchema.model_validate(config)
    for app in config["applications"]:
        parse(AppArgs, app["args"])


# --- the same application as serve_config.yaml (drift) ----------------------------------------------


def local_application() -> tuple[dict, dict]:
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    (app,) = config["applications"]
    return config, app


def test_cpu_demo_serves_the_application_of_serve_config_yaml(rendered):
    local_config, local = local_application()
    k8s_config = serve_config(rayservice(rendered, "cpu-demo"))
    (k8s,) = k8s_config["applications"]
    for key in ("name", "route_prefix", "import_path", "runtime_env"):
        assert k8s[key] == local[key], key
    # Everything but where videos come from: S3 through the pods' IAM role, not the loopback moto.
    k8s_args, local_args = parse(AppArgs, k8s["args"]), parse(AppArgs, local["args"])
    assert k8s_args.model_dump(exclude={"sources"}) == local_args.model_dump(exclude={"sources"})
    assert local_args.sources.s3_endpoint_url.startswith("http://127.0.0.1")
    assert k8s_args.sources.s3_endpoint_url is None
    # The proxy must listen on the pod's address, on the port the ingress names.
    assert k8s_config["http_options"] == {**local_config["http_options"], "host": "0.0.0.0"}
    assert k8s_config["proxy_location"] == local_config["proxy_location"]


def commented_gpu_examples() -> dict[str, dict]:
    """Model names and tp_size of the commented GPU examples, read independently of the
    generator: {target name: {'draft': name, 'tp_size': n}}."""
    comments = "\n".join(line for line in SERVE_CONFIG.read_text().splitlines() if line.startswith("#"))
    examples = {}
    for block in comments.split("#     args:")[1:]:
        names = re.findall(r"(target|draft): \{name: ([^,}]+)", block)
        tp_size = re.search(r"tp_size: (\d+)", block)
        found = dict(names)
        examples[found["target"]] = {"draft": found["draft"], "tp_size": int(tp_size.group(1))}
    return examples


@pytest.mark.parametrize("overlay", ["gpu-qwen", "gpu-llava"])
def test_gpu_overlays_serve_the_commented_gpu_examples(rendered, overlay):
    examples = commented_gpu_examples()
    assert len(examples) == 2
    config = serve_config(rayservice(rendered, overlay))
    (app,) = config["applications"]
    args = parse(AppArgs, app["args"])
    example = examples[args.target.name]
    assert (args.draft.name, args.tp_size) == (example["draft"], example["tp_size"])
    assert args.target.device == args.draft.device == "cuda"
    _, local = local_application()
    assert app["import_path"] == local["import_path"]
    env = app["runtime_env"]["env_vars"]
    assert env["DS_ACCELERATOR"] == "cuda" and "GLOO_SOCKET_IFNAME" not in env
    assert env["HF_HUB_OFFLINE"] == "0"  # real checkpoints download on first start


def test_each_gpu_example_has_its_overlay(rendered):
    served = {
        parse(AppArgs, serve_config(rayservice(rendered, o))["applications"][0]["args"]).target.name
        for o in ("gpu-qwen", "gpu-llava")
    }
    assert served == set(commented_gpu_examples())


# --- pods: sizes, scheduling, identity, probes, metrics ----------------------------------------------


def app_args(rendered, overlay) -> AppArgs:
    return parse(AppArgs, serve_config(rayservice(rendered, overlay))["applications"][0]["args"])


def pod_of(rendered, overlay, group) -> dict:
    name = f"specvid-{group}"
    (pod,) = [p for p in ray_pods(rayservice(rendered, overlay)) if p["metadata"]["name"] == name]
    return pod


@pytest.mark.parametrize("overlay", ["gpu-qwen", "gpu-llava"])
def test_gpu_worker_groups_offer_what_the_application_reserves(rendered, overlay):
    args = app_args(rendered, overlay)
    target, draft = pod_of(rendered, overlay, "gpu-target"), pod_of(rendered, overlay, "gpu-draft")
    # A TP group is one STRICT_PACK placement group: all its ranks in one pod, no GPU idle.
    assert int(resources(target)[GPU]) == args.tp_size * args.rank_resources.num_gpus
    assert quantity(resources(target)["cpu"]) >= args.tp_size * args.rank_resources.num_cpus + 1
    assert int(resources(draft)[GPU]) == args.draft_resources.num_gpus
    assert quantity(resources(draft)["cpu"]) >= args.draft_resources.num_cpus + 1


def test_cpu_demo_workers_offer_what_the_application_reserves(rendered):
    args = app_args(rendered, "cpu-demo")
    worker = pod_of(rendered, "cpu-demo", "workers")
    reserved = args.tp_size * args.rank_resources.num_cpus + args.draft_resources.num_cpus
    assert quantity(resources(worker)["cpu"]) >= reserved + 1
    assert GPU not in resources(worker)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_requests_equal_limits_and_shared_memory_fits(rendered, overlay):
    for pod in ray_pods(rayservice(rendered, overlay)):
        assert resources(pod, "requests") == resources(pod, "limits")  # Guaranteed QoS: no eviction
        shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "shm")["emptyDir"]
        assert shm["medium"] == "Memory"
        assert quantity(shm["sizeLimit"]) < quantity(resources(pod)["memory"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_object_store_fits_in_shared_memory(rendered, overlay):
    for group, spec in ray_groups(rayservice(rendered, overlay)).items():
        store_gib = int(spec["rayStartParams"]["object-store-memory"]) / 2**30
        shm = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == "shm")["emptyDir"]
        assert store_gib < quantity(shm["sizeLimit"]), group


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_head_offers_no_cpus_or_gpus_to_replicas(rendered, overlay):
    head = ray_groups(rayservice(rendered, overlay))["head"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert GPU not in resources(pod_of(rendered, overlay, "head"))


@pytest.mark.parametrize("overlay", ["gpu-qwen", "gpu-llava"])
def test_gpu_pods_tolerate_the_gpu_taint_and_pick_their_instance_type(rendered, overlay):
    for group in ("gpu-target", "gpu-draft"):
        spec = pod_of(rendered, overlay, group)["spec"]
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert set(spec["nodeSelector"]) == {"node.kubernetes.io/instance-type"}
        assert pod_of(rendered, overlay, group)["spec"]["containers"][0]["image"].endswith("-cuda")
    head = pod_of(rendered, overlay, "head")["spec"]
    assert "tolerations" not in head  # the head stays on the CPU system nodes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_irsa_service_account(rendered, overlay):
    account = one(rendered[overlay], "ServiceAccount")
    arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/specvid-video-reader", arn)
    for pod in ray_pods(rayservice(rendered, overlay)):
        assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
        assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_scrape_annotations_name_ports_the_containers_open(rendered, overlay):
    for group, spec in ray_groups(rayservice(rendered, overlay)).items():
        template = spec["template"]
        (container,) = template["spec"]["containers"]
        ports = {p["containerPort"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (group, probe)
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        metrics_port = int(spec["rayStartParams"]["metrics-export-port"])
        assert int(annotations["prometheus.io/port"]) == metrics_port
        assert {"name": "metrics", "containerPort": metrics_port} in container["ports"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_token_comes_from_the_api_key_secret(rendered, overlay):
    auth = rayservice(rendered, overlay)["spec"]["rayClusterConfig"]["authOptions"]
    assert auth == {"mode": "token", "secretName": "specvid-api-key"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_the_rest_api_to_the_serve_service(rendered, overlay):
    service = rayservice(rendered, overlay)
    port = serve_config(service)["http_options"]["port"]
    (rule,) = one(rendered[overlay], "Ingress")["spec"]["rules"]
    paths = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert set(paths) == {"/v1", "/healthz"}
    for backend in paths.values():
        # KubeRay names the service that follows the active cluster <RayService>-serve-svc.
        assert backend == {"name": f"{service['metadata']['name']}-serve-svc", "port": {"number": port}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_selects_the_ray_pods_and_admits_the_rest_port(rendered, overlay):
    policy = one(rendered[overlay], "NetworkPolicy")["spec"]
    selector = policy["podSelector"]["matchLabels"]
    for pod in ray_pods(rayservice(rendered, overlay)):
        assert selector.items() <= pod["metadata"]["labels"].items()
    open_ports = {p["port"] for rule in policy["ingress"] if "from" not in rule for p in rule["ports"]}
    assert serve_config(rayservice(rendered, overlay))["http_options"]["port"] in open_ports


# --- checkov ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_k8s(rendered, tmp_path_factory) -> dict:
    """One checkov run over every overlay. checkov does not know the RayService kind, so each
    overlay's file also holds the Ray pods its templates make, where the pod checks apply."""
    directory = tmp_path_factory.mktemp("rendered")
    for overlay, resources_ in rendered.items():
        pods = ray_pods(one(resources_, "RayService"))
        (directory / f"{overlay}.yaml").write_text(to_yaml(resources_ + pods))
    return run_checkov(directory, "kubernetes")


def test_checkov_passes_on_the_rendered_manifests(rendered, checkov_k8s):
    summary = checkov_k8s["summary"]
    failed = checkov_results(checkov_k8s, "failed_checks")
    assert summary["failed"] == 0, [(c["check_id"], c["resource"]) for c in failed]
    assert summary["parsing_errors"] == 0
    # Every rendered resource and every Ray pod was read (checkov counts the RayService too).
    expected = sum(len(r) + len(ray_pods(one(r, "RayService"))) for r in rendered.values())
    assert summary["resource_count"] == expected
    checked = {c["resource"].split(".")[0] for c in checkov_results(checkov_k8s, "passed_checks")}
    assert {"Pod", "ServiceAccount", "Ingress"} <= checked
    assert summary["passed"] > 100


def test_checkov_skips_are_the_justified_ones(checkov_k8s):
    skipped = checkov_results(checkov_k8s, "skipped_checks")
    assert {c["check_id"] for c in skipped} == EXPECTED_K8S_SKIPS
    for check in skipped:
        assert len(skip_reason(check) or "") > 20, check["check_id"]
