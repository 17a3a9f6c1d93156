//! Publishing to AWS: bundles to S3 ([`s3`]), AMIs registered and
//! deregistered in EC2 ([`ec2`]), EBS snapshots written through the EBS
//! direct APIs ([`ebs`]). Behind the `aws` feature.
//!
//! Everything goes through the AWS SDK for Rust, so credentials and region
//! come from the standard chain (environment, shared config and credential
//! files and their profiles, SSO, the instance metadata service), unless
//! [`AwsOptions`] names them. The functions are `async`; the CLI drives
//! them on a Tokio runtime.
//!
//! # Example
//!
//! Connecting to an S3/EC2-compatible endpoint with fixed credentials (as
//! the tests do with moto), without sending a request:
//!
//! ```
//! use ami_bundle::aws::{Aws, AwsOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ami_bundle::aws::PublishError> {
//! let options = AwsOptions::new()
//!     .region("eu-west-1")
//!     .endpoint_url("http://127.0.0.1:5000")
//!     .static_credentials("AKIAIOSFODNN7EXAMPLE", "secret");
//! let aws = Aws::connect(&options).await?;
//! assert_eq!(aws.region(), "eu-west-1");
//! let _s3 = aws.s3();
//! # Ok(())
//! # }
//! ```

pub mod ebs;
pub mod ec2;
mod error;
pub mod iam;
pub mod s3;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

pub use error::{Cleanup, PublishError};

/// Where and how to reach AWS. Unset fields come from the standard AWS
/// configuration chain.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    region: Option<String>,
    endpoint_url: Option<String>,
    profile: Option<String>,
    credentials: Option<(String, String)>,
    max_attempts: u32,
    attempt_timeout: Duration,
    connect_timeout: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions::new()
    }
}

impl AwsOptions {
    /// The defaults: region, credentials and profile from the environment;
    /// 8 attempts per request (standard retry mode: exponential backoff
    /// with jitter on throttling, 5xx and transport errors); 60 s per
    /// attempt; 10 s to connect.
    pub fn new() -> AwsOptions {
        AwsOptions {
            region: None,
            endpoint_url: None,
            profile: None,
            credentials: None,
            max_attempts: 8,
            attempt_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The region (else `AWS_REGION`, the profile's region, or IMDS).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The region if given.
    pub fn region_opt(mut self, region: Option<String>) -> Self {
        if region.is_some() {
            self.region = region;
        }
        self
    }

    /// Sends every request to this endpoint (an S3/EC2-compatible server,
    /// a VPC endpoint, or a test server on loopback). S3 is then addressed
    /// path-style (`URL/bucket/key`).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// The endpoint if given.
    pub fn endpoint_url_opt(mut self, url: Option<String>) -> Self {
        if url.is_some() {
            self.endpoint_url = url;
        }
        self
    }

    /// Uses this profile of the shared config files (else `AWS_PROFILE`).
    pub fn profile(mut self, profile: Option<String>) -> Self {
        self.profile = profile;
        self
    }

    /// Uses these credentials instead of the chain (for embedding and
    /// tests).
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// Attempts per request, the first one included (the retry budget).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long one attempt of a request may take before it is abandoned
    /// (and retried while the budget lasts).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// How long connecting may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// A resolved AWS configuration, from which service clients are made.
#[derive(Debug, Clone)]
pub struct Aws {
    config: SdkConfig,
    path_style: bool,
}

impl Aws {
    /// Resolves the configuration (reads the environment and the shared
    /// config files; may ask IMDS for the region and credentials). Fails
    /// if no region can be found.
    pub async fn connect(options: &AwsOptions) -> Result<Aws, PublishError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .operation_attempt_timeout(options.attempt_timeout)
                    .build(),
            );
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some((access, secret)) = &options.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access.clone(),
                secret.clone(),
                None,
                None,
                "ami",
            ));
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(PublishError::NoRegion);
        }
        Ok(Aws {
            config,
            path_style: options.endpoint_url.is_some(),
        })
    }

    /// The region requests go to.
    pub fn region(&self) -> &str {
        self.config.region().map(|r| r.as_ref()).unwrap_or_default()
    }

    /// The SDK configuration.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// An S3 client (path-style addressing with a custom endpoint).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        // Content-MD5 is sent explicitly; no extra (chunk-encoded) checksums.
        let config = aws_sdk_s3::config::Builder::from(&self.config)
            .force_path_style(self.path_style)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// An EC2 client.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.config)
    }

    /// An EBS direct APIs client.
    pub fn ebs(&self) -> aws_sdk_ebs::Client {
        aws_sdk_ebs::Client::new(&self.config)
    }

    /// An IAM client.
    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config)
    }
}
