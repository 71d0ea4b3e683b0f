# SpecVid on AWS: an EKS cluster for the KubeRay RayService of k8s/, the S3 bucket its pods read
# videos from, and the IAM role (IRSA) that lets them. See README.md for apply/destroy and costs.

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

# Kubernetes and Helm reach the new cluster with a short-lived token from the AWS CLI.
provider "kubernetes" {
  host                   = module.eks.cluster_endpoint
  cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)

  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)

    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  # Named, not looked up: GPU instance types are offered in some zones only, and a looked-up
  # list would change when AWS adds a zone.
  azs = var.availability_zones != null ? var.availability_zones : [for suffix in ["a", "b", "c"] : "${var.region}${suffix}"]

  tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "specvid"
    "terraform-module"          = "specvid"
  })

  # What the RayService's pods run as (k8s/base/serviceaccount.yaml); the IAM role trusts it.
  ray_service_account = "system:serviceaccount:${var.k8s_namespace}:${var.k8s_service_account}"
}
