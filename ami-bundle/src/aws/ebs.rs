//! EBS snapshots written through the EBS direct APIs.
//!
//! [`create_snapshot`] turns a disk image file into a `completed` EBS
//! snapshot without an EC2 instance, an S3 bucket or `ImportSnapshot`. It
//! follows the EBS direct APIs (service `ebs`, API version 2019-11-02):
//!
//! 1. `StartSnapshot` with the volume size in whole GiB, the description,
//!    tags, encryption (`Encrypted`, `KmsKeyArn`), an idempotency
//!    `ClientToken` and the idle `Timeout` in minutes. The snapshot is
//!    `pending`.
//! 2. `PutSnapshotBlock` for every chosen block. A block is
//!    [`BLOCK_SIZE`] = 524,288 bytes (512 KiB); block *i* holds bytes
//!    `i × 524288 ..` of the volume, and every block is sent whole
//!    (`DataLength` 524288): the last, partial block of an image whose size
//!    is not a multiple of 512 KiB is padded with zeros. Each request
//!    carries `Checksum` = Base64(SHA-256(block data)) with
//!    `ChecksumAlgorithm` `SHA256` (the block data is not covered by the
//!    SigV4 signature; the service checks this checksum instead) and the
//!    upload's `Progress` in percent. Blocks never written read back as
//!    zeros (for unencrypted snapshots; see [`BlockSelection`]).
//! 3. `CompleteSnapshot` with `ChangedBlocksCount` = the number of blocks
//!    written and the aggregate checksum with `ChecksumAggregationMethod`
//!    `LINEAR`: the per-block SHA-256 digests, *raw 32-byte values* (not
//!    their Base64 text), concatenated in ascending block index order,
//!    hashed with SHA-256 and Base64-encoded ([`linear_checksum`]). The
//!    service seals the snapshot asynchronously.
//! 4. Unless told not to wait, EC2 `DescribeSnapshots` is polled (with
//!    backoff) until the snapshot is `completed`.
//!
//! # Which blocks are sent
//!
//! [`BlockSelection::Allocated`] is for images whose writer knows what it
//! allocated (`ami`'s ext4 writer reports it): exactly the blocks that
//! overlap an allocated byte range are sent, *including allocated blocks
//! that hold only zeros*, and nothing else. This is what makes encrypted
//! snapshots correct: never-written blocks of an encrypted snapshot are not
//! guaranteed to read as zeros, so a filesystem that relies on zeroed
//! metadata (an inode table, a journal) must have those blocks written,
//! while blocks the filesystem never looks at can stay unwritten.
//! [`BlockSelection::NonZero`] is for any other image: every block is
//! read and all-zero blocks are skipped (holes of a sparse file are known
//! to be zero without reading them); [`SnapshotReport::zero_blocks_skipped`]
//! says how many. [`plan_blocks`] computes the candidate blocks.
//!
//! # Robustness
//!
//! * Every request has the timeout and retry budget of the [`Aws`] it goes
//!   through ([`super::AwsOptions`]: SDK standard retry mode, exponential
//!   backoff with jitter on throttling, 5xx, timeouts and dropped
//!   connections). A block that still fails after its budget fails the
//!   upload.
//! * At most [`SnapshotOptions::concurrency`] blocks are in flight and at
//!   most as many more are read ahead, so memory stays bounded (about
//!   2 × concurrency × 512 KiB) whatever the image size. Reading (positional
//!   reads) and hashing happen on a blocking thread, not on the async
//!   worker threads.
//! * Any failure after `StartSnapshot` deletes the half-made snapshot (EC2
//!   `DeleteSnapshot`) unless [`SnapshotOptions::keep_on_failure`] is set;
//!   the error, [`PublishError::Snapshot`], names the snapshot id and
//!   whether deleting it worked. (Dropping the future mid-upload skips that
//!   cleanup; the service cancels a snapshot nobody writes to after its
//!   `Timeout`.)
//! * Progress is reported as [`Stage::Upload`] in bytes of planned blocks
//!   handled (sent, or skipped as zero), so a caller can show rate and ETA.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//!
//! use ami_bundle::aws::ebs::{create_snapshot, BlockSelection, SnapshotOptions};
//! use ami_bundle::aws::{Aws, AwsOptions};
//! use ami_core::progress::NoProgress;
//!
//! # async fn run() -> Result<(), ami_bundle::aws::PublishError> {
//! let aws = Aws::connect(&AwsOptions::new().region("eu-west-1")).await?;
//! // The byte ranges the image's writer allocated (for an `ami_ext4`
//! // image: `Report::allocated`, runs of filesystem blocks, times the
//! // filesystem block size).
//! let allocated = vec![0..(1 << 20), (64 << 20)..(65 << 20)];
//! let report = create_snapshot(
//!     &aws,
//!     Path::new("out/disk.img"),
//!     &BlockSelection::Allocated(allocated),
//!     &SnapshotOptions::new().description("my image").tag("Name", "my-image"),
//!     &NoProgress,
//! )
//! .await?;
//! println!("{}: {} blocks sent", report.snapshot_id, report.blocks_sent);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ami_core::progress::{Progress, Stage};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Tag};
use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_smithy_types::body::SdkBody;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

pub use super::error::Cleanup;
use super::{Aws, PublishError};

/// The size of an EBS snapshot block: 512 KiB.
pub const BLOCK_SIZE: u64 = 524_288;

const GIB: u64 = 1 << 30;
/// The largest volume `StartSnapshot` accepts, in GiB (64 TiB).
const MAX_VOLUME_GIB: u64 = 65_536;

/// Which blocks of an image to write to the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockSelection {
    /// The byte ranges the image's writer allocated (sorted or not,
    /// overlapping or not, each within the image): every block that
    /// overlaps one of them is sent, zero or not, and no other block.
    Allocated(Vec<Range<u64>>),
    /// Unknown provenance: read the whole image and skip all-zero blocks.
    NonZero,
}

/// The blocks [`plan_blocks`] chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPlan {
    /// Runs of block indices, sorted, disjoint and not adjacent.
    pub runs: Vec<Range<u64>>,
    /// Whether all-zero blocks among them are to be skipped
    /// ([`BlockSelection::NonZero`]).
    pub skip_zero: bool,
    /// The number of blocks the image spans (`ceil(size / BLOCK_SIZE)`).
    pub image_blocks: u64,
}

impl BlockPlan {
    /// The number of candidate blocks.
    pub fn block_count(&self) -> u64 {
        self.runs.iter().map(|r| r.end - r.start).sum()
    }

    /// The candidate block indices in ascending order.
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|r| r.clone())
    }
}

/// The blocks to consider for an image of `image_size` bytes: for
/// [`BlockSelection::Allocated`], the blocks overlapping the ranges (an
/// error if a range reaches past the end of the image: the map and the
/// image do not belong together); for [`BlockSelection::NonZero`], every
/// block of the image, with zero blocks to be skipped.
pub fn plan_blocks(image_size: u64, selection: &BlockSelection) -> Result<BlockPlan, PublishError> {
    let image_blocks = image_size.div_ceil(BLOCK_SIZE);
    match selection {
        BlockSelection::NonZero => Ok(BlockPlan {
            runs: if image_blocks == 0 {
                Vec::new()
            } else {
                vec![0..image_blocks]
            },
            skip_zero: true,
            image_blocks,
        }),
        BlockSelection::Allocated(ranges) => {
            let mut blocks: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
            for r in ranges {
                if r.end > image_size {
                    return Err(PublishError::Invalid {
                        what: "allocated range",
                        value: format!("{}..{}", r.start, r.end),
                        reason: format!(
                            "it ends past the end of the {image_size}-byte image \
                             (is the block map from another image?)"
                        ),
                    });
                }
                if r.start >= r.end {
                    continue;
                }
                blocks.push(r.start / BLOCK_SIZE..r.end.div_ceil(BLOCK_SIZE));
            }
            blocks.sort_by_key(|r| r.start);
            let mut runs: Vec<Range<u64>> = Vec::with_capacity(blocks.len());
            for b in blocks {
                match runs.last_mut() {
                    Some(last) if b.start <= last.end => last.end = last.end.max(b.end),
                    _ => runs.push(b),
                }
            }
            Ok(BlockPlan {
                runs,
                skip_zero: false,
                image_blocks,
            })
        }
    }
}

/// The `LINEAR` aggregate checksum of `CompleteSnapshot`: Base64 of the
/// SHA-256 of the raw per-block SHA-256 digests concatenated in ascending
/// block index order (the map's order).
pub fn linear_checksum(digests: &BTreeMap<u64, [u8; 32]>) -> String {
    let mut h = Sha256::new();
    for digest in digests.values() {
        h.update(digest);
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// The volume size in GiB for an image of `image_size` bytes: the size
/// rounded up to whole GiB (at least 1), or `requested` if it is at least
/// that.
pub fn volume_size_gib(image_size: u64, requested: Option<u64>) -> Result<u64, PublishError> {
    let needed = image_size.div_ceil(GIB).max(1);
    let size = requested.unwrap_or(needed);
    if size < needed {
        return Err(PublishError::Invalid {
            what: "volume size",
            value: format!("{size} GiB"),
            reason: format!("the image needs at least {needed} GiB ({image_size} bytes)"),
        });
    }
    if size > MAX_VOLUME_GIB {
        return Err(PublishError::Invalid {
            what: "volume size",
            value: format!("{size} GiB"),
            reason: format!("an EBS snapshot holds at most {MAX_VOLUME_GIB} GiB"),
        });
    }
    Ok(size)
}

/// How to make the snapshot. Built with [`SnapshotOptions::new`] and the
/// setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// The volume size in GiB (`None`: the image size rounded up to whole
    /// GiB; smaller than the image is an error).
    pub volume_size_gib: Option<u64>,
    /// The snapshot description.
    pub description: Option<String>,
    /// Tags put on the snapshot.
    pub tags: Vec<(String, String)>,
    /// The KMS key (ARN) to encrypt with (implies encryption).
    pub kms_key_arn: Option<String>,
    /// Encrypt the snapshot (with the account's default EBS key unless
    /// [`kms_key_arn`](Self::kms_key_arn) is given).
    pub encrypted: bool,
    /// Blocks uploaded at once (default 32).
    pub concurrency: usize,
    /// Wait until the snapshot is `completed` (default true).
    pub wait: bool,
    /// How long to wait for `completed` (default 30 minutes).
    pub wait_timeout: Duration,
    /// Keep the snapshot if the upload fails (default false: delete it).
    pub keep_on_failure: bool,
    /// The idempotency token of `StartSnapshot` (default: a random one per
    /// options value, so the SDK's retries of `StartSnapshot` cannot make
    /// two snapshots).
    pub client_token: String,
    /// Minutes without a written block after which the service cancels the
    /// pending snapshot (`StartSnapshot`'s `Timeout`, 10 to 4320; default
    /// 60).
    pub idle_timeout_minutes: u32,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions::new()
    }
}

impl SnapshotOptions {
    /// The defaults (see the fields).
    pub fn new() -> SnapshotOptions {
        SnapshotOptions {
            volume_size_gib: None,
            description: None,
            tags: Vec::new(),
            kms_key_arn: None,
            encrypted: false,
            concurrency: 32,
            wait: true,
            wait_timeout: Duration::from_secs(30 * 60),
            keep_on_failure: false,
            client_token: format!("ami-{:032x}", rand::random::<u128>()),
            idle_timeout_minutes: 60,
        }
    }

    /// Sets the volume size in GiB.
    pub fn volume_size_gib(mut self, gib: Option<u64>) -> Self {
        self.volume_size_gib = gib;
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Encrypts with this KMS key (ARN).
    pub fn kms_key_arn(mut self, arn: impl Into<String>) -> Self {
        self.kms_key_arn = Some(arn.into());
        self.encrypted = true;
        self
    }

    /// Encrypts (or not).
    pub fn encrypted(mut self, encrypted: bool) -> Self {
        self.encrypted = encrypted;
        self
    }

    /// Sets the number of blocks uploaded at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Waits for `completed` (or returns after `CompleteSnapshot`).
    pub fn wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }

    /// Sets how long to wait for `completed`.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Keeps the snapshot after a failure (for debugging).
    pub fn keep_on_failure(mut self, keep: bool) -> Self {
        self.keep_on_failure = keep;
        self
    }

    /// Sets the idempotency token.
    pub fn client_token(mut self, token: impl Into<String>) -> Self {
        self.client_token = token.into();
        self
    }

    /// Sets the idle timeout in minutes (clamped to 10..=4320).
    pub fn idle_timeout_minutes(mut self, minutes: u32) -> Self {
        self.idle_timeout_minutes = minutes.clamp(10, 4320);
        self
    }
}

/// What [`create_snapshot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The snapshot id (`snap-...`).
    pub snapshot_id: String,
    /// The volume size in GiB.
    pub volume_size_gib: u64,
    /// Blocks written (`ChangedBlocksCount`).
    pub blocks_sent: u64,
    /// Blocks in the volume (`volume_size_gib × 2048`).
    pub blocks_in_volume: u64,
    /// Blocks the image spans.
    pub image_blocks: u64,
    /// All-zero blocks not sent ([`BlockSelection::NonZero`] only).
    pub zero_blocks_skipped: u64,
    /// Bytes written (`blocks_sent × BLOCK_SIZE`).
    pub bytes_sent: u64,
    /// The `LINEAR` aggregate checksum sent with `CompleteSnapshot`.
    pub aggregate_checksum: String,
    /// The snapshot's status when the function returned: `completed`, or
    /// `pending` when not waiting.
    pub status: String,
    /// Time spent reading and uploading the blocks (after `StartSnapshot`,
    /// before `CompleteSnapshot`).
    pub upload_time: Duration,
}

/// Makes an EBS snapshot of the image file `image` through the EBS direct
/// APIs (see the [module documentation](self)); `selection` says which
/// blocks to write. Reports [`Stage::Upload`] progress in bytes.
///
/// # Errors
/// Before `StartSnapshot`: [`PublishError::Io`] (the image cannot be
/// read), [`PublishError::Invalid`] (volume size, block map),
/// [`PublishError::Api`]. After it: [`PublishError::Snapshot`] wrapping
/// the cause, with the snapshot deleted (or not, as it says).
pub async fn create_snapshot(
    aws: &Aws,
    image: &Path,
    selection: &BlockSelection,
    options: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<SnapshotReport, PublishError> {
    let io = |source| PublishError::Io {
        path: image.to_owned(),
        source,
    };
    let file = File::open(image).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(PublishError::Invalid {
            what: "image",
            value: image.display().to_string(),
            reason: "not a regular file".to_owned(),
        });
    }
    let image_size = meta.len();
    let volume_gib = volume_size_gib(image_size, options.volume_size_gib)?;
    let plan = plan_blocks(image_size, selection)?;

    let ebs = aws.ebs();
    let mut start = ebs
        .start_snapshot()
        .volume_size(volume_gib as i64)
        .client_token(&options.client_token)
        .timeout(options.idle_timeout_minutes.clamp(10, 4320) as i32);
    if let Some(d) = &options.description {
        start = start.description(d);
    }
    for (k, v) in &options.tags {
        start = start.tags(Tag::builder().key(k).value(v).build());
    }
    if options.encrypted || options.kms_key_arn.is_some() {
        start = start.encrypted(true);
    }
    if let Some(k) = &options.kms_key_arn {
        start = start.kms_key_arn(k);
    }
    let started = start
        .send()
        .await
        .map_err(|e| PublishError::api("StartSnapshot", e))?;
    let snapshot_id = started
        .snapshot_id()
        .ok_or_else(|| PublishError::Api {
            operation: "StartSnapshot",
            code: None,
            message: "the response has no snapshot id".to_owned(),
        })?
        .to_owned();
    let began = Instant::now();

    let result = upload_and_complete(aws, &snapshot_id, file, image, &plan, options, progress)
        .await
        .map(|(uploaded, status)| SnapshotReport {
            snapshot_id: snapshot_id.clone(),
            volume_size_gib: volume_gib,
            blocks_sent: uploaded.blocks_sent,
            blocks_in_volume: volume_gib * (GIB / BLOCK_SIZE),
            image_blocks: plan.image_blocks,
            zero_blocks_skipped: uploaded.zero_skipped,
            bytes_sent: uploaded.blocks_sent * BLOCK_SIZE,
            aggregate_checksum: uploaded.checksum,
            status,
            upload_time: uploaded.elapsed.unwrap_or_else(|| began.elapsed()),
        });
    match result {
        Ok(report) => Ok(report),
        Err(cause) => {
            let cleanup = if options.keep_on_failure {
                Cleanup::Kept
            } else {
                match aws
                    .ec2()
                    .delete_snapshot()
                    .snapshot_id(&snapshot_id)
                    .send()
                    .await
                {
                    Ok(_) => Cleanup::Deleted,
                    Err(e) => Cleanup::Failed(PublishError::api("DeleteSnapshot", e).to_string()),
                }
            };
            Err(PublishError::Snapshot {
                snapshot_id,
                cleanup,
                cause: Box::new(cause),
            })
        }
    }
}

struct Uploaded {
    blocks_sent: u64,
    zero_skipped: u64,
    checksum: String,
    elapsed: Option<Duration>,
}

/// What the reader thread hands to the uploader.
enum Read {
    /// A block to send, with its SHA-256 and the upload's progress in
    /// percent.
    Block {
        index: u64,
        data: Vec<u8>,
        digest: [u8; 32],
        percent: i32,
    },
    /// This many planned blocks were all zeros and are skipped.
    Zero(u64),
}

async fn upload_and_complete(
    aws: &Aws,
    snapshot_id: &str,
    file: File,
    image: &Path,
    plan: &BlockPlan,
    options: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<(Uploaded, String), PublishError> {
    let began = Instant::now();
    progress.begin(Stage::Upload, Some(plan.block_count() * BLOCK_SIZE));
    let uploaded = upload_blocks(aws, snapshot_id, file, image, plan, options, progress).await;
    progress.end(Stage::Upload);
    let mut uploaded = uploaded?;
    uploaded.elapsed = Some(began.elapsed());

    let completed = aws
        .ebs()
        .complete_snapshot()
        .snapshot_id(snapshot_id)
        .changed_blocks_count(uploaded.blocks_sent as i32)
        .checksum(&uploaded.checksum)
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await
        .map_err(|e| PublishError::api("CompleteSnapshot", e))?;
    let status = completed
        .status()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|| "pending".to_owned());
    if status == "error" {
        return Err(PublishError::NotReady {
            what: "snapshot",
            id: snapshot_id.to_owned(),
            reason: "CompleteSnapshot reported status error".to_owned(),
        });
    }
    // Even when the EBS side already says completed, EC2 (which
    // RegisterImage goes through) is asked: it may lag behind.
    let status = if options.wait {
        wait_completed(aws, snapshot_id, options.wait_timeout).await?
    } else {
        status
    };
    Ok((uploaded, status))
}

async fn upload_blocks(
    aws: &Aws,
    snapshot_id: &str,
    file: File,
    image: &Path,
    plan: &BlockPlan,
    options: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<Uploaded, PublishError> {
    let concurrency = options.concurrency.max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Read>(concurrency);
    let reader = {
        let plan = plan.clone();
        let path = image.to_owned();
        tokio::task::spawn_blocking(move || read_blocks(&file, &path, &plan, &tx))
    };

    let ebs = aws.ebs();
    let mut tasks = tokio::task::JoinSet::new();
    let mut digests = BTreeMap::new();
    let mut zero_skipped = 0u64;
    let mut reader_done = false;
    let mut failure: Option<PublishError> = None;
    while failure.is_none() && !(reader_done && tasks.is_empty()) {
        tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => match joined {
                Some(Ok(Ok((index, digest)))) => {
                    digests.insert(index, digest);
                    progress.advance(Stage::Upload, BLOCK_SIZE);
                }
                Some(Ok(Err(e))) => failure = Some(e),
                Some(Err(e)) => {
                    failure = Some(PublishError::Api {
                        operation: "PutSnapshotBlock",
                        code: None,
                        message: format!("upload task failed: {e}"),
                    })
                }
                None => {}
            },
            read = rx.recv(), if !reader_done && tasks.len() < concurrency => match read {
                Some(Read::Block { index, data, digest, percent }) => {
                    let ebs = ebs.clone();
                    let snapshot_id = snapshot_id.to_owned();
                    tasks.spawn(async move {
                        put_block(&ebs, &snapshot_id, index, data, &digest, percent).await?;
                        Ok::<_, PublishError>((index, digest))
                    });
                }
                Some(Read::Zero(n)) => {
                    zero_skipped += n;
                    progress.advance(Stage::Upload, n * BLOCK_SIZE);
                }
                None => reader_done = true,
            },
            else => break,
        }
    }
    if let Some(e) = failure {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        // The reader stops at its next send.
        drop(rx);
        let _ = reader.await;
        return Err(e);
    }
    drop(rx);
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => {
            return Err(PublishError::Io {
                path: image.to_owned(),
                source: std::io::Error::other(format!("the reader thread failed: {e}")),
            })
        }
    }
    let blocks_sent = digests.len() as u64;
    if blocks_sent + zero_skipped != plan.block_count() {
        return Err(PublishError::Io {
            path: image.to_owned(),
            source: std::io::Error::other(format!(
                "{} blocks were planned but {blocks_sent} sent and {zero_skipped} skipped",
                plan.block_count()
            )),
        });
    }
    Ok(Uploaded {
        blocks_sent,
        zero_skipped,
        checksum: linear_checksum(&digests),
        elapsed: None,
    })
}

/// Sends one block. The SDK retries throttling, 5xx and timeouts within
/// the retry budget; right after `StartSnapshot` the service may not know
/// the snapshot yet (`ResourceNotFoundException`), which is retried here a
/// few times with a growing pause.
async fn put_block(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    index: u64,
    data: Vec<u8>,
    digest: &[u8; 32],
    percent: i32,
) -> Result<(), PublishError> {
    let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
    // Bytes inside, so the copies for the retries share the data.
    let body = SdkBody::from(data);
    let mut pause = Duration::from_millis(500);
    let mut not_found_left = 4u32;
    loop {
        let body = body.try_clone().ok_or_else(|| PublishError::Api {
            operation: "PutSnapshotBlock",
            code: None,
            message: "the block body cannot be replayed".to_owned(),
        })?;
        let sent = ebs
            .put_snapshot_block()
            .snapshot_id(snapshot_id)
            .block_index(index as i32)
            .block_data(ByteStream::new(body))
            .data_length(BLOCK_SIZE as i32)
            .checksum(&checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .progress(percent)
            .send()
            .await;
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") && not_found_left > 0 => {
                not_found_left -= 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                let mut err = PublishError::api("PutSnapshotBlock", e);
                if let PublishError::Api { message, .. } = &mut err {
                    *message = format!("block {index}: {message}");
                }
                return Err(err);
            }
        }
    }
}

/// The reader thread: reads the planned blocks in order with positional
/// reads, pads the last one, drops zero blocks when asked, hashes the rest
/// and hands them over. Stops early (without error) when the receiver is
/// gone.
fn read_blocks(
    file: &File,
    path: &Path,
    plan: &BlockPlan,
    tx: &tokio::sync::mpsc::Sender<Read>,
) -> Result<(), PublishError> {
    let io = |source| PublishError::Io {
        path: PathBuf::from(path),
        source,
    };
    let size = file.metadata().map_err(io)?.len();
    // With zero skipping, blocks entirely within holes need not be read.
    let data = if plan.skip_zero {
        data_block_runs(file, size)
    } else {
        None
    };
    let total = plan.block_count().max(1);
    let mut done = 0u64;
    let mut zero_run = 0u64;
    let mut data_cursor = 0usize;
    for index in plan.blocks() {
        done += 1;
        if let Some(runs) = &data {
            while data_cursor < runs.len() && runs[data_cursor].end <= index {
                data_cursor += 1;
            }
            let in_data = runs
                .get(data_cursor)
                .is_some_and(|r| r.start <= index && index < r.end);
            if !in_data {
                zero_run += 1;
                continue;
            }
        }
        let offset = index * BLOCK_SIZE;
        let len = BLOCK_SIZE.min(size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        file.read_exact_at(&mut buf[..len], offset).map_err(io)?;
        if plan.skip_zero && buf.iter().all(|&b| b == 0) {
            zero_run += 1;
            continue;
        }
        if zero_run > 0 {
            if tx.blocking_send(Read::Zero(zero_run)).is_err() {
                return Ok(());
            }
            zero_run = 0;
        }
        let digest: [u8; 32] = Sha256::digest(&buf).into();
        let percent = (done * 100 / total) as i32;
        let read = Read::Block {
            index,
            data: buf,
            digest,
            percent,
        };
        if tx.blocking_send(read).is_err() {
            return Ok(());
        }
    }
    if zero_run > 0 {
        let _ = tx.blocking_send(Read::Zero(zero_run));
    }
    Ok(())
}

/// The blocks of the file that hold data (are not entirely within holes),
/// as sorted runs of block indices, from `SEEK_DATA`/`SEEK_HOLE`; `None`
/// if the filesystem cannot tell.
fn data_block_runs(file: &File, size: u64) -> Option<Vec<Range<u64>>> {
    use rustix::fs::{seek, SeekFrom};
    let mut runs: Vec<Range<u64>> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return None,
        };
        if start >= size {
            break;
        }
        let end = seek(file, SeekFrom::Hole(start)).ok()?.min(size);
        if end <= start {
            return None;
        }
        let blocks = start / BLOCK_SIZE..end.div_ceil(BLOCK_SIZE);
        match runs.last_mut() {
            Some(last) if blocks.start <= last.end => last.end = last.end.max(blocks.end),
            _ => runs.push(blocks),
        }
        pos = end;
    }
    Some(runs)
}

/// Polls EC2 `DescribeSnapshots` until the snapshot is `completed`
/// (returns `"completed"`), `error`, or the timeout passes.
async fn wait_completed(
    aws: &Aws,
    snapshot_id: &str,
    timeout: Duration,
) -> Result<String, PublishError> {
    let ec2 = aws.ec2();
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(500);
    let mut last = String::from("unknown");
    loop {
        match ec2
            .describe_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
        {
            Ok(out) => {
                let snap = out
                    .snapshots()
                    .iter()
                    .find(|s| s.snapshot_id() == Some(snapshot_id));
                if let Some(snap) = snap {
                    let state = snap.state().map(|s| s.as_str().to_owned());
                    match state.as_deref() {
                        Some("completed") => return Ok("completed".to_owned()),
                        Some("error") => {
                            return Err(PublishError::NotReady {
                                what: "snapshot",
                                id: snapshot_id.to_owned(),
                                reason: format!(
                                    "its state is error ({})",
                                    snap.state_message().unwrap_or("no message")
                                ),
                            })
                        }
                        Some(other) => {
                            last = match snap.progress() {
                                Some(p) => format!("{other}, {p}"),
                                None => other.to_owned(),
                            }
                        }
                        None => {}
                    }
                }
            }
            // Just made: EC2 may not know it yet (eventual consistency).
            Err(e) if e.code() == Some("InvalidSnapshot.NotFound") => {
                last = "not yet visible to EC2".to_owned();
            }
            Err(e) => return Err(PublishError::api("DescribeSnapshots", e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(PublishError::NotReady {
                what: "snapshot",
                id: snapshot_id.to_owned(),
                reason: format!(
                    "not completed after {} s (last state: {last})",
                    timeout.as_secs()
                ),
            });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(15));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = BLOCK_SIZE;

    fn runs(size: u64, ranges: &[Range<u64>]) -> Vec<Range<u64>> {
        plan_blocks(size, &BlockSelection::Allocated(ranges.to_vec()))
            .unwrap()
            .runs
    }

    #[test]
    fn allocated_ranges_map_to_overlapping_blocks() {
        // One byte in block 0, a range straddling blocks 2-3, a range
        // exactly covering block 5.
        assert_eq!(
            runs(10 * B, &[0..1, 2 * B + 10..3 * B + 1, 5 * B..6 * B]),
            [0..1, 2..4, 5..6]
        );
        // Unsorted, overlapping and adjacent ranges merge.
        assert_eq!(
            runs(
                10 * B,
                &[
                    7 * B..8 * B,
                    3 * B..4 * B,
                    4 * B..5 * B,
                    3 * B + 7..3 * B + 9
                ]
            ),
            [3..5, 7..8]
        );
        // Empty ranges select nothing.
        assert_eq!(runs(10 * B, &[4 * B..4 * B]), Vec::<Range<u64>>::new());
    }

    #[test]
    fn partial_last_block_counts() {
        let size = 3 * B + 100;
        let plan = plan_blocks(size, &BlockSelection::Allocated(vec![3 * B..size])).unwrap();
        assert_eq!(plan.runs, [3..4]);
        assert_eq!(plan.image_blocks, 4);
        let nz = plan_blocks(size, &BlockSelection::NonZero).unwrap();
        assert_eq!(nz.runs, [0..4]);
        assert!(nz.skip_zero);
        assert_eq!(nz.block_count(), 4);
    }

    #[test]
    fn range_past_the_end_is_refused() {
        let err = plan_blocks(2 * B, &BlockSelection::Allocated(vec![B..2 * B + 1])).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    #[test]
    fn empty_image() {
        let nz = plan_blocks(0, &BlockSelection::NonZero).unwrap();
        assert_eq!(nz.block_count(), 0);
        assert_eq!(nz.image_blocks, 0);
        let a = plan_blocks(0, &BlockSelection::Allocated(vec![])).unwrap();
        assert_eq!(a.block_count(), 0);
        assert_eq!(volume_size_gib(0, None).unwrap(), 1);
    }

    #[test]
    fn volume_size_rounds_up_and_refuses_too_small() {
        assert_eq!(volume_size_gib(GIB, None).unwrap(), 1);
        assert_eq!(volume_size_gib(GIB + 1, None).unwrap(), 2);
        assert_eq!(volume_size_gib(GIB + 1, Some(8)).unwrap(), 8);
        assert!(volume_size_gib(GIB + 1, Some(1)).is_err());
        assert!(volume_size_gib(GIB, Some(MAX_VOLUME_GIB + 1)).is_err());
    }

    #[test]
    fn linear_checksum_hashes_raw_digests_in_index_order() {
        let d = |b: u8| -> [u8; 32] { Sha256::digest([b]).into() };
        let mut map = BTreeMap::new();
        // Inserted out of order; the aggregate follows the index order.
        map.insert(9, d(2));
        map.insert(1, d(1));
        let mut concat = Vec::new();
        concat.extend_from_slice(&d(1));
        concat.extend_from_slice(&d(2));
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&concat));
        assert_eq!(linear_checksum(&map), expected);
        // Not the hash of the Base64 texts.
        let b64 = |x: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(x);
        let text = format!("{}{}", b64(&d(1)), b64(&d(2)));
        assert_ne!(
            linear_checksum(&map),
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
        );
        // Empty: the hash of nothing.
        assert_eq!(
            linear_checksum(&BTreeMap::new()),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        // A vector computed with Python's hashlib: block 2 all zeros, block
        // 7 all 0xff.
        let mut map = BTreeMap::new();
        map.insert(7, Sha256::digest(vec![0xffu8; BLOCK_SIZE as usize]).into());
        map.insert(2, Sha256::digest(vec![0u8; BLOCK_SIZE as usize]).into());
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(map[&2]),
            "B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE="
        );
        assert_eq!(
            linear_checksum(&map),
            "QuWhAEV7Qid0i9uuVwexaWSfKmFKH0P/+Oi8JqIj0tc="
        );
    }

    #[test]
    fn data_runs_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let f = File::create(&path).unwrap();
        f.set_len(8 * B).unwrap();
        f.write_all_at(&[1], 3 * B + 5).unwrap();
        f.sync_all().unwrap();
        let runs = data_block_runs(&f, 8 * B);
        // Filesystems without SEEK_DATA report the whole file as data.
        if let Some(runs) = runs {
            assert!(runs.iter().any(|r| r.contains(&3)), "{runs:?}");
            let covered: u64 = runs.iter().map(|r| r.end - r.start).sum();
            assert!(covered <= 8);
        }
    }
}
