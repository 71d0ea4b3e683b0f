output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Endpoint of the cluster's Kubernetes API."
  value       = module.eks.cluster_endpoint
}

output "configure_kubectl" {
  description = "Command that points kubectl at the new cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "video_bucket_name" {
  description = "The S3 bucket the Ray pods read videos from (s3://<name>/<key> in requests)."
  value       = aws_s3_bucket.videos.bucket
}

output "video_bucket_arn" {
  description = "ARN of the video bucket."
  value       = aws_s3_bucket.videos.arn
}

output "video_kms_key_arn" {
  description = "KMS key that encrypts the video bucket; uploaders need kms:GenerateDataKey on it."
  value       = aws_kms_key.videos.arn
}

output "access_log_bucket_name" {
  description = "Bucket receiving the video bucket's server access logs."
  value       = aws_s3_bucket.access_logs.bucket
}

output "video_reader_role_arn" {
  description = "IAM role of the Ray pods: the eks.amazonaws.com/role-arn annotation of k8s/base/serviceaccount.yaml."
  value       = aws_iam_role.video_reader.arn
}

output "k8s_namespace" {
  description = "Namespace created for the RayService, holding the API-key Secret."
  value       = kubernetes_namespace_v1.specvid.metadata[0].name
}

output "api_key_secret_name" {
  description = "Secret with Ray's cluster token (data key auth_token); read it with kubectl to use the Ray CLI or dashboard."
  value       = kubernetes_secret_v1.api_key.metadata[0].name
}

output "gpu_node_groups" {
  description = "GPU node groups and their instance types."
  value       = { for name, group in var.gpu_node_groups : name => group.instance_type }
}
