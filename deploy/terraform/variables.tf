variable "name" {
  description = "Prefix for every resource, and the secret-name prefix (secrets are <name>/<key name>)."
  type        = string
  default     = "envelope"
}

variable "key_names" {
  description = "Envelope key names; one master-key secret each."
  type        = list(string)
  default     = ["default"]
}

variable "rotation_days" {
  description = "Days between automatic master-key rotations."
  type        = number
  default     = 30
}

variable "lambda_zip" {
  description = "Zip holding the envelope-rotation-lambda binary as `bootstrap` (cargo build --release --bin envelope-rotation-lambda)."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (IRSA)."
  type        = string
}

variable "oidc_provider" {
  description = "The OIDC provider URL without https:// (e.g. oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE)."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the Envelope service account."
  type        = string
  default     = "envelope"
}

variable "service_account" {
  description = "Name of the Envelope service account."
  type        = string
  default     = "envelope"
}

variable "replica_region" {
  description = "Optional region to replicate the key secrets to (read-only failover)."
  type        = string
  default     = null
}

variable "replica_kms_key_arn" {
  description = "KMS key in the replica region for the replicated secrets (required with replica_region)."
  type        = string
  default     = null
}

variable "alarm_topic_arn" {
  description = "SNS topic that receives the alarms."
  type        = string
}

variable "cloudtrail_log_group" {
  description = "CloudWatch Logs group that receives the account's CloudTrail events."
  type        = string
}

variable "master_key_creator_arns" {
  description = "IAM principals besides the rotation Lambda that may create master keys (e.g. the role that runs `envelope init-keys`); every other principal is denied KMS calls that would make one"
  type        = list(string)
  default     = []
}
