//! `ami bootstrap`: the whole Debian pipeline in one command, for
//! developers and benchmarks: mirror → resolve → download → unpack into an
//! in-memory tree (with the dpkg database) → optionally an ext4 image.
//!
//! No maintainer script runs and every package is recorded as
//! `install ok unpacked`: the image is not bootable yet (configuration is
//! a later step of the pipeline).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ami_core::{Metadata, Tree};
use ami_deb::bootstrap::{Bootstrap, BootstrapReport, PackageReport};
use ami_deb::unpack::Unpacker;
use ami_ext4::{FormatOptions, Report, Size};
use anyhow::{bail, Context, Result};
use indicatif::{HumanBytes, HumanCount};

use crate::json::JsonObject;
use crate::progress::Bars;
use crate::resolve::RepoArgs;
use crate::uuid::{derived_uuid, format_uuid};

/// The longest volume label ext4 stores, in bytes.
const MAX_LABEL: usize = 16;

/// Arguments of `ami bootstrap`.
#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Packages to add to the variant: NAME, NAME=VERSION or
    /// "NAME (>= VERSION)".
    #[arg(value_name = "PACKAGE")]
    packages: Vec<String>,

    #[command(flatten)]
    repo: RepoArgs,

    /// Write the tree into this ext4 image (replaced atomically when
    /// complete). Without it the tree stays in memory (a dry run that
    /// measures resolving and unpacking).
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,

    /// Volume label of the image.
    #[arg(
        long,
        value_name = "LABEL",
        default_value = "rootfs",
        requires = "image"
    )]
    label: String,

    /// Free space of the image, in percent of the space the tree uses.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value_t = 20,
        requires = "image",
        value_parser = clap::value_parser!(u32).range(0..=1000)
    )]
    headroom: u32,

    /// Threads that decompress packages (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,

    /// Print the unpacked packages on stdout, one per line, in unpack
    /// order: name, version, architecture, size, SHA-256.
    #[arg(long, conflicts_with = "json")]
    list: bool,

    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// Checks OUTPUT before any work: it may be a new or a regular file.
fn check_image_path(image: &Path) -> Result<PathBuf> {
    match fs::symlink_metadata(image) {
        Ok(meta) if meta.is_file() => {}
        Ok(meta) if meta.is_dir() => bail!("--image {} is a directory", image.display()),
        Ok(_) => bail!(
            "--image {} is not a regular file (a symbolic link or a device)",
            image.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("--image {}", image.display())),
    }
    if image.file_name().is_none() {
        bail!("--image {} does not name a file", image.display());
    }
    Ok(match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

/// Writes `tree` into a new ext4 image at `image`.
fn write_image(
    tree: &Tree,
    image: &Path,
    dir: &Path,
    options: &FormatOptions,
    bars: &Bars,
) -> Result<Report> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".ami-bootstrap-")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let report = {
        let mut writer = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        let report = ami_ext4::format(&mut writer, tree, options, bars)
            .with_context(|| format!("writing the ext4 image {}", image.display()))?;
        writer
            .flush()
            .with_context(|| format!("writing the image {}", image.display()))?;
        report
    };
    let file = tmp.as_file();
    file.set_len(report.size_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("finishing the image in {}", dir.display()))?;
    tmp.persist(image)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the finished image to {}", image.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(report)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn package_json(p: &PackageReport) -> String {
    let mut o = JsonObject::new();
    o.string("name", &p.name);
    o.string("version", p.version.as_str());
    o.string("arch", &p.arch);
    o.number("size", p.size);
    o.string("sha256", &p.sha256);
    o.string("suite", &p.suite);
    o.string("reason", &p.reason);
    o.number("tar_size", p.tar_size);
    o.string("from", if p.cached { "cache" } else { "download" });
    o.finish()
}

/// The JSON report: the bootstrap's, plus the image's and the total time.
fn report_json(
    report: &BootstrapReport,
    image: Option<(&Path, &Report, f64)>,
    total: f64,
) -> String {
    let t = &report.timings;
    let mut o = JsonObject::new();
    o.string("arch", &report.arch);
    o.number("packages_count", report.package_count() as u64);
    o.number("with_scripts", report.with_scripts_count() as u64);
    o.number("download_size", report.download_size());
    o.number("downloaded_bytes", report.downloaded_bytes);
    o.number("cached_bytes", report.cached_bytes);
    o.number("decompressed_bytes", report.decompressed_bytes);
    o.number("tree_nodes", report.tree_nodes as u64);
    o.number("mtime", report.mtime.secs);
    o.float("update_seconds", secs(t.update));
    o.float("resolve_seconds", secs(t.resolve));
    o.float("download_seconds", secs(t.download));
    o.float("prepare_seconds", secs(t.prepare));
    o.float("unpack_seconds", secs(t.unpack));
    o.float("database_seconds", secs(t.database));
    o.float("bootstrap_seconds", secs(t.total));
    if let Some((path, r, seconds)) = image {
        o.string("image", &path.to_string_lossy());
        o.number("image_bytes", r.size_bytes());
        o.number("used_inodes", r.used_inodes);
        o.string("uuid", &format_uuid(&r.uuid));
        o.float("image_seconds", seconds);
    }
    o.float("seconds", total);
    let head = o.finish();
    // The list of packages, in unpack order.
    let items: Vec<String> = report
        .ownership
        .packages()
        .iter()
        .filter_map(|u| report.package(u.name()))
        .map(package_json)
        .collect();
    format!(
        "{},\"packages\":[{}]}}",
        &head[..head.len() - 1],
        items.join(",")
    )
}

/// Runs `ami bootstrap`.
pub fn run(args: &BootstrapArgs) -> Result<()> {
    let started = Instant::now();
    if args.label.len() > MAX_LABEL {
        bail!(
            "label {:?} is {} bytes long, ext4 allows at most {MAX_LABEL}",
            args.label,
            args.label.len()
        );
    }
    let image_dir = args.image.as_deref().map(check_image_path).transpose()?;
    let repository = args.repo.repository()?;
    let cache_dir = args.repo.cache_dir()?;
    let bootstrap =
        Bootstrap::new(repository, args.repo.request(&args.packages)).threads(args.threads);
    let unpacker = Unpacker::new(&cache_dir);
    let bars = Bars::stderr(false);
    let mut tree = Tree::new(Metadata::new(0o755));
    let report = bootstrap.run(&mut tree, &unpacker, &bars)?;
    // The root directory gets the time of the rest of what is not from a
    // package.
    let root = tree.root();
    let meta = &mut tree.node_mut(root).meta;
    (meta.atime, meta.mtime, meta.ctime) = (report.mtime, report.mtime, report.mtime);

    let image = match (&args.image, &image_dir) {
        (Some(path), Some(dir)) => {
            let t = Instant::now();
            let options = FormatOptions::new()
                .size(Size::Fit {
                    headroom_percent: args.headroom,
                })
                .label(args.label.as_bytes())
                .uuid(derived_uuid(report.mtime.secs, args.label.as_bytes()))
                .timestamp(report.mtime)
                .assume_zeroed(true);
            let r = write_image(&tree, path, dir, &options, &bars)?;
            Some((path.as_path(), r, t.elapsed().as_secs_f64()))
        }
        _ => None,
    };
    drop(bars);
    drop(tree);
    let total = started.elapsed().as_secs_f64();

    let t = &report.timings;
    let mut text = format!(
        "bootstrapped {} packages for {} ({} with maintainer scripts, not run; all \
         recorded as unpacked): {} of packages, {} downloaded, {} from the cache, {} \
         decompressed; {} tree entries\n",
        report.package_count(),
        report.arch,
        report.with_scripts_count(),
        HumanBytes(report.download_size()),
        HumanBytes(report.downloaded_bytes),
        HumanBytes(report.cached_bytes),
        HumanBytes(report.decompressed_bytes),
        HumanCount(report.tree_nodes as u64),
    );
    text += &format!(
        "  update {:.2} s, resolve {:.2} s, download {:.2} s, prepare {:.2} s, unpack {:.2} s, \
         database {:.2} s: {:.2} s\n",
        secs(t.update),
        secs(t.resolve),
        secs(t.download),
        secs(t.prepare),
        secs(t.unpack),
        secs(t.database),
        secs(t.total)
    );
    if let Some((path, r, seconds)) = &image {
        text += &format!(
            "  image {} ({}, {} inodes, UUID {}): {seconds:.2} s\n",
            path.display(),
            HumanBytes(r.size_bytes()),
            HumanCount(r.used_inodes),
            format_uuid(&r.uuid)
        );
    }
    text += &format!("  total {total:.2} s\n");
    for r in &report.releases {
        match &r.signed_by {
            Some(key) => text += &format!("  {} (signed by {key})\n", r.url),
            None => text += &format!("  {} (NOT VERIFIED: --insecure)\n", r.url),
        }
    }
    eprint!("{text}");

    let mut stdout = io::stdout().lock();
    if args.json {
        writeln!(
            stdout,
            "{}",
            report_json(&report, image.as_ref().map(|(p, r, s)| (*p, r, *s)), total)
        )
        .context("writing the report to stdout")?;
    } else if args.list {
        for u in report.ownership.packages() {
            if let Some(p) = report.package(u.name()) {
                writeln!(
                    stdout,
                    "{} {} {} {} {}",
                    p.name, p.version, p.arch, p.size, p.sha256
                )
                .context("writing the list to stdout")?;
            }
        }
    }
    stdout.flush().context("writing to stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_are_checked_before_work() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            check_image_path(&dir.path().join("new.img")).unwrap(),
            dir.path()
        );
        assert_eq!(
            check_image_path(Path::new("disk.img")).unwrap(),
            Path::new(".")
        );
        let err = check_image_path(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("is a directory"), "{err:#}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("new.img", &link).unwrap();
        let err = check_image_path(&link).unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
    }
}
