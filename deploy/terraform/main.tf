# Envelope's AWS resources: the KMS root key, one Secrets Manager secret per
# key name (encrypted with that key, rotated every 30 days by the Envelope
# rotation Lambda), least-privilege IAM for the service (IRSA) and the
# Lambda, and the CloudWatch alarms of seed 000.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  partition = data.aws_partition.current.partition
  secrets   = { for k in var.key_names : k => "${var.name}/${k}" }
}

# ---------------------------------------------------------------- KMS root key

resource "aws_kms_key" "root" {
  description             = "Envelope root key: wraps master keys and generates data keys"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30
  multi_region            = var.replica_region != null
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "root" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.root.key_id
}

data "aws_iam_policy_document" "kms" {
  # In a key policy, resource "*" means "this key"; nothing else is in scope.
  #checkov:skip=CKV_AWS_111:Key policy: resource "*" is this key only
  #checkov:skip=CKV_AWS_356:Key policy: resource "*" is this key only
  #checkov:skip=CKV_AWS_109:Key policy: the account root must administer its own key
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }
  # Envelope resolves its allowed keys to ARNs (aws.allowed_kms_keys), to
  # check which key KMS Decrypt used for a master key.
  statement {
    sid       = "EnvelopeDescribesItsKey"
    actions   = ["kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.service.arn, aws_iam_role.rotation.arn]
    }
  }
  # A master key is a KMS data key whose context names a key (envelope:key)
  # and no purpose (data keys for records carry envelope:purpose). Only the
  # rotation Lambda and the listed creators may have KMS make or re-encrypt
  # one, so holding this key is not enough to plant a master key.
  statement {
    sid       = "OnlyCreatorsMakeMasterKeys"
    effect    = "Deny"
    actions   = ["kms:Encrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "ForAnyValue:StringEquals"
      variable = "kms:EncryptionContextKeys"
      values   = ["envelope:key"]
    }
    condition {
      test     = "Null"
      variable = "kms:EncryptionContext:envelope:purpose"
      values   = ["true"]
    }
    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = concat([aws_iam_role.rotation.arn], var.master_key_creator_arns)
    }
  }
  # Envelope's own calls name the key name in the encryption context.
  statement {
    sid       = "EnvelopeUsesItsKeys"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.service.arn, aws_iam_role.rotation.arn]
    }
    condition {
      test     = "ForAnyValue:StringEquals"
      variable = "kms:EncryptionContext:envelope:key"
      values   = var.key_names
    }
  }
  # Secrets Manager encrypts the secrets themselves with this key.
  statement {
    sid       = "SecretsManagerEncryptsSecrets"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.service.arn, aws_iam_role.rotation.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "CloudWatchLogsEncryptLambdaLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
  }
}

# ------------------------------------------------------ master-key secrets

resource "aws_secretsmanager_secret" "key" {
  for_each                = local.secrets
  name                    = each.value
  description             = "Envelope master key versions for key name ${each.key}"
  kms_key_id              = aws_kms_key.root.arn
  recovery_window_in_days = 30
  # The rotation Lambda finds the key name through this tag.
  tags = { "envelope:key" = each.key }

  dynamic "replica" {
    for_each = var.replica_region == null ? [] : [var.replica_region]
    content {
      region     = replica.value
      kms_key_id = var.replica_kms_key_arn
    }
  }
}

resource "aws_secretsmanager_secret_rotation" "key" {
  for_each            = aws_secretsmanager_secret.key
  secret_id           = each.value.id
  rotation_lambda_arn = aws_lambda_function.rotation.arn
  # The first version comes from `envelope init-keys`; rotate on schedule only.
  rotate_immediately = false
  rotation_rules {
    automatically_after_days = var.rotation_days
  }
}

# ------------------------------------------------ the service's IAM (IRSA)

data "aws_iam_policy_document" "service_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "service" {
  name               = "${var.name}-service"
  assume_role_policy = data.aws_iam_policy_document.service_trust.json
}

data "aws_iam_policy_document" "service" {
  # Exactly the key secrets. Seed 000 allows AWSCURRENT only; Envelope also
  # reads AWSPREVIOUS and AWSPENDING, and old versions by VersionId (records
  # name them), which carry no stage in the request: hence IfExists.
  statement {
    sid       = "ReadMasterKeyVersions"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for s in aws_secretsmanager_secret.key : s.arn]
    condition {
      test     = "ForAnyValue:StringEqualsIfExists"
      variable = "secretsmanager:VersionStage"
      values   = ["AWSCURRENT", "AWSPREVIOUS", "AWSPENDING"]
    }
  }
  statement {
    sid       = "LearnStages"
    actions   = ["secretsmanager:DescribeSecret"]
    resources = [for s in aws_secretsmanager_secret.key : s.arn]
  }
  statement {
    sid       = "DescribeTheRootKey"
    actions   = ["kms:DescribeKey"]
    resources = [aws_kms_key.root.arn]
  }
  statement {
    sid       = "UseTheRootKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.root.arn]
    condition {
      test     = "ForAnyValue:StringEquals"
      variable = "kms:EncryptionContext:envelope:key"
      values   = var.key_names
    }
  }
}

resource "aws_iam_role_policy" "service" {
  name   = "envelope-keys"
  role   = aws_iam_role.service.id
  policy = data.aws_iam_policy_document.service.json
}

# ---------------------------------------------------- the rotation Lambda

data "aws_iam_policy_document" "lambda_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rotation" {
  name               = "${var.name}-rotation"
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
}

data "aws_iam_policy_document" "rotation" {
  statement {
    sid = "RotateMasterKeySecrets"
    actions = [
      "secretsmanager:DescribeSecret",
      "secretsmanager:GetSecretValue",
      "secretsmanager:PutSecretValue",
      "secretsmanager:UpdateSecretVersionStage",
    ]
    resources = [for s in aws_secretsmanager_secret.key : s.arn]
  }
  statement {
    sid       = "DescribeTheRootKey"
    actions   = ["kms:DescribeKey"]
    resources = [aws_kms_key.root.arn]
  }
  statement {
    sid       = "NewMasterKeys"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.root.arn]
    condition {
      test     = "ForAnyValue:StringEquals"
      variable = "kms:EncryptionContext:envelope:key"
      values   = var.key_names
    }
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.rotation.arn}:*"]
  }
  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.rotation_dlq.arn]
  }
  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "rotation" {
  name   = "envelope-rotation"
  role   = aws_iam_role.rotation.id
  policy = data.aws_iam_policy_document.rotation.json
}

resource "aws_cloudwatch_log_group" "rotation" {
  name              = "/aws/lambda/${var.name}-rotation"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.root.arn
}

resource "aws_sqs_queue" "rotation_dlq" {
  name                              = "${var.name}-rotation-dlq"
  kms_master_key_id                 = aws_kms_key.root.arn
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_lambda_function" "rotation" {
  #checkov:skip=CKV_AWS_117:The function calls only regional AWS endpoints; put it in a VPC with endpoints where policy demands
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile of the operator's; wire signing_profile in the pipeline
  function_name                  = "${var.name}-rotation"
  role                           = aws_iam_role.rotation.arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = ["x86_64"]
  filename                       = var.lambda_zip
  source_code_hash               = filebase64sha256(var.lambda_zip)
  timeout                        = 60
  reserved_concurrent_executions = 5
  kms_key_arn                    = aws_kms_key.root.arn

  environment {
    variables = {
      ENVELOPE_KMS_KEY_ID      = aws_kms_key.root.arn
      ENVELOPE_REPLICA_REGIONS = var.replica_region == null ? "" : var.replica_region
    }
  }
  tracing_config {
    mode = "Active"
  }
  dead_letter_config {
    target_arn = aws_sqs_queue.rotation_dlq.arn
  }
  depends_on = [aws_cloudwatch_log_group.rotation]
}

resource "aws_lambda_permission" "secretsmanager" {
  statement_id   = "SecretsManagerRotates"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.rotation.function_name
  principal      = "secretsmanager.amazonaws.com"
  source_account = local.account
}

# ------------------------------------------------------------ seed 000 alarms

# Any rotation failure.
resource "aws_cloudwatch_metric_alarm" "rotation_failed" {
  alarm_name          = "${var.name}-rotation-failed"
  alarm_description   = "An Envelope master-key rotation step failed; AWSCURRENT is unchanged. See docs/OPERATIONS.md."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.rotation.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}

# More than 5 failed accesses to the key secrets in 5 minutes (CloudTrail).
resource "aws_cloudwatch_log_metric_filter" "access_denied" {
  name           = "${var.name}-secret-access-denied"
  log_group_name = var.cloudtrail_log_group
  pattern        = "{ ($.eventSource = \"secretsmanager.amazonaws.com\") && ($.errorCode = \"AccessDenied*\") && ($.requestParameters.secretId = \"*${var.name}/*\") }"
  metric_transformation {
    name      = "SecretAccessDenied"
    namespace = "Envelope"
    value     = "1"
  }
}

resource "aws_cloudwatch_metric_alarm" "access_denied" {
  alarm_name          = "${var.name}-secret-access-denied"
  alarm_description   = "More than 5 denied accesses to Envelope key secrets in 5 minutes."
  namespace           = "Envelope"
  metric_name         = "SecretAccessDenied"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 5
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}
