//! Uploading an instance-store bundle to S3 (what `ec2-upload-bundle`
//! does) and deleting it again.
//!
//! [`upload_bundle`] reads the manifest, checks every part named in it
//! (present, digest as listed), checks that the bucket accepts the
//! `aws-exec-read` canned ACL (EC2 reads bundles through it; buckets with
//! Object Ownership "bucket owner enforced", the S3 default since 2023,
//! reject every ACL), creates the bucket if it does not exist, uploads the
//! parts in parallel, each with `Content-MD5` and the ACL, and the manifest
//! last, so a manifest in S3 always means a complete bundle. Each request
//! is retried with backoff and has a timeout ([`super::AwsOptions`]).
//!
//! [`delete_bundle`] reads a manifest from S3 and deletes its parts and
//! then the manifest.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use ami_core::progress::{Progress, Stage};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketCannedAcl, BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectCannedAcl,
    ObjectIdentifier, ObjectOwnership, OwnershipControls, OwnershipControlsRule,
};
use base64::Engine as _;
use md5::Digest as _;

use aws_sdk_s3::error::ProvideErrorMetadata as _;

use super::{Aws, PublishError};
use crate::manifest::Manifest;

/// The canned ACL EC2 needs on bundle objects.
pub const EXEC_READ_ACL: &str = "aws-exec-read";

/// Where a bundle goes: a bucket and an optional key prefix
/// (`bucket[/prefix]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleLocation {
    /// The bucket name.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl BundleLocation {
    /// The object key of a file of the bundle.
    pub fn key(&self, file: &str) -> String {
        if self.prefix.is_empty() {
            file.to_owned()
        } else {
            format!("{}/{file}", self.prefix)
        }
    }

    /// The manifest location RegisterImage takes: `bucket/prefix/file`.
    pub fn location(&self, file: &str) -> String {
        format!("{}/{}", self.bucket, self.key(file))
    }
}

impl FromStr for BundleLocation {
    type Err = PublishError;

    /// Parses `bucket` or `bucket/prefix/...`; a leading `s3://` is
    /// accepted.
    fn from_str(s: &str) -> Result<Self, PublishError> {
        let invalid = |reason: &str| PublishError::Invalid {
            what: "bucket",
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = s.strip_prefix("s3://").unwrap_or(s);
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        check_bucket_name(bucket).map_err(invalid)?;
        if prefix.contains("//") {
            return Err(invalid("the prefix has an empty path segment (`//`)"));
        }
        Ok(BundleLocation {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// S3 bucket naming rules (3-63 characters of `a-z0-9.-`, starting and
/// ending with a letter or digit).
fn check_bucket_name(name: &str) -> Result<(), &'static str> {
    if name.len() < 3 || name.len() > 63 {
        return Err("a bucket name has 3 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("a bucket name has only lowercase letters, digits, `.` and `-`");
    }
    let ends_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !ends_ok(name.as_bytes()[0]) || !ends_ok(name.as_bytes()[name.len() - 1]) {
        return Err("a bucket name starts and ends with a letter or digit");
    }
    Ok(())
}

/// Options of [`upload_bundle`].
#[derive(Debug, Clone)]
pub struct UploadOptions {
    concurrency: usize,
    create_bucket: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions::new()
    }
}

impl UploadOptions {
    /// 8 parts in flight; create the bucket if it does not exist.
    pub fn new() -> UploadOptions {
        UploadOptions {
            concurrency: 8,
            create_bucket: true,
        }
    }

    /// How many parts are uploaded at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Whether a missing bucket is created (in the client's region, with
    /// ACLs enabled), as `ec2-upload-bundle` does; if not, a missing bucket
    /// is an error.
    pub fn create_bucket(mut self, create: bool) -> Self {
        self.create_bucket = create;
        self
    }
}

/// What [`upload_bundle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    /// The manifest location to register: `bucket/prefix/NAME.manifest.xml`.
    pub manifest_location: String,
    /// The object keys of the parts, in order.
    pub part_keys: Vec<String>,
    /// The object key of the manifest.
    pub manifest_key: String,
    /// Bytes uploaded (parts and manifest).
    pub bytes: u64,
    /// Whether the bucket was created.
    pub bucket_created: bool,
}

/// A bundle on disk, checked: its manifest and part files.
#[derive(Debug)]
struct LocalBundle {
    manifest_name: String,
    manifest_text: Vec<u8>,
    parts: Vec<(String, PathBuf, u64)>,
}

fn read_local_bundle(manifest_path: &Path) -> Result<LocalBundle, PublishError> {
    let bad = |reason: String| PublishError::Bundle {
        manifest: manifest_path.to_owned(),
        reason,
    };
    let io = |path: &Path, source| PublishError::Io {
        path: path.to_owned(),
        source,
    };
    let manifest_text = std::fs::read(manifest_path).map_err(|e| io(manifest_path, e))?;
    let text = std::str::from_utf8(&manifest_text)
        .map_err(|_| bad("the manifest is not UTF-8 text".to_owned()))?;
    let manifest = Manifest::parse(text).map_err(|e| bad(format!("unreadable manifest: {e}")))?;
    let manifest_name = manifest_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad("the manifest file name is not UTF-8".to_owned()))?
        .to_owned();
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if manifest.image.parts.is_empty() {
        return Err(bad("the manifest lists no parts".to_owned()));
    }
    let mut parts = Vec::with_capacity(manifest.image.parts.len());
    for part in &manifest.image.parts {
        if part.filename.contains('/') || part.filename.is_empty() || part.filename == ".." {
            return Err(bad(format!(
                "part file name {:?} is not a plain name",
                part.filename
            )));
        }
        let path = dir.join(&part.filename);
        let mut file = File::open(&path).map_err(|e| io(&path, e))?;
        let mut hasher = openssl::sha::Sha1::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| io(&path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let digest = crate::hex::encode(&hasher.finish());
        if !digest.eq_ignore_ascii_case(&part.digest) {
            return Err(bad(format!(
                "part {} has SHA-1 {digest}, the manifest says {}: the bundle is damaged or mixed with another",
                part.filename, part.digest
            )));
        }
        parts.push((part.filename.clone(), path, size));
    }
    Ok(LocalBundle {
        manifest_name,
        manifest_text,
        parts,
    })
}

/// Uploads the bundle whose manifest is `manifest_path` (its parts beside
/// it) to `dest`. Reports [`Stage::Upload`] progress in bytes.
pub async fn upload_bundle(
    aws: &Aws,
    manifest_path: &Path,
    dest: &BundleLocation,
    options: &UploadOptions,
    progress: &dyn Progress,
) -> Result<UploadReport, PublishError> {
    let bundle = read_local_bundle(manifest_path)?;
    let s3 = aws.s3();
    let bucket_created = prepare_bucket(aws, &s3, &dest.bucket, options.create_bucket).await?;

    let total: u64 =
        bundle.parts.iter().map(|p| p.2).sum::<u64>() + bundle.manifest_text.len() as u64;
    progress.begin(Stage::Upload, Some(total));

    // Parts in parallel, at most `concurrency` in flight.
    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.concurrency));
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (name, path, _)) in bundle.parts.iter().enumerate() {
        let permit_source = semaphore.clone();
        let s3 = s3.clone();
        let bucket = dest.bucket.clone();
        let key = dest.key(name);
        let path = path.clone();
        let sent_tx = sent_tx.clone();
        tasks.spawn(async move {
            let _permit = permit_source.acquire_owned().await;
            let body = tokio::fs::read(&path)
                .await
                .map_err(|source| PublishError::Io { path, source })?;
            let len = body.len() as u64;
            put_object(&s3, &bucket, &key, body).await?;
            let _ = sent_tx.send(len);
            Ok::<usize, PublishError>(index)
        });
    }
    drop(sent_tx);
    let mut failure = None;
    loop {
        tokio::select! {
            Some(n) = sent_rx.recv() => progress.advance(Stage::Upload, n),
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(_))) => {}
                Some(Ok(Err(e))) => {
                    failure.get_or_insert(e);
                    tasks.abort_all();
                }
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => {
                    failure.get_or_insert(PublishError::Api {
                        operation: "PutObject",
                        code: None,
                        message: format!("upload task failed: {e}"),
                    });
                    tasks.abort_all();
                }
            },
        }
    }
    while let Ok(n) = sent_rx.try_recv() {
        progress.advance(Stage::Upload, n);
    }
    if let Some(e) = failure {
        progress.end(Stage::Upload);
        return Err(e);
    }

    // The manifest last: its presence means the bundle is complete.
    let manifest_key = dest.key(&bundle.manifest_name);
    let manifest_len = bundle.manifest_text.len() as u64;
    let result = put_object(&s3, &dest.bucket, &manifest_key, bundle.manifest_text).await;
    progress.advance(Stage::Upload, manifest_len);
    progress.end(Stage::Upload);
    result?;

    Ok(UploadReport {
        manifest_location: dest.location(&bundle.manifest_name),
        part_keys: bundle.parts.iter().map(|p| dest.key(&p.0)).collect(),
        manifest_key,
        bytes: total,
        bucket_created,
    })
}

async fn put_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), PublishError> {
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .acl(ObjectCannedAcl::AwsExecRead)
        .content_md5(md5)
        .content_type("application/octet-stream")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| PublishError::api("PutObject", e))?;
    Ok(())
}

/// Makes sure the bucket exists and takes ACLs. Returns whether it was
/// created.
async fn prepare_bucket(
    aws: &Aws,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    create: bool,
) -> Result<bool, PublishError> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => {}
        Err(e) => {
            let missing = e
                .as_service_error()
                .map(|s| s.is_not_found())
                .unwrap_or(false)
                || e.raw_response().map(|r| r.status().as_u16()) == Some(404);
            if !missing {
                return Err(PublishError::api("HeadBucket", e));
            }
            if !create {
                return Err(PublishError::Invalid {
                    what: "bucket",
                    value: bucket.to_owned(),
                    reason: "it does not exist".to_owned(),
                });
            }
            let mut request = s3
                .create_bucket()
                .bucket(bucket)
                .acl(BucketCannedAcl::Private)
                .object_ownership(ObjectOwnership::BucketOwnerPreferred);
            if aws.region() != "us-east-1" {
                request = request.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(aws.region()))
                        .build(),
                );
            }
            request
                .send()
                .await
                .map_err(|e| PublishError::api("CreateBucket", e))?;
            return Ok(true);
        }
    }
    match s3
        .get_bucket_ownership_controls()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => {
            let enforced = out
                .ownership_controls()
                .map(|c| c.rules())
                .unwrap_or_default()
                .iter()
                .find(|r| r.object_ownership() == &ObjectOwnership::BucketOwnerEnforced);
            if let Some(rule) = enforced {
                return Err(PublishError::AclsDisabled {
                    bucket: bucket.to_owned(),
                    ownership: rule.object_ownership().as_str().to_owned(),
                });
            }
            Ok(false)
        }
        // No ownership controls: ACLs are enabled (buckets from before 2023).
        Err(e) if e.code() == Some("OwnershipControlsNotFoundError") => Ok(false),
        Err(e) => Err(PublishError::api("GetBucketOwnershipControls", e)),
    }
}

/// Object Ownership rules that keep ACLs enabled, for callers creating
/// buckets themselves.
pub fn acl_friendly_ownership() -> OwnershipControls {
    OwnershipControls::builder()
        .rules(
            OwnershipControlsRule::builder()
                .object_ownership(ObjectOwnership::BucketOwnerPreferred)
                .build()
                .expect("object ownership is set"),
        )
        .build()
        .expect("rules are set")
}

/// Splits a manifest location `bucket/prefix/NAME.manifest.xml`.
pub fn split_manifest_location(location: &str) -> Result<(BundleLocation, String), PublishError> {
    let invalid = |reason: &str| PublishError::Invalid {
        what: "manifest location",
        value: location.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = location.strip_prefix("s3://").unwrap_or(location);
    let (dir, file) = rest
        .rsplit_once('/')
        .ok_or_else(|| invalid("expected bucket/[prefix/]NAME.manifest.xml"))?;
    if !file.ends_with(".manifest.xml") {
        return Err(invalid("the file name does not end in .manifest.xml"));
    }
    Ok((dir.parse()?, file.to_owned()))
}

/// Deletes a bundle from S3: reads the manifest at `manifest_location`
/// (`bucket/prefix/NAME.manifest.xml`), deletes the parts it lists, then
/// the manifest. Returns the deleted keys.
pub async fn delete_bundle(
    aws: &Aws,
    manifest_location: &str,
) -> Result<Vec<String>, PublishError> {
    let (loc, file) = split_manifest_location(manifest_location)?;
    let s3 = aws.s3();
    let manifest_key = loc.key(&file);
    let object = s3
        .get_object()
        .bucket(&loc.bucket)
        .key(&manifest_key)
        .send()
        .await
        .map_err(|e| PublishError::api("GetObject", e))?;
    let body = object.body.collect().await.map_err(|e| PublishError::Api {
        operation: "GetObject",
        code: None,
        message: format!("reading the manifest: {e}"),
    })?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| PublishError::Bundle {
        manifest: PathBuf::from(manifest_location),
        reason: "the manifest is not UTF-8 text".to_owned(),
    })?;
    let manifest = Manifest::parse(&text).map_err(|e| PublishError::Bundle {
        manifest: PathBuf::from(manifest_location),
        reason: format!("unreadable manifest: {e}"),
    })?;
    let mut keys: Vec<String> = manifest
        .image
        .parts
        .iter()
        .filter(|p| !p.filename.contains('/'))
        .map(|p| loc.key(&p.filename))
        .collect();
    // Parts first (DeleteObjects takes up to 1000 keys), the manifest last.
    for chunk in keys.chunks(1000) {
        let objects = chunk
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PublishError::Api {
                operation: "DeleteObjects",
                code: None,
                message: e.to_string(),
            })?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| PublishError::Api {
                operation: "DeleteObjects",
                code: None,
                message: e.to_string(),
            })?;
        let out = s3
            .delete_objects()
            .bucket(&loc.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| PublishError::api("DeleteObjects", e))?;
        if let Some(err) = out.errors().first() {
            return Err(PublishError::Api {
                operation: "DeleteObjects",
                code: err.code().map(str::to_owned),
                message: format!(
                    "{}: {}",
                    err.key().unwrap_or_default(),
                    err.message().unwrap_or_default()
                ),
            });
        }
    }
    s3.delete_object()
        .bucket(&loc.bucket)
        .key(&manifest_key)
        .send()
        .await
        .map_err(|e| PublishError::api("DeleteObject", e))?;
    keys.push(manifest_key);
    Ok(keys)
}
