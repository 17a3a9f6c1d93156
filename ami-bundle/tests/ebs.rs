//! EBS direct snapshots against moto's server on loopback (end-to-end:
//! only with `AMI_E2E=1`).
//!
//! * An image with known allocated ranges (an allocated all-zero block,
//!   holes, a partial last block) is snapshot with
//!   `BlockSelection::Allocated`: exactly the overlapping blocks are sent;
//!   the snapshot is read back block by block with the SDK
//!   (`ListSnapshotBlocks`, `GetSnapshotBlock`) and, independently, by a
//!   boto3 client (`tests/ebs_read_snapshot.py`), and compared with the
//!   image byte for byte. The same image with `BlockSelection::NonZero`
//!   sends only the non-zero blocks.
//! * An ext4 image written by `ami_ext4` is snapshot with the writer's own
//!   block map.
//! * Through `fixtures::faultproxy`: throttling, 500s, a stalled request,
//!   a dropped connection and a "not found yet" answer are retried and the
//!   upload completes correctly; a block that always fails makes the upload fail within its
//!   retry budget, and the half-made snapshot is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ami_bundle::aws::ebs::{
    create_snapshot, BlockSelection, Cleanup, SnapshotOptions, SnapshotReport, BLOCK_SIZE,
};
use ami_bundle::aws::{Aws, AwsOptions, PublishError};
use ami_core::progress::{Progress, Stage};
use aws_sdk_ebs::config::interceptors::FinalizerInterceptorContextMut;
use aws_sdk_ebs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::client::ser_de::{
    DeserializeResponse as _, SharedResponseDeserializer,
};
use aws_smithy_types::body::SdkBody;
use base64::Engine as _;
use fixtures::faultproxy::{Fault, FaultProxy, Outcome, Rule};
use fixtures::moto::{self, MotoServer};
use sha2::{Digest as _, Sha256};

const B: u64 = BLOCK_SIZE;

async fn connect(endpoint: &str, max_attempts: u32, attempt_timeout: Duration) -> Aws {
    Aws::connect(
        &AwsOptions::new()
            .region(moto::REGION)
            .endpoint_url(endpoint)
            .static_credentials(moto::ACCESS_KEY, moto::SECRET_KEY)
            .max_attempts(max_attempts)
            .attempt_timeout(attempt_timeout)
            .connect_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("connect")
}

/// Counts progress reports.
#[derive(Default)]
struct Counter {
    total: AtomicU64,
    advanced: AtomicU64,
    ended: AtomicU64,
}

impl Progress for Counter {
    fn begin(&self, stage: Stage, total: Option<u64>) {
        assert_eq!(stage, Stage::Upload);
        self.total
            .store(total.unwrap_or(u64::MAX), Ordering::SeqCst);
    }
    fn advance(&self, stage: Stage, amount: u64) {
        assert_eq!(stage, Stage::Upload);
        self.advanced.fetch_add(amount, Ordering::SeqCst);
    }
    fn end(&self, _: Stage) {
        self.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// A sparse image of `size` bytes with `data` written at the given
/// offsets (the rest are holes).
fn sparse_image(path: &Path, size: u64, data: &[(u64, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (offset, bytes) in data {
        f.write_all_at(bytes, *offset).unwrap();
    }
    f.sync_all().unwrap();
}

/// Block `index` of the image as a snapshot holds it (zero-padded).
fn image_block(image: &[u8], index: u64) -> Vec<u8> {
    let start = (index * B) as usize;
    let mut block = vec![0u8; B as usize];
    if start < image.len() {
        let end = image.len().min(start + B as usize);
        block[..end - start].copy_from_slice(&image[start..end]);
    }
    block
}

/// moto 5 sends `ListSnapshotBlocks`' `BlockIndex` as a JSON string
/// (`"BlockIndex": "3"`) where the API has an integer, which the Rust SDK
/// refuses; this interceptor turns them into numbers and has the SDK parse
/// the response again. Only the tests' read-back client has it.
#[derive(Debug)]
struct MotoBlockIndex;

impl Intercept for MotoBlockIndex {
    fn name(&self) -> &'static str {
        "moto-block-index"
    }

    // The body is read into memory only after `modify_before_deserialization`,
    // so the response is fixed up after the first parse and parsed again.
    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        const KEY: &str = "\"BlockIndex\": \"";
        let Some(text) = context
            .response()
            .and_then(|r| r.body().bytes())
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            return Ok(());
        };
        if !text.contains(KEY) {
            return Ok(());
        }
        let mut fixed = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(KEY) {
            fixed.push_str(&rest[..at]);
            fixed.push_str("\"BlockIndex\": ");
            let after = &rest[at + KEY.len()..];
            let end = after.find('"').ok_or("unterminated BlockIndex")?;
            fixed.push_str(&after[..end]);
            rest = &after[end + 1..];
        }
        fixed.push_str(rest);
        let deserializer = cfg
            .load::<SharedResponseDeserializer>()
            .ok_or("no response deserializer")?;
        let response = context.response_mut().ok_or("no response")?;
        *response.body_mut() = SdkBody::from(fixed);
        let parsed = deserializer.deserialize_nonstreaming_with_config(response, cfg);
        if let Some(slot) = context.output_or_error_mut() {
            *slot = parsed;
        }
        Ok(())
    }
}

/// Reads every block of the snapshot with the SDK: ListSnapshotBlocks
/// (following NextToken) and GetSnapshotBlock with each block token;
/// checks each block's checksum header.
async fn read_back(aws: &Aws, snapshot_id: &str) -> BTreeMap<u64, Vec<u8>> {
    let ebs = aws_sdk_ebs::Client::from_conf(
        aws_sdk_ebs::config::Builder::from(aws.sdk_config())
            .interceptor(MotoBlockIndex)
            .build(),
    );
    let mut tokens = BTreeMap::new();
    let mut next: Option<String> = None;
    loop {
        let page = ebs
            .list_snapshot_blocks()
            .snapshot_id(snapshot_id)
            .set_next_token(next.clone())
            .send()
            .await
            .expect("ListSnapshotBlocks");
        for b in page.blocks() {
            let index = b.block_index().expect("block index") as u64;
            let token = b.block_token().expect("block token").to_owned();
            assert!(
                tokens.insert(index, token).is_none(),
                "block {index} listed twice"
            );
        }
        match page.next_token() {
            // moto ignores pagination and repeats itself on a token.
            Some(t) if Some(t) != next.as_deref() => next = Some(t.to_owned()),
            _ => break,
        }
    }
    let mut blocks = BTreeMap::new();
    for (index, token) in tokens {
        let out = ebs
            .get_snapshot_block()
            .snapshot_id(snapshot_id)
            .block_index(index as i32)
            .block_token(token)
            .send()
            .await
            .expect("GetSnapshotBlock");
        let checksum = out.checksum().map(str::to_owned);
        let data = out
            .block_data
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec();
        assert_eq!(data.len() as u64, B, "block {index} length");
        let digest = Sha256::digest(&data);
        assert_eq!(
            checksum.as_deref(),
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode(digest)
                    .as_str()
            ),
            "block {index}: checksum header"
        );
        blocks.insert(index, data);
    }
    blocks
}

/// Checks the snapshot against the image: exactly `expected` blocks, each
/// equal to the image's block; every other block of the image is zero.
/// Returns the LINEAR aggregate of the downloaded blocks.
fn compare(image: &[u8], blocks: &BTreeMap<u64, Vec<u8>>, expected: &BTreeSet<u64>) -> String {
    let listed: BTreeSet<u64> = blocks.keys().copied().collect();
    assert_eq!(&listed, expected, "blocks in the snapshot");
    let image_blocks = (image.len() as u64).div_ceil(B);
    for index in 0..image_blocks {
        let want = image_block(image, index);
        match blocks.get(&index) {
            Some(got) => assert!(got == &want, "block {index} differs from the image"),
            None => assert!(
                want.iter().all(|&b| b == 0),
                "block {index} is not in the snapshot but is not zero in the image"
            ),
        }
    }
    let mut h = Sha256::new();
    for data in blocks.values() {
        h.update(Sha256::digest(data));
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Downloads the snapshot with the independent boto3 client into a file of
/// the image's size and compares it with the image byte for byte. Returns
/// the client's block list and recomputed aggregate checksum.
fn python_download(
    endpoint: &str,
    snapshot_id: &str,
    image: &Path,
    dir: &Path,
) -> (Vec<u64>, String) {
    let python = std::env::var("AMI_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ebs_read_snapshot.py");
    let out_path = dir.join(format!("{snapshot_id}.download"));
    let size = std::fs::metadata(image).unwrap().len();
    let out = Command::new(python)
        .arg(&script)
        .args(["--endpoint", endpoint, "--snapshot", snapshot_id, "--size"])
        .arg(size.to_string())
        .arg("--out")
        .arg(&out_path)
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run ebs_read_snapshot.py");
    assert!(
        out.status.success(),
        "ebs_read_snapshot.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let downloaded = std::fs::read(&out_path).unwrap();
    let original = std::fs::read(image).unwrap();
    assert_eq!(downloaded.len(), original.len());
    if let Some(at) = downloaded.iter().zip(&original).position(|(a, b)| a != b) {
        panic!("the boto3 download differs from the image at byte {at}");
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let blocks = json_array(&text, "\"blocks\":");
    let aggregate = json_string(&text, "\"aggregate_checksum\":");
    (blocks, aggregate)
}

fn json_array(text: &str, key: &str) -> Vec<u64> {
    let rest = &text[text.find(key).expect(key) + key.len()..];
    let inner = &rest[rest.find('[').unwrap() + 1..rest.find(']').unwrap()];
    inner
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

fn json_string(text: &str, key: &str) -> String {
    let rest = &text[text.find(key).expect(key) + key.len()..];
    let start = rest.find('"').unwrap() + 1;
    let end = start + rest[start..].find('"').unwrap();
    rest[start..end].to_owned()
}

/// Whether EC2 still lists the snapshot.
async fn ec2_has_snapshot(aws: &Aws, snapshot_id: &str) -> bool {
    let out = aws
        .ec2()
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect("DescribeSnapshots");
    out.snapshots()
        .iter()
        .any(|s| s.snapshot_id() == Some(snapshot_id))
}

/// The test image: 24 whole blocks and 1000 bytes. Allocated: the first
/// 4 KiB (data), block 3 (allocated, all zeros), a range straddling
/// blocks 5 and 6 (data), blocks 10-12 (data), the partial last block
/// (data). Everything else is a hole.
fn test_image(path: &Path) -> (Vec<Range<u64>>, BTreeSet<u64>, BTreeSet<u64>) {
    let size = 24 * B + 1000;
    let ranges = vec![
        0..4096,
        3 * B..4 * B,
        5 * B + B / 2..6 * B + 100,
        10 * B..13 * B,
        24 * B..size,
    ];
    let data: Vec<(u64, Vec<u8>)> = ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let bytes = if r.start == 3 * B {
                vec![0u8; B as usize] // written zeros, not a hole
            } else {
                fixtures::pattern(i as u64 + 1, (r.end - r.start) as usize)
            };
            (r.start, bytes)
        })
        .collect();
    sparse_image(path, size, &data);
    let allocated: BTreeSet<u64> = [0, 3, 5, 6, 10, 11, 12, 24].into();
    let non_zero: BTreeSet<u64> = [0, 5, 6, 10, 11, 12, 24].into();
    (ranges, allocated, non_zero)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_and_nonzero_blocks_round_trip() {
    if !fixtures::e2e_enabled("snapshot images into moto's EBS and read them back") {
        return;
    }
    let moto = MotoServer::start().expect("start moto");
    let aws = connect(&moto.endpoint(), 4, Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let (ranges, allocated, non_zero) = test_image(&path);
    let image = std::fs::read(&path).unwrap();

    // Allocated blocks, zero or not, and nothing else.
    let progress = Counter::default();
    let options = SnapshotOptions::new()
        .description("ami test image")
        .tag("Name", "ami-ebs-test")
        .concurrency(3);
    let report = create_snapshot(
        &aws,
        &path,
        &BlockSelection::Allocated(ranges.clone()),
        &options,
        &progress,
    )
    .await
    .expect("snapshot");
    assert!(report.snapshot_id.starts_with("snap-"), "{report:?}");
    assert_eq!(report.blocks_sent, allocated.len() as u64);
    assert_eq!(report.bytes_sent, allocated.len() as u64 * B);
    assert_eq!(report.zero_blocks_skipped, 0);
    assert_eq!(report.volume_size_gib, 1);
    assert_eq!(report.blocks_in_volume, 2048);
    assert_eq!(report.image_blocks, 25);
    assert_eq!(report.status, "completed");
    assert_eq!(
        progress.total.load(Ordering::SeqCst),
        allocated.len() as u64 * B
    );
    assert_eq!(
        progress.advanced.load(Ordering::SeqCst),
        allocated.len() as u64 * B
    );
    assert_eq!(progress.ended.load(Ordering::SeqCst), 1);

    let blocks = read_back(&aws, &report.snapshot_id).await;
    // The allocated all-zero block was sent; the holes were not.
    assert!(blocks[&3].iter().all(|&b| b == 0));
    let aggregate = compare(&image, &blocks, &allocated);
    assert_eq!(report.aggregate_checksum, aggregate);

    // EC2 sees it with its size, description and tag.
    let described = aws
        .ec2()
        .describe_snapshots()
        .snapshot_ids(&report.snapshot_id)
        .send()
        .await
        .unwrap();
    let snap = &described.snapshots()[0];
    assert_eq!(snap.volume_size(), Some(1));
    assert_eq!(snap.description(), Some("ami test image"));
    assert!(snap
        .tags()
        .iter()
        .any(|t| t.key() == Some("Name") && t.value() == Some("ami-ebs-test")));

    // The independent client agrees.
    let (py_blocks, py_aggregate) =
        python_download(&moto.endpoint(), &report.snapshot_id, &path, dir.path());
    assert_eq!(py_blocks, allocated.iter().copied().collect::<Vec<_>>());
    assert_eq!(py_aggregate, report.aggregate_checksum);

    // Non-zero blocks only, for an image of unknown provenance.
    let progress = Counter::default();
    let report = create_snapshot(
        &aws,
        &path,
        &BlockSelection::NonZero,
        &SnapshotOptions::new(),
        &progress,
    )
    .await
    .expect("snapshot");
    assert_eq!(report.blocks_sent, non_zero.len() as u64);
    assert_eq!(report.zero_blocks_skipped, 25 - non_zero.len() as u64);
    assert_eq!(progress.advanced.load(Ordering::SeqCst), 25 * B);
    let blocks = read_back(&aws, &report.snapshot_id).await;
    let aggregate = compare(&image, &blocks, &non_zero);
    assert_eq!(report.aggregate_checksum, aggregate);
    let (py_blocks, _) = python_download(&moto.endpoint(), &report.snapshot_id, &path, dir.path());
    assert_eq!(py_blocks, non_zero.iter().copied().collect::<Vec<_>>());

    // A volume size smaller than the image is refused before anything is
    // started; a larger one is used.
    let err = create_snapshot(
        &aws,
        &path,
        &BlockSelection::NonZero,
        &SnapshotOptions::new().volume_size_gib(Some(0)),
        &Counter::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PublishError::Invalid {
                what: "volume size",
                ..
            }
        ),
        "{err}"
    );
    let report = create_snapshot(
        &aws,
        &path,
        &BlockSelection::Allocated(vec![0..4096]),
        &SnapshotOptions::new().volume_size_gib(Some(3)).wait(false),
        &Counter::default(),
    )
    .await
    .unwrap();
    assert_eq!((report.volume_size_gib, report.blocks_sent), (3, 1));
}

/// The byte ranges of an `ami_ext4` block map.
fn byte_ranges(map: &ami_ext4::BlockMap) -> Vec<Range<u64>> {
    let bs = u64::from(map.block_size);
    map.runs.iter().map(|r| r.start * bs..r.end * bs).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext4_image_with_the_writers_block_map() {
    if !fixtures::e2e_enabled("snapshot an ext4 image into moto's EBS with its block map") {
        return;
    }
    use ami_core::{FileData, Metadata, Node, Tree};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.img");
    let mut tree = Tree::new(Metadata::new(0o755));
    let root = tree.root();
    let etc = tree
        .add(root, b"etc", Node::dir(Metadata::new(0o755)))
        .unwrap();
    tree.add(
        etc,
        b"hostname",
        Node::file(
            FileData::from_bytes(b"ami\n".to_vec()),
            Metadata::new(0o644),
        ),
    )
    .unwrap();
    let big = fixtures::pattern(7, 3 * 1024 * 1024 + 12345);
    tree.add(
        root,
        b"big",
        Node::file(FileData::from_bytes(big), Metadata::new(0o644)),
    )
    .unwrap();
    let report = {
        let mut file = std::fs::File::create(&path).unwrap();
        let options = ami_ext4::FormatOptions::new()
            .size(ami_ext4::Size::Bytes(48 << 20))
            .assume_zeroed(true);
        let report =
            ami_ext4::format(&mut file, &tree, &options, &ami_core::progress::NoProgress).unwrap();
        file.set_len(report.size_bytes()).unwrap();
        report
    };
    let image = std::fs::read(&path).unwrap();
    // The blocks the writer's map touches, computed here block by block.
    let fs_bs = u64::from(report.allocated.block_size);
    let expected: BTreeSet<u64> = report
        .allocated
        .runs
        .iter()
        .flat_map(|r| r.clone())
        .map(|b| b * fs_bs / B)
        .collect();
    assert!(expected.len() < (image.len() as u64 / B) as usize);
    // Some allocated blocks hold only zeros (journal, unused tables): they
    // must be sent too.
    let zero_allocated = expected
        .iter()
        .filter(|&&i| image_block(&image, i).iter().all(|&b| b == 0))
        .count();

    let moto = MotoServer::start().expect("start moto");
    let aws = connect(&moto.endpoint(), 4, Duration::from_secs(30)).await;
    let snap = create_snapshot(
        &aws,
        &path,
        &BlockSelection::Allocated(byte_ranges(&report.allocated)),
        &SnapshotOptions::new(),
        &Counter::default(),
    )
    .await
    .expect("snapshot");
    eprintln!(
        "ext4 image: {} blocks of 512 KiB, {} allocated ({} of them all zeros), {} sent",
        snap.image_blocks,
        expected.len(),
        zero_allocated,
        snap.blocks_sent
    );
    assert!(
        zero_allocated > 0,
        "the test image should have allocated zero blocks"
    );
    assert_eq!(snap.blocks_sent, expected.len() as u64);
    let blocks = read_back(&aws, &snap.snapshot_id).await;
    assert_eq!(compare(&image, &blocks, &expected), snap.aggregate_checksum);
    let (py_blocks, _) = python_download(&moto.endpoint(), &snap.snapshot_id, &path, dir.path());
    assert_eq!(py_blocks, expected.iter().copied().collect::<Vec<_>>());
}

/// Attempts per block index among the logged PutSnapshotBlock requests.
fn attempts_per_block(proxy: &FaultProxy) -> BTreeMap<u64, Vec<Outcome>> {
    let mut map: BTreeMap<u64, Vec<Outcome>> = BTreeMap::new();
    for l in proxy.log() {
        if l.method != "PUT" {
            continue;
        }
        let Some((_, index)) = l.target.split('?').next().unwrap().rsplit_once("/blocks/") else {
            continue;
        };
        map.entry(index.parse().unwrap())
            .or_default()
            .push(l.outcome);
    }
    map
}

/// Runs one upload through a fresh proxy with `rules`; checks the result
/// against the image and returns the proxy for log checks.
async fn faulted_upload(
    moto: &MotoServer,
    path: &Path,
    ranges: &[Range<u64>],
    rules: Vec<Rule>,
    attempt_timeout: Duration,
) -> (FaultProxy, Result<SnapshotReport, PublishError>, Duration) {
    let proxy = FaultProxy::start(moto.addr()).unwrap();
    for r in rules {
        proxy.add_rule(r);
    }
    let aws = connect(&proxy.endpoint(), 4, attempt_timeout).await;
    let began = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(120),
        create_snapshot(
            &aws,
            path,
            &BlockSelection::Allocated(ranges.to_vec()),
            &SnapshotOptions::new().concurrency(4),
            &Counter::default(),
        ),
    )
    .await
    .expect("the upload did not finish within 120 s");
    (proxy, result, began.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_or_fail_cleanly() {
    if !fixtures::e2e_enabled("inject faults between the SDK and moto's EBS") {
        return;
    }
    let moto = MotoServer::start().expect("start moto");
    let direct = connect(&moto.endpoint(), 2, Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("disk.img");
    let (ranges, allocated, _) = test_image(&path);
    let image = std::fs::read(&path).unwrap();
    let put = |fault: Fault| Rule::new("/blocks/", fault).method("PUT");

    // (a) Throttling, with the status the API reference gives (400) and
    // as a 503.
    let (proxy, result, _) = faulted_upload(
        &moto,
        &path,
        &ranges,
        vec![
            put(Fault::throttling()).skip(1).times(3),
            put(Fault::status(
                503,
                "ThrottlingException",
                r#"{"message":"Rate exceeded"}"#,
            ))
            .skip(5)
            .times(3),
        ],
        Duration::from_secs(30),
    )
    .await;
    let report = result.expect("upload despite throttling");
    let attempts = attempts_per_block(&proxy);
    let injected: usize = attempts
        .values()
        .flatten()
        .filter(|o| matches!(o, Outcome::Injected(_)))
        .count();
    assert_eq!(injected, 6, "{attempts:?}");
    for (index, outcomes) in &attempts {
        // Each block reached moto exactly once, after at most its budget.
        assert_eq!(
            outcomes.iter().filter(|o| o.reached_upstream()).count(),
            1,
            "block {index}: {outcomes:?}"
        );
        assert!(outcomes.len() <= 4, "block {index}: {outcomes:?}");
    }
    assert_eq!(report.blocks_sent, allocated.len() as u64);
    let blocks = read_back(&direct, &report.snapshot_id).await;
    assert_eq!(
        compare(&image, &blocks, &allocated),
        report.aggregate_checksum
    );

    // (b) 500 InternalServerException on some blocks.
    let (proxy, result, _) = faulted_upload(
        &moto,
        &path,
        &ranges,
        vec![put(Fault::internal_error()).skip(2).times(4)],
        Duration::from_secs(30),
    )
    .await;
    let report = result.expect("upload despite 500s");
    assert_eq!(
        proxy
            .log()
            .iter()
            .filter(|l| l.outcome == Outcome::Injected(500))
            .count(),
        4
    );
    assert_eq!(proxy.forwarded(Some("PUT"), "/blocks/"), allocated.len());
    let blocks = read_back(&direct, &report.snapshot_id).await;
    assert_eq!(
        compare(&image, &blocks, &allocated),
        report.aggregate_checksum
    );

    // (c) A request that hangs: the 2 s attempt timeout fires and the
    // block is sent again. And a connection dropped without an answer.
    let (proxy, result, elapsed) = faulted_upload(
        &moto,
        &path,
        &ranges,
        vec![
            put(Fault::Stall(Duration::from_secs(60))).skip(3),
            put(Fault::Reset).skip(5),
        ],
        Duration::from_secs(2),
    )
    .await;
    let report = result.expect("upload despite a stall and a reset");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let outcomes: Vec<Outcome> = proxy.log().into_iter().map(|l| l.outcome).collect();
    assert_eq!(
        outcomes.iter().filter(|&o| o == &Outcome::Stalled).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|&o| o == &Outcome::Reset).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(proxy.forwarded(Some("PUT"), "/blocks/"), allocated.len());
    let blocks = read_back(&direct, &report.snapshot_id).await;
    assert_eq!(
        compare(&image, &blocks, &allocated),
        report.aggregate_checksum
    );

    // (d) "Not found" right after StartSnapshot (the service's
    // eventual consistency): retried by the uploader itself.
    let (proxy, result, _) = faulted_upload(
        &moto,
        &path,
        &ranges,
        vec![put(Fault::status(
            404,
            "ResourceNotFoundException",
            r#"{"message":"The snapshot does not exist","Reason":"SNAPSHOT_NOT_FOUND"}"#,
        ))
        .times(2)],
        Duration::from_secs(30),
    )
    .await;
    let report = result.expect("upload despite early not-found");
    assert_eq!(
        proxy
            .log()
            .iter()
            .filter(|l| l.outcome == Outcome::Injected(404))
            .count(),
        2
    );
    let blocks = read_back(&direct, &report.snapshot_id).await;
    assert_eq!(
        compare(&image, &blocks, &allocated),
        report.aggregate_checksum
    );

    // (e) A block that always fails: the upload fails within its retry
    // budget, names the cause, and the snapshot is deleted.
    let (proxy, result, elapsed) = faulted_upload(
        &moto,
        &path,
        &ranges,
        vec![Rule::new("/blocks/11", Fault::internal_error())
            .method("PUT")
            .always()],
        Duration::from_secs(30),
    )
    .await;
    let err = result.expect_err("a block that always fails must fail the upload");
    let message = err.to_string();
    eprintln!("(e) failed after {elapsed:?}: {message}");
    let PublishError::Snapshot {
        snapshot_id,
        cleanup,
        cause,
    } = err
    else {
        panic!("not a snapshot failure: {message}");
    };
    assert_eq!(cleanup, Cleanup::Deleted, "{message}");
    assert!(
        matches!(*cause, PublishError::Api { operation: "PutSnapshotBlock", ref code, .. }
            if code.as_deref() == Some("InternalServerException")),
        "{message}"
    );
    assert!(
        message.contains("block 11") && message.contains(&snapshot_id),
        "{message}"
    );
    // Exactly the retry budget was spent on the failing block.
    let attempts = attempts_per_block(&proxy);
    assert_eq!(
        attempts[&11],
        vec![Outcome::Injected(500); 4],
        "{attempts:?}"
    );
    assert!(
        !ec2_has_snapshot(&direct, &snapshot_id).await,
        "{snapshot_id} was not deleted"
    );
    let deletes = proxy
        .log()
        .into_iter()
        .filter(|l| l.action.as_deref() == Some("DeleteSnapshot"));
    assert_eq!(deletes.count(), 1);
}
