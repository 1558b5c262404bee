output "kms_key_arn" {
  description = "Set as aws.kms_key_id in Envelope's configuration."
  value       = aws_kms_key.root.arn
}

output "secret_arns" {
  description = "Secret ARN per key name: the keys' secret_id settings."
  value       = { for k, s in aws_secretsmanager_secret.key : k => s.arn }
}

output "service_role_arn" {
  description = "Annotate the Envelope service account with this role (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.service.arn
}
