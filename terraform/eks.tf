# The cluster: a CPU system node group (add-ons, Ray head pods, the CPU demo's workers) and one
# managed node group per GPU instance type, each starting at zero nodes. The cluster autoscaler
# (addons.tf) adds a GPU node when a Ray worker pod asks for one and removes it when idle.
# GPU nodes carry the nvidia.com/gpu taint that the GPU overlays of k8s/ tolerate, so nothing
# else lands on them.

locals {
  gpu_taint = {
    key    = "nvidia.com/gpu"
    value  = "true"
    effect = "NO_SCHEDULE"
  }

  system_node_group = {
    system = {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = [var.system_node_group.instance_type]
      min_size       = var.system_node_group.min_size
      max_size       = var.system_node_group.max_size
      desired_size   = var.system_node_group.desired_size
      block_device_mappings = {
        xvda = {
          device_name = "/dev/xvda"
          ebs = {
            volume_size           = 100
            volume_type           = "gp3"
            encrypted             = true
            delete_on_termination = true
          }
        }
      }
    }
  }

  # Bottlerocket's NVIDIA variant ships the driver and the Kubernetes device plugin, so the
  # nodes advertise nvidia.com/gpu without another add-on. Its second volume (xvdb) holds
  # images and the pods' emptyDir caches, where model weights download.
  gpu_node_groups = {
    for name, group in var.gpu_node_groups : name => {
      ami_type       = "BOTTLEROCKET_x86_64_NVIDIA"
      instance_types = [group.instance_type]
      min_size       = 0
      max_size       = group.max_size
      desired_size   = 0
      taints         = { gpu = local.gpu_taint }
      labels         = { "specvid.io/gpu-node-group" = name }
      block_device_mappings = {
        xvdb = {
          device_name = "/dev/xvdb"
          ebs = {
            volume_size           = group.disk_gib
            volume_type           = "gp3"
            encrypted             = true
            delete_on_termination = true
          }
        }
      }
    }
  }
}

module "eks" {
  # checkov:skip=CKV_TF_1:A registry module pinned to an exact release; registry versions are immutable
  source  = "terraform-aws-modules/eks/aws"
  version = "20.37.2"

  cluster_name    = var.name
  cluster_version = var.kubernetes_version

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  # The API is reachable from the listed networks only (terraform's helm/kubernetes providers
  # and kubectl need it); nodes use the private endpoint.
  cluster_endpoint_public_access       = true
  cluster_endpoint_public_access_cidrs = var.api_allowed_cidrs
  cluster_endpoint_private_access      = true

  enable_cluster_creator_admin_permissions = true
  enable_irsa                              = true

  cluster_enabled_log_types              = ["api", "audit", "authenticator"]
  cloudwatch_log_group_retention_in_days = var.log_retention_days

  cluster_addons = {
    coredns    = {}
    kube-proxy = {}
    # Network policies (k8s/base/networkpolicy.yaml) are enforced by the VPC CNI when enabled.
    vpc-cni = {
      before_compute       = true
      configuration_values = jsonencode({ enableNetworkPolicy = "true" })
    }
  }

  eks_managed_node_groups = merge(local.system_node_group, local.gpu_node_groups)
}
