//! The AWS error classifier against answers built by hand (AWS answers
//! moto cannot give).

use super::*;

/// The service answers moto cannot give (it enforces no key states and
/// no token expiry), classified from AWS's documented error codes.
#[test]
fn aws_error_codes_are_classified_for_their_fix() {
    use aws_sdk_kms::error::ErrorMetadata;
    use aws_sdk_kms::operation::decrypt::DecryptError;
    let answer = |code: &str, message: &str| {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        classify(&SdkError::service_error(
            DecryptError::generic(meta),
            response(400, ""),
        ))
    };
    let disabled = "arn:aws:kms:us-east-1:111122223333:key/1234abcd is disabled.";
    assert_eq!(
        answer("DisabledException", disabled),
        Failure::KeyState(format!("DisabledException: {disabled}"))
    );
    assert!(matches!(
        answer("KMSInvalidStateException", "key is pending deletion"),
        Failure::KeyState(_)
    ));
    assert!(matches!(
        answer("ExpiredTokenException", "The security token included in the request is expired"),
        Failure::BadCredentials(m) if m.contains("Expired")
    ));
    assert!(matches!(
        answer(
            "InvalidRequestException",
            "You can't perform this operation on the secret because it was marked for deletion."
        ),
        Failure::Deleted(_)
    ));
    assert!(matches!(
        answer("InvalidRequestException", "other"),
        Failure::Invalid(_)
    ));
    // A quota (20 staging labels per secret), not a rate: no retry helps.
    assert!(matches!(
        answer(
            "LimitExceededException",
            "You have exceeded the number of staging labels"
        ),
        Failure::Invalid(_)
    ));
    // A long or multi-line message is kept to one bounded line.
    let Failure::AccessDenied(m) = answer("AccessDeniedException", &"no\n".repeat(300)) else {
        panic!("not access denied");
    };
    assert!(
        !m.contains('\n') && m.len() <= MESSAGE_MAX + 40,
        "{}",
        m.len()
    );
}

/// API.md's status table: every AWS error code it names goes to its class
/// (throttling and refused parameters, which moto never answers, included).
#[test]
fn every_named_aws_error_code_has_its_class() {
    use aws_sdk_kms::error::ErrorMetadata;
    use aws_sdk_kms::operation::decrypt::DecryptError;
    let class = |code: &str| {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        let failure = classify(&SdkError::service_error(
            DecryptError::generic(meta),
            response(400, ""),
        ));
        format!("{failure:?}")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    for (codes, want) in [
        (
            &[
                "ThrottlingException",
                "Throttling",
                "TooManyRequestsException",
                "RequestLimitExceeded",
            ][..],
            "Throttled",
        ),
        (
            &[
                "LimitExceededException",
                "InvalidParameterException",
                "InvalidRequestException",
                "ValidationException",
            ],
            "Invalid",
        ),
        (
            &[
                "InvalidKeyUsageException",
                "DisabledException",
                "KMSInvalidStateException",
            ],
            "KeyState",
        ),
        (
            &[
                "UnrecognizedClientException",
                "InvalidSignatureException",
                "ExpiredTokenException",
            ],
            "BadCredentials",
        ),
        (
            &["AccessDeniedException", "DecryptionFailure"],
            "AccessDenied",
        ),
        (
            &["InvalidCiphertextException", "IncorrectKeyException"],
            "InvalidCiphertext",
        ),
        (
            &[
                "InternalServiceError",
                "KMSInternalException",
                "KeyUnavailableException",
                "DependencyTimeoutException",
            ],
            "Unavailable",
        ),
    ] {
        for code in codes {
            assert_eq!(class(code), want, "{code}");
        }
    }
}

fn response(status: u16, body: &str) -> HttpResponse {
    let status = aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap();
    HttpResponse::new(status, aws_smithy_types::body::SdkBody::from(body))
}

/// An answer without an AWS error code the SDK could read: an XML error
/// (moto's IAM layer answers JSON services so) keeps its code and
/// message; otherwise the HTTP status decides.
#[test]
fn answers_without_an_error_code_are_classified_by_their_body_or_status() {
    use aws_sdk_kms::error::ErrorMetadata;
    use aws_sdk_kms::operation::decrypt::DecryptError;
    let answer = |status: u16, body: &str| {
        let unreadable = DecryptError::generic(ErrorMetadata::builder().build());
        classify(&SdkError::service_error(unreadable, response(status, body)))
    };
    let denied = concat!(
        "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: ",
        "arn:aws:iam::123456789012:user/svc is not authorized to perform: kms:Decrypt",
        "</Message></Error></Errors></ErrorResponse>"
    );
    assert_eq!(
        answer(403, denied),
        Failure::AccessDenied(
            "AccessDenied: User: arn:aws:iam::123456789012:user/svc is not authorized to perform: kms:Decrypt"
                .into()
        )
    );
    assert!(matches!(answer(403, "<html>"), Failure::AccessDenied(m) if m.contains("HTTP 403")));
    assert!(matches!(answer(503, ""), Failure::Unavailable(_)));
    assert!(matches!(answer(429, ""), Failure::Throttled(_)));
    assert!(matches!(answer(418, "{"), Failure::Other(m) if m.contains("HTTP 418")));
}

#[test]
fn arns_move_region_and_names_do_not() {
    assert_eq!(
        secret_id_in_region(
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:envelope/pii-AbCdEf",
            "us-west-2"
        ),
        "arn:aws:secretsmanager:us-west-2:111122223333:secret:envelope/pii-AbCdEf"
    );
    assert_eq!(
        secret_id_in_region("envelope/pii", "us-west-2"),
        "envelope/pii"
    );
}

#[test]
fn an_arn_of_another_region_is_found_and_names_are_not() {
    let key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd";
    let ids = [
        "envelope/pii",
        "arn:aws:kms:us-east-1:111122223333:key/5678",
        key,
        "alias/x",
    ];
    assert_eq!(
        arn_elsewhere("us-east-1", ids),
        Some((key.to_owned(), "eu-west-1".to_owned()))
    );
    assert_eq!(arn_elsewhere("eu-west-1", ids.into_iter().skip(2)), None);
}
