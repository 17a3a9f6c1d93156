//! The project's own configuration of the image: what the classic
//! tutorial did by hand after debootstrap, and what no package does.
//!
//! Each step is a function on a [`Tree`] that already holds the unpacked
//! (and natively configured) system; [`configure`] runs them all from a
//! [`Recipe`]:
//!
//! * [`write_fstab`]: the root by `LABEL=rootfs` as ext4 with `discard`,
//!   the recipe's extra lines, and optionally the tutorial's
//!   instance-store lines with `nofail`;
//! * [`write_hostname`] and [`write_hosts`];
//! * [`write_interfaces`]: `lo` and `eth0` by DHCP (the kernel command line
//!   carries `net.ifnames=0`, so the first interface is `eth0` on EC2 and
//!   in QEMU);
//! * [`add_groups`], [`add_user`] (home populated from `/etc/skel`),
//!   [`write_sudoers`];
//! * [`write_sshd_dropin`] and [`remove_host_keys`];
//! * [`install_prep_instance`]: `/etc/prep-instance` and its enabled unit,
//!   which at boot create the host keys and install the SSH key from the
//!   instance metadata service ([`PREP_INSTANCE_SCRIPT`]);
//! * [`install_growroot`]: `/usr/lib/ami/growroot` and its enabled unit,
//!   which grow the root partition and filesystem to fill a larger volume;
//! * the recipe's `system.units`, enabled as `systemctl enable` would
//!   ([`units::systemctl_enable`](super::units::systemctl_enable));
//! * [`make_dev_nodes`]: the device nodes of `MAKEDEV generic std console
//!   null zero`, as inodes in the tree (no `mknod` on the host);
//! * [`write_machine_id`]: an empty `/etc/machine-id`;
//! * [`find_kernel`] and [`write_menu_lst`]: PV-GRUB's `menu.lst` naming the
//!   real kernel and initrd;
//! * [`add_files`]: the recipe's `[[files]]`.
//!
//! Nothing here reads the build host's configuration: every value comes
//! from the recipe, the tree, or the fixed text below, and every time stamp
//! is the build's `SOURCE_DATE_EPOCH`.

use std::path::{Path, PathBuf};

use super::accounts::{Accounts, NormalUser};
use super::{
    epoch_day, list_dir, put_node, read_file, resolve, resolve_follow, write_dir, write_file,
    write_symlink, ConfigureError,
};
use crate::recipe::{Disk, FileSpec, Group, Recipe, User};
use crate::{DeviceNumber, FileData, Metadata, Node, NodeId, NodeKind, Timestamp, Tree};

/// The boot-time preparation script, before the administrator's name is
/// filled in (the `@ADMIN_USER@` placeholder); see
/// [`prep_instance_script`].
pub const PREP_INSTANCE_SCRIPT: &str = include_str!("prep-instance.sh");

/// The systemd unit that runs `/etc/prep-instance` at boot.
pub const PREP_INSTANCE_SERVICE: &str = include_str!("prep-instance.service");
/// `/usr/lib/ami/growroot`: grows the root partition (sfdisk, partx) and its
/// filesystem (resize2fs) to fill a volume larger than the image.
pub const GROWROOT_SCRIPT: &str = include_str!("growroot.sh");
/// `ami-growroot.service`, enabled in `multi-user.target`: runs
/// [`GROWROOT_SCRIPT`] at every boot (it does nothing when there is no room
/// to gain).
pub const GROWROOT_SERVICE: &str = include_str!("growroot.service");

/// The device nodes MAKEDEV creates, one per line (see the file's header).
const MAKEDEV_NODES: &str = include_str!("makedev-nodes.txt");

/// Errors of the project configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectError {
    /// A tree or account operation failed.
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    /// A `[[files]]` entry of the recipe cannot be applied.
    #[error("file {path}: {message}")]
    File {
        /// The path in the image.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Reading a file from the build host failed.
    #[error("reading {path}: {source}", path = path.display())]
    Host {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The tree has no kernel in `/boot` where one is needed.
    #[error("no kernel (/boot/vmlinuz-*) in the tree")]
    NoKernel,
}

/// What [`configure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectReport {
    /// The administrator's uid and gid.
    pub admin_ids: (u32, u32),
    /// The kernel found in `/boot`, if any.
    pub kernel: Option<KernelFiles>,
    /// Paths of SSH host keys removed from the tree.
    pub removed_host_keys: Vec<String>,
    /// Number of device nodes and links created in `/dev`.
    pub dev_nodes: usize,
    /// Whether `/boot/grub/menu.lst` was written (PV-GRUB layouts).
    pub menu_lst: bool,
}

/// Runs every step of the project configuration for `recipe`.
///
/// `recipe_dir` is where `[[files]]` entries with a `source` are looked up
/// (the recipe file's directory); `epoch` is every new inode's time and
/// shadow's "last change" day.
///
/// # Errors
/// The first step that fails.
pub fn configure(
    tree: &mut Tree,
    recipe: &Recipe,
    recipe_dir: &Path,
    epoch: Timestamp,
) -> Result<ProjectReport, ProjectError> {
    write_fstab(tree, &recipe.disk, epoch)?;
    write_hostname(tree, &recipe.system.hostname, epoch)?;
    write_hosts(tree, &recipe.system.hostname, epoch)?;
    write_interfaces(tree, epoch)?;

    let mut accounts = Accounts::load(tree, epoch_day(epoch.secs))?;
    add_groups(&mut accounts, &recipe.groups)?;
    let admin_ids = add_user(tree, &mut accounts, &recipe.admin, epoch)?;
    for u in &recipe.users {
        add_user(tree, &mut accounts, u, epoch)?;
    }
    accounts.write(tree, epoch)?;
    for u in std::iter::once(&recipe.admin).chain(&recipe.users) {
        if u.sudo {
            write_sudoers(tree, &u.name, epoch)?;
        }
    }

    write_sshd_dropin(tree, epoch)?;
    let removed_host_keys = remove_host_keys(tree)?;
    install_prep_instance(tree, &recipe.admin.name, epoch)?;
    install_growroot(tree, epoch)?;
    for unit in &recipe.system.units {
        super::units::systemctl_enable(tree, unit, epoch)?;
    }
    let dev_nodes = make_dev_nodes(tree, &accounts, epoch)?;
    write_machine_id(tree, epoch)?;
    let kernel = find_kernel(tree);
    let menu_lst = if recipe.disk.layout.is_pvgrub() {
        let k = kernel.as_ref().ok_or(ProjectError::NoKernel)?;
        let root = if recipe.disk.layout == crate::recipe::Layout::PvgrubMbr {
            "(hd0,0)"
        } else {
            "(hd0)"
        };
        write_menu_lst(tree, k, root, &recipe.boot.kernel_cmdline(), epoch)?;
        true
    } else {
        false
    };
    add_files(tree, &accounts, &recipe.files, recipe_dir, epoch)?;
    Ok(ProjectReport {
        admin_ids,
        kernel,
        removed_host_keys,
        dev_nodes,
        menu_lst,
    })
}

/// The text of `/etc/fstab` for `disk`.
pub fn fstab_text(disk: &Disk) -> String {
    let mut s = String::from(
        "# /etc/fstab: static file system information.\n\
         # <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\n\
         LABEL=rootfs\t/\text4\tdefaults,discard,errors=remount-ro\t0\t1\n",
    );
    if disk.ephemeral {
        s.push_str(
            "# Instance store and swap, when the instance type has them.\n\
             /dev/xvdb\t/mnt\tauto\tdefaults,nofail\t0\t2\n\
             /dev/xvda3\tnone\tswap\tsw,nofail\t0\t0\n",
        );
    }
    for line in &disk.fstab {
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// Writes `/etc/fstab` (0644 root:root) from [`fstab_text`].
///
/// # Errors
/// `/etc` cannot be created.
pub fn write_fstab(tree: &mut Tree, disk: &Disk, epoch: Timestamp) -> Result<(), ProjectError> {
    write_file(
        tree,
        "/etc/fstab",
        fstab_text(disk),
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

/// Writes `/etc/hostname` (0644) with `hostname` and a newline.
///
/// # Errors
/// `/etc` cannot be created.
pub fn write_hostname(
    tree: &mut Tree,
    hostname: &str,
    epoch: Timestamp,
) -> Result<(), ProjectError> {
    write_file(
        tree,
        "/etc/hostname",
        format!("{hostname}\n"),
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

/// The text of `/etc/hosts`: localhost, `127.0.1.1` for the host name
/// (the fully qualified name first, then the short one, when it has dots)
/// and the usual IPv6 lines.
pub fn hosts_text(hostname: &str) -> String {
    let names = match hostname.split_once('.') {
        Some((short, _)) => format!("{hostname}\t{short}"),
        None => hostname.to_string(),
    };
    format!(
        "127.0.0.1\tlocalhost\n\
         127.0.1.1\t{names}\n\
         \n\
         # The following lines are desirable for IPv6 capable hosts\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n"
    )
}

/// Writes `/etc/hosts` (0644) from [`hosts_text`].
///
/// # Errors
/// `/etc` cannot be created.
pub fn write_hosts(tree: &mut Tree, hostname: &str, epoch: Timestamp) -> Result<(), ProjectError> {
    write_file(
        tree,
        "/etc/hosts",
        hosts_text(hostname),
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

/// The text of `/etc/network/interfaces`.
pub const INTERFACES: &str = "\
# interfaces(5) file used by ifup(8) and ifdown(8)
# The kernel command line has net.ifnames=0: the first interface is eth0.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
";

/// Writes `/etc/network/interfaces` ([`INTERFACES`], 0644) and makes sure
/// `/etc/network/interfaces.d` exists.
///
/// # Errors
/// A directory cannot be created.
pub fn write_interfaces(tree: &mut Tree, epoch: Timestamp) -> Result<(), ProjectError> {
    if resolve_follow(tree, b"/etc/network/interfaces.d").is_none() {
        write_dir(
            tree,
            "/etc/network/interfaces.d",
            Metadata::new(0o755),
            epoch,
        )?;
    }
    write_file(
        tree,
        "/etc/network/interfaces",
        INTERFACES,
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

/// Adds the recipe's `[[groups]]` (a fixed gid, or the first free one from
/// 1000 on).
///
/// # Errors
/// A name or gid is taken, or no id is free.
pub fn add_groups(accounts: &mut Accounts, groups: &[Group]) -> Result<(), ProjectError> {
    for g in groups {
        let gid = match g.gid {
            Some(gid) => gid,
            None => (1000..=60000)
                .find(|&id| accounts.groups().iter().all(|x| x.gid != id))
                .ok_or_else(|| ConfigureError::Accounts("no free gid".into()))?,
        };
        accounts.add_group(&g.name, gid)?;
    }
    Ok(())
}

/// Adds a login user described by the recipe to `accounts` and creates its
/// home in `tree`; returns its uid and gid.
///
/// The account gets `*` as its password field: no password can match it,
/// so password logins are impossible, but unlike a `!` "locked" account,
/// sshd accepts its public keys with or without PAM. Its primary group is
/// a new private group of the same name (and id, when free); it joins every
/// group in `user.groups`, which must exist. The home
/// (`/home/NAME` unless set) is created 0700 and filled from `/etc/skel`
/// of the tree, everything owned by the user. The caller writes the
/// account files with [`Accounts::write`].
///
/// # Errors
/// Name or uid taken, an unknown group, or a tree error.
pub fn add_user(
    tree: &mut Tree,
    accounts: &mut Accounts,
    user: &User,
    epoch: Timestamp,
) -> Result<(u32, u32), ProjectError> {
    let opts = NormalUser {
        uid: user.uid,
        gecos: user.gecos.clone(),
        home: Some(user.home_dir()),
        shell: user.shell.clone(),
        password: "*".into(),
    };
    let uid = accounts.add_user(&user.name, &opts)?;
    for g in &user.groups {
        accounts.add_user_to_group(&user.name, g)?;
    }
    let gid = accounts
        .user(&user.name)
        .map(|u| u.gid)
        .ok_or_else(|| ConfigureError::Accounts(format!("user {} vanished", user.name)))?;
    make_home(tree, &user.home_dir(), uid, gid, epoch)?;
    Ok((uid, gid))
}

/// Creates the home directory `home` (0700, `uid:gid`) as a copy of the
/// tree's `/etc/skel` (when there is one), with every copied node owned by
/// `uid:gid`. File contents are shared with the skeleton, not copied.
///
/// # Errors
/// The parent of `home` cannot be created.
pub fn make_home(
    tree: &mut Tree,
    home: &str,
    uid: u32,
    gid: u32,
    epoch: Timestamp,
) -> Result<NodeId, ProjectError> {
    let dir = write_dir(tree, home, Metadata::new(0o700).owner(uid, gid), epoch)?;
    if let Some(skel) = resolve_follow(tree, b"/etc/skel") {
        copy_children(tree, skel, dir, uid, gid)?;
    }
    Ok(dir)
}

fn copy_children(
    tree: &mut Tree,
    from: NodeId,
    to: NodeId,
    uid: u32,
    gid: u32,
) -> Result<(), ProjectError> {
    let entries: Vec<(Vec<u8>, NodeId)> = match &tree.node(from).kind {
        NodeKind::Dir(d) => d.entries().map(|(n, id)| (n.to_vec(), id)).collect(),
        _ => return Ok(()),
    };
    for (name, id) in entries {
        let src = tree.node(id).clone();
        let meta = src.meta.clone().owner(uid, gid);
        let node = match src.kind {
            NodeKind::Dir(_) => Node::dir(meta),
            kind => Node { kind, meta },
        };
        let is_dir = matches!(node.kind, NodeKind::Dir(_));
        // An existing entry (a home that already existed) is kept.
        let existing = match &tree.node(to).kind {
            NodeKind::Dir(d) => d.get(&name),
            _ => None,
        };
        let new = match existing {
            Some(e) => e,
            None => tree.add(to, &name, node).map_err(ConfigureError::from)?,
        };
        if is_dir {
            copy_children(tree, id, new, uid, gid)?;
        }
    }
    Ok(())
}

/// Writes `/etc/sudoers.d/NAME` (0440 root:root) giving `name`
/// passwordless sudo.
///
/// # Errors
/// `/etc/sudoers.d` cannot be created.
pub fn write_sudoers(tree: &mut Tree, name: &str, epoch: Timestamp) -> Result<(), ProjectError> {
    write_file(
        tree,
        &format!("/etc/sudoers.d/{name}"),
        format!("{name} ALL=(ALL) NOPASSWD:ALL\n"),
        Metadata::new(0o440),
        epoch,
    )?;
    Ok(())
}

/// The sshd drop-in: no passwords, no keyboard-interactive logins.
pub const SSHD_DROPIN: &str = "\
# Written by ami: log in with the key from the instance metadata only.
PasswordAuthentication no
KbdInteractiveAuthentication no
ChallengeResponseAuthentication no
";

/// Writes [`SSHD_DROPIN`] as `/etc/ssh/sshd_config.d/ami.conf` (0644).
/// bookworm's `sshd_config` includes that directory before its own
/// settings, and sshd keeps the first value it reads.
///
/// # Errors
/// The directory cannot be created.
pub fn write_sshd_dropin(tree: &mut Tree, epoch: Timestamp) -> Result<(), ProjectError> {
    write_file(
        tree,
        "/etc/ssh/sshd_config.d/ami.conf",
        SSHD_DROPIN,
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

/// Removes every SSH host key (`ssh_host_*_key` and `ssh_host_*_key.pub`)
/// anywhere in the tree and returns their paths. The image must not carry
/// host keys: every instance makes its own at boot.
///
/// # Errors
/// Only a tree inconsistency.
pub fn remove_host_keys(tree: &mut Tree) -> Result<Vec<String>, ProjectError> {
    let victims: Vec<Vec<u8>> = tree
        .walk()
        .filter(|(path, _)| {
            let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
            name.starts_with(b"ssh_host_")
                && (name.ends_with(b"_key") || name.ends_with(b"_key.pub"))
        })
        .map(|(path, _)| path)
        .collect();
    let mut removed = Vec::new();
    for path in victims {
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], &path[..]),
        };
        let Some(dir) = tree.lookup(parent) else {
            continue;
        };
        tree.remove(dir, name).map_err(ConfigureError::from)?;
        removed.push(format!("/{}", String::from_utf8_lossy(&path)));
    }
    Ok(removed)
}

/// The boot-time script with the administrator's login name filled in.
pub fn prep_instance_script(admin: &str) -> String {
    PREP_INSTANCE_SCRIPT.replace("@ADMIN_USER@", admin)
}

/// Installs `/etc/prep-instance` (0755, from [`prep_instance_script`]) and
/// `/etc/systemd/system/prep-instance.service` ([`PREP_INSTANCE_SERVICE`],
/// 0644), and enables the unit as `systemctl enable` would for its
/// `WantedBy=multi-user.target`.
///
/// # Errors
/// A directory cannot be created.
pub fn install_prep_instance(
    tree: &mut Tree,
    admin: &str,
    epoch: Timestamp,
) -> Result<(), ProjectError> {
    write_file(
        tree,
        "/etc/prep-instance",
        prep_instance_script(admin),
        Metadata::new(0o755),
        epoch,
    )?;
    write_file(
        tree,
        "/etc/systemd/system/prep-instance.service",
        PREP_INSTANCE_SERVICE,
        Metadata::new(0o644),
        epoch,
    )?;
    write_symlink(
        tree,
        "/etc/systemd/system/multi-user.target.wants/prep-instance.service",
        "/etc/systemd/system/prep-instance.service",
        epoch,
    )?;
    Ok(())
}

/// Installs [`GROWROOT_SCRIPT`] as `/usr/lib/ami/growroot` (0755) and
/// [`GROWROOT_SERVICE`] as `/etc/systemd/system/ami-growroot.service`,
/// enabled.
///
/// # Errors
/// As the tree helpers.
pub fn install_growroot(tree: &mut Tree, epoch: Timestamp) -> Result<(), ProjectError> {
    write_dir(tree, "/usr/lib/ami", Metadata::new(0o755), epoch)?;
    write_file(
        tree,
        "/usr/lib/ami/growroot",
        GROWROOT_SCRIPT,
        Metadata::new(0o755),
        epoch,
    )?;
    write_file(
        tree,
        "/etc/systemd/system/ami-growroot.service",
        GROWROOT_SERVICE,
        Metadata::new(0o644),
        epoch,
    )?;
    write_symlink(
        tree,
        "/etc/systemd/system/multi-user.target.wants/ami-growroot.service",
        "/etc/systemd/system/ami-growroot.service",
        epoch,
    )?;
    Ok(())
}

/// One entry of the MAKEDEV list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevEntry {
    /// A device node.
    Node {
        /// Path below `/dev`.
        name: String,
        /// Block (`true`) or character device.
        block: bool,
        /// Device number.
        dev: DeviceNumber,
        /// Owner name.
        owner: String,
        /// Group name.
        group: String,
        /// Permission bits.
        mode: u16,
    },
    /// A symbolic link.
    Link {
        /// Path below `/dev`.
        name: String,
        /// Link target.
        target: String,
    },
}

/// The device nodes and links Debian's `MAKEDEV generic std console null
/// zero` creates on amd64, in name order.
pub fn makedev_entries() -> Vec<DevEntry> {
    let mut out = Vec::new();
    for line in MAKEDEV_NODES.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["l", name, target] => out.push(DevEntry::Link {
                name: (*name).into(),
                target: (*target).into(),
            }),
            [t @ ("c" | "b"), name, major, minor, og, mode] => {
                let (owner, group) = og.split_once(':').expect("owner:group in makedev list");
                out.push(DevEntry::Node {
                    name: (*name).into(),
                    block: *t == "b",
                    dev: DeviceNumber {
                        major: major.parse().expect("major in makedev list"),
                        minor: minor.parse().expect("minor in makedev list"),
                    },
                    owner: owner.into(),
                    group: group.into(),
                    mode: u16::from_str_radix(mode, 8).expect("mode in makedev list"),
                });
            }
            _ => panic!("bad line in the makedev list: {line}"),
        }
    }
    out
}

/// Creates the [`makedev_entries`] in `/dev` (replacing existing entries of
/// the same names), with owners and groups looked up in `accounts`;
/// subdirectories are 0755 root:root. Returns the number of entries.
///
/// # Errors
/// An owner or group the list names is not in `accounts`.
pub fn make_dev_nodes(
    tree: &mut Tree,
    accounts: &Accounts,
    epoch: Timestamp,
) -> Result<usize, ProjectError> {
    if resolve_follow(tree, b"/dev").is_none() {
        write_dir(tree, "/dev", Metadata::new(0o755), epoch)?;
    }
    let entries = makedev_entries();
    for e in &entries {
        match e {
            DevEntry::Link { name, target } => {
                write_symlink(tree, &format!("/dev/{name}"), target, epoch)?;
            }
            DevEntry::Node {
                name,
                block,
                dev,
                owner,
                group,
                mode,
            } => {
                let uid = accounts
                    .uid(owner)
                    .ok_or_else(|| ConfigureError::Accounts(format!("no user {owner} for /dev")))?;
                let gid = accounts.gid(group).ok_or_else(|| {
                    ConfigureError::Accounts(format!("no group {group} for /dev"))
                })?;
                let kind = if *block {
                    NodeKind::BlockDevice(*dev)
                } else {
                    NodeKind::CharDevice(*dev)
                };
                let node = Node {
                    kind,
                    meta: Metadata::new(*mode).owner(uid, gid).times(epoch),
                };
                put_node(tree, &format!("/dev/{name}"), node, epoch)?;
            }
        }
    }
    Ok(entries.len())
}

/// Writes an empty `/etc/machine-id` (0444): systemd then makes a fresh
/// id at every boot until something commits one, without entering "first
/// boot" mode.
///
/// # Errors
/// `/etc` cannot be created.
pub fn write_machine_id(tree: &mut Tree, epoch: Timestamp) -> Result<(), ProjectError> {
    write_file(
        tree,
        "/etc/machine-id",
        Vec::new(),
        Metadata::new(0o444),
        epoch,
    )?;
    Ok(())
}

/// The kernel and initramfs found in `/boot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    /// The kernel release, e.g. `6.1.0-28-cloud-amd64`.
    pub version: String,
    /// `/boot/vmlinuz-VERSION`.
    pub kernel: String,
    /// `/boot/initrd.img-VERSION`, when it exists.
    pub initrd: Option<String>,
}

/// Compares kernel releases piecewise: runs of digits numerically, other
/// runs as bytes (`6.1.0-10` sorts after `6.1.0-9`).
fn release_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn pieces(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (pieces(a), pieces(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The newest kernel in `/boot` (`vmlinuz-*` regular files) and its
/// initramfs, if any.
pub fn find_kernel(tree: &Tree) -> Option<KernelFiles> {
    let version = list_dir(tree, "/boot")
        .into_iter()
        .filter_map(|n| {
            let n = String::from_utf8(n).ok()?;
            let v = n.strip_prefix("vmlinuz-")?.to_string();
            let id = resolve(tree, format!("/boot/{n}").as_bytes())?;
            matches!(tree.node(id).kind, NodeKind::File(_)).then_some(v)
        })
        .max_by(|a, b| release_cmp(a, b))?;
    let initrd = format!("/boot/initrd.img-{version}");
    let initrd = resolve_follow(tree, initrd.as_bytes())
        .is_some()
        .then_some(initrd);
    Some(KernelFiles {
        kernel: format!("/boot/vmlinuz-{version}"),
        initrd,
        version,
    })
}

/// The text of PV-GRUB's `menu.lst`: one entry booting `kernel` from
/// `root` (`(hd0)` for a whole-disk filesystem, `(hd0,0)` for MBR
/// partition 1) with `cmdline`.
pub fn menu_lst_text(kernel: &KernelFiles, root: &str, cmdline: &str) -> String {
    let mut s = format!(
        "default 0\n\
         timeout 1\n\
         \n\
         title Debian GNU/Linux, kernel {v}\n\
         root {root}\n\
         kernel {k} {cmdline}\n",
        v = kernel.version,
        k = kernel.kernel,
    );
    if let Some(i) = &kernel.initrd {
        s.push_str(&format!("initrd {i}\n"));
    }
    s
}

/// Writes `/boot/grub/menu.lst` (0644) from [`menu_lst_text`].
///
/// # Errors
/// `/boot/grub` cannot be created.
pub fn write_menu_lst(
    tree: &mut Tree,
    kernel: &KernelFiles,
    root: &str,
    cmdline: &str,
    epoch: Timestamp,
) -> Result<(), ProjectError> {
    write_file(
        tree,
        "/boot/grub/menu.lst",
        menu_lst_text(kernel, root, cmdline),
        Metadata::new(0o644),
        epoch,
    )?;
    Ok(())
}

fn owner_id(accounts: &Accounts, name: &str, user: bool) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    if user {
        accounts.uid(name)
    } else {
        accounts.gid(name)
    }
}

/// Puts the recipe's `[[files]]` into the tree, in order, replacing what
/// is there. `source` paths are relative to `recipe_dir`; their contents
/// are referenced, not read now.
///
/// # Errors
/// A bad mode, an unknown owner or group, or an unreadable source.
pub fn add_files(
    tree: &mut Tree,
    accounts: &Accounts,
    files: &[FileSpec],
    recipe_dir: &Path,
    epoch: Timestamp,
) -> Result<(), ProjectError> {
    for f in files {
        let err = |message: String| ProjectError::File {
            path: f.path.clone(),
            message,
        };
        let mode = f.mode_bits().map_err(err)?;
        let uid = owner_id(accounts, &f.owner, true)
            .ok_or_else(|| err(format!("unknown user {:?}", f.owner)))?;
        let gid = owner_id(accounts, &f.group, false)
            .ok_or_else(|| err(format!("unknown group {:?}", f.group)))?;
        let data = match (&f.content, &f.source) {
            (Some(text), _) => FileData::from_bytes(text.as_bytes().to_vec()),
            (None, Some(src)) => {
                let path = recipe_dir.join(src);
                let md = std::fs::metadata(&path).map_err(|source| ProjectError::Host {
                    path: path.clone(),
                    source,
                })?;
                if !md.is_file() {
                    return Err(err(format!("{} is not a regular file", path.display())));
                }
                FileData::from_host(path, 0, md.len())
            }
            (None, None) => return Err(err("no content and no source".into())),
        };
        let node = Node::file(data, Metadata::new(mode).owner(uid, gid).times(epoch));
        put_node(tree, &f.path, node, epoch)?;
    }
    Ok(())
}

/// Reads the current `/etc/hostname` of the tree (for tests and reports).
///
/// # Errors
/// The file is not a regular file or cannot be read.
pub fn hostname_of(tree: &Tree) -> Result<Option<String>, ProjectError> {
    Ok(read_file(tree, "/etc/hostname")?
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Layout;

    const E: Timestamp = Timestamp::from_secs(1_700_000_000);

    fn text(tree: &Tree, path: &str) -> String {
        String::from_utf8(read_file(tree, path).unwrap().expect(path)).unwrap()
    }

    fn meta(tree: &Tree, path: &str) -> Metadata {
        tree.node(resolve_follow(tree, path.as_bytes()).expect(path))
            .meta
            .clone()
    }

    /// A tiny "unpacked system": base-passwd master files, a skeleton, a
    /// kernel, host keys and a merged /usr.
    fn base_tree() -> Tree {
        let mut t = Tree::new(Metadata::new(0o755));
        let m = Metadata::new(0o644);
        write_dir(&mut t, "/usr/bin", Metadata::new(0o755), E).unwrap();
        write_symlink(&mut t, "/bin", "usr/bin", E).unwrap();
        write_file(
            &mut t,
            "/usr/share/base-passwd/passwd.master",
            "root:*:0:0:root:/root:/bin/bash\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            m.clone(),
            E,
        )
        .unwrap();
        let groups = [
            ("root", 0),
            ("adm", 4),
            ("tty", 5),
            ("disk", 6),
            ("lp", 7),
            ("kmem", 15),
            ("dialout", 20),
            ("cdrom", 24),
            ("floppy", 25),
            ("sudo", 27),
            ("audio", 29),
            ("video", 44),
            ("tape", 26),
            ("shadow", 42),
            ("nogroup", 65534),
        ];
        let g: String = groups
            .iter()
            .map(|(n, id)| format!("{n}:*:{id}:\n"))
            .collect();
        write_file(
            &mut t,
            "/usr/share/base-passwd/group.master",
            g,
            m.clone(),
            E,
        )
        .unwrap();
        write_file(&mut t, "/etc/skel/.bashrc", "# bashrc\n", m.clone(), E).unwrap();
        write_file(&mut t, "/etc/skel/.config/x/y", "y\n", m.clone(), E).unwrap();
        write_file(
            &mut t,
            "/boot/vmlinuz-6.1.0-9-cloud-amd64",
            "k9",
            m.clone(),
            E,
        )
        .unwrap();
        write_file(
            &mut t,
            "/boot/vmlinuz-6.1.0-10-cloud-amd64",
            "k10",
            m.clone(),
            E,
        )
        .unwrap();
        write_file(
            &mut t,
            "/boot/initrd.img-6.1.0-10-cloud-amd64",
            "i",
            m.clone(),
            E,
        )
        .unwrap();
        write_file(
            &mut t,
            "/etc/ssh/ssh_host_ed25519_key",
            "secret",
            Metadata::new(0o600),
            E,
        )
        .unwrap();
        write_file(
            &mut t,
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "pub",
            m.clone(),
            E,
        )
        .unwrap();
        write_file(
            &mut t,
            "/etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\n",
            m,
            E,
        )
        .unwrap();
        t
    }

    #[test]
    fn fstab_variants() {
        let mut d = Disk::default();
        let s = fstab_text(&d);
        assert!(s.contains("LABEL=rootfs\t/\text4\tdefaults,discard,errors=remount-ro\t0\t1\n"));
        assert!(!s.contains("xvdb"));
        d.ephemeral = true;
        d.fstab = vec!["tmpfs /tmp tmpfs defaults 0 0  ".into()];
        let s = fstab_text(&d);
        assert!(s.contains("/dev/xvdb\t/mnt\tauto\tdefaults,nofail\t0\t2\n"));
        assert!(s.contains("/dev/xvda3\tnone\tswap\tsw,nofail\t0\t0\n"));
        assert!(s.ends_with("tmpfs /tmp tmpfs defaults 0 0\n"));
        let mut t = base_tree();
        write_fstab(&mut t, &d, E).unwrap();
        assert_eq!(text(&t, "/etc/fstab"), s);
        assert_eq!(meta(&t, "/etc/fstab").mode, 0o644);
        assert_eq!(meta(&t, "/etc/fstab").mtime, E);
    }

    #[test]
    fn hostname_hosts_interfaces() {
        let mut t = base_tree();
        write_hostname(&mut t, "web", E).unwrap();
        write_hosts(&mut t, "web", E).unwrap();
        write_interfaces(&mut t, E).unwrap();
        assert_eq!(hostname_of(&t).unwrap().as_deref(), Some("web"));
        let hosts = text(&t, "/etc/hosts");
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n127.0.1.1\tweb\n"));
        assert!(hosts.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert!(hosts_text("a.example.org").contains("127.0.1.1\ta.example.org\ta\n"));
        let ifs = text(&t, "/etc/network/interfaces");
        assert!(ifs.contains("auto lo\niface lo inet loopback\n"));
        assert!(ifs.contains("auto eth0\niface eth0 inet dhcp\n"));
        assert!(ifs.contains("source /etc/network/interfaces.d/*\n"));
        assert!(resolve_follow(&t, b"/etc/network/interfaces.d").is_some());
    }

    #[test]
    fn admin_user_home_and_groups() {
        let mut t = base_tree();
        let mut acc = Accounts::load(&t, epoch_day(E.secs)).unwrap();
        let (uid, gid) = add_user(&mut t, &mut acc, &User::admin(), E).unwrap();
        add_groups(
            &mut acc,
            &[Group {
                name: "ops".into(),
                gid: None,
            }],
        )
        .unwrap();
        assert_eq!((uid, gid), (1000, 1000));
        assert_eq!(acc.gid("ops"), Some(1001));
        acc.write(&mut t, E).unwrap();
        let passwd = text(&t, "/etc/passwd");
        assert!(
            passwd.contains("admin:x:1000:1000::/home/admin:/bin/bash\n"),
            "{passwd}"
        );
        let shadow = text(&t, "/etc/shadow");
        let line = shadow.lines().find(|l| l.starts_with("admin:")).unwrap();
        assert_eq!(line.split(':').nth(1), Some("*"));
        assert_eq!(
            line.split(':').nth(2),
            Some(epoch_day(E.secs).to_string().as_str())
        );
        let group = text(&t, "/etc/group");
        assert!(group.contains("sudo:x:27:admin\n"), "{group}");
        assert!(group.contains("adm:x:4:admin\n"), "{group}");
        assert!(group.contains("admin:x:1000:\n"), "{group}");
        assert!(text(&t, "/etc/gshadow").contains("sudo:*::admin\n"));
        let home = meta(&t, "/home/admin");
        assert_eq!((home.mode, home.uid, home.gid), (0o700, 1000, 1000));
        assert_eq!(text(&t, "/home/admin/.bashrc"), "# bashrc\n");
        for p in [
            "/home/admin/.bashrc",
            "/home/admin/.config",
            "/home/admin/.config/x/y",
        ] {
            let m = meta(&t, p);
            assert_eq!((m.uid, m.gid), (1000, 1000), "{p}");
        }
        // The skeleton itself is untouched.
        assert_eq!(meta(&t, "/etc/skel/.bashrc").uid, 0);
        // A second user with a group that does not exist fails.
        let bad = User {
            name: "bob".into(),
            groups: vec!["nope".into()],
            ..User::admin()
        };
        assert!(add_user(&mut t, &mut acc, &bad, E).is_err());
        // Adding the same user twice fails.
        assert!(add_user(&mut t, &mut acc, &User::admin(), E).is_err());
    }

    #[test]
    fn sudoers_sshd_and_host_keys() {
        let mut t = base_tree();
        write_sudoers(&mut t, "admin", E).unwrap();
        assert_eq!(
            text(&t, "/etc/sudoers.d/admin"),
            "admin ALL=(ALL) NOPASSWD:ALL\n"
        );
        let m = meta(&t, "/etc/sudoers.d/admin");
        assert_eq!((m.mode, m.uid, m.gid), (0o440, 0, 0));
        write_sshd_dropin(&mut t, E).unwrap();
        let d = text(&t, "/etc/ssh/sshd_config.d/ami.conf");
        assert!(d.contains("PasswordAuthentication no\n"));
        assert!(d.contains("KbdInteractiveAuthentication no\n"));
        write_file(
            &mut t,
            "/var/tmp/ssh_host_rsa_key",
            "x",
            Metadata::new(0o600),
            E,
        )
        .unwrap();
        let removed = remove_host_keys(&mut t).unwrap();
        assert_eq!(
            removed,
            [
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub",
                "/var/tmp/ssh_host_rsa_key"
            ]
        );
        assert!(t
            .walk()
            .all(|(p, _)| !String::from_utf8_lossy(&p).contains("ssh_host_")));
        assert!(t.lookup(b"/etc/ssh/sshd_config").is_some());
        assert!(remove_host_keys(&mut t).unwrap().is_empty());
    }

    #[test]
    fn prep_instance_installed_and_enabled() {
        let mut t = base_tree();
        install_prep_instance(&mut t, "ops", E).unwrap();
        let s = text(&t, "/etc/prep-instance");
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("user=\"${PREP_USER:-ops}\""));
        assert!(!s.contains("@ADMIN_USER@"));
        assert_eq!(meta(&t, "/etc/prep-instance").mode, 0o755);
        let unit = text(&t, "/etc/systemd/system/prep-instance.service");
        for l in [
            "Before=ssh.service",
            "After=network-online.target",
            "Wants=network-online.target",
            "WantedBy=multi-user.target",
            "ExecStart=/etc/prep-instance",
            "StandardOutput=journal+console",
        ] {
            assert!(unit.lines().any(|x| x == l), "{l}");
        }
        let link = t
            .lookup(b"/etc/systemd/system/multi-user.target.wants/prep-instance.service")
            .unwrap();
        assert_eq!(
            t.node(link).kind,
            NodeKind::Symlink((*b"/etc/systemd/system/prep-instance.service").into())
        );
    }

    #[test]
    fn dev_nodes_follow_makedev() {
        let entries = makedev_entries();
        let find = |n: &str| {
            entries
                .iter()
                .find(|e| matches!(e, DevEntry::Node { name, .. } | DevEntry::Link { name, .. } if name == n))
                .cloned()
                .unwrap_or_else(|| panic!("{n}"))
        };
        let node = |n: &str| match find(n) {
            DevEntry::Node {
                block,
                dev,
                owner,
                group,
                mode,
                ..
            } => (block, dev.major, dev.minor, owner, group, mode),
            l => panic!("{l:?}"),
        };
        assert_eq!(
            node("console"),
            (false, 5, 1, "root".into(), "tty".into(), 0o600)
        );
        assert_eq!(
            node("null"),
            (false, 1, 3, "root".into(), "root".into(), 0o666)
        );
        assert_eq!(
            node("zero"),
            (false, 1, 5, "root".into(), "root".into(), 0o666)
        );
        assert_eq!(
            node("mem"),
            (false, 1, 1, "root".into(), "kmem".into(), 0o640)
        );
        assert_eq!(
            node("ptmx"),
            (false, 5, 2, "root".into(), "tty".into(), 0o666)
        );
        assert_eq!(
            node("urandom"),
            (false, 1, 9, "root".into(), "root".into(), 0o666)
        );
        assert_eq!(
            node("loop0"),
            (true, 7, 0, "root".into(), "disk".into(), 0o660)
        );
        assert_eq!(
            node("sda1"),
            (true, 8, 1, "root".into(), "disk".into(), 0o660)
        );
        assert_eq!(
            node("ttyS0"),
            (false, 4, 64, "root".into(), "dialout".into(), 0o660)
        );
        assert_eq!(
            find("stdin"),
            DevEntry::Link {
                name: "stdin".into(),
                target: "fd/0".into()
            }
        );
        assert_eq!(
            find("core"),
            DevEntry::Link {
                name: "core".into(),
                target: "/proc/kcore".into()
            }
        );

        let mut t = base_tree();
        let acc = Accounts::load(&t, 0).unwrap();
        let n = make_dev_nodes(&mut t, &acc, E).unwrap();
        assert_eq!(n, entries.len());
        let console = t.node(t.lookup(b"/dev/console").unwrap());
        assert_eq!(
            console.kind,
            NodeKind::CharDevice(DeviceNumber { major: 5, minor: 1 })
        );
        assert_eq!((console.meta.mode, console.meta.gid), (0o600, 5));
        let sda = t.node(t.lookup(b"/dev/sda").unwrap());
        assert_eq!(
            sda.kind,
            NodeKind::BlockDevice(DeviceNumber { major: 8, minor: 0 })
        );
        assert_eq!(sda.meta.gid, 6);
        assert!(t.lookup(b"/dev/input/mice").is_some());
        // Idempotent: running it again replaces, never duplicates.
        let before = t.walk().count();
        make_dev_nodes(&mut t, &acc, E).unwrap();
        assert_eq!(t.walk().count(), before);
        // A tree without the groups is an error, not a silent skip.
        let mut bare = Tree::new(Metadata::new(0o755));
        assert!(make_dev_nodes(&mut bare, &Accounts::empty(0), E).is_err());
    }

    #[test]
    fn kernel_and_menu_lst() {
        let mut t = base_tree();
        let k = find_kernel(&t).unwrap();
        assert_eq!(k.version, "6.1.0-10-cloud-amd64");
        assert_eq!(k.kernel, "/boot/vmlinuz-6.1.0-10-cloud-amd64");
        assert_eq!(
            k.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-10-cloud-amd64")
        );
        let cmd = crate::recipe::Boot::default().kernel_cmdline();
        write_menu_lst(&mut t, &k, "(hd0)", &cmd, E).unwrap();
        let m = text(&t, "/boot/grub/menu.lst");
        assert!(m.contains("root (hd0)\n"));
        assert!(m.contains(
            "kernel /boot/vmlinuz-6.1.0-10-cloud-amd64 root=LABEL=rootfs ro console=ttyS0 console=hvc0 net.ifnames=0\n"
        ));
        assert!(m.contains("initrd /boot/initrd.img-6.1.0-10-cloud-amd64\n"));
        assert!(!m.contains("LABEL=roots "));
        // Without an initrd, no initrd line.
        let k9 = KernelFiles {
            version: "x".into(),
            kernel: "/boot/vmlinuz-x".into(),
            initrd: None,
        };
        assert!(!menu_lst_text(&k9, "(hd0,0)", "ro").contains("initrd"));
        assert!(find_kernel(&Tree::new(Metadata::new(0o755))).is_none());
        assert_eq!(release_cmp("6.1.0-9", "6.1.0-10"), std::cmp::Ordering::Less);
        assert_eq!(release_cmp("6.10", "6.9"), std::cmp::Ordering::Greater);
    }

    #[test]
    fn files_from_recipe() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        let mut t = base_tree();
        let mut acc = Accounts::load(&t, 0).unwrap();
        add_user(&mut t, &mut acc, &User::admin(), E).unwrap();
        let files = vec![
            FileSpec {
                path: "/etc/motd".into(),
                content: Some("hi\n".into()),
                source: None,
                mode: "0600".into(),
                owner: "admin".into(),
                group: "adm".into(),
            },
            FileSpec {
                path: "/bin/hello".into(),
                content: None,
                source: Some("hello.sh".into()),
                mode: "4755".into(),
                owner: "0".into(),
                group: "root".into(),
            },
        ];
        add_files(&mut t, &acc, &files, dir.path(), E).unwrap();
        assert_eq!(text(&t, "/etc/motd"), "hi\n");
        let m = meta(&t, "/etc/motd");
        assert_eq!((m.mode, m.uid, m.gid), (0o600, 1000, 4));
        assert_eq!(text(&t, "/usr/bin/hello"), "#!/bin/sh\necho hi\n");
        assert_eq!(meta(&t, "/usr/bin/hello").mode, 0o4755);
        let mut bad = files[0].clone();
        bad.owner = "nobody-here".into();
        assert!(matches!(
            add_files(&mut t, &acc, &[bad], dir.path(), E),
            Err(ProjectError::File { .. })
        ));
        let mut missing = files[1].clone();
        missing.source = Some("nope".into());
        assert!(matches!(
            add_files(&mut t, &acc, &[missing], dir.path(), E),
            Err(ProjectError::Host { .. })
        ));
    }

    #[test]
    fn configure_runs_everything() {
        let mut t = base_tree();
        write_file(
            &mut t,
            "/usr/lib/systemd/system/extra.service",
            "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
            Metadata::new(0o644),
            E,
        )
        .unwrap();
        let mut r = Recipe::default();
        r.system.hostname = "box".into();
        r.system.units = vec!["extra.service".into()];
        r.disk.layout = Layout::Pvgrub;
        let rep = configure(&mut t, &r, Path::new("."), E).unwrap();
        assert_eq!(rep.admin_ids, (1000, 1000));
        assert!(rep.menu_lst);
        assert_eq!(rep.removed_host_keys.len(), 2);
        assert_eq!(rep.kernel.unwrap().version, "6.1.0-10-cloud-amd64");
        assert_eq!(text(&t, "/etc/hostname"), "box\n");
        assert_eq!(text(&t, "/etc/machine-id"), "");
        assert_eq!(meta(&t, "/etc/machine-id").mode, 0o444);
        assert!(t.lookup(b"/etc/sudoers.d/admin").is_some());
        assert!(t.lookup(b"/dev/null").is_some());
        let link = t
            .lookup(b"/etc/systemd/system/multi-user.target.wants/extra.service")
            .expect("recipe unit enabled");
        assert!(matches!(t.node(link).kind, NodeKind::Symlink(_)));
        // A unit that is not in the tree is an error.
        let mut t4 = base_tree();
        let mut r4 = Recipe::default();
        r4.system.units = vec!["missing.service".into()];
        assert!(configure(&mut t4, &r4, Path::new("."), E).is_err());
        // uefi: no menu.lst; a tree without a kernel is fine there.
        let mut t2 = base_tree();
        let rep = configure(&mut t2, &Recipe::default(), Path::new("."), E).unwrap();
        assert!(!rep.menu_lst);
        assert!(t2.lookup(b"/boot/grub/menu.lst").is_none());
        // pvgrub without a kernel is an error.
        let mut t3 = base_tree();
        let boot = t3.lookup(b"/boot").unwrap();
        for n in [
            "vmlinuz-6.1.0-9-cloud-amd64",
            "vmlinuz-6.1.0-10-cloud-amd64",
        ] {
            t3.remove(boot, n.as_bytes()).unwrap();
        }
        r.system.units.clear();
        assert!(matches!(
            configure(&mut t3, &r, Path::new("."), E),
            Err(ProjectError::NoKernel)
        ));
    }
}
