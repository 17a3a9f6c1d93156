//! The error type of the publishing functions.

use std::path::PathBuf;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};

/// What went wrong while publishing to AWS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No region was given and none is configured.
    #[error(
        "no AWS region: pass --region, set AWS_REGION, or set a region in the profile of ~/.aws/config"
    )]
    NoRegion,

    /// An AWS API call failed (after its retries).
    #[error("{operation} failed: {message}")]
    Api {
        /// The API operation (e.g. "PutObject").
        operation: &'static str,
        /// The AWS error code, if the service sent one (e.g. "NoSuchBucket").
        code: Option<String>,
        /// What the service or the transport said.
        message: String,
    },

    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// The bundle's manifest or parts are not usable.
    #[error("bundle {}: {reason}", manifest.display())]
    Bundle {
        /// The manifest file.
        manifest: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The bucket does not accept the `aws-exec-read` canned ACL that EC2
    /// needs to read an instance-store bundle.
    #[error(
        "bucket {bucket} has ACLs disabled (Object Ownership: {ownership}), but EC2 reads \
         instance-store bundles through the aws-exec-read ACL; allow ACLs on it, e.g. \
         `aws s3api put-bucket-ownership-controls --bucket {bucket} --ownership-controls \
         'Rules=[{{ObjectOwnership=BucketOwnerPreferred}}]'`, or use another bucket"
    )]
    AclsDisabled {
        /// The bucket.
        bucket: String,
        /// Its Object Ownership setting.
        ownership: String,
    },

    /// A location, name or option is not valid.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was given (e.g. "bucket").
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },

    /// The request contradicts the image (e.g. UEFI boot for an image with
    /// no EFI system partition).
    #[error("{0}")]
    Contradiction(String),

    /// An EBS snapshot upload failed; the half-made snapshot was deleted,
    /// or deleting it failed too (then its id is named so it can be deleted
    /// by hand).
    #[error("{}", snapshot_failure(snapshot_id, cleanup, cause))]
    Snapshot {
        /// The snapshot that was started.
        snapshot_id: String,
        /// Whether the snapshot was deleted after the failure.
        cleanup: Cleanup,
        /// Why the upload failed.
        #[source]
        cause: Box<PublishError>,
    },

    /// Waiting for a snapshot or image to become ready took too long or it
    /// ended in an error state.
    #[error("{what} {id}: {reason}")]
    NotReady {
        /// "snapshot" or "image".
        what: &'static str,
        /// Its id.
        id: String,
        /// The state or the timeout.
        reason: String,
    },
}

/// What happened to a half-made snapshot after a failed upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// It was deleted.
    Deleted,
    /// Deleting it failed with this message: it must be deleted by hand.
    Failed(String),
    /// It was kept on request.
    Kept,
}

fn snapshot_failure(id: &str, cleanup: &Cleanup, cause: &PublishError) -> String {
    match cleanup {
        Cleanup::Deleted => format!("snapshot upload failed ({cause}); snapshot {id} was deleted"),
        Cleanup::Kept => format!("snapshot upload failed ({cause}); snapshot {id} was kept"),
        Cleanup::Failed(why) => format!(
            "snapshot upload failed ({cause}); deleting snapshot {id} failed too ({why}): \
             delete it with `aws ec2 delete-snapshot --snapshot-id {id}`"
        ),
    }
}

impl PublishError {
    /// Wraps an SDK error of `operation`, keeping the service's error code
    /// and message (or the transport error's full chain).
    pub fn api<E, R>(
        operation: &'static str,
        err: aws_sdk_s3::error::SdkError<E, R>,
    ) -> PublishError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().map(str::to_owned);
        let message = match (err.code(), err.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_owned(),
            _ => DisplayErrorContext(&err).to_string(),
        };
        PublishError::Api {
            operation,
            code,
            message,
        }
    }

    /// The AWS error code of an [`PublishError::Api`] error.
    pub fn code(&self) -> Option<&str> {
        match self {
            PublishError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}
