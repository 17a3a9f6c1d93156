//! The build recipe: what `ami build` turns into an image.
//!
//! A recipe is a TOML document. Every field is optional: a missing field
//! takes the value of the embedded default recipe ([`DEFAULT_RECIPE`], also
//! returned by [`Recipe::default`]), so an empty file and no file at all
//! describe the same image: Debian bookworm for amd64, the `default` variant
//! plus `sudo openssh-server wget ifupdown isc-dhcp-client makedev` and the
//! cloud kernel, an `admin` user in the `sudo` and `adm` groups, and a 2 GiB
//! ext4 root filesystem labelled `rootfs`.
//!
//! Unknown fields are errors (a typo must not silently fall back to a
//! default); parse errors name the line and column ([`RecipeError::Parse`]).
//!
//! # Layout of a recipe
//!
//! ```toml
//! source_date_epoch = 1700000000     # optional; see Recipe::source_date_epoch
//!
//! [debian]                           # Debian
//! suite = "bookworm"
//! architecture = "amd64"
//! # suites = ["bookworm", "bookworm-updates"]   # default: from the host apt config
//! # mirror = "http://mirror.example/debian"     # default: from the host apt config
//!
//! [packages]                         # Packages
//! variant = "default"
//! include = ["sudo", "openssh-server", "wget", "ifupdown", "isc-dhcp-client", "makedev"]
//! extra = ["less"]
//! kernel = "linux-image-cloud-amd64"
//! recommends = false
//!
//! [system]                           # System
//! hostname = "debian"
//! units = ["systemd-timesyncd.service"]
//!
//! [admin]                            # Admin (a User)
//! name = "admin"
//! groups = ["sudo", "adm"]
//!
//! [disk]                             # Disk
//! layout = "uefi"
//! size = "2GiB"
//! ephemeral = false
//! fstab = ["tmpfs /tmp tmpfs defaults,nosuid,nodev 0 0"]
//!
//! [boot]                             # Boot
//! cmdline = ["console=ttyS0", "console=hvc0"]
//!
//! [[users]]                          # extra users (User)
//! name = "deploy"
//! uid = 1001
//!
//! [[groups]]                         # extra groups (Group)
//! name = "ops"
//!
//! [[files]]                          # files (FileSpec)
//! path = "/etc/motd"
//! content = "hello\n"
//! mode = "0644"
//! ```
//!
//! The commented default recipe (`default-recipe.toml` in this crate) lists
//! every field with its default value.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The embedded default recipe, with every field written out and commented.
/// Parsing it gives [`Recipe::default`].
pub const DEFAULT_RECIPE: &str = include_str!("default-recipe.toml");

/// Errors from reading a recipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecipeError {
    /// The text is not valid TOML, or does not match the recipe's schema
    /// (unknown field, wrong type, bad value).
    #[error("recipe {origin}: line {line}, column {column}: {message}")]
    Parse {
        /// Where the recipe came from (a path, or `<default>`).
        origin: String,
        /// 1-based line of the error (0 when toml gave no position).
        line: usize,
        /// 1-based column of the error (0 when toml gave no position).
        column: usize,
        /// toml's description of the problem.
        message: String,
    },
    /// The recipe parsed but is inconsistent.
    #[error("recipe {origin}: {message}")]
    Invalid {
        /// Where the recipe came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The recipe could not be serialized (should not happen).
    #[error("cannot write the recipe as TOML: {0}")]
    Serialize(String),
}

/// A complete build recipe. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    /// Clamp for every timestamp in the image and the seed of its UUIDs, in
    /// seconds since the epoch. The `SOURCE_DATE_EPOCH` environment variable
    /// and `--source-date-epoch` override it; with none of the three, the
    /// build takes the newest `Date` of the Release files it read (so the
    /// same mirror state gives the same image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    /// The Debian release and where to get it.
    pub debian: Debian,
    /// What to install.
    pub packages: Packages,
    /// Host name, units and other system-wide settings.
    pub system: System,
    /// The administrator account (SSH key from the instance metadata,
    /// passwordless sudo). Fields left out keep the defaults of
    /// [`User::admin`], so `[admin]` with only `name = "ops"` still gets
    /// sudo and the `sudo`/`adm` groups.
    #[serde(deserialize_with = "de_admin")]
    pub admin: User,
    /// The disk: layout, size and `/etc/fstab`.
    pub disk: Disk,
    /// The kernel command line.
    pub boot: Boot,
    /// Additional users, created after the packages' system users.
    pub users: Vec<User>,
    /// Additional groups, created before the additional users.
    pub groups: Vec<Group>,
    /// Files to put into the image, last (they replace anything there).
    pub files: Vec<FileSpec>,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            source_date_epoch: None,
            debian: Debian::default(),
            packages: Packages::default(),
            system: System::default(),
            admin: User::admin(),
            disk: Disk::default(),
            boot: Boot::default(),
            users: Vec::new(),
            groups: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// `[debian]`: the release and the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Debian {
    /// The release's code name (default `bookworm`).
    pub suite: String,
    /// The Debian architecture (default `amd64`).
    pub architecture: String,
    /// The suites to read, e.g. `["bookworm", "bookworm-updates"]`. Unset:
    /// the suites of the host's apt configuration for this release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suites: Option<Vec<String>>,
    /// The archive's base URL. Unset: the host's apt configuration. The
    /// `--mirror` option overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
}

impl Default for Debian {
    fn default() -> Self {
        Debian {
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            suites: None,
            mirror: None,
        }
    }
}

/// The base package set, as debootstrap and mmdebstrap name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Only the listed packages and their dependencies.
    Custom,
    /// `Essential: yes` packages.
    Essential,
    /// Essential, `Priority: required` and `apt`.
    Minbase,
    /// Essential, required and important (the default).
    #[default]
    Default,
}

/// `[packages]`: what to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Packages {
    /// The base set (default `default`).
    pub variant: Variant,
    /// The packages the image needs to boot and be reached over SSH
    /// (default `sudo openssh-server wget ifupdown isc-dhcp-client
    /// makedev`). Replace it only knowingly; add packages with `extra`.
    pub include: Vec<String>,
    /// Further packages: `name` or `name=version`.
    pub extra: Vec<String>,
    /// The kernel package (default `linux-image-cloud-amd64`; the generic
    /// `linux-image-amd64` also works).
    pub kernel: String,
    /// Whether to follow `Recommends` (default `false`, as debootstrap).
    pub recommends: bool,
}

impl Default for Packages {
    fn default() -> Self {
        Packages {
            variant: Variant::Default,
            include: [
                "sudo",
                "openssh-server",
                "wget",
                "ifupdown",
                "isc-dhcp-client",
                "makedev",
            ]
            .map(String::from)
            .to_vec(),
            extra: Vec::new(),
            kernel: "linux-image-cloud-amd64".into(),
            recommends: false,
        }
    }
}

impl Packages {
    /// Every package requested on top of the variant: `include`, the
    /// kernel, then `extra`, without duplicates, in that order.
    pub fn requested(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self
            .include
            .iter()
            .chain(std::iter::once(&self.kernel))
            .chain(&self.extra)
        {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

/// `[system]`: system-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct System {
    /// The host name written to `/etc/hostname` and `/etc/hosts` (default
    /// `debian`). A label of letters, digits and `-`, or several joined by
    /// dots.
    pub hostname: String,
    /// Systemd units to enable in addition to what the packages enable, as
    /// `systemctl enable` would (their `[Install]` sections decide the
    /// links). A unit that is not in the image is an error.
    pub units: Vec<String>,
}

impl Default for System {
    fn default() -> Self {
        System {
            hostname: "debian".into(),
            units: Vec::new(),
        }
    }
}

/// A user account: `[admin]` and each `[[users]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id; unset: the first free id from 1000 on. The user's primary
    /// group is a new group of the same name (with the same id when free),
    /// Debian's user private groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Supplementary groups, which must exist in the image (from the
    /// packages or `[[groups]]`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Full name for the GECOS field.
    #[serde(default)]
    pub gecos: String,
    /// Home directory; unset: `/home/NAME`, created from `/etc/skel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Login shell (default `/bin/bash`).
    #[serde(default = "default_shell")]
    pub shell: String,
    /// Passwordless sudo through `/etc/sudoers.d/NAME` (default `false`,
    /// `true` for `[admin]`).
    #[serde(default)]
    pub sudo: bool,
}

fn default_shell() -> String {
    "/bin/bash".into()
}

impl User {
    /// The default administrator: `admin`, groups `sudo` and `adm`,
    /// passwordless sudo, `/bin/bash`.
    pub fn admin() -> User {
        User {
            name: "admin".into(),
            uid: None,
            groups: vec!["sudo".into(), "adm".into()],
            gecos: String::new(),
            home: None,
            shell: default_shell(),
            sudo: true,
        }
    }

    /// The home directory: `home`, or `/home/NAME`.
    pub fn home_dir(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }
}

/// `[admin]` as written: every field optional, applied over
/// [`User::admin`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminPatch {
    name: Option<String>,
    uid: Option<u32>,
    groups: Option<Vec<String>>,
    gecos: Option<String>,
    home: Option<String>,
    shell: Option<String>,
    sudo: Option<bool>,
}

fn de_admin<'de, D: serde::Deserializer<'de>>(d: D) -> Result<User, D::Error> {
    let p = AdminPatch::deserialize(d)?;
    let mut u = User::admin();
    if let Some(v) = p.name {
        u.name = v;
    }
    u.uid = p.uid.or(u.uid);
    if let Some(v) = p.groups {
        u.groups = v;
    }
    if let Some(v) = p.gecos {
        u.gecos = v;
    }
    u.home = p.home.or(u.home);
    if let Some(v) = p.shell {
        u.shell = v;
    }
    if let Some(v) = p.sudo {
        u.sudo = v;
    }
    Ok(u)
}

/// An additional group: each `[[groups]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id; unset: the first free id from 1000 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// How the disk is laid out for the boot loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// A GPT disk with an EFI system partition and the root partition
    /// (current EC2 instance types). The default.
    #[default]
    Uefi,
    /// The filesystem on the whole disk, for PV-GRUB's `hd0`
    /// (the classic tutorial's layout).
    Pvgrub,
    /// The filesystem in MBR partition 1, for PV-GRUB's `hd00`.
    PvgrubMbr,
}

impl Layout {
    /// The name used in recipes and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Uefi => "uefi",
            Layout::Pvgrub => "pvgrub",
            Layout::PvgrubMbr => "pvgrub-mbr",
        }
    }

    /// Whether PV-GRUB boots it (it then needs `/boot/grub/menu.lst` and
    /// the PV-GRUB-safe ext4 profile).
    pub fn is_pvgrub(self) -> bool {
        matches!(self, Layout::Pvgrub | Layout::PvgrubMbr)
    }
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uefi" => Ok(Layout::Uefi),
            "pvgrub" => Ok(Layout::Pvgrub),
            "pvgrub-mbr" => Ok(Layout::PvgrubMbr),
            _ => Err(format!(
                "unknown layout {s:?} (expected uefi, pvgrub or pvgrub-mbr)"
            )),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The size of the root filesystem: a number of bytes with an optional
/// binary (`KiB`, `MiB`, `GiB`, `TiB`, or `K`, `M`, `G`, `T`) suffix, or
/// `fit` (the smallest size that holds the tree) optionally with headroom,
/// `fit+20%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DiskSize {
    /// Exactly this many bytes.
    Bytes(u64),
    /// The smallest fitting size plus this many percent of free blocks.
    Fit(u32),
}

impl std::str::FromStr for DiskSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(rest) = t.strip_prefix("fit") {
            if rest.is_empty() {
                return Ok(DiskSize::Fit(0));
            }
            let pct = rest
                .strip_prefix('+')
                .and_then(|r| r.strip_suffix('%'))
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| format!("bad size {s:?}: expected `fit` or `fit+N%`"))?;
            return Ok(DiskSize::Fit(pct));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("bad size {s:?}: expected a number of bytes, e.g. 2GiB"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            u => return Err(format!("bad size {s:?}: unknown unit {u:?}")),
        };
        let bytes = n
            .checked_mul(mult)
            .ok_or_else(|| format!("size {s:?} is too large"))?;
        if bytes == 0 {
            return Err("the disk size must not be zero".into());
        }
        Ok(DiskSize::Bytes(bytes))
    }
}

impl TryFrom<String> for DiskSize {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DiskSize> for String {
    fn from(s: DiskSize) -> String {
        s.to_string()
    }
}

impl fmt::Display for DiskSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DiskSize::Fit(0) => f.write_str("fit"),
            DiskSize::Fit(p) => write!(f, "fit+{p}%"),
            DiskSize::Bytes(b) => {
                for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
                    if b % (1u64 << shift) == 0 {
                        return write!(f, "{}{unit}", b >> shift);
                    }
                }
                write!(f, "{b}")
            }
        }
    }
}

/// `[disk]`: layout, size and `/etc/fstab`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Disk {
    /// The boot layout (default `uefi`).
    pub layout: Layout,
    /// Size of the root filesystem (default `2GiB`).
    pub size: DiskSize,
    /// Add the classic tutorial's instance-store lines to `/etc/fstab`:
    /// `/dev/xvdb` on `/mnt` and `/dev/xvda3` as swap, both `nofail` so an
    /// instance without them still boots (default `false`).
    pub ephemeral: bool,
    /// Extra `/etc/fstab` lines, written after the root line.
    pub fstab: Vec<String>,
}

impl Default for Disk {
    fn default() -> Self {
        Disk {
            layout: Layout::Uefi,
            size: DiskSize::Bytes(2 << 30),
            ephemeral: false,
            fstab: Vec::new(),
        }
    }
}

/// `[boot]`: the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Boot {
    /// Kernel parameters after `root=LABEL=rootfs ro` (default
    /// `console=ttyS0 console=hvc0`). `net.ifnames=0` is always added (the
    /// network configuration names `eth0`); see [`Boot::kernel_cmdline`].
    pub cmdline: Vec<String>,
}

impl Default for Boot {
    fn default() -> Self {
        Boot {
            cmdline: vec!["console=ttyS0".into(), "console=hvc0".into()],
        }
    }
}

impl Boot {
    /// The full command line: `root=LABEL=rootfs ro`, the recipe's
    /// parameters, then `net.ifnames=0` unless already given.
    pub fn kernel_cmdline(&self) -> String {
        let mut parts: Vec<&str> = vec!["root=LABEL=rootfs", "ro"];
        parts.extend(self.cmdline.iter().map(String::as_str));
        if !self.cmdline.iter().any(|p| p == "net.ifnames=0") {
            parts.push("net.ifnames=0");
        }
        parts.join(" ")
    }
}

/// A file to put into the image: each `[[files]]`. Exactly one of
/// `content` and `source` must be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path in the image. Missing parent directories are created
    /// (0755 root:root).
    pub path: String,
    /// The file's contents, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A host file to copy, relative to the recipe's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Permission bits as an octal string (default `"0644"`).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Owner, a user name from the image or a number (default `root`).
    #[serde(default = "default_owner")]
    pub owner: String,
    /// Group, a group name from the image or a number (default `root`).
    #[serde(default = "default_owner")]
    pub group: String,
}

fn default_mode() -> String {
    "0644".into()
}

fn default_owner() -> String {
    "root".into()
}

impl FileSpec {
    /// The permission bits of `mode`.
    ///
    /// # Errors
    /// `mode` is not an octal number up to `7777`.
    pub fn mode_bits(&self) -> Result<u16, String> {
        u16::from_str_radix(&self.mode, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("{}: bad mode {:?} (expected octal)", self.path, self.mode))
    }
}

impl Recipe {
    /// Parses a recipe. `origin` names it in errors (a path, or
    /// `<default>`). Missing fields take their defaults.
    ///
    /// # Errors
    /// [`RecipeError::Parse`] for TOML or schema errors,
    /// [`RecipeError::Invalid`] for inconsistent values
    /// (see [`validate`](Self::validate)).
    pub fn parse(text: &str, origin: &str) -> Result<Recipe, RecipeError> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            RecipeError::Parse {
                origin: origin.into(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        recipe.validate().map_err(|message| RecipeError::Invalid {
            origin: origin.into(),
            message,
        })?;
        Ok(recipe)
    }

    /// The embedded default recipe, parsed.
    pub fn embedded_default() -> Recipe {
        Recipe::parse(DEFAULT_RECIPE, "<default>").expect("the embedded default recipe is valid")
    }

    /// The recipe as TOML (every field that has a value).
    ///
    /// # Errors
    /// Only if serialization fails, which the types rule out.
    pub fn to_toml(&self) -> Result<String, RecipeError> {
        toml::to_string(self).map_err(|e| RecipeError::Serialize(e.to_string()))
    }

    /// Checks what the types cannot: a valid host name, absolute file paths
    /// with exactly one content source and octal modes, names of users and
    /// groups that useradd would accept, no duplicate users or groups.
    ///
    /// # Errors
    /// A message describing the first problem.
    pub fn validate(&self) -> Result<(), String> {
        let h = &self.system.hostname;
        if h.is_empty()
            || h.len() > 253
            || h.split('.').any(|label| {
                label.is_empty()
                    || label.len() > 63
                    || label.starts_with('-')
                    || label.ends_with('-')
                    || !label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        {
            return Err(format!("system.hostname {h:?} is not a valid host name"));
        }
        if self.packages.kernel.trim().is_empty() {
            return Err("packages.kernel must name a kernel package".into());
        }
        let mut names: Vec<&str> = Vec::new();
        for u in std::iter::once(&self.admin).chain(&self.users) {
            if !valid_account_name(&u.name) {
                return Err(format!("user name {:?} is not valid", u.name));
            }
            if names.contains(&u.name.as_str()) {
                return Err(format!("user {:?} is defined twice", u.name));
            }
            names.push(&u.name);
            if let Some(home) = &u.home {
                if !home.starts_with('/') {
                    return Err(format!("user {:?}: home must be absolute", u.name));
                }
            }
        }
        let mut gnames: Vec<&str> = Vec::new();
        for g in &self.groups {
            if !valid_account_name(&g.name) {
                return Err(format!("group name {:?} is not valid", g.name));
            }
            if gnames.contains(&g.name.as_str()) {
                return Err(format!("group {:?} is defined twice", g.name));
            }
            gnames.push(&g.name);
        }
        for f in &self.files {
            if !f.path.starts_with('/') || f.path.split('/').any(|c| c == "..") {
                return Err(format!(
                    "files: path {:?} must be absolute without `..`",
                    f.path
                ));
            }
            match (&f.content, &f.source) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "files: {} needs exactly one of `content` and `source`",
                        f.path
                    ))
                }
            }
            f.mode_bits()?;
        }
        for line in &self.disk.fstab {
            if line.contains('\n') {
                return Err("disk.fstab: one line per entry".into());
            }
        }
        Ok(())
    }
}

/// Whether `name` is a login or group name Debian's useradd accepts by
/// default: starts with a lower-case letter or `_`, then lower-case
/// letters, digits, `_` and `-`, at most 32 characters.
pub fn valid_account_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_equals_default() {
        let r = Recipe::embedded_default();
        assert_eq!(r, Recipe::default());
        assert_eq!(Recipe::parse("", "empty").unwrap(), Recipe::default());
        assert_eq!(r.debian.suite, "bookworm");
        assert_eq!(r.packages.kernel, "linux-image-cloud-amd64");
        assert_eq!(r.admin.name, "admin");
        assert!(r.admin.sudo);
        assert_eq!(r.disk.layout, Layout::Uefi);
    }

    #[test]
    fn round_trip_full_recipe() {
        let mut r = Recipe {
            source_date_epoch: Some(1_700_000_000),
            ..Recipe::default()
        };
        r.debian.suites = Some(vec!["bookworm".into(), "bookworm-updates".into()]);
        r.debian.mirror = Some("http://127.0.0.1:1/debian".into());
        r.packages.extra = vec!["less".into(), "curl=7.88".into()];
        r.packages.kernel = "linux-image-amd64".into();
        r.packages.recommends = true;
        r.system.hostname = "web-1.example".into();
        r.system.units = vec!["foo.service".into()];
        r.disk.layout = Layout::PvgrubMbr;
        r.disk.size = DiskSize::Fit(15);
        r.disk.ephemeral = true;
        r.disk.fstab = vec!["tmpfs /tmp tmpfs defaults 0 0".into()];
        r.boot.cmdline = vec!["quiet".into()];
        r.users.push(User {
            name: "deploy".into(),
            uid: Some(1500),
            groups: vec![],
            gecos: "Deployer".into(),
            home: Some("/srv/deploy".into()),
            shell: "/bin/sh".into(),
            sudo: false,
        });
        r.groups.push(Group {
            name: "ops".into(),
            gid: Some(1400),
        });
        r.files.push(FileSpec {
            path: "/etc/motd".into(),
            content: Some("hi\n".into()),
            source: None,
            mode: "0600".into(),
            owner: "deploy".into(),
            group: "0".into(),
        });
        r.files.push(FileSpec {
            path: "/usr/local/bin/x".into(),
            content: None,
            source: Some("x.sh".into()),
            mode: "4755".into(),
            owner: "root".into(),
            group: "root".into(),
        });
        let text = r.to_toml().unwrap();
        let back = Recipe::parse(&text, "rt").unwrap();
        assert_eq!(back, r);
        assert!(!Recipe::default().to_toml().unwrap().is_empty());
        assert_eq!(
            Recipe::parse(&Recipe::default().to_toml().unwrap(), "d").unwrap(),
            Recipe::default()
        );
    }

    #[test]
    fn unknown_field_is_an_error_with_position() {
        let text = "[system]\nhostname = \"a\"\nhostnam = \"b\"\n";
        match Recipe::parse(text, "r.toml").unwrap_err() {
            RecipeError::Parse {
                origin,
                line,
                column,
                message,
            } => {
                assert_eq!(origin, "r.toml");
                assert_eq!(line, 3);
                assert_eq!(column, 1);
                assert!(message.contains("hostnam"), "{message}");
            }
            e => panic!("{e}"),
        }
        let e = Recipe::parse("colour = 1\n", "x").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn type_and_value_errors() {
        let e = Recipe::parse("[disk]\nsize = 12\n", "x").unwrap_err();
        assert!(matches!(e, RecipeError::Parse { line: 2, .. }), "{e}");
        let e = Recipe::parse("[disk]\nlayout = \"bios\"\n", "x").unwrap_err();
        assert!(matches!(e, RecipeError::Parse { line: 2, .. }), "{e}");
        let e = Recipe::parse("[disk]\nsize = \"2XB\"\n", "x").unwrap_err();
        assert!(e.to_string().contains("unknown unit"), "{e}");
        let e = Recipe::parse("[system]\nhostname = \"bad_name\"\n", "x").unwrap_err();
        assert!(matches!(e, RecipeError::Invalid { .. }), "{e}");
        let e = Recipe::parse("[[files]]\npath = \"/a\"\n", "x").unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
        let e = Recipe::parse("[[files]]\npath = \"a\"\ncontent = \"\"\n", "x").unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = Recipe::parse(
            "[[files]]\npath = \"/a\"\ncontent = \"\"\nmode = \"0999\"\n",
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad mode"), "{e}");
        let e = Recipe::parse("[[users]]\nname = \"admin\"\n", "x").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = Recipe::parse("[[users]]\nname = \"Bob\"\n", "x").unwrap_err();
        assert!(e.to_string().contains("not valid"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!("2GiB".parse::<DiskSize>(), Ok(DiskSize::Bytes(2 << 30)));
        assert_eq!("512M".parse::<DiskSize>(), Ok(DiskSize::Bytes(512 << 20)));
        assert_eq!("4096".parse::<DiskSize>(), Ok(DiskSize::Bytes(4096)));
        assert_eq!("fit".parse::<DiskSize>(), Ok(DiskSize::Fit(0)));
        assert_eq!("fit+20%".parse::<DiskSize>(), Ok(DiskSize::Fit(20)));
        assert!("fit+x".parse::<DiskSize>().is_err());
        assert!("0".parse::<DiskSize>().is_err());
        assert!("99999999999T".parse::<DiskSize>().is_err());
        for s in ["2GiB", "3MiB", "4097", "fit", "fit+5%"] {
            assert_eq!(s.parse::<DiskSize>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn cmdline_and_requested_packages() {
        let mut b = Boot::default();
        assert_eq!(
            b.kernel_cmdline(),
            "root=LABEL=rootfs ro console=ttyS0 console=hvc0 net.ifnames=0"
        );
        b.cmdline = vec!["net.ifnames=0".into(), "quiet".into()];
        assert_eq!(
            b.kernel_cmdline(),
            "root=LABEL=rootfs ro net.ifnames=0 quiet"
        );
        let p = Packages {
            extra: vec!["sudo".into(), "less".into()],
            ..Packages::default()
        };
        assert_eq!(
            p.requested(),
            [
                "sudo",
                "openssh-server",
                "wget",
                "ifupdown",
                "isc-dhcp-client",
                "makedev",
                "linux-image-cloud-amd64",
                "less"
            ]
        );
    }

    #[test]
    fn partial_admin_keeps_admin_defaults() {
        let r = Recipe::parse("[admin]\nname = \"ops\"\nuid = 2000\n", "x").unwrap();
        assert_eq!(r.admin.name, "ops");
        assert_eq!(r.admin.uid, Some(2000));
        assert!(r.admin.sudo);
        assert_eq!(r.admin.groups, ["sudo", "adm"]);
        assert_eq!(r.admin.home_dir(), "/home/ops");
        let r = Recipe::parse("[[users]]\nname = \"bob\"\n", "x").unwrap();
        assert!(!r.users[0].sudo);
        assert!(r.users[0].groups.is_empty());
        assert_eq!(r.users[0].shell, "/bin/bash");
        let e = Recipe::parse("[admin]\nsudoo = true\n", "x").unwrap_err();
        assert!(matches!(e, RecipeError::Parse { line: 2, .. }), "{e}");
    }

    #[test]
    fn layouts() {
        for l in [Layout::Uefi, Layout::Pvgrub, Layout::PvgrubMbr] {
            assert_eq!(l.as_str().parse::<Layout>(), Ok(l));
        }
        assert!(Layout::PvgrubMbr.is_pvgrub());
        assert!(!Layout::Uefi.is_pvgrub());
        assert!("bios".parse::<Layout>().is_err());
    }
}
