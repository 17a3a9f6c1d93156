//! `ami build`: a recipe (the embedded default when none is given) →
//! Debian packages unpacked into an in-memory tree → the project's
//! configuration → an ext4 image, plus `build.json` (what was built) and
//! `ami.lock` (the exact package set, to rebuild it with `--lock`).
//!
//! No maintainer script is run. Every install-time script and trigger file
//! of the package set is accounted for by
//! [`effects::account_for`]:
//! [`effects::apply`] reproduces the effects of the reviewed ones natively.
//! When any script is not reviewed, the build fails listing each package,
//! script and SHA-256, unless `--allow-unreviewed-first-boot` is given:
//! then the packages with an unreviewed script are left
//! `install ok unpacked` (none of their scripts is emulated) and the image
//! configures them at its first boot, with `ami-first-boot.service`
//! running `/etc/ami/first-boot/run`: each listed package's `preinst
//! install`, then `dpkg --configure` of exactly the packages listed in
//! `/etc/ami/first-boot/packages`. Every other package is recorded as
//! `install ok installed`.
//!
//! `build.json` lists what was emulated (`emulated`: package → scripts),
//! the commands the emulation leaves to first boot (`first_boot`), the
//! unreviewed scripts (`unreviewed`) and the packages configured at first
//! boot (`first_boot_packages`), with the counts `packages_configured` and
//! `packages_unpacked`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ami_core::configure::effects::{self, Accounting, PackageScripts};
use ami_core::configure::project::{self, ProjectReport};
use ami_core::configure::system::SystemOptions;
use ami_core::configure::{depmod, exists, list_dir, units, write_file};
use ami_core::recipe::{DiskSize, Layout, Recipe, Variant as RecipeVariant};
use ami_core::{Metadata, Timestamp, Tree};
use ami_deb::bootstrap::{Bootstrap, BootstrapReport, Configured};
use ami_deb::cache::Cache;
use ami_deb::dpkgdb::{write_database, DbOptions, DbPackage};
use ami_deb::fetch::FetchOptions;
use ami_deb::repo::{Repository, RepositoryOptions};
use ami_deb::sources::Source;
use ami_deb::unpack::Unpacker;
use ami_deb::{Request, Variant};
use ami_ext4::{FormatOptions, Profile, Report, Size};
use anyhow::{bail, Context, Result};
use indicatif::HumanBytes;
use sha2::{Digest, Sha256};

use crate::json::JsonObject;
use crate::progress::Bars;
use crate::resolve::{cache_dir, host_sources, mirror_sources, trust};
use crate::uuid::{derived_uuid, format_uuid};

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

    /// Instead of failing on maintainer scripts nobody has reviewed, leave
    /// their packages unpacked and configure them at the image's first
    /// boot (`ami-first-boot.service` runs their preinst, then
    /// `dpkg --configure` of exactly those packages).
    #[arg(long)]
    allow_unreviewed_first_boot: bool,

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
/// sources of the recipe's release. Backports suites are left out unless
/// named: their Release files say `NotAutomatic: yes`, so apt never takes
/// a package from them by default either.
fn plan_sources(args: &BuildArgs, recipe: &Recipe) -> Result<Vec<Source>> {
    let suites: Option<Vec<String>> = if args.suites.is_empty() {
        recipe.debian.suites.clone()
    } else {
        Some(args.suites.clone())
    };
    let release = &recipe.debian.suite;
    let of_release = |s: &str| {
        s == release || (s.starts_with(&format!("{release}-")) && !s.ends_with("-backports"))
    };
    if let Some(mirror) = args.mirror.as_ref().or(recipe.debian.mirror.as_ref()) {
        let suites = suites.unwrap_or_else(|| vec![release.clone()]);
        return Ok(mirror_sources(mirror, &suites, "the recipe or --mirror"));
    }
    let chosen: Vec<Source> = host_sources(&args.apt_dir)?
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

/// The image's own apt sources (`/etc/apt/sources.list.d/debian.sources`,
/// deb822): the sources the image was built from, so that `apt-get update`
/// works in the instance. Signed by the image's Debian archive keyring when
/// the image has it.
fn write_apt_sources(tree: &mut Tree, sources: &[Source], ts: Timestamp) -> Result<()> {
    use ami_core::configure::{exists, write_file};
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let signed = exists(tree, keyring);
    // One stanza per (URI, components), suites in the given order.
    let mut stanzas: Vec<(String, String, Vec<String>)> = Vec::new();
    for s in sources {
        let comps = s.components.join(" ");
        match stanzas
            .iter_mut()
            .find(|(u, c, _)| *u == s.uri && *c == comps)
        {
            Some(st) => st.2.push(s.suite.clone()),
            None => stanzas.push((s.uri.clone(), comps, vec![s.suite.clone()])),
        }
    }
    let mut text = String::from("# The sources this image was built from (written by ami).\n");
    for (uri, comps, suites) in &stanzas {
        text.push_str(&format!(
            "\nTypes: deb\nURIs: {uri}/\nSuites: {}\nComponents: {comps}\n",
            suites.join(" ")
        ));
        if signed {
            text.push_str(&format!("Signed-By: {keyring}\n"));
        }
    }
    write_file(
        tree,
        "/etc/apt/sources.list.d/debian.sources",
        text,
        Metadata::new(0o644),
        ts,
    )
    .context("writing the image's apt sources")?;
    Ok(())
}

/// Builds the image's initramfs natively (busybox from the boot packages,
/// the kernel's own modules) and installs it as `/boot/initrd.img-VERSION`.
/// Returns the modules it loads, in order. No kernel: nothing to do.
fn build_initramfs(
    tree: &mut Tree,
    assets: &crate::boot::BootAssets,
    epoch: i64,
) -> Result<Vec<String>> {
    use ami_core::configure::initramfs;
    let Some(kernel) = project::find_kernel(tree) else {
        return Ok(Vec::new());
    };
    let options = initramfs::InitramfsOptions::new().mtime(epoch);
    let built = initramfs::build(tree, &kernel.version, &assets.busybox, &options)
        .with_context(|| format!("building the initramfs of kernel {}", kernel.version))?;
    let ts = Timestamp::from_secs(epoch);
    initramfs::install(tree, &kernel.version, &built, ts).context("installing the initramfs")?;
    // The links linux-update-symlinks makes on a first kernel install.
    for (link, file) in [("vmlinuz", "vmlinuz"), ("initrd.img", "initrd.img")] {
        let target = format!("boot/{file}-{}", kernel.version);
        for name in [link.to_owned(), format!("{link}.old")] {
            ami_core::configure::write_symlink(tree, &format!("/{name}"), &target, ts)
                .with_context(|| format!("linking /{name}"))?;
        }
    }
    stage(
        "initramfs",
        &format!(
            "/boot/initrd.img-{} ({}, modules: {})",
            kernel.version,
            HumanBytes(built.data.len() as u64),
            if built.modules.is_empty() {
                "all built in".to_owned()
            } else {
                built.modules.join(" ")
            }
        ),
    );
    Ok(built.modules)
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

/// The control members handed to the accounting: the install-time ones
/// it checks, plus `prerm` and `postrm` (which it ignores, as dpkg does not
/// run them on an install).
const SCRIPT_MEMBERS: [&str; 6] = [
    "preinst", "config", "postinst", "triggers", "prerm", "postrm",
];

/// The maintainer scripts and trigger file of every unpacked package, in
/// unpack order.
fn package_scripts(report: &BootstrapReport) -> Vec<PackageScripts> {
    report
        .ownership
        .packages()
        .iter()
        .map(|p| PackageScripts {
            name: p.name().to_owned(),
            version: p.version().to_string(),
            arch: p.architecture().to_owned(),
            scripts: SCRIPT_MEMBERS
                .iter()
                .filter_map(|n| {
                    p.control_archive()
                        .get(n)
                        .map(|m| ((*n).to_owned(), m.data.to_vec()))
                })
                .collect(),
        })
        .collect()
}

/// Where the first-boot step keeps its files in the image.
const FIRST_BOOT_DIR: &str = "/etc/ami/first-boot";

/// The first-boot unit's name.
const FIRST_BOOT_UNIT: &str = "ami-first-boot.service";

/// `/etc/ami/first-boot/run`: configures, once, the packages listed in
/// `/etc/ami/first-boot/packages` (dpkg's `info` names, one per line).
const FIRST_BOOT_SCRIPT: &str = r#"#!/bin/sh
# Written by ami build --allow-unreviewed-first-boot. The packages listed in
# /etc/ami/first-boot/packages have maintainer scripts that ami has not
# reviewed, so the build left them unpacked: this configures exactly them,
# once (each one's preinst, as dpkg runs it on a fresh install, then
# dpkg --configure of them all), and renames the list to packages.done.
set -eu
list=/etc/ami/first-boot/packages
[ -s "$list" ] || exit 0
export DEBIAN_FRONTEND=noninteractive
pkgs=$(cat "$list")
for p in $pkgs; do
    if [ -x "/var/lib/dpkg/info/$p.preinst" ]; then
        echo "ami-first-boot: $p preinst install"
        DPKG_MAINTSCRIPT_PACKAGE="${p%%:*}" DPKG_MAINTSCRIPT_NAME=preinst \
            "/var/lib/dpkg/info/$p.preinst" install
    fi
done
echo "ami-first-boot: dpkg --configure" $pkgs
# shellcheck disable=SC2086
dpkg --configure $pkgs
mv "$list" "$list.done"
"#;

/// The first-boot unit.
const FIRST_BOOT_SERVICE: &str = "[Unit]
Description=Configure the packages ami left to first boot (unreviewed maintainer scripts)
Documentation=file:/etc/ami/first-boot/run
ConditionPathExists=/etc/ami/first-boot/packages
After=local-fs.target
Before=ssh.service prep-instance.service

[Service]
Type=oneshot
ExecStart=/etc/ami/first-boot/run
RemainAfterExit=yes
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// Writes the first-boot step for `packages` (dpkg `info` names) and
/// enables its unit.
fn install_first_boot(tree: &mut Tree, packages: &[String], epoch: Timestamp) -> Result<()> {
    let mut list = packages.join("\n");
    list.push('\n');
    write_file(
        tree,
        &format!("{FIRST_BOOT_DIR}/packages"),
        list,
        Metadata::new(0o644),
        epoch,
    )?;
    write_file(
        tree,
        &format!("{FIRST_BOOT_DIR}/run"),
        FIRST_BOOT_SCRIPT,
        Metadata::new(0o755),
        epoch,
    )?;
    write_file(
        tree,
        &format!("/etc/systemd/system/{FIRST_BOOT_UNIT}"),
        FIRST_BOOT_SERVICE,
        Metadata::new(0o644),
        epoch,
    )?;
    units::systemctl_enable(tree, FIRST_BOOT_UNIT, epoch)
        .with_context(|| format!("enabling {FIRST_BOOT_UNIT}"))?;
    Ok(())
}

/// The error for scripts nobody reviewed: each package, script and
/// SHA-256, and what the user can do.
fn unreviewed_error(unreviewed: &[(String, String, String)]) -> anyhow::Error {
    let mut msg = format!(
        "{} maintainer script(s) of the package set have not been reviewed; ami never runs \
         maintainer scripts on the build machine and cannot reproduce these:\n",
        unreviewed.len()
    );
    for (pkg, script, sha) in unreviewed {
        msg += &format!("  {pkg} {script} sha256 {sha}\n");
    }
    msg += "remove these packages from the recipe, or have their scripts reviewed and \
            added to ami's table of reviewed scripts (ami_core::configure::effects::REVIEWED), \
            or give --allow-unreviewed-first-boot to configure these packages at the image's \
            first boot";
    anyhow::anyhow!(msg)
}

/// `s` as a JSON string literal (escaped by [`JsonObject`]).
fn json_string(s: &str) -> String {
    let mut o = JsonObject::new();
    o.string("", s);
    let obj = o.finish();
    // `{"":` + literal + `}`
    obj[4..obj.len() - 1].to_owned()
}

/// The accounting's fields of `build.json`: `emulated` (package → the
/// scripts whose effects were reproduced or are handled elsewhere),
/// `first_boot` (commands the emulation leaves to first boot, by
/// package), `unreviewed` (package, script, SHA-256) and
/// `first_boot_packages` (the packages configured at first boot).
fn accounting_json(
    acc: &Accounting,
    unreviewed: &[(String, String, String)],
    deferred: &[String],
) -> String {
    let mut emulated: Vec<(&str, Vec<&str>)> = Vec::new();
    for (pkg, script) in &acc.emulated {
        match emulated.iter_mut().find(|(p, _)| p == pkg) {
            Some((_, scripts)) => scripts.push(script),
            None => emulated.push((pkg, vec![script])),
        }
    }
    emulated.sort_by(|a, b| a.0.cmp(b.0));
    let emulated: Vec<String> = emulated
        .iter()
        .map(|(p, scripts)| {
            let scripts: Vec<String> = scripts.iter().map(|s| json_string(s)).collect();
            format!("{}:[{}]", json_string(p), scripts.join(","))
        })
        .collect();
    let first_boot: Vec<String> = acc
        .first_boot
        .iter()
        .map(|(p, cmd)| {
            let mut o = JsonObject::new();
            o.string("package", p);
            o.string("command", cmd);
            o.finish()
        })
        .collect();
    let unreviewed: Vec<String> = unreviewed
        .iter()
        .map(|(p, script, sha)| {
            let mut o = JsonObject::new();
            o.string("package", p);
            o.string("script", script);
            o.string("sha256", sha);
            o.finish()
        })
        .collect();
    let deferred: Vec<String> = deferred.iter().map(|p| json_string(p)).collect();
    format!(
        "\"emulated\":{{{}}},\"first_boot\":[{}],\"unreviewed\":[{}],\"first_boot_packages\":[{}]",
        emulated.join(","),
        first_boot.join(","),
        unreviewed.join(","),
        deferred.join(",")
    )
}

#[allow(clippy::too_many_arguments)]
fn build_json(
    recipe: &Recipe,
    layout: Layout,
    epoch: i64,
    report: &BootstrapReport,
    project: &ProjectReport,
    scripts: &Scripts,
    disk: &crate::boot::Disk,
    assets: &crate::boot::BootAssets,
    initramfs: &[String],
    image_sha256: &str,
    seconds: f64,
) -> String {
    let image = &disk.report;
    let mut o = JsonObject::new();
    o.string("layout", layout.as_str());
    o.string("suite", &recipe.debian.suite);
    o.string("arch", &report.arch);
    o.number("source_date_epoch", epoch);
    o.string("image", "disk.img");
    o.string(
        "partition_table",
        match layout {
            Layout::Pvgrub => "none",
            Layout::PvgrubMbr => "mbr",
            Layout::Uefi => "gpt",
        },
    );
    o.number("image_bytes", disk.plan.disk_size);
    o.number("root_offset", disk.plan.root.start);
    o.number("root_bytes", image.size_bytes());
    if let Some(esp) = &disk.plan.esp {
        o.number("esp_offset", esp.start);
        o.number("esp_bytes", esp.end - esp.start);
    }
    o.string("image_sha256", image_sha256);
    o.string("uuid", &format_uuid(&image.uuid));
    o.string("label", "rootfs");
    o.number("block_size", image.block_size);
    o.number("used_blocks", image.used_blocks);
    o.number("used_inodes", image.used_inodes);
    o.string("block_map_sha256", &block_map_digest(image));
    // The allocated byte ranges of disk.img: `ami snapshot` sends exactly
    // these blocks.
    o.ranges("allocated", &disk.allocated);
    o.strings(
        "boot_packages",
        &assets
            .packages
            .iter()
            .map(|p| format!("{} {} {}", p.name, p.version, p.sha256))
            .collect::<Vec<_>>(),
    );
    o.strings("initramfs_modules", initramfs);
    o.string(
        "kernel_version",
        project.kernel.as_ref().map_or("", |k| k.version.as_str()),
    );
    o.string("kernel_cmdline", &recipe.boot.kernel_cmdline());
    o.string("depmod", &scripts.depmod.join("; "));
    o.number(
        "packages_configured",
        (report.package_count() - scripts.deferred.len()) as u64,
    );
    o.number("packages_unpacked", scripts.deferred.len() as u64);
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
        "{},{},\"packages\":[{}]}}\n",
        &head[..head.len() - 1],
        accounting_json(&scripts.accounting, &scripts.unreviewed, &scripts.deferred),
        items.join(",")
    )
}

/// What became of the maintainer scripts.
struct Scripts {
    /// The accounting of the emulated packages.
    accounting: Accounting,
    /// `(package, script, sha256)` of the scripts nobody reviewed.
    unreviewed: Vec<(String, String, String)>,
    /// dpkg `info` names of the packages left to first boot.
    deferred: Vec<String>,
    /// One line per kernel whose module indexes were built natively.
    depmod: Vec<String>,
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

    let cache_dir = cache_dir(args.cache.as_deref())?;
    let sources = plan_sources(args, &recipe)?;
    let options = RepositoryOptions::new(
        &recipe.debian.architecture,
        Cache::new(&cache_dir),
        trust(args.insecure, &args.keyrings, &args.apt_dir)?,
    )
    .fetch(FetchOptions::default());
    let repository = Repository::new(sources.clone(), options.clone())?;
    let boot_repository = Repository::new(sources.clone(), options)?;

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
    // The database is written below, once the scripts are accounted for.
    let mut bootstrap = Bootstrap::new(repository, request)
        .threads(args.threads)
        .write_database(false);
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
            "{} packages ({} of .debs, {} downloaded), {} with maintainer scripts",
            report.package_count(),
            HumanBytes(report.download_size()),
            HumanBytes(report.downloaded_bytes),
            report.with_scripts_count()
        ),
    );

    let mut scripts = package_scripts(&report);
    let unreviewed = effects::account_for(&scripts).unreviewed;
    if !unreviewed.is_empty() && !args.allow_unreviewed_first_boot {
        return Err(unreviewed_error(&unreviewed));
    }
    // The packages with an unreviewed script are left to first boot, all
    // their scripts with them; the others are configured.
    let deferred_names: BTreeSet<&str> = unreviewed.iter().map(|(p, _, _)| p.as_str()).collect();
    let configured = if deferred_names.is_empty() {
        Configured::All
    } else {
        Configured::Only(
            scripts
                .iter()
                .map(|p| p.name.clone())
                .filter(|n| !deferred_names.contains(n.as_str()))
                .collect(),
        )
    };
    let deferred: Vec<String> = report
        .ownership
        .packages()
        .iter()
        .filter(|p| deferred_names.contains(p.name()))
        .map(|p| p.info_name())
        .collect();
    scripts.retain(|p| !deferred_names.contains(p.name.as_str()));
    // The database goes first, as the effects add to it (diversions, stat
    // overrides, alternatives).
    let db: Vec<DbPackage<'_>> = report
        .ownership
        .packages()
        .iter()
        .map(|p| DbPackage::new(p, configured.status(p.name())))
        .collect();
    write_database(
        &mut tree,
        &db,
        &DbOptions::new(report.arch.clone(), report.mtime),
    )
    .context("writing the dpkg database")?;
    drop(db);
    let applied = effects::apply(&mut tree, &scripts, &SystemOptions::default(), epoch)
        .context("reproducing the maintainer scripts' effects")?;
    drop(scripts);
    if !deferred.is_empty() {
        install_first_boot(&mut tree, &deferred, Timestamp::from_secs(epoch))?;
        for (pkg, script, sha) in &unreviewed {
            eprintln!(
                "warning: {pkg} {script} (sha256 {sha}) has not been reviewed: \
                 it runs at the image's first boot"
            );
        }
    }
    // depmod (the kernel package's postinst): the text and .bin module
    // indexes, which libkmod (udev's autoloading by modalias) needs.
    let mut depmodded = Vec::new();
    for ver in list_dir(&tree, "/lib/modules") {
        let ver = String::from_utf8_lossy(&ver).into_owned();
        if !exists(&tree, &format!("/lib/modules/{ver}/modules.order")) {
            continue;
        }
        let r = depmod::depmod(&mut tree, &ver, Timestamp::from_secs(epoch))
            .with_context(|| format!("building the module indexes of kernel {ver}"))?;
        depmodded.push(format!(
            "{ver}: {} modules, {} aliases, {} symbols",
            r.modules, r.aliases, r.symbols
        ));
    }
    if !depmodded.is_empty() {
        stage("configure", &format!("depmod {}", depmodded.join("; ")));
    }
    let scripts = Scripts {
        accounting: applied.accounting,
        unreviewed,
        deferred,
        depmod: depmodded,
    };
    let first_boot: Vec<&str> = scripts
        .accounting
        .first_boot
        .iter()
        .map(|(_, c)| c.as_str())
        .collect();
    stage(
        "configure",
        &format!(
            "{} maintainer scripts and trigger files emulated natively, {} unreviewed, \
             packages configured: {} of {}; left to first boot: {}",
            scripts.accounting.emulated.len(),
            scripts.unreviewed.len(),
            report.package_count() - scripts.deferred.len(),
            report.package_count(),
            if first_boot.is_empty() && scripts.deferred.is_empty() {
                "nothing".to_owned()
            } else {
                first_boot
                    .iter()
                    .map(|c| (*c).to_owned())
                    .chain(
                        (!scripts.deferred.is_empty())
                            .then(|| format!("dpkg --configure {}", scripts.deferred.join(" "))),
                    )
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    );

    // The boot packages (not installed: only their files are used).
    let assets = crate::boot::fetch(&boot_repository, layout, &bars)?;
    stage(
        "boot",
        &assets
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let initramfs = build_initramfs(&mut tree, &assets, epoch)?;

    write_apt_sources(&mut tree, &sources, ts)?;
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
    let esp = match layout {
        Layout::Uefi => {
            let k = project
                .kernel
                .as_ref()
                .context("the image has no kernel in /boot: the uefi layout needs one")?;
            let cfg = crate::boot::grub_cfg(
                &k.kernel,
                k.initrd.as_deref(),
                &recipe.boot.kernel_cmdline(),
            );
            Some(crate::boot::esp_files(&assets, &cfg)?)
        }
        _ => None,
    };
    let disk = crate::boot::write_disk(
        &tree,
        &args.out,
        layout,
        size,
        options,
        &seed,
        epoch,
        esp.as_deref(),
        &bars,
    )?;
    let image = disk.report.clone();
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
        &scripts,
        &disk,
        &assets,
        &initramfs,
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
