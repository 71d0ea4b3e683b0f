# What the cluster runs besides SpecVid: the KubeRay operator, the cluster autoscaler and the
# AWS Load Balancer Controller (Helm charts, pinned), plus the namespace and API-key Secret the
# manifests of k8s/ expect.

resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = var.kuberay_chart_version
  namespace        = var.kuberay_namespace
  create_namespace = true

  depends_on = [module.eks]
}

resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = "9.55.1"
  namespace  = "kube-system"

  values = [yamlencode({
    awsRegion     = var.region
    autoDiscovery = { clusterName = module.eks.cluster_name }
    # The autoscaler is built for one Kubernetes minor version: match the control plane.
    image = { tag = var.cluster_autoscaler_image_tag }
    rbac = {
      serviceAccount = {
        name        = "cluster-autoscaler"
        annotations = { "eks.amazonaws.com/role-arn" = aws_iam_role.cluster_autoscaler.arn }
      }
    }
    extraArgs = {
      expander = "least-waste"
      # GPU nodes cost the most: give them back soon after their pods are gone.
      scale-down-unneeded-time = "10m"
    }
  })]

  depends_on = [module.eks]
}

resource "helm_release" "aws_load_balancer_controller" {
  name       = "aws-load-balancer-controller"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-load-balancer-controller"
  version    = "1.16.0"
  namespace  = "kube-system"

  values = [yamlencode({
    clusterName = module.eks.cluster_name
    region      = var.region
    vpcId       = module.vpc.vpc_id
    serviceAccount = {
      name        = "aws-load-balancer-controller"
      annotations = { "eks.amazonaws.com/role-arn" = module.load_balancer_controller_irsa.iam_role_arn }
    }
  })]

  depends_on = [module.eks]
}

# --- what k8s/ expects in the cluster ----------------------------------------------------------

resource "kubernetes_namespace_v1" "specvid" {
  metadata {
    name = var.k8s_namespace
  }

  depends_on = [module.eks]
}

# Ray's cluster token (dashboard, job and GCS APIs), read by KubeRay through the RayService's
# authOptions.secretName. The value is also in the Terraform state: keep the state encrypted.
resource "random_password" "ray_token" {
  length  = 48
  special = false
}

# The key REST clients send (`Authorization: Bearer ...`); a different value from Ray's token, so
# an API user holds no cluster credential.
resource "random_password" "http_api_key" {
  length  = 48
  special = false
}

resource "kubernetes_secret_v1" "api_key" {
  metadata {
    name      = var.api_key_secret_name
    namespace = kubernetes_namespace_v1.specvid.metadata[0].name
  }

  data = {
    auth_token   = random_password.ray_token.result
    http_api_key = random_password.http_api_key.result
  }
}
