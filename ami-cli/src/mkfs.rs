//! `ami mkfs`: writes an ext4 image of a host directory.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ami_core::scan::{scan_dir, ScanOptions};
use ami_core::Timestamp;
use ami_ext4::{FormatOptions, Inodes, Profile, Report, Size};
use anyhow::{bail, Context, Result};
use indicatif::{HumanBytes, HumanCount};

use crate::json::JsonObject;
use crate::progress::Bars;
use crate::size::parse_size;
use crate::uuid::{derived_uuid, format_uuid, parse_uuid, random_uuid};

/// The longest volume label ext4 stores, in bytes.
const MAX_LABEL: usize = 16;

/// Buffer between the writer and the image file. Large writes bypass it;
/// it gathers the many small metadata writes into fewer system calls.
const WRITE_BUFFER: usize = 1 << 20;

/// The feature set of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    /// Debian 12 `mke2fs -t ext4` defaults (64bit, metadata_csum, ...), for
    /// HVM and UEFI root filesystems.
    Default,
    /// Without `64bit` and with `uninit_bg` instead of `metadata_csum`, for
    /// Xen PV-GRUB.
    Pvgrub,
}

impl ProfileArg {
    fn profile(self) -> Profile {
        match self {
            ProfileArg::Default => Profile::Default,
            ProfileArg::Pvgrub => Profile::PvGrub,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ProfileArg::Default => "default",
            ProfileArg::Pvgrub => "pvgrub",
        }
    }
}

/// Arguments of `ami mkfs`.
#[derive(Debug, clap::Args)]
pub struct MkfsArgs {
    /// Filesystem size: bytes, or with a binary unit (512K, 64M, 2G, 1T,
    /// 64MiB, ...). Without it the size fits the content plus --headroom.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,

    /// Free space to add when fitting the size to the content, in percent
    /// of the space the content uses.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value_t = 20,
        conflicts_with = "size",
        value_parser = clap::value_parser!(u32).range(0..=1000)
    )]
    headroom: u32,

    /// Volume label (at most 16 bytes).
    #[arg(long, value_name = "LABEL")]
    label: Option<OsString>,

    /// Filesystem UUID (8-4-4-4-12 hex). Default: random, or derived from
    /// the source date epoch and the label when one is given.
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    uuid: Option<[u8; 16]>,

    /// Feature set: `default` (mke2fs ext4 defaults) or `pvgrub` (no 64bit,
    /// uninit_bg instead of metadata_csum).
    #[arg(long, value_enum, default_value_t = ProfileArg::Default)]
    profile: ProfileArg,

    /// Make every file owned by root (uid 0, gid 0) instead of keeping the
    /// owners of the source files.
    #[arg(long)]
    root_owner: bool,

    /// Reproducible build: use this time (seconds since 1970) for the
    /// filesystem, clamp all file times to it and derive the UUID from it.
    /// Default: the SOURCE_DATE_EPOCH environment variable, if set.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    source_date_epoch: Option<i64>,

    /// Block size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = parse_block_size)]
    block_size: u32,

    /// Total number of inodes (at least). Default: fitted to the content
    /// when the size is, otherwise one inode per 16 KiB.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    inodes: Option<u64>,

    /// Do not descend into directories on other filesystems than SOURCE_DIR.
    #[arg(long, short = 'x')]
    one_file_system: bool,

    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,

    /// Directory whose contents become the root of the filesystem.
    #[arg(value_name = "SOURCE_DIR")]
    source: PathBuf,

    /// Image file to write (replaced atomically when complete).
    #[arg(value_name = "OUTPUT_IMAGE")]
    output: PathBuf,
}

fn parse_block_size(text: &str) -> Result<u32, String> {
    match text {
        "1024" => Ok(1024),
        "2048" => Ok(2048),
        "4096" => Ok(4096),
        _ => Err(format!(
            "{text:?}: the block size must be 1024, 2048 or 4096"
        )),
    }
}

/// The source date epoch: the flag, else a non-empty `SOURCE_DATE_EPOCH`.
fn source_date_epoch(flag: Option<i64>) -> Result<Option<i64>> {
    if flag.is_some() {
        return Ok(flag);
    }
    match std::env::var_os("SOURCE_DATE_EPOCH") {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => {
            let text = value.to_string_lossy();
            let secs = text.trim().parse::<i64>().with_context(|| {
                format!("SOURCE_DATE_EPOCH={text:?} is not a whole number of seconds")
            })?;
            Ok(Some(secs))
        }
    }
}

fn now() -> Timestamp {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        // A clock before 1970: nothing sensible to record.
        Err(_) => Timestamp::default(),
    }
}

/// Checks SOURCE_DIR and OUTPUT_IMAGE before any work is done. Returns the
/// directory to scan (a symlink given as SOURCE_DIR is resolved) and the
/// directory the temporary image goes into.
fn check_paths(source: &Path, output: &Path) -> Result<(PathBuf, PathBuf)> {
    let meta = fs::metadata(source).with_context(|| format!("SOURCE_DIR {}", source.display()))?;
    if !meta.is_dir() {
        bail!("SOURCE_DIR {} is not a directory", source.display());
    }
    let source = if fs::symlink_metadata(source)?.file_type().is_symlink() {
        fs::canonicalize(source).with_context(|| format!("SOURCE_DIR {}", source.display()))?
    } else {
        source.to_path_buf()
    };
    match fs::symlink_metadata(output) {
        Ok(meta) if meta.is_file() => {}
        Ok(meta) if meta.is_dir() => {
            bail!("OUTPUT_IMAGE {} is a directory", output.display())
        }
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "OUTPUT_IMAGE {} is a symbolic link; give the path of the image itself",
            output.display()
        ),
        Ok(_) => bail!(
            "OUTPUT_IMAGE {} is not a regular file (writing to devices is not supported)",
            output.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("OUTPUT_IMAGE {}", output.display()));
        }
    }
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if output.file_name().is_none() {
        bail!("OUTPUT_IMAGE {} does not name a file", output.display());
    }
    Ok((source, dir))
}

/// Runs `ami mkfs`.
pub fn run(args: &MkfsArgs) -> Result<()> {
    let started = Instant::now();
    let label = args
        .label
        .as_ref()
        .map(|l| l.as_bytes().to_vec())
        .unwrap_or_default();
    if label.len() > MAX_LABEL {
        bail!(
            "label {:?} is {} bytes long, ext4 allows at most {MAX_LABEL}",
            String::from_utf8_lossy(&label),
            label.len()
        );
    }
    let epoch = source_date_epoch(args.source_date_epoch)?;
    let (source, out_dir) = check_paths(&args.source, &args.output)?;

    let bars = Bars::stderr(false);
    let scan_options = ScanOptions::new()
        .root_owner(args.root_owner)
        .one_file_system(args.one_file_system);
    let mut tree = scan_dir(&source, &scan_options, &bars)
        .with_context(|| format!("scanning {}", args.source.display()))?;

    let timestamp = match epoch {
        Some(secs) => {
            let limit = Timestamp::from_secs(secs);
            tree.clamp_times(limit);
            limit
        }
        None => now(),
    };
    let uuid = match (args.uuid, epoch) {
        (Some(uuid), _) => uuid,
        (None, Some(secs)) => derived_uuid(secs, &label),
        (None, None) => random_uuid().context("reading random bytes for the UUID")?,
    };
    let size = match args.size {
        Some(bytes) => Size::Bytes(bytes),
        None => Size::Fit {
            headroom_percent: args.headroom,
        },
    };
    let mut options = FormatOptions::new()
        .profile(args.profile.profile())
        .block_size(args.block_size)
        .size(size)
        .label(&label)
        .uuid(uuid)
        .timestamp(timestamp)
        .assume_zeroed(true);
    if let Some(count) = args.inodes {
        options = options.inodes(Inodes::Count(count));
    }

    // The image is written to a temporary file next to the output and
    // renamed over it only when complete; on any error the temporary file
    // is removed when `tmp` drops and OUTPUT_IMAGE stays as it was.
    let mut tmp = tempfile::Builder::new()
        .prefix(".ami-mkfs-")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(&out_dir)
        .with_context(|| format!("creating a temporary file in {}", out_dir.display()))?;
    if let Some(bytes) = args.size {
        tmp.as_file()
            .set_len(bytes)
            .with_context(|| format!("creating a {bytes}-byte image in {}", out_dir.display()))?;
    }
    let report = write_filesystem(tmp.as_file_mut(), &tree, &options, &bars, args)?;
    drop(tree);
    // The writer need not touch the last block; the file must still cover
    // the whole filesystem. With --size the file keeps the requested length
    // even when the filesystem is rounded down to whole blocks (as mke2fs).
    let image_len = args.size.unwrap_or(0).max(report.size_bytes());
    let file = tmp.as_file();
    file.set_len(image_len)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("finishing the image in {}", out_dir.display()))?;
    tmp.persist(&args.output)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the finished image to {}", args.output.display()))?;
    // Make the rename durable too.
    File::open(&out_dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing directory {}", out_dir.display()))?;
    drop(bars);

    let summary = Summary {
        output: &args.output,
        report: &report,
        image_len,
        label: &label,
        profile: args.profile,
        seconds: started.elapsed().as_secs_f64(),
    };
    eprint!("{}", summary.human());
    if args.json {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{}", summary.json())
            .and_then(|()| stdout.flush())
            .context("writing the report to stdout")?;
    }
    Ok(())
}

fn write_filesystem(
    file: &mut File,
    tree: &ami_core::Tree,
    options: &FormatOptions,
    bars: &Bars,
    args: &MkfsArgs,
) -> Result<Report> {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
    let result = ami_ext4::format(&mut writer, tree, options, bars);
    let report = match result {
        Ok(report) => report,
        Err(ami_ext4::Error::TooSmall { requested, needed }) => bail!(
            "image too small: --size {requested} bytes ({}) was given, at least {needed} \
             bytes ({}) are needed; raise --size or leave it out to fit the content",
            HumanBytes(requested),
            HumanBytes(needed),
        ),
        Err(ami_ext4::Error::Source { path, source }) => {
            // The library names the entry by its path in the image; name
            // the host file too.
            let host = args.source.join(path.trim_start_matches('/'));
            return Err(anyhow::Error::new(source)
                .context(format!(
                    "cannot read {} (/{} in the image)",
                    host.display(),
                    path.trim_start_matches('/')
                ))
                .context(format!("writing the image {}", args.output.display())));
        }
        Err(err) => {
            return Err(err).with_context(|| {
                format!(
                    "writing the ext4 filesystem of {} to {}",
                    args.source.display(),
                    args.output.display()
                )
            })
        }
    };
    writer
        .flush()
        .with_context(|| format!("writing the image {}", args.output.display()))?;
    Ok(report)
}

/// What `ami mkfs` tells the user.
struct Summary<'a> {
    output: &'a Path,
    report: &'a Report,
    image_len: u64,
    label: &'a [u8],
    profile: ProfileArg,
    seconds: f64,
}

impl Summary<'_> {
    fn human(&self) -> String {
        let r = self.report;
        let used_percent = if r.blocks_count == 0 {
            0.0
        } else {
            r.used_blocks as f64 * 100.0 / r.blocks_count as f64
        };
        let label = if self.label.is_empty() {
            "no label".to_owned()
        } else {
            format!("label {:?}", String::from_utf8_lossy(self.label))
        };
        format!(
            "wrote {} in {:.2} s: ext4 ({} profile), {} in {} blocks of {} bytes, {:.1}% used; \
             {} of {} inodes used; UUID {}, {label}\n",
            self.output.display(),
            self.seconds,
            self.profile.name(),
            HumanBytes(r.size_bytes()),
            HumanCount(r.blocks_count),
            r.block_size,
            used_percent,
            HumanCount(r.used_inodes),
            HumanCount(r.inodes_count),
            format_uuid(&r.uuid),
        )
    }

    fn json(&self) -> String {
        let r = self.report;
        let mut o = JsonObject::new();
        o.string("image", &self.output.to_string_lossy());
        o.number("image_bytes", self.image_len);
        o.number("size_bytes", r.size_bytes());
        o.number("block_size", u64::from(r.block_size));
        o.number("blocks", r.blocks_count);
        o.number("used_blocks", r.used_blocks);
        o.number("inodes", r.inodes_count);
        o.number("used_inodes", r.used_inodes);
        o.string("uuid", &format_uuid(&r.uuid));
        o.string("label", &String::from_utf8_lossy(self.label));
        o.string("profile", self.profile.name());
        o.float("seconds", self.seconds);
        // The allocated byte ranges: `ami snapshot --block-map` sends
        // exactly these blocks.
        o.ranges(
            "allocated",
            &ami_ext4::disk::disk_byte_ranges(&r.allocated, 0),
        );
        o.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes() {
        assert_eq!(parse_block_size("1024"), Ok(1024));
        assert_eq!(parse_block_size("2048"), Ok(2048));
        assert_eq!(parse_block_size("4096"), Ok(4096));
        assert!(parse_block_size("512").is_err());
        assert!(parse_block_size("8192").is_err());
        assert!(parse_block_size("4K").is_err());
    }

    #[test]
    fn flag_epoch_wins_over_the_environment() {
        // The environment is not touched here (tests run in parallel); the
        // environment path is covered by the end-to-end tests.
        assert_eq!(source_date_epoch(Some(42)).unwrap(), Some(42));
        assert_eq!(source_date_epoch(Some(-1)).unwrap(), Some(-1));
    }

    #[test]
    fn paths_are_checked_before_work() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let out = dir.path().join("out.img");

        assert_eq!(check_paths(dir.path(), &out).unwrap().1, dir.path());
        let err = check_paths(&dir.path().join("missing"), &out).unwrap_err();
        assert!(format!("{err:#}").contains("SOURCE_DIR"), "{err:#}");
        let err = check_paths(&file, &out).unwrap_err();
        assert!(format!("{err:#}").contains("not a directory"), "{err:#}");
        let err = check_paths(dir.path(), dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("is a directory"), "{err:#}");
        // An existing regular file may be replaced.
        assert!(check_paths(dir.path(), &file).is_ok());
        // A bare file name goes into the current directory.
        assert_eq!(
            check_paths(dir.path(), Path::new("disk.img")).unwrap().1,
            Path::new(".")
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = check_paths(dir.path(), &link).unwrap_err();
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        // A symlink to a directory as SOURCE_DIR is resolved.
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let dir_link = dir.path().join("dir-link");
        std::os::unix::fs::symlink(&sub, &dir_link).unwrap();
        let (source, _) = check_paths(&dir_link, &out).unwrap();
        assert_eq!(source, fs::canonicalize(&sub).unwrap());
    }
}
