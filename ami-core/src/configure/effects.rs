//! The policy: every maintainer script and trigger file of the package set
//! is either reviewed (its effect reproduced natively by a module of
//! [`super`], done by another stage of the builder, deferred to first boot,
//! or known to do nothing on a fresh install in an image) or reported.
//!
//! The table [`REVIEWED`] pins each reviewed script by its SHA-256: a script
//! that is not in the table, or whose contents changed, ends up in
//! [`Accounting::unreviewed`], never silently skipped. The caller decides
//! what to do with those (fail the build listing them, or, by explicit
//! opt-in, run exactly those at first boot).
//!
//! Scripts that matter on a fresh install are `preinst`, `postinst`,
//! `config` and the `triggers` control file. A `triggers` file that only
//! activates `ldconfig` or `update-initramfs` (83 libraries and a few
//! others) is accounted for without pinning: it declares work that the
//! interested package's handler does. `prerm` and `postrm` never run on an
//! install and are not accounted.
//!
//! The table was reviewed against the bookworm 12.15 set of 177 packages
//! (Essential, required and important, plus `usr-is-merged makedev sudo
//! openssh-server ssh wget linux-image-cloud-amd64`): 63 postinsts, 29
//! preinsts, 4 debconf `config` scripts and the 5 trigger-interest files.

use super::accounts::Accounts;
use super::alternatives::{dash_diversions, scan_script, Alternatives};
use super::system::{self, SystemOptions};
use super::{epoch_day, pam, sha256_hex, units, ConfigureError};
use crate::{Timestamp, Tree};
use std::collections::BTreeMap;

/// A package's control members, filled by the caller from the unpacked
/// `.deb` (ami-core does not depend on the unpacker).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageScripts {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Control members by name: `preinst`, `postinst`, `config`,
    /// `triggers`, `prerm`, `postrm`, ...
    pub scripts: BTreeMap<String, Vec<u8>>,
}

/// Who reproduces a script's effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Handler {
    /// [`super::accounts`]: users, groups, shadow, sysusers.d.
    Accounts,
    /// [`super::pam`]: pam-auth-update.
    Pam,
    /// [`super::system`]: files, directories, stat overrides, capabilities.
    System,
    /// [`super::units`]: unit enablement and deb-systemd-helper state.
    Units,
    /// [`super::alternatives`]: update-alternatives.
    Alternatives,
    /// [`super::alternatives::dash_diversions`]: dpkg-divert.
    Diversions,
    /// The builder's kernel stage: depmod indexes, initramfs, `/vmlinuz`.
    Kernel,
    /// The builder's own `/dev` nodes (instead of MAKEDEV).
    Devices,
    /// Regenerated at first boot (see [`FIRST_BOOT`]).
    FirstBoot,
    /// Nothing to do on a fresh install in an image.
    NoEffect,
}

/// One reviewed script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reviewed {
    /// Package name.
    pub package: &'static str,
    /// Control member name.
    pub script: &'static str,
    /// SHA-256 of the contents reviewed.
    pub sha256: &'static str,
    /// Who reproduces its effects.
    pub handlers: &'static [Handler],
    /// What the script does on a fresh install.
    pub note: &'static str,
}

/// Work that is left to first boot, by package: the command a first-boot
/// unit runs instead of the script's step.
pub const FIRST_BOOT: &[(&str, &str)] = &[
    ("libc-bin", "ldconfig"),
    ("openssh-server", "ssh-keygen -A"),
    ("systemd", "journalctl --update-catalog"),
    ("udev", "systemd-hwdb update"),
];

/// The result of [`account_for`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounting {
    /// `(package, script)` pairs whose effects are handled (reproduced,
    /// done elsewhere by the builder, deferred to first boot, or none).
    pub emulated: Vec<(String, String)>,
    /// `(package, script, handler)` for each handler of each emulated
    /// script, so the caller can run exactly the modules that are needed.
    pub handlers: Vec<(String, String, Handler)>,
    /// First-boot commands needed by the set (from [`FIRST_BOOT`]).
    pub first_boot: Vec<(String, String)>,
    /// `(package, script, sha256)` of every script nobody reviewed (or
    /// whose contents changed since the review).
    pub unreviewed: Vec<(String, String, String)>,
}

impl Accounting {
    /// Whether a handler is needed for `package`.
    pub fn needs(&self, package: &str, handler: Handler) -> bool {
        self.handlers
            .iter()
            .any(|(p, _, h)| p == package && *h == handler)
    }
}

/// The scripts that run on a fresh install.
const INSTALL_SCRIPTS: [&str; 4] = ["preinst", "config", "postinst", "triggers"];

/// Triggers whose activation alone is accounted for, with the handler of
/// the work they cause.
const KNOWN_ACTIVATIONS: [(&str, Handler); 2] = [
    ("ldconfig", Handler::FirstBoot),
    ("update-initramfs", Handler::Kernel),
];

/// Handlers of a `triggers` file that only activates known triggers.
fn activation_only(text: &[u8]) -> Option<Vec<Handler>> {
    let text = String::from_utf8_lossy(text);
    let mut handlers = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let directive = words.next()?;
        let name = words.next()?;
        if !matches!(
            directive,
            "activate" | "activate-await" | "activate-noawait"
        ) || words.next().is_some()
        {
            return None;
        }
        let (_, h) = KNOWN_ACTIVATIONS.iter().find(|(n, _)| *n == name)?;
        handlers.push(*h);
    }
    Some(handlers)
}

/// Accounts for every install-time script of `packages`.
pub fn account_for(packages: &[PackageScripts]) -> Accounting {
    let mut acc = Accounting::default();
    for pkg in packages {
        for script in INSTALL_SCRIPTS {
            let Some(body) = pkg.scripts.get(script) else {
                continue;
            };
            let hash = sha256_hex(body);
            let reviewed = REVIEWED
                .iter()
                .find(|r| r.package == pkg.name && r.script == script && r.sha256 == hash);
            let handlers: Vec<Handler> = match reviewed {
                Some(r) => r.handlers.to_vec(),
                None if script == "triggers" => match activation_only(body) {
                    Some(h) => h,
                    None => {
                        acc.unreviewed.push((pkg.name.clone(), script.into(), hash));
                        continue;
                    }
                },
                None => {
                    acc.unreviewed.push((pkg.name.clone(), script.into(), hash));
                    continue;
                }
            };
            acc.emulated.push((pkg.name.clone(), script.into()));
            for h in handlers {
                acc.handlers.push((pkg.name.clone(), script.into(), h));
                if h == Handler::FirstBoot {
                    for (p, cmd) in FIRST_BOOT {
                        let entry = ((*p).to_owned(), (*cmd).to_owned());
                        if *p == pkg.name && !acc.first_boot.contains(&entry) {
                            acc.first_boot.push(entry);
                        }
                    }
                }
            }
        }
    }
    acc
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The accounting of the scripts (the unreviewed ones were *not*
    /// emulated, not even partly).
    pub accounting: Accounting,
    /// The account database as written (later stages add users to it and
    /// write it again).
    pub accounts: Accounts,
}

/// Runs every native effect the reviewed scripts of `packages` call for,
/// in the order a conventional install would: accounts (base-passwd,
/// package users and groups, sysusers.d), the system files, PAM, unit
/// enablement, alternatives and diversions. Scripts that are not reviewed
/// are only reported (in [`Applied::accounting`]); the caller must refuse
/// to go on or schedule them for first boot.
///
/// # Errors
/// A file a reviewed effect needs is missing from the tree, or a file in
/// the tree is malformed.
pub fn apply(
    tree: &mut Tree,
    packages: &[PackageScripts],
    options: &SystemOptions,
    source_date_epoch: i64,
) -> Result<Applied, ConfigureError> {
    let epoch = Timestamp {
        secs: source_date_epoch,
        nanos: 0,
    };
    let accounting = account_for(packages);
    let by = |h: Handler| -> Vec<&str> {
        let mut v: Vec<&str> = accounting
            .handlers
            .iter()
            .filter(|(_, _, x)| *x == h)
            .map(|(p, _, _)| p.as_str())
            .collect();
        v.dedup();
        v
    };
    let account_pkgs = by(Handler::Accounts);
    let mut accounts = Accounts::load(tree, epoch_day(source_date_epoch))?;
    accounts.apply_package_accounts(&account_pkgs)?;
    if account_pkgs.contains(&"systemd") {
        accounts.apply_sysusers(tree)?;
    }
    accounts.write(tree, epoch)?;
    system::apply(tree, &by(Handler::System), &accounts, options, epoch)?;
    if by(Handler::Pam).contains(&"libpam-runtime") {
        pam::configure(tree, epoch)?;
    }
    let script_of = |pkg: &str| {
        packages
            .iter()
            .find(|p| p.name == pkg)
            .and_then(|p| p.scripts.get("postinst"))
    };
    for pkg in by(Handler::Units) {
        if let Some(body) = script_of(pkg) {
            units::apply_postinst(tree, &units::scan_postinst(body), epoch)?;
        }
    }
    let mut alts = Alternatives::new();
    for pkg in by(Handler::Alternatives) {
        if let Some(body) = script_of(pkg) {
            for inst in scan_script(body).installs {
                alts.install(&inst)?;
            }
        }
    }
    alts.write(tree, epoch)?;
    if by(Handler::Diversions).contains(&"dash") {
        dash_diversions(tree, epoch)?;
    }
    Ok(Applied {
        accounting,
        accounts,
    })
}

/// The reviewed scripts.
pub const REVIEWED: &[Reviewed] = &[
    Reviewed {
        package: "adduser",
        script: "preinst",
        sha256: "7f6b6affc5b83a6bbe3c620457d13a96671b8482b9389ebfc393548dff92dff5",
        handlers: &[Handler::NoEffect],
        note: "upgrade-only migration of /etc/adduser.conf",
    },
    Reviewed {
        package: "apt",
        script: "preinst",
        sha256: "6e251344a8a5379a8b4248a30ff85e687a612f5d91dfcfd9d5a39897735da6eb",
        handlers: &[Handler::NoEffect],
        note: "dpkg-maintscript-helper rm_conffile (upgrade only)",
    },
    Reviewed {
        package: "apt",
        script: "postinst",
        sha256: "e305b2e6580bd834d88640a04d83706a8b6e9138424e7273b02e36606655b79d",
        handlers: &[Handler::Units],
        note: "apt-daily{,-upgrade}.timer enabled; _apt user exists in base-passwd",
    },
    Reviewed {
        package: "base-files",
        script: "postinst",
        sha256: "9d835f80f3815b5e5f49034027e9126e40d74c725e11cd37d4ae95dc490d209f",
        handlers: &[Handler::System],
        note: "dotfiles, /etc/profile, motd, skeleton dirs, /var/run and /var/lock links, utmp logs, origins link",
    },
    Reviewed {
        package: "base-passwd",
        script: "preinst",
        sha256: "47f6f8ee55faa32f7ff23337772c05bfcc7c01aa0804e1ffeffd71ebff0e21b9",
        handlers: &[Handler::Accounts],
        note: "writes /etc/passwd and /etc/group from the master files when missing",
    },
    Reviewed {
        package: "base-passwd",
        script: "postinst",
        sha256: "c372532e5cba8abf8fd60fba244ddb537fef4807ce0624698dafb4d21866710c",
        handlers: &[Handler::Accounts],
        note: "update-passwd against the master files (no change on a fresh copy)",
    },
    Reviewed {
        package: "bash",
        script: "postinst",
        sha256: "4ee998c2d9d3b5f7bb6870a1c0be598c7e426d8af3efc2c89b5b175ec36e755c",
        handlers: &[Handler::Alternatives],
        note: "builtins.7.gz alternative; update-menus absent",
    },
    Reviewed {
        package: "coreutils",
        script: "postinst",
        sha256: "c74c21800ef2a0462534b5a447e290b466832cfa81d631b5971578aa4a496faa",
        handlers: &[Handler::NoEffect],
        note: "links /usr/bin/touch only if missing (present on merged /usr)",
    },
    Reviewed {
        package: "cpio",
        script: "postinst",
        sha256: "abc65fad1bc0a966c5924050dad8c19ff9d373d3389831797fffeeb949698539",
        handlers: &[Handler::Alternatives],
        note: "mt -> mt-gnu alternative",
    },
    Reviewed {
        package: "cron-daemon-common",
        script: "postinst",
        sha256: "e77718cda92812f9c359d7f4fb4f5bbd0d39024dcafda400218f59d08e247319",
        handlers: &[Handler::Accounts, Handler::System],
        note: "group crontab; /var/spool/cron/crontabs 1730 root:crontab",
    },
    Reviewed {
        package: "cron",
        script: "preinst",
        sha256: "4794ed84703e7df88feb4597a80d4117895a98196c556fbf61740280ce64baef",
        handlers: &[Handler::NoEffect],
        note: "chmod of an old init script on upgrade",
    },
    Reviewed {
        package: "cron",
        script: "postinst",
        sha256: "e1971f815a3a1d79d62f7991299b04159766325597119cb0fc10ac22250608eb",
        handlers: &[Handler::System, Handler::Units],
        note: "statoverride root:crontab 2755 crontab; cron.service enabled; rc.d links skipped",
    },
    Reviewed {
        package: "dash",
        script: "postinst",
        sha256: "1fd7a9289596244eb37ce8219ad942a531d8c965b5822cc47d7cdfd996cd598f",
        handlers: &[Handler::Diversions],
        note: "diverts /bin/sh and sh.1.gz to *.distrib (package dash); /bin/sh link ships in data",
    },
    Reviewed {
        package: "debconf",
        script: "postinst",
        sha256: "a68350a8b685d1389704e246bcd25b25efaadda846d188ec4cd2ef7870636c10",
        handlers: &[Handler::NoEffect],
        note: "loads confmodule only",
    },
    Reviewed {
        package: "debconf",
        script: "config",
        sha256: "4f6cca919cf82b607d0ec001e451566c887383c41320d796021eee66b4473db2",
        handlers: &[Handler::NoEffect],
        note: "asks frontend/priority; defaults apply",
    },
    Reviewed {
        package: "debian-archive-keyring",
        script: "preinst",
        sha256: "e1e98cd3f11c0443681ec347f34763582ec16fee9d9f393e4d4f54aad131694b",
        handlers: &[Handler::NoEffect],
        note: "rm_conffile (upgrade only)",
    },
    Reviewed {
        package: "debian-archive-keyring",
        script: "postinst",
        sha256: "bf2c3d594623e16b440d8a80eb4a6badffc085d47b51b8a6b20408dee3de476d",
        handlers: &[Handler::NoEffect],
        note: "rm_conffile (upgrade only)",
    },
    Reviewed {
        package: "debianutils",
        script: "postinst",
        sha256: "a29569bd90a26a6eb8338afefbd7772b9dec3200379896a3d2d523fcc7a134d8",
        handlers: &[Handler::System, Handler::Alternatives],
        note: "/etc/shells + update-shells; which alternative",
    },
    Reviewed {
        package: "debianutils",
        script: "triggers",
        sha256: "3ce557d2c051964127472f4d1c6cdf13a789cd01f7e0454dec5225d7c9480255",
        handlers: &[Handler::System],
        note: "interest in shells.d: update-shells",
    },
    Reviewed {
        package: "dmsetup",
        script: "postinst",
        sha256: "e0800d48ba19f98ce5ae3cc839794eb76330158fa417b348406773e5e028feae",
        handlers: &[Handler::Kernel],
        note: "activates update-initramfs",
    },
    Reviewed {
        package: "dpkg",
        script: "postinst",
        sha256: "2f3d6715ff26f9615ea9d10312a54fc48af53d95b09ff407f78ec367faca37e2",
        handlers: &[Handler::Units],
        note: "dpkg-db-backup.timer enabled; admindir fix-ups are upgrade only",
    },
    Reviewed {
        package: "e2fsprogs",
        script: "preinst",
        sha256: "0ac4873d936cbf6ea2c958b686aa5097f82306e1bd50fa6eff1b95337664dac1",
        handlers: &[Handler::NoEffect],
        note: "doc symlink cleanup on upgrade",
    },
    Reviewed {
        package: "e2fsprogs",
        script: "postinst",
        sha256: "b6d9039fec880922df6797ef741c3fdc9419947f7a2ac6863dd90e7fcef1f721",
        handlers: &[Handler::Kernel, Handler::Units],
        note: "update-initramfs -u; e2scrub_all.timer and e2scrub_reap.service enabled",
    },
    Reviewed {
        package: "ifupdown",
        script: "preinst",
        sha256: "095a32e583206aacef8345fe347994e6bfa68af42dc19ab7d1ab4afb9068eb4f",
        handlers: &[Handler::NoEffect],
        note: "creates /etc/network (shipped); old dummy interfaces removal",
    },
    Reviewed {
        package: "ifupdown",
        script: "postinst",
        sha256: "529593e3d942704e48a739769c3e84490c94103d241898ebfa21cbdc67f75c57",
        handlers: &[Handler::Accounts, Handler::Units],
        note: "group netdev; networking.service enabled, ifupdown-wait-online state only",
    },
    Reviewed {
        package: "init-system-helpers",
        script: "postinst",
        sha256: "22b1db010859db57c9bbc2ff275774375204043884a79f9b55368b21a7d46006",
        handlers: &[Handler::NoEffect],
        note: "os-release diversion cleanup on upgrade",
    },
    Reviewed {
        package: "initramfs-tools-core",
        script: "postinst",
        sha256: "90523ab51d155682cbeadadf46821db42fdb26fa91b296e23295e97bb6e81da9",
        handlers: &[Handler::System],
        note: "/etc/initramfs-tools/modules from the template",
    },
    Reviewed {
        package: "initramfs-tools",
        script: "preinst",
        sha256: "78fb32517d1bda52afe6fa3eb14321ddb0fd4aedca8d7f9894721581ff2f5d54",
        handlers: &[Handler::NoEffect],
        note: "conffile migrations (upgrade only)",
    },
    Reviewed {
        package: "initramfs-tools",
        script: "postinst",
        sha256: "222a8b7551602a748ad2d73742bd391bf479fe81ccc135e6c271b37a054329cf",
        handlers: &[Handler::Kernel],
        note: "update-initramfs on configure",
    },
    Reviewed {
        package: "initramfs-tools",
        script: "triggers",
        sha256: "3fc43b7b97cdad86bfceb6fd7cfab3a52dbbf3a538f0bef5985fa725c1b55507",
        handlers: &[Handler::Kernel],
        note: "interest in update-initramfs",
    },
    Reviewed {
        package: "iproute2",
        script: "postinst",
        sha256: "744b2e0831739ab37d40909748e4ac840fb1cb67b0e8bdcf67ad77e64fcee79e",
        handlers: &[Handler::NoEffect],
        note: "setcap on /bin/ip only if debconf iproute2/setcaps is true (default false)",
    },
    Reviewed {
        package: "iproute2",
        script: "config",
        sha256: "869cc5faa0408240da4688cfd77548bd9039ea07ac0c94b4a89498694aa7be7f",
        handlers: &[Handler::NoEffect],
        note: "asks iproute2/setcaps; default false",
    },
    Reviewed {
        package: "iputils-ping",
        script: "postinst",
        sha256: "ae732d248b6e4e9867dd1492e6f79f7304969ff89e6e8187c8817954c9ae39ae",
        handlers: &[Handler::System],
        note: "cap_net_raw+ep on ping",
    },
    Reviewed {
        package: "isc-dhcp-client",
        script: "postinst",
        sha256: "7a6d1ce7cbe1ab4e8f2ff617981d882d7bb1d65d0699b3a8b6e5311ab8768b29",
        handlers: &[Handler::NoEffect],
        note: "apparmor local profile only when apparmor profiles exist",
    },
    Reviewed {
        package: "klibc-utils",
        script: "postinst",
        sha256: "064b4f109b1b49dbb4669206d2e0a23f87a4eb109e7be4b3e16ebfe9d2a438b5",
        handlers: &[Handler::NoEffect],
        note: "removes an old diversion on upgrade",
    },
    Reviewed {
        package: "kmod",
        script: "preinst",
        sha256: "ec5e4935ab352b3bbdc4b8842dff6f1f92dd3b9daad125a44733f54b3a0ca1a1",
        handlers: &[Handler::NoEffect],
        note: "chmod of an old init script on upgrade",
    },
    Reviewed {
        package: "kmod",
        script: "postinst",
        sha256: "853284eaf5fdf317757165a45a718fc96bf21d0c6c9c95b4bab23091e4e2e80b",
        handlers: &[Handler::System],
        note: "/etc/modules; rc.d links skipped",
    },
    Reviewed {
        package: "less",
        script: "preinst",
        sha256: "c72b2f152d56cae58b8f39efe22e6f0d85d676c4ac3060f40cfe0c463f1f8d94",
        handlers: &[Handler::NoEffect],
        note: "removes an old pager alternative on upgrade",
    },
    Reviewed {
        package: "less",
        script: "postinst",
        sha256: "a33a1e6ef5a22e63a66e42853fc0bcff3107b4653d7b5cea891354a5f28db6c4",
        handlers: &[Handler::Alternatives],
        note: "pager -> less (77)",
    },
    Reviewed {
        package: "libc-bin",
        script: "postinst",
        sha256: "3daa7e3ffd429c1d77287f0fc840a490a607697906d2303452f70578647ce0d4",
        handlers: &[Handler::System, Handler::FirstBoot],
        note: "/etc/nsswitch.conf; ldconfig cache at first boot",
    },
    Reviewed {
        package: "libc-bin",
        script: "triggers",
        sha256: "c3d6b5df131336e54c31dc5687929467de7abea5c5798e3d6a6b2a64ef971fd4",
        handlers: &[Handler::FirstBoot],
        note: "interest in ldconfig",
    },
    Reviewed {
        package: "libc6",
        script: "preinst",
        sha256: "77692462251006a8b8161b442c5b0b75b9580d70fd3d85c066a5c9a412c1ce9b",
        handlers: &[Handler::NoEffect],
        note: "kernel version checks and service restarts on upgrade",
    },
    Reviewed {
        package: "libc6",
        script: "postinst",
        sha256: "21a471a4fb29dd983b61999088fa3d26b892147f729049db648eb839a464beda",
        handlers: &[Handler::NoEffect],
        note: "service restarts on upgrade; nothing on a fresh install",
    },
    Reviewed {
        package: "libgcrypt20",
        script: "postinst",
        sha256: "b8ccd8524c389b644c072df2e66b376ec243c8c9159b9b6be66136f94be9a687",
        handlers: &[Handler::NoEffect],
        note: "unmanaged library cleanup on upgrade",
    },
    Reviewed {
        package: "libgssapi-krb5-2",
        script: "postinst",
        sha256: "e4281cab5316aa28177447f8c8c5ee6e17cfdcad3edca77c81fc77670fe0a5f4",
        handlers: &[Handler::NoEffect],
        note: "gss mech migration on upgrade",
    },
    Reviewed {
        package: "libnewt0.52",
        script: "preinst",
        sha256: "f82fd9acb2243234dcfa4ee7464fe438218c5772c9999113ffe32d66869002c5",
        handlers: &[Handler::NoEffect],
        note: "removes an old newt-palette alternative",
    },
    Reviewed {
        package: "libpam-modules",
        script: "preinst",
        sha256: "87c5a9bcde481ad65bb699df2693b69756622e6d0a6592b2f2d5d881b97e0580",
        handlers: &[Handler::NoEffect],
        note: "upgrade warnings",
    },
    Reviewed {
        package: "libpam-modules",
        script: "postinst",
        sha256: "35c3c5ed8aa0db4849cde8bb585a6a86736e4894ef2983002dbd037408c13c44",
        handlers: &[Handler::System],
        note: "empty /etc/security/opasswd (0600) and /etc/environment",
    },
    Reviewed {
        package: "libpam-runtime",
        script: "postinst",
        sha256: "df5d1ba9ea9787e230eee0a0a8feaee02265cc30485b6bd9f6828bbedb4eb401",
        handlers: &[Handler::Pam],
        note: "pam-auth-update: /etc/pam.d/common-* and /var/lib/pam",
    },
    Reviewed {
        package: "libpam0g",
        script: "postinst",
        sha256: "115eb8d446552fa63d3dff297ab1c69c065c44a50f7dd69c34284c8991b589c6",
        handlers: &[Handler::NoEffect],
        note: "service restarts on upgrade",
    },
    Reviewed {
        package: "libwrap0",
        script: "postinst",
        sha256: "f3e302532c77000aa6b6c02f249429e095dab35b27d2d7a7d1e30c7f131e46c3",
        handlers: &[Handler::System],
        note: "/etc/hosts.allow and /etc/hosts.deny",
    },
    Reviewed {
        package: "linux-base",
        script: "postinst",
        sha256: "e62e67f6bf13c764476911729492cd8147b41864f91cf8d43626a807bc1fe13f",
        handlers: &[Handler::NoEffect],
        note: "loads confmodule only",
    },
    Reviewed {
        package: "linux-image-6.1.0-56-cloud-amd64",
        script: "preinst",
        sha256: "9fdf17d91a1ea7e03326775068897e309d920aed685e29c73d9230c2f1e36387",
        handlers: &[Handler::Kernel],
        note: "runs /etc/kernel/preinst.d (none)",
    },
    Reviewed {
        package: "linux-image-6.1.0-56-cloud-amd64",
        script: "postinst",
        sha256: "f149d77c8cf8178f031cb4fd88a30e0fc4d924acfb6f9ee6607ef6bec95c6489",
        handlers: &[Handler::Kernel],
        note: "depmod, /vmlinuz links, postinst.d initramfs",
    },
    Reviewed {
        package: "linux-image-cloud-amd64",
        script: "preinst",
        sha256: "bdc9d59c025aff2f4f529eddd8c7f4afe226832fea0c4b4f530e28ac76b9d095",
        handlers: &[Handler::NoEffect],
        note: "dir_to_symlink of the doc dir (upgrade only)",
    },
    Reviewed {
        package: "linux-image-cloud-amd64",
        script: "postinst",
        sha256: "bdc9d59c025aff2f4f529eddd8c7f4afe226832fea0c4b4f530e28ac76b9d095",
        handlers: &[Handler::NoEffect],
        note: "dir_to_symlink of the doc dir (upgrade only)",
    },
    Reviewed {
        package: "login",
        script: "preinst",
        sha256: "e047cbfffa87159958ee705ba04c31151236a7290ce1072a5632005603f346ca",
        handlers: &[Handler::NoEffect],
        note: "rm_conffile (upgrade only)",
    },
    Reviewed {
        package: "login",
        script: "postinst",
        sha256: "e9a6ed50ca21329434b74ebbcb397923eecda0948e4c066476dac00bc4aa71c4",
        handlers: &[Handler::System],
        note: "empty /var/log/faillog, /etc/subuid, /etc/subgid",
    },
    Reviewed {
        package: "logrotate",
        script: "postinst",
        sha256: "c21da7b97314cd94438d22e4facf8f9bbf492046ce3121ea91da177b427dd0b5",
        handlers: &[Handler::Units],
        note: "logrotate.timer enabled",
    },
    Reviewed {
        package: "makedev",
        script: "postinst",
        sha256: "dd0b963b001ad6ae8235c481d427574f6c0e6ed59664fcb8fc88212ca6efa061",
        handlers: &[Handler::Devices],
        note: "MAKEDEV nodes; the builder writes the /dev nodes itself",
    },
    Reviewed {
        package: "mawk",
        script: "postinst",
        sha256: "0daa7ced1404005288d316043ed56f15c3c21060a765cf262393fc2be840024d",
        handlers: &[Handler::Alternatives],
        note: "awk -> mawk",
    },
    Reviewed {
        package: "nano",
        script: "postinst",
        sha256: "f8a526d749463f4b2ffcf9a30315288ea15d332cbbdb28aadf045c7ccac8fb08",
        handlers: &[Handler::Alternatives],
        note: "editor and pico -> nano",
    },
    Reviewed {
        package: "netbase",
        script: "postinst",
        sha256: "2fb18184147db995d30a311938458ff14e20382bc97635ccac62512d54d4bad8",
        handlers: &[Handler::System],
        note: "/etc/hosts (if missing) and /etc/networks",
    },
    Reviewed {
        package: "nftables",
        script: "postinst",
        sha256: "c3940d823576bb9b9bedb639356f42ac0538ace19c04a2eec32d1c61232ac840",
        handlers: &[Handler::Units],
        note: "nftables.service state only (not enabled on install)",
    },
    Reviewed {
        package: "openssh-client",
        script: "preinst",
        sha256: "562dec13f107de780d147d537f4187d061116a230a80b70a087b59ce6ef3ccf3",
        handlers: &[Handler::NoEffect],
        note: "rm_conffile (upgrade only)",
    },
    Reviewed {
        package: "openssh-client",
        script: "postinst",
        sha256: "4d5731b9c6069a2ed23878017da4f76e7f9565a42e9b70abcbd2609881cb71ba",
        handlers: &[Handler::Accounts, Handler::System],
        note: "group _ssh; ssh-agent root:_ssh 2755",
    },
    Reviewed {
        package: "openssh-server",
        script: "preinst",
        sha256: "1f41f65adab8e56b61510631458edc851e7804963ab11840c32ffcb2dc0edabb",
        handlers: &[Handler::NoEffect],
        note: "rm_conffile and init script chmod (upgrade only)",
    },
    Reviewed {
        package: "openssh-server",
        script: "postinst",
        sha256: "1f8313aaab8c83b0c758a10c84936fc867ac252302fffabaec15b36856776a67",
        handlers: &[Handler::Accounts, Handler::System, Handler::Units, Handler::FirstBoot],
        note: "sshd user; sshd_config via ucf; ssh.service enabled, ssh.socket state; host keys at first boot",
    },
    Reviewed {
        package: "openssh-server",
        script: "config",
        sha256: "832d2f304ef6ba006d6014526ca84e9fbf9a58769814f1447b0775f621008abc",
        handlers: &[Handler::NoEffect],
        note: "debconf defaults (prohibit-password, password auth yes)",
    },
    Reviewed {
        package: "passwd",
        script: "preinst",
        sha256: "403af1142cc07ad15bc47344ded36618b2fdf5753874652e416a5855b5bd54ca",
        handlers: &[Handler::NoEffect],
        note: "rm_conffile (upgrade only)",
    },
    Reviewed {
        package: "passwd",
        script: "postinst",
        sha256: "8088b1d481c11fde982629697e3e62a5126437d75b744f76e854481c38d5af8c",
        handlers: &[Handler::Accounts],
        note: "group shadow 42; shadowconfig on; tmpfiles at boot",
    },
    Reviewed {
        package: "perl-base",
        script: "preinst",
        sha256: "0dd1293f4208e384c0fb2b504692f022a68188d82020eeb086ad775a32b0ec1d",
        handlers: &[Handler::NoEffect],
        note: "symlink_to_dir (upgrade only)",
    },
    Reviewed {
        package: "perl-base",
        script: "postinst",
        sha256: "0dd1293f4208e384c0fb2b504692f022a68188d82020eeb086ad775a32b0ec1d",
        handlers: &[Handler::NoEffect],
        note: "symlink_to_dir (upgrade only)",
    },
    Reviewed {
        package: "procps",
        script: "preinst",
        sha256: "225d0157616afb6b724d992e1f9bac0f687baea52c6f35366bc8e07c86a80740",
        handlers: &[Handler::NoEffect],
        note: "conffile migrations (upgrade only)",
    },
    Reviewed {
        package: "procps",
        script: "postinst",
        sha256: "0cf81edabf00ca38d934bda9b243aea22debd9d3668deb420e3cc9cb666765e7",
        handlers: &[Handler::NoEffect],
        note: "alternatives only for *.procps binaries, which bookworm no longer ships",
    },
    Reviewed {
        package: "readline-common",
        script: "postinst",
        sha256: "94506bc8b626670c34c3f328df3615033b8520e4b686e3a9e74814bf0219aee1",
        handlers: &[Handler::System],
        note: "/etc/inputrc",
    },
    Reviewed {
        package: "sudo",
        script: "preinst",
        sha256: "7f0759116054e8c92903dc2a0f1f72025be3fba8946fd4949ddd6517060a3c04",
        handlers: &[Handler::NoEffect],
        note: "sudoers migration from old releases",
    },
    Reviewed {
        package: "sudo",
        script: "postinst",
        sha256: "a49422fa76b8a5119eed938950785d1a19b81b633ddf3aac33ddec20f4a5cfca",
        handlers: &[Handler::System],
        note: "/etc/sudoers root:root 0440; tmpfiles at boot",
    },
    Reviewed {
        package: "systemd-sysv",
        script: "postinst",
        sha256: "da14aeafe843e94d7f4cd204792660df6d759b8bf047da3ce1e5823431a5ea4c",
        handlers: &[Handler::NoEffect],
        note: "update-grub only when grub is installed",
    },
    Reviewed {
        package: "systemd",
        script: "preinst",
        sha256: "3d05a29287012288fd9401e136164e252086b04890f7d877223b4c3a07228fc4",
        handlers: &[Handler::NoEffect],
        note: "upgrade clean-ups",
    },
    Reviewed {
        package: "systemd",
        script: "postinst",
        sha256: "e8922856dc5dfce4d69ceea121e51c9907a92d0f332d49dee90ac14de04f405d",
        handlers: &[Handler::Accounts, Handler::System, Handler::Units, Handler::FirstBoot],
        note: "sysusers; machine-id; /var/log/journal; getty@tty1, remote-fs, pstore; catalog at first boot",
    },
    Reviewed {
        package: "systemd",
        script: "triggers",
        sha256: "53bab45a9732a751101d50d712615b53917fc4739598b3697124a1473ee24735",
        handlers: &[Handler::FirstBoot],
        note: "interest in the catalog (first boot) and binfmt.d (restart only)",
    },
    Reviewed {
        package: "tar",
        script: "postinst",
        sha256: "4eed7466e8f44c6b480002d80becc0d998c462b759c0118e285170a93f4b3dca",
        handlers: &[Handler::Alternatives],
        note: "rmt -> rmt-tar",
    },
    Reviewed {
        package: "tasksel-data",
        script: "postinst",
        sha256: "95a06b1ffbd0ae41c07007ce84f7713b830e62547fa0c6bb26a0678989894104",
        handlers: &[Handler::NoEffect],
        note: "doc link migration (upgrade only)",
    },
    Reviewed {
        package: "tasksel",
        script: "postinst",
        sha256: "0853e9b9c5690756cc6832bfaa2c9203057c79764647cb8262a326237723d802",
        handlers: &[Handler::NoEffect],
        note: "update-menus absent",
    },
    Reviewed {
        package: "tzdata",
        script: "preinst",
        sha256: "a262551f3548c2882ec9388fc83368146012a09c398f8e6e39c625b8656ab449",
        handlers: &[Handler::NoEffect],
        note: "dir_to_symlink (upgrade only)",
    },
    Reviewed {
        package: "tzdata",
        script: "postinst",
        sha256: "8160b6fd593c06872ad43767e3cb80d1a216ef05274a4b32e4ca878bcfc3ade2",
        handlers: &[Handler::System],
        note: "/etc/localtime and /etc/timezone",
    },
    Reviewed {
        package: "tzdata",
        script: "config",
        sha256: "069bf2cebd2b76fadb5689b46e10378abe7b7793105de5a7084b975ef724474b",
        handlers: &[Handler::NoEffect],
        note: "debconf default Etc/UTC",
    },
    Reviewed {
        package: "ucf",
        script: "preinst",
        sha256: "b0f60a85a66c50243e5347faf7f0d8fae89bb5c53d028da25f3572beb3ee5809",
        handlers: &[Handler::NoEffect],
        note: "conffile migration (upgrade only)",
    },
    Reviewed {
        package: "ucf",
        script: "postinst",
        sha256: "2cfcfd4e6df298ae79d8da5d1005279e08177d3be45efc76c92f0db4efe4451f",
        handlers: &[Handler::System],
        note: "touches /var/lib/ucf/hashfile and registry",
    },
    Reviewed {
        package: "udev",
        script: "preinst",
        sha256: "a66bfbb7d03c4b7dad131d2b592c34233d87e2f3725964aaa642e5e9c3bfb0f8",
        handlers: &[Handler::NoEffect],
        note: "chmod of an old init script on upgrade",
    },
    Reviewed {
        package: "udev",
        script: "postinst",
        sha256: "24423ed6fd11a8df1eb8fc6a7fc2fca63b527dc62edadb3a81a81d62f742913c",
        handlers: &[Handler::Accounts, Handler::FirstBoot],
        note: "groups input, sgx, kvm, render; hwdb at first boot",
    },
    Reviewed {
        package: "udev",
        script: "triggers",
        sha256: "25a3af83ef4bc6fee1fd3933f05eced51b84c16c8087deaab8461c1a55dc833c",
        handlers: &[Handler::FirstBoot, Handler::Kernel],
        note: "interest in hwdb.d (first boot); activates update-initramfs",
    },
    Reviewed {
        package: "usr-is-merged",
        script: "preinst",
        sha256: "727f2971fe428284f1dfcf88ead0d5c6fc6e1013b3ea4fbc878099076792a2af",
        handlers: &[Handler::NoEffect],
        note: "checks /usr is merged (the builder's trees are)",
    },
    Reviewed {
        package: "usr-is-merged",
        script: "postinst",
        sha256: "da90a5ff269ea58f1aa8f06a92ac37ab7f42d28787e4a7017992f67fcf48518b",
        handlers: &[Handler::NoEffect],
        note: "removes unowned biarch links (the builder creates none)",
    },
    Reviewed {
        package: "util-linux-extra",
        script: "preinst",
        sha256: "f58cda9e9bd7d31f1ace74a0dd3da6175f1149a3a9984e2cf93a2e8fd0cb3399",
        handlers: &[Handler::NoEffect],
        note: "chmod of an old init script on upgrade",
    },
    Reviewed {
        package: "util-linux-extra",
        script: "postinst",
        sha256: "03072cc8884e04bf54a0b3588426653b34b8672171007245757a5bc75f56bbb1",
        handlers: &[Handler::NoEffect],
        note: "rc.d links (unused under systemd)",
    },
    Reviewed {
        package: "util-linux",
        script: "postinst",
        sha256: "be8ee511ad25120d138b2146f94b5e47c6fe42bb84f9bd6ba3a641339af97828",
        handlers: &[Handler::Alternatives, Handler::Units],
        note: "pager -> more (50); fstrim.timer enabled",
    },
    Reviewed {
        package: "vim-common",
        script: "postinst",
        sha256: "61225be6657925ae11d8e7d5e7879cce47771d9eb5df8d280fc8e61c90dadbab",
        handlers: &[Handler::NoEffect],
        note: "update-icon-caches absent",
    },
    Reviewed {
        package: "vim-tiny",
        script: "postinst",
        sha256: "605f08aa624c5b2452bd06157e5e484dd2d75378f175f01674ca9bb327dd9b46",
        handlers: &[Handler::Alternatives],
        note: "editor, ex, rview, vi, view -> vim.tiny",
    },
    Reviewed {
        package: "whiptail",
        script: "preinst",
        sha256: "5358e8ed59f28046d490ea2bcd25d6e32a08a56932210acc7650c297fb501fb0",
        handlers: &[Handler::NoEffect],
        note: "removes old alternatives",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, scripts: &[(&str, &[u8])]) -> PackageScripts {
        PackageScripts {
            name: name.into(),
            version: "1".into(),
            arch: "amd64".into(),
            scripts: scripts
                .iter()
                .map(|(n, b)| ((*n).to_owned(), b.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn unknown_and_changed_scripts_are_reported() {
        let a = account_for(&[
            pkg(
                "foo",
                &[("postinst", b"#!/bin/sh\ntouch /x\n"), ("postrm", b"x")],
            ),
            pkg("mawk", &[("postinst", b"changed")]),
            pkg(
                "libfoo1",
                &[(
                    "triggers",
                    b"# Triggers added by dh_makeshlibs\nactivate-noawait ldconfig\n",
                )],
            ),
            pkg(
                "libbar1",
                &[("triggers", b"interest-noawait /usr/lib/bar\n")],
            ),
        ]);
        let names: Vec<_> = a
            .unreviewed
            .iter()
            .map(|(p, s, _)| (p.as_str(), s.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("foo", "postinst"),
                ("mawk", "postinst"),
                ("libbar1", "triggers")
            ]
        );
        assert_eq!(a.unreviewed[0].2, sha256_hex(b"#!/bin/sh\ntouch /x\n"));
        assert_eq!(a.emulated, [("libfoo1".to_owned(), "triggers".to_owned())]);
        assert!(a.needs("libfoo1", Handler::FirstBoot));
        assert_eq!(a.first_boot, Vec::<(String, String)>::new());
    }

    #[test]
    fn table_is_well_formed() {
        for (i, r) in REVIEWED.iter().enumerate() {
            assert_eq!(r.sha256.len(), 64, "{}", r.package);
            assert!(r.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(!r.handlers.is_empty());
            assert!(INSTALL_SCRIPTS.contains(&r.script));
            assert!(
                !REVIEWED[..i]
                    .iter()
                    .any(|o| o.package == r.package && o.script == r.script),
                "duplicate {} {}",
                r.package,
                r.script
            );
        }
    }
}
