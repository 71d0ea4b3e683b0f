"""The Terraform of terraform/: it parses, declares what the deployment needs, agrees with the
manifests of k8s/, and passes checkov. (No `terraform init`: providers and modules would have
to be downloaded.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import hcl2
import pytest

from tests.deploy.manifests import (
    KUBERNETES_VERSION,
    OVERLAYS,
    TERRAFORM,
    checkov_results,
    one,
    ray_groups,
    render_overlay,
    run_checkov,
    skip_reason,
)

EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# Checks skipped in terraform/, each with a `checkov:skip=ID:reason` comment beside the resource.
EXPECTED_TF_SKIPS = {"CKV_TF_1", "CKV_AWS_18", "CKV_AWS_144", "CKV_AWS_145", "CKV2_AWS_62"}
# Taint effects: Terraform's EKS API spelling and Kubernetes' own.
TAINT_EFFECTS = {
    "NO_SCHEDULE": "NoSchedule",
    "NO_EXECUTE": "NoExecute",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
}
# Published sizes of the instance types the manifests ask for: vCPUs, GiB of memory, GPUs.
INSTANCE_TYPES = {
    "m7i.2xlarge": (8, 32, 0),
    "g6e.2xlarge": (8, 64, 1),
    "g6e.12xlarge": (48, 384, 4),
    "p4d.24xlarge": (96, 1152, 8),
}


@pytest.fixture(scope="module")
def tf() -> dict[str, list]:
    """Every block of every .tf file, by block type ('resource', 'variable', ...)."""
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    blocks: dict[str, list] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for kind, entries in hcl2.loads(path.read_text(), serialization_options=options).items():
            blocks.setdefault(kind, []).extend(entries)
    return blocks


def named(tf, kind) -> dict[str, dict]:
    """Blocks with one label (variable, output, module): {label: body}."""
    return {label: body for entry in tf.get(kind, []) for label, body in entry.items()}


def typed(tf, kind) -> dict[tuple[str, str], dict]:
    """Blocks with two labels (resource, data): {(type, name): body}."""
    return {
        (t, n): body
        for entry in tf.get(kind, [])
        for t, bodies in entry.items()
        for n, body in bodies.items()
    }


def local(tf, name):
    (value,) = [entry[name] for entry in tf["locals"] if name in entry]
    return value


def default(tf, variable):
    return named(tf, "variable")[variable]["default"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render_overlay(name) for name in OVERLAYS}


# --- the files -------------------------------------------------------------------------------------


def test_every_file_parses_and_the_layout_is_complete(tf):
    names = {p.name for p in TERRAFORM.glob("*.tf")}
    assert {"versions.tf", "main.tf", "variables.tf", "outputs.tf", "eks.tf", "s3.tf", "iam.tf"} <= names
    assert (TERRAFORM / "README.md").is_file()
    assert {"resource", "variable", "output", "module", "terraform"} <= set(tf)


def test_variables_are_described_typed_and_validated(tf):
    variables = named(tf, "variable")
    required = {
        "region", "name", "kubernetes_version", "api_allowed_cidrs", "vpc_cidr", "system_node_group",
        "gpu_node_groups", "video_bucket_name", "k8s_namespace", "k8s_service_account",
        "api_key_secret_name", "kuberay_namespace", "kuberay_chart_version",
    }  # fmt: skip
    assert required <= set(variables)
    for name, body in variables.items():
        assert len(body.get("description", "")) > 20, name
        assert "type" in body, name
        if name != "tags" and body.get("type") != "bool":
            assert body.get("validation"), f"{name} has no validation"
    # Only what no default can answer must be given: where to reach the API from, the bucket name.
    assert {n for n, b in variables.items() if "default" not in b} == {
        "api_allowed_cidrs",
        "video_bucket_name",
    }


def test_outputs_tell_how_to_use_the_cluster(tf):
    outputs = named(tf, "output")
    required = {
        "cluster_name", "cluster_endpoint", "configure_kubectl", "video_bucket_name", "video_kms_key_arn",
        "video_reader_role_arn", "k8s_namespace", "api_key_secret_name",
    }  # fmt: skip
    assert required <= set(outputs)
    for name, body in outputs.items():
        assert body.get("description"), name
        assert "${" in body["value"], name  # computed, not a constant


def test_providers_modules_and_charts_are_pinned(tf):
    (terraform,) = tf["terraform"]
    (providers,) = terraform["required_providers"]
    assert {"aws", "helm", "kubernetes", "random"} <= set(providers)
    for name, provider in providers.items():
        assert re.match(r"^~> \d+\.\d+$", provider["version"]), name
    modules = named(tf, "module")
    assert modules["eks"]["source"] == "terraform-aws-modules/eks/aws"
    assert modules["vpc"]["source"] == "terraform-aws-modules/vpc/aws"
    for name, module in modules.items():
        assert EXACT_VERSION.match(module["version"]), name
    releases = {name: body for (kind, name), body in typed(tf, "resource").items() if kind == "helm_release"}
    assert {"kuberay_operator", "cluster_autoscaler", "aws_load_balancer_controller"} <= set(releases)
    for name, release in releases.items():
        version = release["version"]
        if version.startswith("${var."):
            version = default(tf, version[len("${var.") : -1])
        assert EXACT_VERSION.match(version), name
    assert releases["kuberay_operator"]["chart"] == "kuberay-operator"


# --- the video bucket ------------------------------------------------------------------------------


def test_video_bucket_is_private_encrypted_versioned_and_logged(tf):
    resources = typed(tf, "resource")
    bucket = "${aws_s3_bucket.videos.id}"
    (sse,) = resources[("aws_s3_bucket_server_side_encryption_configuration", "videos")]["rule"]
    (by_default,) = sse["apply_server_side_encryption_by_default"]
    assert by_default == {"sse_algorithm": "aws:kms", "kms_master_key_id": "${aws_kms_key.videos.arn}"}
    assert resources[("aws_kms_key", "videos")]["enable_key_rotation"] is True
    versioning = resources[("aws_s3_bucket_versioning", "videos")]
    assert versioning["bucket"] == bucket and versioning["versioning_configuration"] == [
        {"status": "Enabled"}
    ]
    block = resources[("aws_s3_bucket_public_access_block", "videos")]
    assert block["bucket"] == bucket
    for setting in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[setting] is True, setting
    assert resources[("aws_s3_bucket_ownership_controls", "videos")]["rule"] == [
        {"object_ownership": "BucketOwnerEnforced"}
    ]
    logging = resources[("aws_s3_bucket_logging", "videos")]
    assert logging["target_bucket"] == "${aws_s3_bucket.access_logs.id}"


@pytest.mark.parametrize("bucket", ["videos", "access_logs"])
def test_buckets_refuse_plain_http(tf, bucket):
    policy = typed(tf, "resource")[("aws_s3_bucket_policy", bucket)]
    (name,) = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", policy["policy"]).groups()
    document = typed(tf, "data")[("aws_iam_policy_document", name)]
    denials = [s for s in document["statement"] if s.get("effect") == "Deny"]
    (deny,) = denials
    assert deny["actions"] == ["s3:*"]
    assert deny["condition"] == [{"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}]


# --- IRSA: the role of the Ray pods ---------------------------------------------------------------------


def test_video_reader_role_is_read_only(tf):
    document = typed(tf, "data")[("aws_iam_policy_document", "video_reader")]
    actions = {a for statement in document["statement"] for a in statement["actions"]}
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:GetObjectVersion", "kms:Decrypt"}
    for statement in document["statement"]:
        assert statement.get("effect", "Allow") == "Allow"
        assert "*" not in statement["resources"]


def test_video_reader_role_trusts_exactly_the_ray_service_account(tf, rendered):
    (statement,) = typed(tf, "data")[("aws_iam_policy_document", "video_reader_trust")]["statement"]
    conditions = {c["variable"]: c["values"] for c in statement["condition"]}
    assert conditions["${module.eks.oidc_provider}:sub"] == ["${local.ray_service_account}"]
    assert conditions["${module.eks.oidc_provider}:aud"] == ["sts.amazonaws.com"]
    assert (
        local(tf, "ray_service_account")
        == "system:serviceaccount:${var.k8s_namespace}:${var.k8s_service_account}"
    )
    role_name = typed(tf, "resource")[("aws_iam_role", "video_reader")]["name"].replace(
        "${var.name}", default(tf, "name")
    )
    for overlay in OVERLAYS:
        account = one(rendered[overlay], "ServiceAccount")
        assert account["metadata"]["namespace"] == default(tf, "k8s_namespace")
        assert account["metadata"]["name"] == default(tf, "k8s_service_account")
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(f":role/{role_name}")


# --- the cluster and the manifests agree -----------------------------------------------------------------


def test_gpu_node_groups_scale_from_zero_with_the_taint_the_pods_tolerate(tf, rendered):
    taint = local(tf, "gpu_taint")
    groups = local(tf, "gpu_node_groups")
    for text in (
        "min_size = 0",
        "desired_size = 0",
        "taints = {gpu = local.gpu_taint}",
        "BOTTLEROCKET_x86_64_NVIDIA",
    ):
        assert text in groups, text
    toleration = {"key": taint["key"], "operator": "Exists", "effect": TAINT_EFFECTS[taint["effect"]]}
    for overlay in ("gpu-qwen", "gpu-llava"):
        for group in ("gpu-target", "gpu-draft"):
            spec = ray_groups(one(rendered[overlay], "RayService"))[group]["template"]["spec"]
            assert toleration in spec["tolerations"], (overlay, group)


def test_every_pod_fits_a_node_group_of_the_cluster(tf, rendered):
    gpu_groups = default(tf, "gpu_node_groups")
    disks = {g["instance_type"]: g["disk_gib"] for g in gpu_groups.values()}
    system_type = default(tf, "system_node_group")["instance_type"]
    for overlay in OVERLAYS:
        for group, spec in ray_groups(one(rendered[overlay], "RayService")).items():
            pod = spec["template"]["spec"]
            instance = pod.get("nodeSelector", {}).get("node.kubernetes.io/instance-type", system_type)
            assert instance in disks or instance == system_type, (overlay, group, instance)
            vcpus, memory_gib, gpus = INSTANCE_TYPES[instance]
            limits = pod["containers"][0]["resources"]["limits"]
            assert float(limits["cpu"]) < vcpus, (overlay, group)
            assert float(limits["memory"].removesuffix("Gi")) < memory_gib * 0.95, (overlay, group)
            assert int(limits.get("nvidia.com/gpu", 0)) <= gpus, (overlay, group)
            if instance in disks:  # the model cache lives on the node's data volume
                cache = next(v for v in pod["volumes"] if v["name"] == "cache")["emptyDir"]["sizeLimit"]
                assert float(cache.removesuffix("Gi")) < disks[instance] * 0.8, (overlay, group)


def test_names_shared_with_the_manifests_agree(tf, rendered):
    service = one(rendered["cpu-demo"], "RayService")
    assert service["spec"]["rayClusterConfig"]["authOptions"]["secretName"] == default(
        tf, "api_key_secret_name"
    )
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    policy = one(rendered["cpu-demo"], "NetworkPolicy")
    operator_namespaces = [
        source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["spec"]["ingress"]
        for source in rule.get("from", [])
        if source.get("namespaceSelector", {}).get("matchLabels")
    ]
    assert operator_namespaces == [default(tf, "kuberay_namespace")]
    assert one(rendered["cpu-demo"], "Ingress")["spec"]["ingressClassName"] == "alb"


def test_versions_agree(tf):
    assert default(tf, "kubernetes_version") == KUBERNETES_VERSION
    minor = default(tf, "cluster_autoscaler_image_tag").removeprefix("v").rsplit(".", 1)[0]
    assert minor == default(tf, "kubernetes_version")
    schema = json.loads(
        (TERRAFORM.parent / "tests" / "deploy" / "kuberay_rayservice_schema.json").read_text()
    )
    assert f"KubeRay v{default(tf, 'kuberay_chart_version')}" in schema["$comment"]


# --- tools -------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary installed")
def test_terraform_fmt_is_clean():
    done = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff"],
        cwd=TERRAFORM,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


@pytest.fixture(scope="module")
def checkov_tf() -> dict:
    return run_checkov(TERRAFORM, "terraform")


def test_checkov_passes_on_the_terraform(checkov_tf):
    summary = checkov_tf["summary"]
    failed = checkov_results(checkov_tf, "failed_checks")
    assert summary["failed"] == 0, [(c["check_id"], c["resource"]) for c in failed]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 50
    checked = {c["resource"] for c in checkov_results(checkov_tf, "passed_checks")}
    assert {"aws_s3_bucket.videos", "aws_kms_key.videos", "aws_iam_role.video_reader"} <= checked


def test_checkov_skips_are_the_justified_ones(checkov_tf):
    skipped = checkov_results(checkov_tf, "skipped_checks")
    assert {c["check_id"] for c in skipped} == EXPECTED_TF_SKIPS
    for check in skipped:
        assert len(skip_reason(check) or "") > 20, check["check_id"]
