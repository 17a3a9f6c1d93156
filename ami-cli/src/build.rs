//! `ami build`: a recipe (the embedded default when none is given) →
//! Debian packages unpacked into an in-memory tree → the project's
//! configuration → an ext4 image, plus `build.json` (what was built) and
//! `ami.lock` (the exact package set, to rebuild it with `--lock`).
//!
//! The packages' maintainer scripts are not emulated yet by this command:
//! every package is recorded as `install ok unpacked` and the report says
//! so ("packages configured: none").

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ami_core::configure::project::{self, ProjectReport};
use ami_core::recipe::{DiskSize, Layout, Recipe, Variant as RecipeVariant};
use ami_core::{Metadata, Timestamp, Tree};
use ami_deb::bootstrap::{Bootstrap, BootstrapReport};
use ami_deb::cache::Cache;
use ami_deb::fetch::FetchOptions;
use ami_deb::keyring::Keyring;
use ami_deb::repo::{Repository, RepositoryOptions, Trust};
use ami_deb::sources::{default_keyring_files, load_etc_apt, Source};
use ami_deb::unpack::Unpacker;
use ami_deb::{Request, Variant};
use ami_ext4::{FormatOptions, Profile, Report, Size};
use anyhow::{bail, Context, Result};
use indicatif::HumanBytes;
use sha2::{Digest, Sha256};

use crate::json::JsonObject;
use crate::progress::Bars;
use crate::uuid::{derived_uuid, format_uuid};

/// Debian's archive keyring, used with the host's trusted keyrings.
const DEBIAN_ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The first line of an `ami.lock`.
const LOCK_HEADER: &str = "# ami.lock v1";

/// Arguments of `ami build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The recipe (TOML). Default: the embedded default recipe.
    #[arg(value_name = "RECIPE")]
    recipe: Option<PathBuf>,

    /// Output directory: disk.img, build.json and ami.lock are written
    /// there (each replaced atomically).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Repository root URL; overrides the recipe's `debian.mirror` and the
    /// host's apt sources.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,

    /// Suite to read; repeat for several. Overrides the recipe's
    /// `debian.suites`.
    #[arg(long = "suite", value_name = "SUITE")]
    suites: Vec<String>,

    /// Disk layout; overrides the recipe's `disk.layout`.
    #[arg(long, value_name = "LAYOUT", value_parser = parse_layout)]
    layout: Option<Layout>,

    /// Rebuild the exact package set of this lock file (versions pinned,
    /// SHA-256 sums checked); the recipe's package lists are not used.
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,

    /// Clamp for every timestamp and seed of the UUIDs (overrides
    /// SOURCE_DATE_EPOCH and the recipe).
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<i64>,

    /// Download cache. Default: $XDG_CACHE_HOME/ami or ~/.cache/ami.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,

    /// OpenPGP keyring to verify every Release with, instead of the
    /// sources' Signed-By and the host's keyrings; repeat for several.
    #[arg(long = "keyring", value_name = "FILE")]
    keyrings: Vec<PathBuf>,

    /// INSECURE: do not check Release signatures (for unsigned test
    /// repositories). Sizes and SHA-256 sums are still checked.
    #[arg(long, conflicts_with = "keyrings")]
    insecure: bool,

    /// apt configuration directory to read the sources and keyrings from.
    #[arg(long, value_name = "DIR", default_value = "/etc/apt")]
    apt_dir: PathBuf,

    /// Threads that decompress packages (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,

    /// Print build.json on stdout too.
    #[arg(long)]
    json: bool,
}

fn parse_layout(s: &str) -> Result<Layout, String> {
    s.parse()
}

/// One package of a lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Locked {
    name: String,
    version: String,
    arch: String,
    sha256: String,
}

fn lock_text(report: &BootstrapReport) -> String {
    let mut s = format!("{LOCK_HEADER}\n# name version architecture sha256\n");
    let mut pkgs: Vec<_> = report.packages.iter().collect();
    pkgs.sort_by(|a, b| a.name.cmp(&b.name));
    for p in pkgs {
        s += &format!("{} {} {} {}\n", p.name, p.version, p.arch, p.sha256);
    }
    s
}

fn parse_lock(text: &str, origin: &Path) -> Result<Vec<Locked>> {
    if text.lines().next() != Some(LOCK_HEADER) {
        bail!(
            "{}: not an ami.lock (first line is not {LOCK_HEADER:?})",
            origin.display()
        );
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, version, arch, sha256] = f.as_slice() else {
            bail!(
                "{}:{}: expected NAME VERSION ARCH SHA256",
                origin.display(),
                i + 1
            );
        };
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{}:{}: bad SHA-256 {sha256:?}", origin.display(), i + 1);
        }
        out.push(Locked {
            name: (*name).into(),
            version: (*version).into(),
            arch: (*arch).into(),
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    if out.is_empty() {
        bail!("{}: no packages", origin.display());
    }
    Ok(out)
}

fn variant(v: RecipeVariant) -> Variant {
    match v {
        RecipeVariant::Custom => Variant::Custom,
        RecipeVariant::Essential => Variant::Essential,
        RecipeVariant::Minbase => Variant::Minbase,
        RecipeVariant::Default => Variant::Default,
    }
}

/// The sources: the mirror (option, then recipe) with the suites (option,
/// recipe, else the host's for the recipe's release), or the host's apt
/// sources of the recipe's release.
fn plan_sources(args: &BuildArgs, recipe: &Recipe) -> Result<Vec<Source>> {
    let suites: Option<Vec<String>> = if args.suites.is_empty() {
        recipe.debian.suites.clone()
    } else {
        Some(args.suites.clone())
    };
    let release = &recipe.debian.suite;
    let of_release = |s: &str| s == release || s.starts_with(&format!("{release}-"));
    let host = || -> Result<Vec<Source>> {
        load_etc_apt(&args.apt_dir)
            .with_context(|| format!("reading the apt sources in {}", args.apt_dir.display()))
    };
    if let Some(mirror) = args.mirror.as_ref().or(recipe.debian.mirror.as_ref()) {
        let suites = suites.unwrap_or_else(|| vec![release.clone()]);
        return Ok(suites
            .iter()
            .map(|suite| {
                let mut source = Source::new(mirror, suite, ["main"]);
                source.origin = "the recipe or --mirror".to_owned();
                source
            })
            .collect());
    }
    let chosen: Vec<Source> = host()?
        .into_iter()
        .filter(|s| match &suites {
            Some(list) => list.contains(&s.suite),
            None => of_release(&s.suite),
        })
        .collect();
    if chosen.is_empty() {
        bail!(
            "the apt sources in {} have no suite of {release}: give --mirror URL (and --suite)",
            args.apt_dir.display()
        );
    }
    Ok(chosen)
}

fn trust(args: &BuildArgs) -> Result<Trust> {
    if args.insecure {
        eprintln!("warning: --insecure: Release signatures are NOT checked");
        return Ok(Trust::Insecure);
    }
    if !args.keyrings.is_empty() {
        let keyring = Keyring::load_all(&args.keyrings).context("loading --keyring")?;
        return Ok(Trust::Keyring(keyring));
    }
    let mut files = default_keyring_files(&args.apt_dir)
        .with_context(|| format!("listing the keyrings in {}", args.apt_dir.display()))?;
    let archive = Path::new(DEBIAN_ARCHIVE_KEYRING);
    if archive.is_file() && !files.iter().any(|f| f == archive) {
        files.push(archive.to_owned());
    }
    let default = Keyring::load_all(&files).context("loading the host's trusted keyrings")?;
    Ok(Trust::SignedBy { default })
}

/// The build's time: --source-date-epoch, SOURCE_DATE_EPOCH, the recipe,
/// or (`None`) the bootstrap's (newest Release date).
fn epoch_of(args: &BuildArgs, recipe: &Recipe) -> Result<Option<i64>> {
    if let Some(e) = args.source_date_epoch {
        return Ok(Some(e));
    }
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        let e = v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?;
        return Ok(Some(e));
    }
    Ok(recipe.source_date_epoch)
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {name}"))?;
    tmp.persist(dir.join(name))
        .map_err(|e| e.error)
        .with_context(|| format!("renaming {name} into {}", dir.display()))?;
    Ok(())
}

fn write_image(tree: &Tree, dir: &Path, options: &FormatOptions, bars: &Bars) -> Result<Report> {
    let path = dir.join("disk.img");
    let mut tmp = tempfile::Builder::new()
        .prefix(".disk.img-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let report = {
        let mut writer = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        let report = ami_ext4::format(&mut writer, tree, options, bars)
            .with_context(|| format!("writing the ext4 image {}", path.display()))?;
        writer.flush().context("writing the image")?;
        report
    };
    let file = tmp.as_file();
    file.set_len(report.size_bytes())
        .and_then(|()| file.sync_all())
        .context("finishing the image")?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the finished image to {}", path.display()))?;
    Ok(report)
}

/// SHA-256 over the allocated runs: block size, then each run's start and
/// end, little-endian.
fn block_map_digest(report: &Report) -> String {
    let mut h = Sha256::new();
    h.update(report.allocated.block_size.to_le_bytes());
    for r in &report.allocated.runs {
        h.update(r.start.to_le_bytes());
        h.update(r.end.to_le_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[allow(clippy::too_many_arguments)]
fn build_json(
    recipe: &Recipe,
    layout: Layout,
    epoch: i64,
    report: &BootstrapReport,
    project: &ProjectReport,
    image: &Report,
    image_sha256: &str,
    seconds: f64,
) -> String {
    let mut o = JsonObject::new();
    o.string("layout", layout.as_str());
    o.string("suite", &recipe.debian.suite);
    o.string("arch", &report.arch);
    o.number("source_date_epoch", epoch);
    o.string("image", "disk.img");
    // The boot layouts (GPT with an ESP, MBR) come later: for now the disk
    // image is the bare root filesystem whatever the layout.
    o.string("partition_table", "none");
    o.number("image_bytes", image.size_bytes());
    o.string("image_sha256", image_sha256);
    o.string("uuid", &format_uuid(&image.uuid));
    o.string("label", "rootfs");
    o.number("block_size", image.block_size);
    o.number("used_blocks", image.used_blocks);
    o.number("used_inodes", image.used_inodes);
    o.string("block_map_sha256", &block_map_digest(image));
    o.string(
        "kernel_version",
        project.kernel.as_ref().map_or("", |k| k.version.as_str()),
    );
    o.string("kernel_cmdline", &recipe.boot.kernel_cmdline());
    o.string("packages_configured", "none (all unpacked)");
    o.number("with_scripts", report.with_scripts_count() as u64);
    o.number("dev_nodes", project.dev_nodes as u64);
    o.number("removed_host_keys", project.removed_host_keys.len() as u64);
    o.float("seconds", seconds);
    let head = o.finish();
    let mut pkgs: Vec<_> = report.packages.iter().collect();
    pkgs.sort_by(|a, b| a.name.cmp(&b.name));
    let items: Vec<String> = pkgs
        .iter()
        .map(|p| {
            let mut o = JsonObject::new();
            o.string("name", &p.name);
            o.string("version", p.version.as_str());
            o.string("arch", &p.arch);
            o.number("size", p.size);
            o.string("sha256", &p.sha256);
            o.finish()
        })
        .collect();
    format!(
        "{},\"packages\":[{}]}}\n",
        &head[..head.len() - 1],
        items.join(",")
    )
}

fn stage(name: &str, detail: &str) {
    eprintln!("{name:>10}  {detail}");
}

/// Runs `ami build`.
pub fn run(args: &BuildArgs) -> Result<()> {
    let started = Instant::now();
    let (mut recipe, recipe_dir) = match &args.recipe {
        Some(path) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading the recipe {}", path.display()))?;
            let recipe = Recipe::parse(&text, &path.display().to_string())?;
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (recipe, dir)
        }
        None => (Recipe::embedded_default(), PathBuf::from(".")),
    };
    if let Some(layout) = args.layout {
        recipe.disk.layout = layout;
    }
    let layout = recipe.disk.layout;
    fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output directory {}", args.out.display()))?;
    let epoch = epoch_of(args, &recipe)?;

    let cache_dir = match &args.cache {
        Some(dir) => dir.clone(),
        None => Cache::default_dir()
            .context("no cache directory: set --cache, XDG_CACHE_HOME or HOME")?,
    };
    let sources = plan_sources(args, &recipe)?;
    let options = RepositoryOptions::new(
        &recipe.debian.architecture,
        Cache::new(&cache_dir),
        trust(args)?,
    )
    .fetch(FetchOptions::default());
    let repository = Repository::new(sources, options)?;

    let locked = match &args.lock {
        Some(path) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading the lock {}", path.display()))?;
            Some(parse_lock(&text, path)?)
        }
        None => None,
    };
    let request = match &locked {
        Some(pkgs) => Request::new(Variant::Custom)
            .packages(pkgs.iter().map(|p| format!("{}={}", p.name, p.version))),
        None => Request::new(variant(recipe.packages.variant))
            .packages(recipe.packages.requested())
            .recommends(recipe.packages.recommends),
    };
    let mut bootstrap = Bootstrap::new(repository, request).threads(args.threads);
    if let Some(e) = epoch {
        bootstrap = bootstrap.mtime(Timestamp::from_secs(e));
    }
    let unpacker = Unpacker::new(&cache_dir);
    let bars = Bars::stderr(args.json);
    let mut tree = Tree::new(Metadata::new(0o755));
    stage(
        "resolve",
        "reading the repository, resolving, downloading, unpacking",
    );
    let report = bootstrap.run(&mut tree, &unpacker, &bars)?;
    if let Some(pkgs) = &locked {
        check_lock(pkgs, &report)?;
    }
    let epoch = epoch.unwrap_or(report.mtime.secs);
    let ts = Timestamp::from_secs(epoch);
    stage(
        "unpack",
        &format!(
            "{} packages ({} of .debs, {} downloaded); maintainer scripts not run, \
             packages configured: none (all unpacked)",
            report.package_count(),
            HumanBytes(report.download_size()),
            HumanBytes(report.downloaded_bytes)
        ),
    );

    let project = project::configure(&mut tree, &recipe, &recipe_dir, ts)?;
    let root = tree.root();
    tree.node_mut(root).meta = Metadata::new(0o755).times(ts);
    tree.clamp_times(ts);
    stage(
        "configure",
        &format!(
            "admin uid {}, {} /dev entries, {} host keys removed, kernel {}",
            project.admin_ids.0,
            project.dev_nodes,
            project.removed_host_keys.len(),
            project
                .kernel
                .as_ref()
                .map_or("none", |k| k.version.as_str())
        ),
    );

    let toml = recipe.to_toml()?;
    let mut seed = Vec::from(&b"rootfs\0"[..]);
    seed.extend_from_slice(&Sha256::digest(toml.as_bytes()));
    let uuid = derived_uuid(epoch, &seed);
    let mut hseed = Vec::from(&b"hash seed\0"[..]);
    hseed.extend_from_slice(&seed);
    let hash_seed = derived_uuid(epoch, &hseed);
    let size = match recipe.disk.size {
        DiskSize::Bytes(b) => Size::Bytes(b),
        DiskSize::Fit(p) => Size::Fit {
            headroom_percent: p,
        },
    };
    let profile = if layout.is_pvgrub() {
        Profile::PvGrub
    } else {
        Profile::Default
    };
    let options = FormatOptions::new()
        .profile(profile)
        .size(size)
        .label(b"rootfs")
        .uuid(uuid)
        .hash_seed(hash_seed)
        .timestamp(ts)
        .assume_zeroed(true);
    let image = write_image(&tree, &args.out, &options, &bars)?;
    drop(bars);
    drop(tree);
    let image_sha256 = {
        let mut h = Sha256::new();
        let mut f = File::open(args.out.join("disk.img")).context("reading disk.img back")?;
        io::copy(&mut f, &mut h).context("hashing disk.img")?;
        hex(&h.finalize())
    };
    stage(
        "write",
        &format!(
            "{} ({} ext4, UUID {}, sha256 {})",
            args.out.join("disk.img").display(),
            HumanBytes(image.size_bytes()),
            format_uuid(&image.uuid),
            &image_sha256[..16]
        ),
    );
    let seconds = started.elapsed().as_secs_f64();
    let json = build_json(
        &recipe,
        layout,
        epoch,
        &report,
        &project,
        &image,
        &image_sha256,
        seconds,
    );
    write_atomic(&args.out, "build.json", json.as_bytes())?;
    write_atomic(&args.out, "ami.lock", lock_text(&report).as_bytes())?;
    stage("done", &format!("{seconds:.2} s"));
    if args.json {
        let mut out = io::stdout().lock();
        out.write_all(json.as_bytes())
            .and_then(|()| out.flush())
            .context("writing to stdout")?;
    }
    Ok(())
}

/// The resolved set must be exactly the locked one, with the same hashes.
fn check_lock(locked: &[Locked], report: &BootstrapReport) -> Result<()> {
    for l in locked {
        let Some(p) = report.package(&l.name) else {
            bail!("locked package {} {} was not selected", l.name, l.version);
        };
        if p.version.as_str() != l.version || p.arch != l.arch {
            bail!(
                "locked {} {} {} resolved as {} {}",
                l.name,
                l.version,
                l.arch,
                p.version,
                p.arch
            );
        }
        if !p.sha256.eq_ignore_ascii_case(&l.sha256) {
            bail!(
                "{} {}: SHA-256 {} differs from the lock's {}",
                l.name,
                l.version,
                p.sha256,
                l.sha256
            );
        }
    }
    if report.packages.len() != locked.len() {
        let extra: Vec<&str> = report
            .packages
            .iter()
            .filter(|p| !locked.iter().any(|l| l.name == p.name))
            .map(|p| p.name.as_str())
            .collect();
        bail!("the lock does not list {}", extra.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_parse_errors() {
        let p = Path::new("x.lock");
        assert!(parse_lock("hello\n", p).is_err());
        assert!(parse_lock(&format!("{LOCK_HEADER}\n"), p).is_err());
        let e = parse_lock(&format!("{LOCK_HEADER}\na 1 amd64 zz\n"), p).unwrap_err();
        assert!(e.to_string().contains("x.lock:2"), "{e}");
        let sha = "A".repeat(64);
        let l = parse_lock(&format!("{LOCK_HEADER}\n# c\na 1:2-3 amd64 {sha}\n"), p).unwrap();
        assert_eq!(
            l,
            [Locked {
                name: "a".into(),
                version: "1:2-3".into(),
                arch: "amd64".into(),
                sha256: "a".repeat(64)
            }]
        );
    }
}
