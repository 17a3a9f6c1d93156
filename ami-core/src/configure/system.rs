//! The many small file-level effects of the packages' postinsts: files
//! copied from templates under `/usr/share`, empty state files, directory
//! skeletons, stat overrides and file capabilities.
//!
//! [`apply`] runs the effects of every installed package that has one, in a
//! fixed order; each effect is also a public function of its own. Every
//! effect does what the postinst does on a *fresh* install (`$2` empty):
//! files the postinst only creates when missing are left alone when the
//! tree already has them.

use super::accounts::Accounts;
use super::{
    exists, list_dir, md5_hex, read_file, read_required, realpath, resolve, resolve_follow,
    write_dir, write_file, write_symlink, ConfigureError,
};
use crate::{Metadata, NodeKind, Timestamp, Tree};

/// Settings that debconf questions would otherwise provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemOptions {
    /// The time zone (`Area/Zone` under `/usr/share/zoneinfo`), tzdata's
    /// debconf default `Etc/UTC` unless changed.
    pub timezone: String,
}

impl Default for SystemOptions {
    fn default() -> Self {
        SystemOptions {
            timezone: "Etc/UTC".into(),
        }
    }
}

/// The `security.capability` value for `cap_net_raw+ep`: revision 2 with
/// the effective flag, permitted = 1 << CAP_NET_RAW (13), nothing
/// inheritable, little-endian (the VFS format `getxattr(2)` returns).
pub const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic: VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x20, 0x00, 0x00, // permitted[0]
    0x00, 0x00, 0x00, 0x00, // inheritable[0]
    0x00, 0x00, 0x00, 0x00, // permitted[1]
    0x00, 0x00, 0x00, 0x00, // inheritable[1]
];

/// The packages whose effects [`apply`] reproduces, in the order they are
/// applied.
pub const PACKAGES: &[&str] = &[
    "base-files",
    "debianutils",
    "libc-bin",
    "readline-common",
    "ucf",
    "openssh-server",
    "libwrap0",
    "kmod",
    "initramfs-tools-core",
    "libpam-modules",
    "login",
    "tzdata",
    "netbase",
    "sudo",
    "cron-daemon-common",
    "cron",
    "openssh-client",
    "iputils-ping",
    "systemd",
];

/// Applies the effects of every package of `installed` listed in
/// [`PACKAGES`]. `accounts` must already hold the groups the effects use
/// (`mail`, `utmp`, `crontab`, `_ssh`, `systemd-journal`).
///
/// # Errors
/// A template the postinst copies is missing, or a group is unknown.
pub fn apply(
    tree: &mut Tree,
    installed: &[&str],
    accounts: &Accounts,
    opts: &SystemOptions,
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    for pkg in PACKAGES {
        if !installed.contains(pkg) {
            continue;
        }
        match *pkg {
            "base-files" => base_files(tree, accounts, epoch)?,
            "debianutils" => shells(tree, epoch)?,
            "libc-bin" => copy_default(
                tree,
                "/usr/share/libc-bin/nsswitch.conf",
                "/etc/nsswitch.conf",
                epoch,
            )?,
            "readline-common" => {
                copy_default(tree, "/usr/share/readline/inputrc", "/etc/inputrc", epoch)?
            }
            "ucf" => {
                create_missing(tree, "/var/lib/ucf/hashfile", "", 0o644, epoch)?;
                create_missing(tree, "/var/lib/ucf/registry", "", 0o644, epoch)?;
            }
            "openssh-server" => sshd_config(tree, epoch)?,
            "libwrap0" => hosts_access(tree, epoch)?,
            "kmod" => create_missing(tree, "/etc/modules", ETC_MODULES, 0o644, epoch)?,
            "initramfs-tools-core" => initramfs_modules(tree, epoch)?,
            "libpam-modules" => {
                create_missing(tree, "/etc/security/opasswd", "", 0o600, epoch)?;
                create_missing(tree, "/etc/environment", "", 0o644, epoch)?;
            }
            "login" => {
                for p in ["/var/log/faillog", "/etc/subuid", "/etc/subgid"] {
                    create_missing(tree, p, "", 0o644, epoch)?;
                }
            }
            "tzdata" => timezone(tree, &opts.timezone, epoch)?,
            "netbase" => {
                create_missing(tree, "/etc/hosts", ETC_HOSTS, 0o644, epoch)?;
                create_missing(tree, "/etc/networks", ETC_NETWORKS, 0o644, epoch)?;
            }
            "sudo" => set_owner_mode(tree, "/etc/sudoers", 0, 0, 0o440)?,
            "cron-daemon-common" => {
                let gid = group(accounts, "crontab")?;
                write_dir(
                    tree,
                    "/var/spool/cron/crontabs",
                    Metadata::new(0o1730).owner(0, gid),
                    epoch,
                )?;
            }
            "cron" => {
                let gid = group(accounts, "crontab")?;
                stat_override(
                    tree,
                    "root",
                    "crontab",
                    0,
                    gid,
                    0o2755,
                    "/usr/bin/crontab",
                    epoch,
                )?;
            }
            "openssh-client" => {
                let gid = group(accounts, "_ssh")?;
                set_owner_mode(tree, "/usr/bin/ssh-agent", 0, gid, 0o2755)?;
            }
            "iputils-ping" => ping_capability(tree)?,
            "systemd" => {
                let gid = group(accounts, "systemd-journal")?;
                write_dir(
                    tree,
                    "/var/log/journal",
                    Metadata::new(0o2755).owner(0, gid),
                    epoch,
                )?;
                create_missing(tree, "/etc/machine-id", "", 0o444, epoch)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn group(accounts: &Accounts, name: &str) -> Result<u32, ConfigureError> {
    accounts
        .gid(name)
        .ok_or_else(|| ConfigureError::Accounts(format!("no group {name}")))
}

/// `cp -p SRC DST` unless DST exists: the copy keeps the template's mode,
/// owner and times.
///
/// # Errors
/// The template is missing.
pub fn copy_default(
    tree: &mut Tree,
    src: &str,
    dst: &str,
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    if exists(tree, dst) {
        return Ok(());
    }
    let data = read_required(tree, src)?;
    let meta = resolve_follow(tree, src.as_bytes())
        .map(|id| tree.node(id).meta.clone())
        .unwrap_or_else(|| Metadata::new(0o644));
    let id = write_file(tree, dst, data, meta.clone(), epoch)?;
    // Keep the template's own times, as `cp -p` does.
    tree.node_mut(id).meta = meta;
    Ok(())
}

/// Creates `path` with `contents` and `mode` (root:root) unless it exists.
///
/// # Errors
/// A parent is not a directory.
pub fn create_missing(
    tree: &mut Tree,
    path: &str,
    contents: &str,
    mode: u16,
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    if !exists(tree, path) {
        write_file(tree, path, contents, Metadata::new(mode), epoch)?;
    }
    Ok(())
}

/// Sets owner and mode of an existing path (symlinks followed); a missing
/// path is left alone (the postinsts guard with `[ -f ]`).
///
/// # Errors
/// None today; kept fallible for symmetry with the other effects.
pub fn set_owner_mode(
    tree: &mut Tree,
    path: &str,
    uid: u32,
    gid: u32,
    mode: u16,
) -> Result<(), ConfigureError> {
    if let Some(id) = resolve_follow(tree, path.as_bytes()) {
        let m = &mut tree.node_mut(id).meta;
        m.uid = uid;
        m.gid = gid;
        m.mode = mode & 0o7777;
    }
    Ok(())
}

/// `dpkg-statoverride --update --add USER GROUP MODE PATH`: applies owner
/// and mode and appends the line to `/var/lib/dpkg/statoverride`.
///
/// # Errors
/// The statoverride file cannot be read or written.
#[allow(clippy::too_many_arguments)]
pub fn stat_override(
    tree: &mut Tree,
    user: &str,
    group: &str,
    uid: u32,
    gid: u32,
    mode: u16,
    path: &str,
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    set_owner_mode(tree, path, uid, gid, mode)?;
    let file = "/var/lib/dpkg/statoverride";
    let mut text = read_file(tree, file)?.unwrap_or_default();
    let line = format!("{user} {group} {mode:o} {path}\n");
    if !String::from_utf8_lossy(&text)
        .lines()
        .any(|l| l.ends_with(&format!(" {path}")))
    {
        text.extend_from_slice(line.as_bytes());
    }
    write_file(tree, file, text, Metadata::new(0o644), epoch)?;
    Ok(())
}

/// base-files' postinst on a fresh install.
///
/// # Errors
/// A template under `/usr/share/base-files` is missing, or the `mail` or
/// `utmp` group is unknown.
pub fn base_files(
    tree: &mut Tree,
    accounts: &Accounts,
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    if !exists(tree, "/etc/dpkg/origins/default") && exists(tree, "/etc/dpkg/origins/debian") {
        write_symlink(tree, "/etc/dpkg/origins/default", "debian", epoch)?;
    }
    for (src, dst) in [
        ("dot.profile", "/root/.profile"),
        ("dot.bashrc", "/root/.bashrc"),
        ("profile", "/etc/profile"),
        ("motd", "/etc/motd"),
    ] {
        copy_default(tree, &format!("/usr/share/base-files/{src}"), dst, epoch)?;
    }
    let mail = group(accounts, "mail")?;
    for (dir, mode, gid) in [
        ("/mnt", 0o755, 0),
        ("/srv", 0o755, 0),
        ("/opt", 0o755, 0),
        ("/etc/opt", 0o755, 0),
        ("/var/opt", 0o755, 0),
        ("/media", 0o755, 0),
        ("/var/mail", 0o2775, mail),
        ("/run/lock", 0o1777, 0),
    ] {
        if !exists(tree, dir) {
            write_dir(tree, dir, Metadata::new(mode).owner(0, gid), epoch)?;
        }
    }
    if !is_symlink(tree, "/var/spool/mail") {
        write_symlink(tree, "/var/spool/mail", "../mail", epoch)?;
    }
    for (dir, target) in [("/var/run", "/run"), ("/var/lock", "/run/lock")] {
        if !is_symlink(tree, dir) {
            write_symlink(tree, dir, target, epoch)?;
        }
    }
    for dir in [
        "/usr/local",
        "/usr/local/share",
        "/usr/local/share/man",
        "/usr/local/bin",
        "/usr/local/games",
        "/usr/local/lib",
        "/usr/local/include",
        "/usr/local/sbin",
        "/usr/local/src",
        "/usr/local/etc",
    ] {
        if !exists(tree, dir) {
            write_dir(tree, dir, Metadata::new(0o755), epoch)?;
        }
    }
    write_symlink(tree, "/usr/local/man", "share/man", epoch)?;
    let utmp = group(accounts, "utmp")?;
    for (file, mode) in [
        ("/var/log/wtmp", 0o664),
        ("/var/log/btmp", 0o660),
        ("/var/log/lastlog", 0o664),
    ] {
        create_missing(tree, file, "", mode, epoch)?;
        set_owner_mode(tree, file, 0, utmp, mode)?;
    }
    if exists(tree, "/usr/share/info")
        && !exists(tree, "/usr/info/dir")
        && !exists(tree, "/usr/share/info/dir")
    {
        copy_default(
            tree,
            "/usr/share/base-files/info.dir",
            "/usr/share/info/dir",
            epoch,
        )?;
        if let Some(id) = resolve(tree, b"/usr/share/info/dir") {
            tree.node_mut(id).meta.mode = 0o644;
        }
    }
    Ok(())
}

fn is_symlink(tree: &Tree, path: &str) -> bool {
    resolve(tree, path.as_bytes())
        .is_some_and(|id| matches!(tree.node(id).kind, NodeKind::Symlink(_)))
}

/// debianutils: copy `/usr/share/debianutils/shells` to `/etc/shells`, then
/// what `update-shells` does: every shell listed by the template and by
/// `/usr/share/debianutils/shells.d/*` (plus its canonical path when a
/// directory on the way is a symlink, e.g. `/usr/bin/sh` for `/bin/sh` on
/// merged /usr) is added, and `/var/lib/shells.state` lists them all.
///
/// # Errors
/// The template is missing.
pub fn shells(tree: &mut Tree, epoch: Timestamp) -> Result<(), ConfigureError> {
    let template = "/usr/share/debianutils/shells";
    copy_default(tree, template, "/etc/shells", epoch)?;
    let mut sources = vec![template.to_owned()];
    for name in list_dir(tree, "/usr/share/debianutils/shells.d") {
        sources.push(format!(
            "/usr/share/debianutils/shells.d/{}",
            String::from_utf8_lossy(&name)
        ));
    }
    let mut pkg_shells: Vec<String> = Vec::new();
    for src in &sources {
        let Some(data) = read_file(tree, src)? else {
            continue;
        };
        for line in String::from_utf8_lossy(&data).lines() {
            let shell = line.split('#').next().unwrap_or("");
            if shell.is_empty() {
                continue;
            }
            pkg_shells.push(shell.to_owned());
            let (dir, base) = shell.rsplit_once('/').unwrap_or((".", shell));
            let dir = if dir.is_empty() { "/" } else { dir };
            if let Some(real) = realpath(tree, dir.as_bytes()) {
                let real = String::from_utf8_lossy(&real);
                let real = if real == "/" {
                    format!("/{base}")
                } else {
                    format!("{real}/{base}")
                };
                if real != shell {
                    pkg_shells.push(real);
                }
            }
        }
    }
    let state_shells: Vec<String> = read_file(tree, "/var/lib/shells.state")?
        .map(|d| {
            String::from_utf8_lossy(&d)
                .lines()
                .filter_map(|l| l.split('#').next())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let etc_id = resolve_follow(tree, b"/etc/shells");
    let etc_meta = etc_id.map(|id| tree.node(id).meta.clone());
    let current = read_required(tree, "/etc/shells")?;
    let mut out = String::new();
    let mut etc_shells: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&current).lines() {
        let shell = line.split('#').next().unwrap_or("").to_owned();
        let keep =
            shell.is_empty() || pkg_shells.contains(&shell) || !state_shells.contains(&shell);
        if keep && (shell.is_empty() || !etc_shells.contains(&shell)) {
            out += line;
            out.push('\n');
            etc_shells.push(shell);
        }
    }
    let mut state = String::new();
    for shell in &pkg_shells {
        state += shell;
        state.push('\n');
        if !etc_shells.contains(shell) && !state_shells.contains(shell) {
            out += shell;
            out.push('\n');
            etc_shells.push(shell.clone());
        }
    }
    let meta = etc_meta.unwrap_or_else(|| Metadata::new(0o644));
    write_file(tree, "/etc/shells", out, meta, epoch)?;
    write_file(
        tree,
        "/var/lib/shells.state",
        state,
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

/// openssh-server: `/etc/ssh/sshd_config` from
/// `/usr/share/openssh/sshd_config` (debconf defaults: root login and
/// password authentication left as the template has them), registered with
/// ucf as unmodified: `/var/lib/ucf/registry`, `/var/lib/ucf/hashfile` and
/// the three-way cache copy.
///
/// # Errors
/// The template is missing.
pub fn sshd_config(tree: &mut Tree, epoch: Timestamp) -> Result<(), ConfigureError> {
    let dest = "/etc/ssh/sshd_config";
    let template = read_required(tree, "/usr/share/openssh/sshd_config")?;
    if !exists(tree, dest) {
        write_file(tree, dest, template.clone(), Metadata::new(0o644), epoch)?;
    }
    write_dir(tree, "/var/lib/ucf", Metadata::new(0o755), epoch)?;
    write_dir(tree, "/var/lib/ucf/cache", Metadata::new(0o755), epoch)?;
    append_line(
        tree,
        "/var/lib/ucf/hashfile",
        dest,
        &format!("{}  {dest}\n", md5_hex(&template)),
        epoch,
    )?;
    append_line(
        tree,
        "/var/lib/ucf/registry",
        dest,
        &format!("openssh-server \t {dest}\n"),
        epoch,
    )?;
    let cached = format!("/var/lib/ucf/cache/{}", dest.replace('/', ":"));
    write_file(tree, &cached, template, Metadata::new(0o644), epoch)?;
    // runit-helper's postinst snippet (dh_runit): enable the runit service
    // in the default runsvdir when the package ships one.
    if exists(tree, "/etc/sv/ssh") && !exists(tree, "/etc/runit/runsvdir/default/ssh") {
        write_dir(tree, "/etc/runit", Metadata::new(0o755), epoch)?;
        write_dir(tree, "/etc/runit/runsvdir", Metadata::new(0o755), epoch)?;
        write_dir(
            tree,
            "/etc/runit/runsvdir/default",
            Metadata::new(0o755),
            epoch,
        )?;
        write_symlink(
            tree,
            "/etc/runit/runsvdir/default/ssh",
            "/etc/sv/ssh",
            epoch,
        )?;
    }
    Ok(())
}

/// Replaces the line of `file` that ends with whitespace + `key` by `line`
/// (appending it when there is none), as ucf and ucfr do.
fn append_line(
    tree: &mut Tree,
    file: &str,
    key: &str,
    line: &str,
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    let old = read_file(tree, file)?.unwrap_or_default();
    let mut out = String::new();
    for l in String::from_utf8_lossy(&old).lines() {
        let ends = l
            .strip_suffix(key)
            .is_some_and(|rest| rest.ends_with(char::is_whitespace));
        if !ends {
            out += l;
            out.push('\n');
        }
    }
    out += line;
    write_file(tree, file, out, Metadata::new(0o644), epoch)?;
    Ok(())
}

/// libwrap0: the comment-only `/etc/hosts.allow` and `/etc/hosts.deny`.
///
/// # Errors
/// A parent is not a directory.
pub fn hosts_access(tree: &mut Tree, epoch: Timestamp) -> Result<(), ConfigureError> {
    create_missing(tree, "/etc/hosts.allow", HOSTS_ALLOW, 0o644, epoch)?;
    create_missing(tree, "/etc/hosts.deny", HOSTS_DENY, 0o644, epoch)
}

/// initramfs-tools-core: `/etc/initramfs-tools/modules` from
/// `/usr/share/initramfs-tools/modules` without its `###` lines.
///
/// # Errors
/// The template is missing.
pub fn initramfs_modules(tree: &mut Tree, epoch: Timestamp) -> Result<(), ConfigureError> {
    let dest = "/etc/initramfs-tools/modules";
    if exists(tree, dest) {
        return Ok(());
    }
    let src = read_required(tree, "/usr/share/initramfs-tools/modules")?;
    let mut out = Vec::new();
    for line in src.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"###") {
            out.extend_from_slice(line);
        }
    }
    write_file(tree, dest, out, Metadata::new(0o644), epoch)?;
    Ok(())
}

/// tzdata: `/etc/localtime` → `/usr/share/zoneinfo/ZONE` and
/// `/etc/timezone`.
///
/// # Errors
/// `zone` is not a file under `/usr/share/zoneinfo` in the tree.
pub fn timezone(tree: &mut Tree, zone: &str, epoch: Timestamp) -> Result<(), ConfigureError> {
    let target = format!("/usr/share/zoneinfo/{zone}");
    if zone.is_empty() || zone.contains("..") || resolve_follow(tree, target.as_bytes()).is_none() {
        return Err(ConfigureError::Missing { path: target });
    }
    write_symlink(tree, "/etc/localtime", &target, epoch)?;
    write_file(
        tree,
        "/etc/timezone",
        format!("{zone}\n"),
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

/// iputils-ping: `cap_net_raw+ep` on `/bin/ping` (and no setuid bit).
///
/// # Errors
/// None today; a missing ping is left alone.
pub fn ping_capability(tree: &mut Tree) -> Result<(), ConfigureError> {
    if let Some(id) = resolve_follow(tree, b"/bin/ping") {
        let m = &mut tree.node_mut(id).meta;
        m.xattrs.insert(
            b"security.capability".as_slice().into(),
            CAP_NET_RAW_EP.as_slice().into(),
        );
        m.mode &= !0o4000;
    }
    Ok(())
}

const ETC_MODULES: &str = "# /etc/modules: kernel modules to load at boot time.
#
# This file contains the names of kernel modules that should be loaded
# at boot time, one per line. Lines beginning with \"#\" are ignored.
# Parameters can be specified after the module name.

";

const ETC_HOSTS: &str = "127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters

";

const ETC_NETWORKS: &str = "default\t\t0.0.0.0
loopback\t127.0.0.0
link-local\t169.254.0.0

";

const HOSTS_ALLOW: &str = "# /etc/hosts.allow: list of hosts that are allowed to access the system.
#                   See the manual pages hosts_access(5) and hosts_options(5).
#
# Example:    ALL: LOCAL @some_netgroup
#             ALL: .foobar.edu EXCEPT terminalserver.foobar.edu
#
# If you're going to protect the portmapper use the name \"rpcbind\" for the
# daemon name. See rpcbind(8) and rpc.mountd(8) for further information.
#

";

const HOSTS_DENY: &str =
    "# /etc/hosts.deny: list of hosts that are _not_ allowed to access the system.
#                  See the manual pages hosts_access(5) and hosts_options(5).
#
# Example:    ALL: some.host.name, .some.domain
#             ALL EXCEPT in.fingerd: other.host.name, .other.domain
#
# If you're going to protect the portmapper use the name \"rpcbind\" for the
# daemon name. See rpcbind(8) and rpc.mountd(8) for further information.
#
# The PARANOID wildcard matches any host whose name does not match its
# address.
#
# You may wish to enable this to ensure any programs that don't
# validate looked up hostnames still leave understandable logs. In past
# versions of Debian this has been the default.
# ALL: PARANOID

";
