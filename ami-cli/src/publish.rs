//! `ami upload-bundle`, `ami register`, `ami deregister`, `ami snapshot`
//! and `ami publish`: putting images into AWS (or an S3/EC2-compatible
//! endpoint) through `ami_bundle::aws`.
//!
//! stdout carries only the result (a manifest location, an AMI id, a
//! snapshot id) or, with `--json`, one JSON object; progress and summaries
//! go to stderr.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ami_bundle::aws::ec2::{
    self, Architecture, BootMode, ImageFacts, Register, Source, Virtualization,
};
use ami_bundle::aws::s3::{self, BundleLocation, UploadOptions};
use ami_bundle::aws::{Aws, AwsOptions};
use ami_ext4::disk::probe::{probe, Probe, ProbedLayout};
use ami_ext4::disk::Window;
use ami_ext4::Ext4Reader;
use anyhow::{bail, Context, Result};

use crate::json::JsonObject;
use crate::progress::Bars;

/// Where and how to reach AWS (shared by the publishing commands).
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// AWS region (default: AWS_REGION, the profile's region, or the
    /// instance's region from IMDS).
    #[arg(long, value_name = "REGION")]
    region: Option<String>,

    /// Send requests to this endpoint instead of AWS's (an
    /// S3/EC2-compatible server, a VPC endpoint).
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,

    /// Profile of the shared AWS config files (default: AWS_PROFILE).
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,

    /// Attempts per request, the first included (retries use exponential
    /// backoff with jitter).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,

    /// Seconds one attempt of a request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_timeout: u64,
}

impl AwsArgs {
    /// The SDK options these arguments ask for.
    pub fn options(&self) -> AwsOptions {
        AwsOptions::new()
            .region_opt(self.region.clone())
            .endpoint_url_opt(self.endpoint_url.clone())
            .profile(self.profile.clone())
            .max_attempts(self.max_attempts)
            .attempt_timeout(Duration::from_secs(self.request_timeout))
    }
}

/// A Tokio runtime for the AWS calls.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints one line on stdout.
pub fn print_stdout(line: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// Arguments of `ami upload-bundle`.
#[derive(Debug, clap::Args)]
pub struct UploadBundleArgs {
    /// Bucket and optional key prefix: BUCKET or BUCKET/PREFIX.
    #[arg(long, value_name = "BUCKET[/PREFIX]")]
    bucket: String,

    /// The bundle's manifest; the parts it lists are read from its
    /// directory.
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,

    /// Parts uploaded at once.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: u32,

    /// Fail if the bucket does not exist (default: create it, as
    /// ec2-upload-bundle does).
    #[arg(long)]
    no_create_bucket: bool,

    #[command(flatten)]
    aws: AwsArgs,

    /// Print a JSON report on stdout instead of the manifest location.
    #[arg(long)]
    json: bool,
}

/// Runs `ami upload-bundle`.
pub fn run_upload(args: &UploadBundleArgs) -> Result<()> {
    let dest: BundleLocation = args.bucket.parse()?;
    let rt = runtime()?;
    let bars = Bars::stderr(false);
    let report = rt.block_on(async {
        let aws = Aws::connect(&args.aws.options()).await?;
        let options = UploadOptions::new()
            .concurrency(args.concurrency as usize)
            .create_bucket(!args.no_create_bucket);
        s3::upload_bundle(&aws, &args.manifest, &dest, &options, &bars).await
    });
    drop(bars);
    let report = report.with_context(|| {
        format!(
            "uploading the bundle {} to {}",
            args.manifest.display(),
            args.bucket
        )
    })?;
    eprintln!(
        "uploaded {} parts and the manifest ({} bytes){}; register it with:\n  ami register --name NAME --manifest-location {}",
        report.part_keys.len(),
        report.bytes,
        if report.bucket_created {
            format!(", bucket {} created", dest.bucket)
        } else {
            String::new()
        },
        report.manifest_location
    );
    if args.json {
        let mut o = JsonObject::new();
        o.string("manifest_location", &report.manifest_location);
        o.string("bucket", &dest.bucket);
        o.string("manifest_key", &report.manifest_key);
        o.strings("part_keys", &report.part_keys);
        o.number("bytes", report.bytes);
        o.bool("bucket_created", report.bucket_created);
        print_stdout(&o.finish())
    } else {
        print_stdout(&report.manifest_location)
    }
}

/// What `ami register` and `ami publish` register.
#[derive(Debug, Clone, clap::Args)]
pub struct RegisterOpts {
    /// The AMI name (3-128 characters).
    #[arg(long, value_name = "NAME")]
    name: String,

    /// A description.
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,

    /// CPU architecture (always sent: the API's default is i386).
    #[arg(long, value_name = "ARCH", default_value = "x86_64")]
    arch: String,

    /// hvm or paravirtual (default: paravirtual with --kernel-id, else
    /// hvm).
    #[arg(long, value_name = "TYPE")]
    virtualization_type: Option<String>,

    /// The PV-GRUB kernel (AKI) of a paravirtual AMI.
    #[arg(long, value_name = "AKI")]
    kernel_id: Option<String>,

    /// A ramdisk (ARI) for a paravirtual AMI.
    #[arg(long, value_name = "ARI")]
    ramdisk_id: Option<String>,

    /// Root device name (default /dev/xvda for HVM, /dev/sda1 for
    /// paravirtual).
    #[arg(long, value_name = "DEVICE")]
    root_device_name: Option<String>,

    /// Root volume size in GiB (EBS; default: the snapshot's size).
    #[arg(long, value_name = "GIB",
          value_parser = clap::value_parser!(i32).range(1..=65536))]
    root_volume_size: Option<i32>,

    /// Root volume type (EBS).
    #[arg(long, value_name = "TYPE", default_value = "gp3")]
    volume_type: String,

    /// Keep the root volume when the instance is terminated (EBS).
    #[arg(long)]
    no_delete_on_termination: bool,

    /// Map an instance-store volume: DEVICE=ephemeralN (repeatable), e.g.
    /// /dev/sdb=ephemeral0.
    #[arg(long = "ephemeral", value_name = "DEVICE=ephemeralN")]
    ephemeral: Vec<String>,

    /// Do not set ena-support (HVM sets it by default).
    #[arg(long)]
    no_ena_support: bool,

    /// Do not set sriov-net-support simple (HVM sets it by default).
    #[arg(long)]
    no_sriov_net_support: bool,

    /// imds-support: v2.0 (instances require IMDSv2) or none.
    #[arg(long, value_name = "VALUE", default_value = "v2.0",
          value_parser = ["v2.0", "none"])]
    imds_support: String,

    /// uefi, legacy-bios or uefi-preferred (default: derived from the
    /// image's layout).
    #[arg(long, value_name = "MODE")]
    boot_mode: Option<String>,

    /// tpm-support v2.0 (NitroTPM; needs UEFI).
    #[arg(long)]
    tpm_support: bool,
}

impl RegisterOpts {
    fn request(&self, source: Source) -> Result<Register> {
        let arch: Architecture = self.arch.parse()?;
        let mut r = Register::new(&self.name, arch, source);
        r.description = self.description.clone();
        r.virtualization = match &self.virtualization_type {
            Some(v) => v.parse()?,
            None if self.kernel_id.is_some() => Virtualization::Paravirtual,
            None => Virtualization::Hvm,
        };
        r.kernel_id = self.kernel_id.clone();
        r.ramdisk_id = self.ramdisk_id.clone();
        r.root_device_name = self.root_device_name.clone();
        r.ena_support = !self.no_ena_support;
        r.sriov_simple = !self.no_sriov_net_support;
        r.imds_v2 = self.imds_support == "v2.0";
        r.boot_mode = self
            .boot_mode
            .as_deref()
            .map(str::parse::<BootMode>)
            .transpose()?;
        r.tpm = self.tpm_support;
        for m in &self.ephemeral {
            let (device, virtual_name) = m
                .split_once('=')
                .with_context(|| format!("--ephemeral {m:?}: expected DEVICE=ephemeralN"))?;
            r.ephemeral
                .push((device.to_owned(), virtual_name.to_owned()));
        }
        Ok(r)
    }

    fn ebs_source(&self, snapshot_id: &str) -> Source {
        Source::Ebs {
            snapshot_id: snapshot_id.to_owned(),
            volume_size: self.root_volume_size,
            volume_type: self.volume_type.clone(),
            delete_on_termination: !self.no_delete_on_termination,
        }
    }
}

/// Arguments of `ami register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    opts: RegisterOpts,

    /// An instance-store bundle in S3: BUCKET/PREFIX/NAME.manifest.xml.
    #[arg(
        long,
        value_name = "LOCATION",
        conflicts_with = "snapshot_id",
        required_unless_present = "snapshot_id"
    )]
    manifest_location: Option<String>,

    /// An EBS snapshot of the root volume (from `ami snapshot`).
    #[arg(long, value_name = "SNAPSHOT")]
    snapshot_id: Option<String>,

    /// The disk image the AMI was made of: the request is checked against
    /// it (boot loaders, ESP, ena driver) and the boot mode derived from
    /// its layout.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,

    #[command(flatten)]
    aws: AwsArgs,

    /// Print a JSON report on stdout instead of the AMI id.
    #[arg(long)]
    json: bool,
}

/// Runs `ami register`.
pub fn run_register(args: &RegisterArgs) -> Result<()> {
    let source = match (&args.manifest_location, &args.snapshot_id) {
        (Some(location), None) => {
            s3::split_manifest_location(location)?;
            Source::InstanceStore {
                manifest_location: location.clone(),
            }
        }
        (None, Some(snapshot)) => args.opts.ebs_source(snapshot),
        _ => bail!("give exactly one of --manifest-location and --snapshot-id"),
    };
    let mut request = args.opts.request(source)?;
    let facts = match &args.image {
        Some(path) => Some(image_facts(path)?.0),
        None => {
            eprintln!("note: no --image given: the request is not checked against the image");
            None
        }
    };
    request.check(facts.as_ref())?;
    let rt = runtime()?;
    let id = rt
        .block_on(async {
            let aws = Aws::connect(&args.aws.options()).await?;
            ec2::register(&aws, &request).await
        })
        .with_context(|| format!("registering {}", request.name))?;
    eprintln!("registered {id} ({})", request.name);
    if args.json {
        print_stdout(&register_json(&id, &request, None).finish())
    } else {
        print_stdout(&id)
    }
}

fn register_json(id: &str, r: &Register, snapshot: Option<&str>) -> JsonObject {
    let mut o = JsonObject::new();
    o.string("image_id", id);
    o.string("name", &r.name);
    o.string("architecture", r.architecture.as_str());
    o.string(
        "virtualization_type",
        match r.virtualization {
            Virtualization::Hvm => "hvm",
            Virtualization::Paravirtual => "paravirtual",
        },
    );
    o.string("root_device_name", r.root_device());
    match &r.source {
        Source::InstanceStore { manifest_location } => {
            o.string("manifest_location", manifest_location)
        }
        Source::Ebs {
            snapshot_id,
            volume_type,
            ..
        } => {
            o.string("snapshot_id", snapshot.unwrap_or(snapshot_id));
            o.string("volume_type", volume_type);
        }
    }
    o.opt_string("kernel_id", r.kernel_id.as_deref());
    o.opt_string("boot_mode", r.boot_mode.map(BootMode::as_str));
    o.bool("ena_support", r.ena_support);
    o.bool("sriov_net_support", r.sriov_simple);
    o.opt_string("imds_support", r.imds_v2.then_some("v2.0"));
    o.bool("tpm_support", r.tpm);
    o
}

/// Arguments of `ami deregister`.
#[derive(Debug, clap::Args)]
pub struct DeregisterArgs {
    /// The AMI id.
    #[arg(value_name = "AMI")]
    image_id: String,

    /// Also delete the instance-store bundle (parts and manifest) from S3.
    #[arg(long)]
    delete_bundle: bool,

    /// The bundle's manifest location, when EC2 does not report it.
    #[arg(long, value_name = "LOCATION", requires = "delete_bundle")]
    manifest_location: Option<String>,

    /// Also delete the EBS snapshots of the AMI's block device mappings.
    #[arg(long)]
    delete_snapshots: bool,

    #[command(flatten)]
    aws: AwsArgs,

    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `ami deregister`.
pub fn run_deregister(args: &DeregisterArgs) -> Result<()> {
    let rt = runtime()?;
    let report = rt
        .block_on(async {
            let aws = Aws::connect(&args.aws.options()).await?;
            ec2::deregister(
                &aws,
                &args.image_id,
                args.delete_bundle,
                args.manifest_location.as_deref(),
                args.delete_snapshots,
            )
            .await
        })
        .with_context(|| format!("deregistering {}", args.image_id))?;
    eprintln!(
        "deregistered {}; deleted {} bundle objects and {} snapshots",
        report.image_id,
        report.deleted_objects.len(),
        report.deleted_snapshots.len()
    );
    if args.json {
        let mut o = JsonObject::new();
        o.string("image_id", &report.image_id);
        o.strings("deleted_objects", &report.deleted_objects);
        o.strings("deleted_snapshots", &report.deleted_snapshots);
        print_stdout(&o.finish())?;
    }
    Ok(())
}

/// Reads what registering needs to know from a disk image: its layout and,
/// from the root filesystem, the PV-GRUB menu and the ena/NVMe drivers.
pub fn image_facts(path: &Path) -> Result<(ImageFacts, Probe)> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let found = probe(&mut file).with_context(|| format!("reading {}", path.display()))?;
    if found.kind == ProbedLayout::Unknown {
        bail!(
            "{}: neither an ext4 filesystem nor a partitioned disk with one",
            path.display()
        );
    }
    let mut facts = ImageFacts {
        has_esp: found.esp.is_some(),
        has_bios_loader: found.bios_boot_code,
        ..ImageFacts::default()
    };
    if let Some(root) = found.root.clone() {
        let mut fs = Ext4Reader::new(Window::new(&mut file, root))
            .with_context(|| format!("reading the root filesystem of {}", path.display()))?;
        facts.has_menu_lst = fs.lookup(b"/boot/grub/menu.lst").is_ok();
        let (ena, nvme) = drivers(&mut fs);
        facts.has_ena = ena;
        facts.has_nvme = nvme;
    }
    Ok((facts, found))
}

/// Whether the kernels in the image have the ena and nvme drivers
/// (modules.dep or modules.builtin of every /lib/modules/VERSION); `None`
/// when there are no kernel modules to look at.
fn drivers<R: std::io::Read + std::io::Seek>(
    fs: &mut Ext4Reader<R>,
) -> (Option<bool>, Option<bool>) {
    let mut seen_any = false;
    let (mut ena, mut nvme) = (false, false);
    for base in [&b"/usr/lib/modules"[..], b"/lib/modules"] {
        let Ok(dir) = fs.lookup(base) else { continue };
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        for (name, _, _) in entries {
            if name == b"." || name == b".." {
                continue;
            }
            for index in ["modules.dep", "modules.builtin"] {
                let mut path = base.to_vec();
                path.push(b'/');
                path.extend_from_slice(&name);
                path.push(b'/');
                path.extend_from_slice(index.as_bytes());
                let Ok(text) = fs.read_path(&path) else {
                    continue;
                };
                seen_any = true;
                for line in text.split(|&b| b == b'\n') {
                    let module = line.split(|&b| b == b':').next().unwrap_or_default();
                    let file = module.rsplit(|&b| b == b'/').next().unwrap_or_default();
                    let stem = file.split(|&b| b == b'.').next().unwrap_or_default();
                    ena |= stem == b"ena";
                    nvme |= stem == b"nvme";
                }
            }
        }
        if seen_any {
            break;
        }
    }
    if seen_any {
        (Some(ena), Some(nvme))
    } else {
        (None, None)
    }
}

/// How `ami snapshot` and `ami publish` make the snapshot.
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotOpts {
    /// Volume size in GiB (default: the image size rounded up to whole
    /// GiB).
    #[arg(long, value_name = "GIB",
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    volume_size: Option<u64>,

    /// The snapshot's description.
    #[arg(long = "snapshot-description", value_name = "TEXT")]
    snapshot_description: Option<String>,

    /// A tag on the snapshot: KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,

    /// Encrypt the snapshot with this KMS key (its ARN).
    #[arg(long, value_name = "KEY")]
    kms_key_id: Option<String>,

    /// Encrypt the snapshot (with the account's default EBS key unless
    /// --kms-key-id is given).
    #[arg(long)]
    encrypted: bool,

    /// Blocks uploaded at once.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,

    /// The block map: the build.json `ami build` wrote beside the image
    /// (default: DIR/build.json when it describes this image) or the
    /// output of `ami mkfs --json`. Without one, the whole image is read
    /// and all-zero blocks are skipped.
    #[arg(long, value_name = "FILE")]
    block_map: Option<PathBuf>,

    /// Keep the snapshot if the upload fails (default: delete it).
    #[arg(long)]
    keep_on_failure: bool,
}

impl SnapshotOpts {
    fn options(&self) -> Result<ami_bundle::aws::ebs::SnapshotOptions> {
        let mut o = ami_bundle::aws::ebs::SnapshotOptions::new()
            .volume_size_gib(self.volume_size)
            .concurrency(self.concurrency as usize)
            .encrypted(self.encrypted || self.kms_key_id.is_some())
            .keep_on_failure(self.keep_on_failure);
        if let Some(d) = &self.snapshot_description {
            o = o.description(d);
        }
        if let Some(k) = &self.kms_key_id {
            o = o.kms_key_arn(k);
        }
        for t in &self.tags {
            let (k, v) = t
                .split_once('=')
                .with_context(|| format!("--tag {t:?}: expected KEY=VALUE"))?;
            if k.is_empty() {
                bail!("--tag {t:?}: the key is empty");
            }
            o = o.tag(k, v);
        }
        Ok(o)
    }
}

/// Arguments of `ami snapshot`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The disk image.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,

    #[command(flatten)]
    snapshot: SnapshotOpts,

    /// The snapshot's description (same as --snapshot-description).
    #[arg(long, value_name = "TEXT", conflicts_with = "snapshot_description")]
    description: Option<String>,

    /// Return once the blocks are written and the snapshot is completed on
    /// the client side (status pending), without waiting for `completed`.
    #[arg(long)]
    no_wait: bool,

    #[command(flatten)]
    aws: AwsArgs,

    /// Print a JSON report on stdout instead of the snapshot id.
    #[arg(long)]
    json: bool,
}

/// Chooses the blocks to send: the allocated ranges from `ami build`'s
/// build.json when it belongs to this image, else all non-zero blocks.
fn block_selection(
    image: &Path,
    block_map: Option<&Path>,
) -> Result<(ami_bundle::aws::ebs::BlockSelection, String)> {
    use ami_bundle::aws::ebs::BlockSelection;
    let size = std::fs::metadata(image)
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    let default_map = image
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .map(|d| d.join("build.json"));
    let (path, explicit) = match block_map {
        Some(p) => (p.to_path_buf(), true),
        None => match default_map {
            Some(p) if p.is_file() => (p, false),
            _ => {
                return Ok((
                    BlockSelection::NonZero,
                    "no block map (build.json) beside the image: reading all of it and skipping all-zero blocks"
                        .to_owned(),
                ))
            }
        },
    };
    let text = std::fs::read(&path)
        .with_context(|| format!("reading the block map {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let name = image.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let described = json["image"]
        .as_str()
        .and_then(|p| Path::new(p).file_name())
        .and_then(|n| n.to_str());
    let mismatch = if described != Some(name) {
        Some(format!(
            "it describes {:?}, not {name:?}",
            json["image"].as_str().unwrap_or("?")
        ))
    } else if json["image_bytes"].as_u64() != Some(size) {
        Some(format!(
            "it describes a {}-byte image, this one has {size} bytes",
            json["image_bytes"]
        ))
    } else {
        None
    };
    if let Some(why) = mismatch {
        if explicit {
            bail!(
                "the block map {} does not belong to {}: {why}",
                path.display(),
                image.display()
            );
        }
        return Ok((
            BlockSelection::NonZero,
            format!(
                "{} does not belong to the image ({why}): reading all of it and skipping all-zero blocks",
                path.display()
            ),
        ));
    }
    let ranges: Option<Vec<std::ops::Range<u64>>> = json["allocated"].as_array().map(|a| {
        a.iter()
            .filter_map(|r| Some(r[0].as_u64()?..r[1].as_u64()?))
            .collect()
    });
    let Some(ranges) = ranges else {
        bail!(
            "{}: no \"allocated\" ranges (made by an older ami build?)",
            path.display()
        );
    };
    // The image must not hold data outside the map (it was changed after
    // the build): the file's own data extents say so cheaply.
    if let Some(outside) = data_outside(image, &ranges)? {
        let why = format!("the image has data at byte {outside}, outside the allocated blocks: it changed after the build");
        if explicit {
            bail!("{}: {why}", image.display());
        }
        return Ok((
            BlockSelection::NonZero,
            format!("{why}; reading all of it and skipping all-zero blocks"),
        ));
    }
    let blocks: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    Ok((
        BlockSelection::Allocated(ranges),
        format!(
            "block map {}: {} allocated of {} bytes",
            path.display(),
            blocks,
            size
        ),
    ))
}

/// The first byte of file data (per SEEK_DATA) outside `ranges`, if any.
/// SEEK_DATA works in whole blocks of the host filesystem, so the ranges are
/// widened to 4 KiB boundaries first (a partition table of 34 sectors shares
/// its last host block with zeros). Filesystems without SEEK_DATA report
/// everything as data: such files fall back to the full read.
fn data_outside(image: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Option<u64>> {
    use rustix::fs::{seek, SeekFrom};
    const HOST_BLOCK: u64 = 4096;
    let file = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let len = file.metadata()?.len();
    let mut sorted: Vec<std::ops::Range<u64>> = ranges
        .iter()
        .map(|r| r.start / HOST_BLOCK * HOST_BLOCK..r.end.div_ceil(HOST_BLOCK) * HOST_BLOCK)
        .collect();
    sorted.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let sorted = merged;
    let inside = |pos: u64| -> Option<u64> {
        // The end of the range holding `pos`, if any.
        let i = sorted.partition_point(|r| r.start <= pos);
        (i > 0 && sorted[i - 1].end > pos).then(|| sorted[i - 1].end)
    };
    let mut pos = 0u64;
    while pos < len {
        let data = match seek(&file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => return Ok(None),
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        let hole = match seek(&file, SeekFrom::Hole(data)) {
            Ok(h) => h,
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        // Every byte of data..hole must lie in the map (data extents are
        // page-granular, the map is block-granular: both 4 KiB here).
        let mut p = data;
        while p < hole {
            match inside(p) {
                Some(end) => p = end,
                None => return Ok(Some(p)),
            }
        }
        pos = hole;
    }
    Ok(None)
}

/// Runs `ami snapshot`.
pub fn run_snapshot(args: &SnapshotArgs) -> Result<()> {
    let (selection, how) = block_selection(&args.image, args.snapshot.block_map.as_deref())?;
    eprintln!("{how}");
    let mut options = args.snapshot.options()?.wait(!args.no_wait);
    if let Some(d) = &args.description {
        options = options.description(d);
    }
    let rt = runtime()?;
    let bars = Bars::stderr(false);
    let report = rt.block_on(async {
        let aws = Aws::connect(&args.aws.options()).await?;
        ami_bundle::aws::ebs::create_snapshot(&aws, &args.image, &selection, &options, &bars).await
    });
    drop(bars);
    let report =
        report.with_context(|| format!("making an EBS snapshot of {}", args.image.display()))?;
    eprintln!("{}", snapshot_summary(&report));
    if args.json {
        print_stdout(&snapshot_json(&report).finish())
    } else {
        print_stdout(&report.snapshot_id)
    }
}

fn snapshot_summary(r: &ami_bundle::aws::ebs::SnapshotReport) -> String {
    let secs = r.upload_time.as_secs_f64().max(1e-9);
    format!(
        "snapshot {} ({}, {} GiB): sent {} of the image's {} blocks of 512 KiB ({:.1}%), {:.1} MB/s{}",
        r.snapshot_id,
        r.status,
        r.volume_size_gib,
        r.blocks_sent,
        r.image_blocks,
        r.blocks_sent as f64 * 100.0 / r.image_blocks.max(1) as f64,
        r.bytes_sent as f64 / secs / 1e6,
        if r.zero_blocks_skipped > 0 {
            format!(", {} all-zero blocks skipped", r.zero_blocks_skipped)
        } else {
            String::new()
        }
    )
}

fn snapshot_json(r: &ami_bundle::aws::ebs::SnapshotReport) -> JsonObject {
    let mut o = JsonObject::new();
    o.string("snapshot_id", &r.snapshot_id);
    o.string("status", &r.status);
    o.number("volume_size_gib", r.volume_size_gib);
    o.number("blocks_sent", r.blocks_sent);
    o.number("image_blocks", r.image_blocks);
    o.number("blocks_in_volume", r.blocks_in_volume);
    o.number("zero_blocks_skipped", r.zero_blocks_skipped);
    o.number("bytes_sent", r.bytes_sent);
    o.string("checksum", &r.aggregate_checksum);
    o.float("upload_seconds", r.upload_time.as_secs_f64());
    o
}

/// Arguments of `ami publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The disk image.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,

    #[command(flatten)]
    snapshot: SnapshotOpts,

    #[command(flatten)]
    register: RegisterOpts,

    #[command(flatten)]
    aws: AwsArgs,

    /// Print a JSON report on stdout instead of the AMI id.
    #[arg(long)]
    json: bool,
}

/// Runs `ami publish`: checks the registration against the image, makes
/// the snapshot, registers it; deletes the snapshot if registering fails.
pub fn run_publish(args: &PublishArgs) -> Result<()> {
    let (facts, _) = image_facts(&args.image)?;
    // Check before uploading anything.
    let mut request = args
        .register
        .request(args.register.ebs_source("snap-pending"))?;
    request.check(Some(&facts))?;
    let (selection, how) = block_selection(&args.image, args.snapshot.block_map.as_deref())?;
    eprintln!("{how}");
    let options = args.snapshot.options()?.wait(true);
    let rt = runtime()?;
    let bars = Bars::stderr(false);
    let result = rt.block_on(async {
        let aws = Aws::connect(&args.aws.options()).await?;
        let snap =
            ami_bundle::aws::ebs::create_snapshot(&aws, &args.image, &selection, &options, &bars)
                .await?;
        request.source = args.register.ebs_source(&snap.snapshot_id);
        match ec2::register(&aws, &request).await {
            Ok(id) => Ok((snap, id)),
            Err(e) => {
                let cleanup = aws
                    .ec2()
                    .delete_snapshot()
                    .snapshot_id(&snap.snapshot_id)
                    .send()
                    .await;
                Err(match cleanup {
                    Ok(_) => ami_bundle::aws::PublishError::Snapshot {
                        snapshot_id: snap.snapshot_id.clone(),
                        cleanup: ami_bundle::aws::Cleanup::Deleted,
                        cause: Box::new(e),
                    },
                    Err(d) => ami_bundle::aws::PublishError::Snapshot {
                        snapshot_id: snap.snapshot_id.clone(),
                        cleanup: ami_bundle::aws::Cleanup::Failed(
                            ami_bundle::aws::PublishError::api("DeleteSnapshot", d).to_string(),
                        ),
                        cause: Box::new(e),
                    },
                })
            }
        }
    });
    drop(bars);
    let (snap, id) = result.with_context(|| format!("publishing {}", args.image.display()))?;
    eprintln!("{}", snapshot_summary(&snap));
    eprintln!("registered {id} ({})", request.name);
    if args.json {
        let mut o = register_json(&id, &request, Some(&snap.snapshot_id));
        o.number("blocks_sent", snap.blocks_sent);
        o.number("image_blocks", snap.image_blocks);
        o.number("volume_size_gib", snap.volume_size_gib);
        print_stdout(&o.finish())
    } else {
        print_stdout(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_outside_the_map_is_found_at_host_block_granularity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let f = File::create(&path).unwrap();
        f.set_len(1 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        // A 34-sector table at the start and a block of data at 512 KiB.
        f.write_all_at(&[1u8; 512], 0).unwrap();
        f.write_all_at(&[2u8; 4096], 512 << 10).unwrap();
        f.sync_all().unwrap();
        // The table's range ends mid host block: still inside.
        let map = [0..17408u64, (512 << 10)..(512 << 10) + 4096];
        assert_eq!(data_outside(&path, &map).unwrap(), None);
        // Without the second range, its data is outside the map.
        assert_eq!(data_outside(&path, &map[..1]).unwrap(), Some(512 << 10));
    }
}
