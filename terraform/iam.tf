# IAM roles for service accounts (IRSA): each trusts exactly one Kubernetes service account of
# this cluster.

# --- the Ray pods: read the video bucket, nothing else ------------------------------------------

resource "aws_iam_role" "video_reader" {
  name               = "${var.name}-video-reader"
  description        = "SpecVid Ray pods (${local.ray_service_account}): read-only access to s3://${var.video_bucket_name}"
  assume_role_policy = data.aws_iam_policy_document.video_reader_trust.json
}

data "aws_iam_policy_document" "video_reader_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [module.eks.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_provider}:sub"
      values   = [local.ray_service_account]
    }

    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_provider}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "video_reader" {
  name   = "read-videos"
  role   = aws_iam_role.video_reader.id
  policy = data.aws_iam_policy_document.video_reader.json
}

data "aws_iam_policy_document" "video_reader" {
  # Listing lets a missing key answer 404 (not 403), which the application reports as such.
  statement {
    sid       = "ListVideos"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.videos.arn]
  }

  statement {
    sid       = "ReadVideos"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.videos.arn}/*"]
  }

  statement {
    sid       = "DecryptVideos"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.videos.arn]
  }
}

# --- the cluster autoscaler: resize this cluster's node groups ----------------------------------

resource "aws_iam_role" "cluster_autoscaler" {
  name               = "${var.name}-cluster-autoscaler"
  description        = "Cluster autoscaler of EKS cluster ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.cluster_autoscaler_trust.json
}

data "aws_iam_policy_document" "cluster_autoscaler_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [module.eks.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_provider}:sub"
      values   = ["system:serviceaccount:kube-system:cluster-autoscaler"]
    }

    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_provider}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  name   = "cluster-autoscaler"
  role   = aws_iam_role.cluster_autoscaler.id
  policy = data.aws_iam_policy_document.cluster_autoscaler.json
}

data "aws_iam_policy_document" "cluster_autoscaler" {
  # Describe calls support no resource-level permissions.
  statement {
    sid = "Discover"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    resources = ["*"]
  }

  # Scale-from-zero reads a node group's labels and taints from EKS.
  statement {
    sid       = "ReadNodeGroups"
    actions   = ["eks:DescribeNodegroup"]
    resources = ["arn:${data.aws_partition.current.partition}:eks:${var.region}:${data.aws_caller_identity.current.account_id}:nodegroup/${var.name}/*"]
  }

  # Only the auto scaling groups EKS tagged as this cluster's.
  statement {
    sid       = "ResizeOwnGroups"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.name}"
      values   = ["owned"]
    }
  }
}

# --- the AWS Load Balancer Controller: ALBs for the ingress of k8s/base -------------------------

module "load_balancer_controller_irsa" {
  # checkov:skip=CKV_TF_1:A registry module pinned to an exact release; registry versions are immutable
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "5.60.0"

  role_name                              = "${var.name}-aws-load-balancer-controller"
  attach_load_balancer_controller_policy = true

  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:aws-load-balancer-controller"]
    }
  }
}
