variable "region" {
  description = "AWS region of the cluster and the video bucket; it must offer the GPU instance types of gpu_node_groups."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "name" {
  description = "Name of the EKS cluster and prefix of the IAM roles and KMS alias."
  type        = string
  default     = "specvid"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 characters: lower-case letters, digits and '-', starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (<major>.<minor>). Keep cluster_autoscaler_image_tag on the same minor."
  type        = string
  default     = "1.34"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.34."
  }
}

variable "api_allowed_cidrs" {
  description = "Networks allowed to reach the cluster's public API endpoint (where terraform and kubectl run), e.g. [\"203.0.113.0/24\"]."
  type        = list(string)

  validation {
    condition     = length(var.api_allowed_cidrs) > 0 && alltrue([for cidr in var.api_allowed_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "api_allowed_cidrs must list at least one CIDR block, and not 0.0.0.0/0."
  }
}

variable "availability_zones" {
  description = "Two or three zones of region for subnets and nodes; pick zones that offer the GPU instance types (aws ec2 describe-instance-type-offerings --location-type availability-zone). Default: the region's a, b and c zones."
  type        = list(string)
  default     = null

  validation {
    condition     = var.availability_zones == null || try(length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3, false)
    error_message = "availability_zones must name two or three zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC (a /16 is split into three private /20 and three public /24 subnets)."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "vpc_cidr must be a CIDR block of size /16 or larger."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all AZs (cheaper) instead of one per AZ (survives an AZ outage)."
  type        = bool
  default     = true
}

variable "system_node_group" {
  description = "The CPU node group for add-ons, the Ray head pods and the CPU demo's workers."
  type = object({
    instance_type = string
    min_size      = number
    max_size      = number
    desired_size  = number
  })
  default = {
    instance_type = "m7i.2xlarge"
    min_size      = 2
    max_size      = 4
    desired_size  = 2
  }

  validation {
    condition = (
      var.system_node_group.min_size >= 1
      && var.system_node_group.min_size <= var.system_node_group.desired_size
      && var.system_node_group.desired_size <= var.system_node_group.max_size
    )
    error_message = "system_node_group needs 1 <= min_size <= desired_size <= max_size."
  }
}

variable "gpu_node_groups" {
  description = "GPU node groups by name: instance type, most nodes, and data volume size (GiB) for images and model weights. Each starts at zero nodes. The GPU overlays of k8s/ select nodes by instance type."
  type = map(object({
    instance_type = string
    max_size      = number
    disk_gib      = number
  }))
  default = {
    # The 7B drafts of both GPU overlays: one L40S 48 GB.
    gpu-draft = { instance_type = "g6e.2xlarge", max_size = 2, disk_gib = 200 }
    # gpu-qwen's Qwen2.5-VL-32B target, tp 4: four L40S 48 GB.
    gpu-qwen = { instance_type = "g6e.12xlarge", max_size = 1, disk_gib = 300 }
    # gpu-llava's LLaVA-OneVision-72B target, tp 8: eight A100 40 GB.
    gpu-llava = { instance_type = "p4d.24xlarge", max_size = 1, disk_gib = 600 }
  }

  validation {
    condition = alltrue([
      for group in values(var.gpu_node_groups) :
      can(regex("^(g5|g6|g6e|p4d|p4de|p5|p5e|p5en)\\.[0-9]*x?large$", group.instance_type))
      && group.max_size >= 1 && group.disk_gib >= 100
    ])
    error_message = "Each GPU node group needs an NVIDIA instance type (g5, g6, g6e, p4d, p4de, p5*), max_size >= 1 and disk_gib >= 100."
  }
}

variable "video_bucket_name" {
  description = "Name of the S3 bucket for videos (globally unique); the access-log bucket is named after it with -access-logs."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,49}[a-z0-9]$", var.video_bucket_name)) && !strcontains(var.video_bucket_name, "..")
    error_message = "video_bucket_name must be 3-51 characters of lower-case letters, digits, '.' and '-' (51 leaves room for the -access-logs suffix)."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted video version is kept before it expires."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "log_retention_days" {
  description = "Days to keep S3 access logs, VPC flow logs and EKS control-plane logs (a CloudWatch retention value)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of CloudWatch's retention values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "k8s_namespace" {
  description = "Namespace of the SpecVid RayService (k8s/base/kustomization.yaml sets the same)."
  type        = string
  default     = "specvid"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_namespace))
    error_message = "k8s_namespace must be a DNS-1123 label."
  }
}

variable "k8s_service_account" {
  description = "Service account of the Ray pods (k8s/base/serviceaccount.yaml); the video reader role trusts it."
  type        = string
  default     = "specvid-ray"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_service_account))
    error_message = "k8s_service_account must be a DNS-1123 label."
  }
}

variable "api_key_secret_name" {
  description = "Secret holding Ray's cluster token (data key auth_token; the RayService names it in authOptions.secretName) and the REST API key (data key http_api_key, the pods' SPECVID_API_KEY)."
  type        = string
  default     = "specvid-api-key"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.api_key_secret_name))
    error_message = "api_key_secret_name must be a DNS-1123 subdomain."
  }
}

variable "kuberay_namespace" {
  description = "Namespace of the KubeRay operator (k8s/base/networkpolicy.yaml admits it to the Ray pods)."
  type        = string
  default     = "kuberay-system"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.kuberay_namespace))
    error_message = "kuberay_namespace must be a DNS-1123 label."
  }
}

variable "kuberay_chart_version" {
  description = "Version of the kuberay-operator Helm chart; k8s/ uses RayService fields of KubeRay 1.6 (authOptions.secretName among them)."
  type        = string
  default     = "1.6.2"

  validation {
    condition     = can(regex("^1\\.([6-9]|[1-9][0-9])\\.[0-9]+$", var.kuberay_chart_version))
    error_message = "kuberay_chart_version must be an exact 1.x.y release, 1.6.0 or later."
  }
}

variable "cluster_autoscaler_image_tag" {
  description = "Image tag of the cluster autoscaler, on the minor version of kubernetes_version."
  type        = string
  default     = "v1.34.0"

  validation {
    condition     = can(regex("^v1\\.[0-9]{2}\\.[0-9]+$", var.cluster_autoscaler_image_tag))
    error_message = "cluster_autoscaler_image_tag must look like v1.34.0."
  }
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}
