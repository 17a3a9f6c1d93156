//! Registering a bundle signing certificate with IAM
//! (`UploadSigningCertificate`), the step after the tutorial's `openssl
//! req`.

use aws_sdk_s3::error::ProvideErrorMetadata as _;

use super::{Aws, PublishError};

/// Uploads `cert_pem` as an X.509 signing certificate of the IAM user
/// `user` (or, with `None`, of the user whose credentials make the
/// request). Returns the certificate id IAM assigned.
pub async fn upload_signing_certificate(
    aws: &Aws,
    cert_pem: &str,
    user: Option<&str>,
) -> Result<String, PublishError> {
    let mut call = aws
        .iam()
        .upload_signing_certificate()
        .certificate_body(cert_pem);
    if let Some(user) = user {
        call = call.user_name(user);
    }
    let out = call.send().await.map_err(|e| {
        let hint = match e.code() {
            Some("LimitExceeded") => {
                " (IAM allows 2 signing certificates per user: delete one first)"
            }
            Some("DuplicateCertificate") => " (this certificate is already registered)",
            _ => "",
        };
        let mut err = PublishError::api("UploadSigningCertificate", e);
        if let PublishError::Api { message, .. } = &mut err {
            message.push_str(hint);
        }
        err
    })?;
    Ok(out
        .certificate()
        .map(|c| c.certificate_id().to_owned())
        .unwrap_or_default())
}
