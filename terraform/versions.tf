terraform {
  required_version = ">= 1.5.0"

  required_providers {
    # The EKS module 20.37 supports the 5.x AWS provider only.
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.95"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.37"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }
}
