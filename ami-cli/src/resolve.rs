//! `ami resolve`: reads and verifies a Debian repository and prints the
//! package set of a variant plus requested packages.

use std::path::{Path, PathBuf};

use ami_deb::cache::Cache;
use ami_deb::fetch::FetchOptions;
use ami_deb::keyring::Keyring;
use ami_deb::repo::{Repository, RepositoryOptions, Trust};
use ami_deb::sources::{default_keyring_files, load_etc_apt, Source};
use ami_deb::{resolve, Package, Request, Variant};
use anyhow::{bail, Context, Result};
use indicatif::HumanBytes;

use crate::json::JsonObject;
use crate::progress::Bars;

/// Debian's archive keyring as the `debian-archive-keyring` package
/// installs it: trusted by default in addition to apt's own keyrings.
const DEBIAN_ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The package set to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VariantArg {
    /// Only the requested packages and their dependencies.
    Custom,
    /// `Essential: yes` packages.
    Essential,
    /// Essential, `Priority: required` and apt.
    Minbase,
    /// Essential, required and important (debootstrap's default).
    Default,
}

impl VariantArg {
    fn variant(self) -> Variant {
        match self {
            VariantArg::Custom => Variant::Custom,
            VariantArg::Essential => Variant::Essential,
            VariantArg::Minbase => Variant::Minbase,
            VariantArg::Default => Variant::Default,
        }
    }
}

/// The target architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchArg {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
}

impl ArchArg {
    fn name(self) -> &'static str {
        match self {
            ArchArg::Amd64 => "amd64",
            ArchArg::Arm64 => "arm64",
        }
    }
}

/// Where packages come from and which set to take: the arguments `ami
/// resolve` and `ami bootstrap` share.
#[derive(Debug, clap::Args)]
pub struct RepoArgs {
    /// Repository root URL (http://, https:// or file://). Replaces the
    /// host's apt sources; without --suite, the suites of the host's first
    /// mirror are used.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,

    /// Suite (codename) to read; repeat for several (e.g. bookworm,
    /// bookworm-updates). Default: the host's apt sources.
    #[arg(long = "suite", value_name = "SUITE")]
    suites: Vec<String>,

    /// Components, comma-separated. Default: the sources' own, or main
    /// with --mirror.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    components: Vec<String>,

    /// Target architecture.
    #[arg(long, value_enum, default_value_t = ArchArg::Amd64)]
    arch: ArchArg,

    /// Base package set.
    #[arg(long, value_enum, default_value_t = VariantArg::Default)]
    variant: VariantArg,

    /// Follow Recommends (off by default, as debootstrap and mmdebstrap).
    #[arg(long)]
    recommends: bool,

    /// OpenPGP keyring (binary .gpg or armored .asc) to verify every
    /// Release with, instead of the sources' Signed-By and the host's
    /// keyrings; repeat for several.
    #[arg(long = "keyring", value_name = "FILE")]
    keyrings: Vec<PathBuf>,

    /// INSECURE: do not check Release signatures (for unsigned test
    /// repositories). Sizes and SHA-256 sums are still checked.
    #[arg(long, conflicts_with = "keyrings")]
    insecure: bool,

    /// Download cache. Default: $XDG_CACHE_HOME/ami or ~/.cache/ami.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,

    /// apt configuration directory to read sources.list,
    /// sources.list.d/ and trusted.gpg.d/ from.
    #[arg(long, value_name = "DIR", default_value = "/etc/apt")]
    apt_dir: PathBuf,
}

impl RepoArgs {
    /// The target architecture's Debian name.
    pub fn arch(&self) -> &'static str {
        self.arch.name()
    }

    /// The cache directory: --cache or the XDG default.
    pub fn cache_dir(&self) -> Result<PathBuf> {
        cache_dir(self.cache.as_deref())
    }

    /// The repository the arguments describe (nothing is fetched yet).
    pub fn repository(&self) -> Result<Repository> {
        let sources = plan_sources(self)?;
        let trust = trust(self.insecure, &self.keyrings, &self.apt_dir)?;
        let options = RepositoryOptions::new(self.arch(), Cache::new(self.cache_dir()?), trust)
            .fetch(FetchOptions::default());
        Ok(Repository::new(sources, options)?)
    }

    /// The request: the variant, `packages` and --recommends.
    pub fn request(&self, packages: &[String]) -> Request {
        Request::new(self.variant.variant())
            .packages(packages.iter().cloned())
            .recommends(self.recommends)
    }
}

/// Arguments of `ami resolve`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// Packages to add to the variant: NAME, NAME=VERSION or
    /// "NAME (>= VERSION)".
    #[arg(value_name = "PACKAGE")]
    packages: Vec<String>,

    #[command(flatten)]
    repo: RepoArgs,

    /// Also download the packages into the cache (each checked against
    /// its size and SHA-256) and print their paths.
    #[arg(long)]
    download: bool,

    /// Print one JSON document instead of one line per package.
    #[arg(long)]
    json: bool,
}

/// The download cache: `cache` (the --cache option) or the XDG default.
pub(crate) fn cache_dir(cache: Option<&Path>) -> Result<PathBuf> {
    match cache {
        Some(dir) => Ok(dir.to_path_buf()),
        None => {
            Cache::default_dir().context("no cache directory: set --cache, XDG_CACHE_HOME or HOME")
        }
    }
}

/// The apt sources configured in `apt_dir` (sources.list and
/// sources.list.d/).
pub(crate) fn host_sources(apt_dir: &Path) -> Result<Vec<Source>> {
    load_etc_apt(apt_dir)
        .with_context(|| format!("reading the apt sources in {}", apt_dir.display()))
}

/// One source per suite of `mirror`, component main, saying where it came
/// from (`origin`, for error messages).
pub(crate) fn mirror_sources(mirror: &str, suites: &[String], origin: &str) -> Vec<Source> {
    suites
        .iter()
        .map(|suite| {
            let mut source = Source::new(mirror, suite, ["main"]);
            source.origin = origin.to_owned();
            source
        })
        .collect()
}

/// The sources to read: `--mirror`/`--suite`/`--components` applied to the
/// host's apt configuration.
fn plan_sources(args: &RepoArgs) -> Result<Vec<Source>> {
    let host = || host_sources(&args.apt_dir);
    let mut sources = if let Some(mirror) = &args.mirror {
        let suites = if args.suites.is_empty() {
            let host = host()?;
            let first = host.first().map(|s| s.uri.clone());
            let suites: Vec<String> = host
                .iter()
                .filter(|s| Some(&s.uri) == first.as_ref())
                .map(|s| s.suite.clone())
                .collect();
            if suites.is_empty() {
                bail!(
                    "--mirror needs --suite: the apt configuration in {} names no suite",
                    args.apt_dir.display()
                );
            }
            suites
        } else {
            args.suites.clone()
        };
        mirror_sources(mirror, &suites, "--mirror")
    } else {
        let host = host()?;
        let Some(first) = host.first().cloned() else {
            bail!(
                "no apt source is configured in {}: give --mirror URL and --suite SUITE",
                args.apt_dir.display()
            );
        };
        if args.suites.is_empty() {
            host
        } else {
            let mut chosen = Vec::new();
            for suite in &args.suites {
                let matching: Vec<Source> =
                    host.iter().filter(|s| &s.suite == suite).cloned().collect();
                if matching.is_empty() {
                    // Same mirror and options as the first source.
                    let mut source = first.clone();
                    source.suite = suite.clone();
                    source.origin = "--suite".to_owned();
                    chosen.push(source);
                } else {
                    chosen.extend(matching);
                }
            }
            chosen
        }
    };
    if !args.components.is_empty() {
        for source in &mut sources {
            source.components = args.components.clone();
        }
    }
    Ok(sources)
}

/// How Release files are checked: `insecure` (--insecure), `keyrings`
/// (--keyring), or each source's Signed-By with the keyrings trusted in
/// `apt_dir` plus Debian's archive keyring as the default.
pub(crate) fn trust(insecure: bool, keyrings: &[PathBuf], apt_dir: &Path) -> Result<Trust> {
    if insecure {
        eprintln!("warning: --insecure: Release signatures are NOT checked; anyone on the path to the mirror can choose what gets installed");
        return Ok(Trust::Insecure);
    }
    if !keyrings.is_empty() {
        let keyring = Keyring::load_all(keyrings).context("loading --keyring")?;
        return Ok(Trust::Keyring(keyring));
    }
    let mut files = default_keyring_files(apt_dir)
        .with_context(|| format!("listing the keyrings in {}", apt_dir.display()))?;
    let archive = Path::new(DEBIAN_ARCHIVE_KEYRING);
    if archive.is_file() && !files.iter().any(|f| f == archive) {
        files.push(archive.to_owned());
    }
    let default = Keyring::load_all(&files).context("loading the host's trusted keyrings")?;
    Ok(Trust::SignedBy { default })
}

fn package_json(package: &Package, suite: &str, path: Option<&Path>) -> String {
    let mut o = JsonObject::new();
    o.string("name", package.name());
    o.string("version", package.version().as_str());
    o.string("arch", package.architecture());
    o.number("size", package.size().unwrap_or(0));
    o.string("sha256", package.sha256().unwrap_or(""));
    o.string("filename", package.filename().unwrap_or(""));
    o.string("suite", suite);
    if let Some(path) = path {
        o.string("path", &path.display().to_string());
    }
    o.finish()
}

/// Runs `ami resolve`.
pub fn run(args: &ResolveArgs) -> Result<()> {
    let repository = args.repo.repository()?;
    let arch = args.repo.arch();
    let bars = Bars::stderr(false);
    let index = repository.update(&bars)?;
    let request = args.repo.request(&args.packages);
    let resolution = resolve(index.packages(), &request)?;
    let packages: Vec<Package> = resolution.packages().cloned().collect();
    let paths: Vec<Option<PathBuf>> = if args.download {
        repository
            .download(&index, &packages, &bars)?
            .into_iter()
            .map(|(_, path)| Some(path))
            .collect()
    } else {
        vec![None; packages.len()]
    };
    drop(bars);
    let suite_of = |p: &Package| {
        index
            .origin(p.source().index())
            .map(|o| o.suite.clone())
            .unwrap_or_default()
    };
    let total: u64 = packages.iter().filter_map(Package::size).sum();
    if args.json {
        let items: Vec<String> = packages
            .iter()
            .zip(&paths)
            .map(|(p, path)| package_json(p, &suite_of(p), path.as_deref()))
            .collect();
        let mut head = JsonObject::new();
        head.string("arch", arch);
        head.number("count", packages.len() as u64);
        head.number("download_size", total);
        let head = head.finish();
        println!(
            "{},\"packages\":[{}]}}",
            &head[..head.len() - 1],
            items.join(",")
        );
    } else {
        for (p, path) in packages.iter().zip(&paths) {
            let mut line = format!(
                "{} {} {} {} {}",
                p.name(),
                p.version(),
                p.architecture(),
                p.size().unwrap_or(0),
                p.sha256().unwrap_or("-")
            );
            if let Some(path) = path {
                line.push(' ');
                line.push_str(&path.display().to_string());
            }
            println!("{line}");
        }
    }
    let signers: Vec<String> = index
        .releases()
        .iter()
        .map(|r| match r.signers().first() {
            Some(s) => format!("{} (signed by {})", r.url(), s.key),
            None => format!("{} (NOT VERIFIED: --insecure)", r.url()),
        })
        .collect();
    eprintln!(
        "resolved {} packages for {arch}, {} to download, from {} package records of:\n  {}",
        packages.len(),
        HumanBytes(total),
        index.packages().len(),
        signers.join("\n  ")
    );
    Ok(())
}
