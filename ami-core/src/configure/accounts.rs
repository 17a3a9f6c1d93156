//! User and group accounts: `/etc/passwd`, `/etc/group`, `/etc/shadow` and
//! `/etc/gshadow`, as base-passwd, `shadowconfig on`, the packages'
//! `adduser --system` calls and `systemd-sysusers` leave them.
//!
//! # Id allocation (deterministic)
//!
//! * base-passwd's static ids come from its master files
//!   (`/usr/share/base-passwd/{passwd,group}.master`);
//! * [`Accounts::add_system_user`] and [`Accounts::add_system_group`] do what
//!   `adduser --system` does: the lowest free id in 100..=999 (users and
//!   groups counted separately, as adduser does);
//! * `sysusers.d` entries without a fixed id get the highest free id below
//!   1000, counting down from 999, the same for the user and its group, as
//!   `systemd-sysusers` does;
//! * [`Accounts::add_user`] gives normal users the lowest free id ≥ 1000
//!   and a private group of the same name (Debian's `USERGROUPS yes`).
//!
//! Allocation therefore depends only on the order of the calls, which the
//! caller keeps fixed (the order of [`PACKAGE_ACCOUNTS`]).
//!
//! # Shadow fields
//!
//! Entries converted from the master files look like `pwconv`'s output
//! (`root:*:DAY:0:99999:7:::`), `adduser --system` ones like
//! `sshd:!:DAY::::::`, `systemd-sysusers` ones like `name:!*:DAY::::::`,
//! where `DAY` is the day of `SOURCE_DATE_EPOCH` ([`super::epoch_day`]).

use super::{read_file, write_file, ConfigureError};
use crate::{Metadata, Timestamp, Tree};

/// Path of base-passwd's master passwd file.
pub const PASSWD_MASTER: &str = "/usr/share/base-passwd/passwd.master";
/// Path of base-passwd's master group file.
pub const GROUP_MASTER: &str = "/usr/share/base-passwd/group.master";
/// The group that owns `/etc/shadow` (created with this fixed id by passwd's
/// postinst, and present in base-passwd's master file).
pub const SHADOW_GID: u32 = 42;

/// Lowest and highest id `adduser --system` hands out.
const SYSTEM_MIN: u32 = 100;
const SYSTEM_MAX: u32 = 999;
/// Lowest id of normal users and groups.
const USER_MIN: u32 = 1000;
/// Highest id of normal users and groups (login.defs' `UID_MAX`).
const USER_MAX: u32 = 60000;

/// One user: a `/etc/passwd` line plus its `/etc/shadow` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// GECOS (full name, comma separated extras).
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// The shadow fields after the name: password, last change, min, max,
    /// warn, inactive, expire, reserved (always 8 entries).
    pub shadow: [String; 8],
}

/// One group: a `/etc/group` line plus its `/etc/gshadow` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Supplementary members, in order.
    pub members: Vec<String>,
    /// The gshadow password field (`*`, `!`, `!*`).
    pub password: String,
    /// The gshadow administrators.
    pub admins: Vec<String>,
}

/// Options of a system user created like `adduser --system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemUser {
    /// Home directory (adduser's default is `/nonexistent`).
    pub home: String,
    /// Login shell (adduser's default is `/usr/sbin/nologin`).
    pub shell: String,
    /// GECOS field (empty by default).
    pub gecos: String,
    /// `--group`: also create a group of the same name and make it the
    /// primary group. Otherwise the primary group is `nogroup`.
    pub own_group: bool,
}

impl Default for SystemUser {
    fn default() -> Self {
        SystemUser {
            home: "/nonexistent".into(),
            shell: "/usr/sbin/nologin".into(),
            gecos: String::new(),
            own_group: false,
        }
    }
}

/// Options of a normal (login) user created like `adduser`/`useradd -m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalUser {
    /// A fixed uid (and gid of the private group); `None` picks the lowest
    /// free id ≥ 1000.
    pub uid: Option<u32>,
    /// GECOS field.
    pub gecos: String,
    /// Home directory (`/home/NAME` by default).
    pub home: Option<String>,
    /// Login shell.
    pub shell: String,
    /// Shadow password field: `!` (locked, the default) or a crypt hash.
    pub password: String,
}

impl Default for NormalUser {
    fn default() -> Self {
        NormalUser {
            uid: None,
            gecos: String::new(),
            home: None,
            shell: "/bin/bash".into(),
            password: "!".into(),
        }
    }
}

/// The account database of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    users: Vec<User>,
    groups: Vec<Group>,
    day: i64,
}

fn parse_err(path: &str, line: usize, message: impl Into<String>) -> ConfigureError {
    ConfigureError::Parse {
        path: path.to_owned(),
        line,
        message: message.into(),
    }
}

fn text(path: &str, bytes: Vec<u8>) -> Result<String, ConfigureError> {
    String::from_utf8(bytes).map_err(|_| parse_err(path, 0, "not UTF-8"))
}

fn lines(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
}

fn parse_id(path: &str, line: usize, s: &str) -> Result<u32, ConfigureError> {
    s.parse()
        .map_err(|_| parse_err(path, line, format!("bad id {s:?}")))
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

fn pwconv_shadow(password: &str, day: i64) -> [String; 8] {
    [
        password.to_owned(),
        day.to_string(),
        "0".into(),
        "99999".into(),
        "7".into(),
        String::new(),
        String::new(),
        String::new(),
    ]
}

fn locked_shadow(password: &str, day: i64) -> [String; 8] {
    let mut s: [String; 8] = Default::default();
    s[0] = password.to_owned();
    s[1] = day.to_string();
    s
}

impl Accounts {
    /// An empty database; `day` is the shadow "last change" day used for
    /// every entry created from now on.
    pub fn empty(day: i64) -> Self {
        Accounts {
            users: Vec::new(),
            groups: Vec::new(),
            day,
        }
    }

    /// Loads the accounts of `tree`: the existing `/etc/passwd`,
    /// `/etc/group` (and shadow files) when there are any, otherwise
    /// base-passwd's master files with shadow passwords turned on, as
    /// base-passwd's postinst followed by `shadowconfig on` produce them.
    ///
    /// # Errors
    /// Neither `/etc/passwd` nor the master files exist, or a file is
    /// malformed.
    pub fn load(tree: &Tree, day: i64) -> Result<Self, ConfigureError> {
        let mut acc = Accounts::empty(day);
        if let Some(passwd) = read_file(tree, "/etc/passwd")? {
            let shadow = read_file(tree, "/etc/shadow")?.unwrap_or_default();
            let group = read_file(tree, "/etc/group")?.unwrap_or_default();
            let gshadow = read_file(tree, "/etc/gshadow")?.unwrap_or_default();
            acc.parse_passwd("/etc/passwd", &text("/etc/passwd", passwd)?)?;
            acc.parse_group("/etc/group", &text("/etc/group", group)?)?;
            acc.parse_shadow("/etc/shadow", &text("/etc/shadow", shadow)?)?;
            acc.parse_gshadow("/etc/gshadow", &text("/etc/gshadow", gshadow)?)?;
            return Ok(acc);
        }
        let passwd = read_file(tree, PASSWD_MASTER)?.ok_or_else(|| ConfigureError::Missing {
            path: PASSWD_MASTER.into(),
        })?;
        let group = read_file(tree, GROUP_MASTER)?.ok_or_else(|| ConfigureError::Missing {
            path: GROUP_MASTER.into(),
        })?;
        acc.parse_passwd(PASSWD_MASTER, &text(PASSWD_MASTER, passwd)?)?;
        acc.parse_group(GROUP_MASTER, &text(GROUP_MASTER, group)?)?;
        // shadowconfig on: pwconv/grpconv move the password fields into
        // the shadow files (with login.defs' aging defaults).
        for u in &mut acc.users {
            let pw = std::mem::take(&mut u.shadow[0]);
            u.shadow = pwconv_shadow(&pw, day);
        }
        Ok(acc)
    }

    fn parse_passwd(&mut self, path: &str, s: &str) -> Result<(), ConfigureError> {
        for (n, l) in lines(s) {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 7 {
                return Err(parse_err(path, n, "expected 7 fields"));
            }
            let pw = if f[1] == "x" { "" } else { f[1] };
            self.users.push(User {
                name: f[0].into(),
                uid: parse_id(path, n, f[2])?,
                gid: parse_id(path, n, f[3])?,
                gecos: f[4].into(),
                home: f[5].into(),
                shell: f[6].into(),
                shadow: pwconv_shadow(pw, self.day),
            });
        }
        Ok(())
    }

    fn parse_group(&mut self, path: &str, s: &str) -> Result<(), ConfigureError> {
        for (n, l) in lines(s) {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 4 {
                return Err(parse_err(path, n, "expected 4 fields"));
            }
            let pw = if f[1] == "x" { "*" } else { f[1] };
            self.groups.push(Group {
                name: f[0].into(),
                gid: parse_id(path, n, f[2])?,
                members: list(f[3]),
                password: pw.into(),
                admins: Vec::new(),
            });
        }
        Ok(())
    }

    fn parse_shadow(&mut self, path: &str, s: &str) -> Result<(), ConfigureError> {
        for (n, l) in lines(s) {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 9 {
                return Err(parse_err(path, n, "expected 9 fields"));
            }
            if let Some(u) = self.users.iter_mut().find(|u| u.name == f[0]) {
                for (dst, src) in u.shadow.iter_mut().zip(&f[1..]) {
                    *dst = (*src).to_owned();
                }
            }
        }
        Ok(())
    }

    fn parse_gshadow(&mut self, path: &str, s: &str) -> Result<(), ConfigureError> {
        for (n, l) in lines(s) {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 4 {
                return Err(parse_err(path, n, "expected 4 fields"));
            }
            if let Some(g) = self.groups.iter_mut().find(|g| g.name == f[0]) {
                g.password = f[1].into();
                g.admins = list(f[2]);
            }
        }
        Ok(())
    }

    /// The users, in file order.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// The groups, in file order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The uid of `name`.
    pub fn uid(&self, name: &str) -> Option<u32> {
        self.user(name).map(|u| u.uid)
    }

    /// The gid of `name`.
    pub fn gid(&self, name: &str) -> Option<u32> {
        self.group(name).map(|g| g.gid)
    }

    fn uid_taken(&self, id: u32) -> bool {
        self.users.iter().any(|u| u.uid == id)
    }

    fn gid_taken(&self, id: u32) -> bool {
        self.groups.iter().any(|g| g.gid == id)
    }

    fn first_free(&self, range: std::ops::RangeInclusive<u32>, user: bool) -> Option<u32> {
        range.into_iter().find(|&id| {
            !(if user {
                self.uid_taken(id)
            } else {
                self.gid_taken(id)
            })
        })
    }

    fn check_new_group(&self, name: &str) -> Result<(), ConfigureError> {
        if name.is_empty() || name.contains([':', '\n', ',']) {
            return Err(ConfigureError::Accounts(format!("invalid name {name:?}")));
        }
        if self.group(name).is_some() {
            return Err(ConfigureError::Accounts(format!(
                "group {name} already exists"
            )));
        }
        Ok(())
    }

    fn check_new_user(&self, name: &str) -> Result<(), ConfigureError> {
        if name.is_empty() || name.contains([':', '\n', ',']) {
            return Err(ConfigureError::Accounts(format!("invalid name {name:?}")));
        }
        if self.user(name).is_some() {
            return Err(ConfigureError::Accounts(format!(
                "user {name} already exists"
            )));
        }
        Ok(())
    }

    /// Adds a group with a fixed gid (`groupadd -g GID NAME`).
    ///
    /// # Errors
    /// The name or the gid is taken, or the name is invalid.
    pub fn add_group(&mut self, name: &str, gid: u32) -> Result<u32, ConfigureError> {
        self.check_new_group(name)?;
        if self.gid_taken(gid) {
            return Err(ConfigureError::Accounts(format!("gid {gid} is taken")));
        }
        self.push_group(name, gid, "!");
        Ok(gid)
    }

    fn push_group(&mut self, name: &str, gid: u32, password: &str) {
        self.groups.push(Group {
            name: name.into(),
            gid,
            members: Vec::new(),
            password: password.into(),
            admins: Vec::new(),
        });
    }

    /// Adds a system group like `addgroup --system NAME` (the lowest free
    /// gid from 100). An existing group of that name is kept and its gid
    /// returned, as the packages' `getent group X || addgroup` guards do.
    ///
    /// # Errors
    /// No free system gid, or an invalid name.
    pub fn add_system_group(&mut self, name: &str) -> Result<u32, ConfigureError> {
        if let Some(g) = self.gid(name) {
            return Ok(g);
        }
        self.check_new_group(name)?;
        let gid = self
            .first_free(SYSTEM_MIN..=SYSTEM_MAX, false)
            .ok_or_else(|| ConfigureError::Accounts("no free system gid".into()))?;
        self.push_group(name, gid, "!");
        Ok(gid)
    }

    /// Adds a system user like `adduser --system NAME` (the lowest free uid
    /// from 100, password `!`). An existing user of that name is kept and
    /// its uid returned.
    ///
    /// # Errors
    /// No free system id, or an invalid name.
    pub fn add_system_user(
        &mut self,
        name: &str,
        opts: &SystemUser,
    ) -> Result<u32, ConfigureError> {
        if let Some(u) = self.uid(name) {
            return Ok(u);
        }
        self.check_new_user(name)?;
        let gid = if opts.own_group {
            self.add_system_group(name)?
        } else {
            self.gid("nogroup").unwrap_or(65534)
        };
        let uid = self
            .first_free(SYSTEM_MIN..=SYSTEM_MAX, true)
            .ok_or_else(|| ConfigureError::Accounts("no free system uid".into()))?;
        self.users.push(User {
            name: name.into(),
            uid,
            gid,
            gecos: opts.gecos.clone(),
            home: opts.home.clone(),
            shell: opts.shell.clone(),
            shadow: locked_shadow("!", self.day),
        });
        Ok(uid)
    }

    /// Adds a normal user with a private group of the same name (uid and
    /// gid ≥ 1000), like `useradd -U`. Returns the uid.
    ///
    /// # Errors
    /// The name or a fixed uid is taken, no free id, or an invalid name.
    pub fn add_user(&mut self, name: &str, opts: &NormalUser) -> Result<u32, ConfigureError> {
        self.check_new_user(name)?;
        self.check_new_group(name)?;
        if opts.password.contains([':', '\n']) {
            return Err(ConfigureError::Accounts("invalid password field".into()));
        }
        let uid = match opts.uid {
            Some(u) if self.uid_taken(u) => {
                return Err(ConfigureError::Accounts(format!("uid {u} is taken")))
            }
            Some(u) => u,
            None => self
                .first_free(USER_MIN..=USER_MAX, true)
                .ok_or_else(|| ConfigureError::Accounts("no free uid".into()))?,
        };
        let gid = if self.gid_taken(uid) {
            self.first_free(USER_MIN..=USER_MAX, false)
                .ok_or_else(|| ConfigureError::Accounts("no free gid".into()))?
        } else {
            uid
        };
        self.push_group(name, gid, "!");
        self.users.push(User {
            name: name.into(),
            uid,
            gid,
            gecos: opts.gecos.clone(),
            home: opts.home.clone().unwrap_or_else(|| format!("/home/{name}")),
            shell: opts.shell.clone(),
            shadow: pwconv_shadow(&opts.password, self.day),
        });
        Ok(uid)
    }

    /// Adds `user` to the supplementary members of `group` (no-op when it
    /// already is one).
    ///
    /// # Errors
    /// No such user or group.
    pub fn add_user_to_group(&mut self, user: &str, group: &str) -> Result<(), ConfigureError> {
        if self.user(user).is_none() {
            return Err(ConfigureError::Accounts(format!("no user {user}")));
        }
        let g = self
            .groups
            .iter_mut()
            .find(|g| g.name == group)
            .ok_or_else(|| ConfigureError::Accounts(format!("no group {group}")))?;
        if !g.members.iter().any(|m| m == user) {
            g.members.push(user.to_owned());
        }
        Ok(())
    }

    /// Highest id below 1000 free as a uid (when `user`) and as a gid, as
    /// systemd-sysusers allocates.
    fn sysusers_free(&self, user: bool) -> Result<u32, ConfigureError> {
        (1..=SYSTEM_MAX)
            .rev()
            .find(|&id| !(self.gid_taken(id) || (user && self.uid_taken(id))))
            .ok_or_else(|| ConfigureError::Accounts("no free sysusers id".into()))
    }

    /// Creates what `systemd-sysusers` would from the `sysusers.d`
    /// configuration in the tree: `/usr/lib/sysusers.d/*.conf`, overridden
    /// file by file by `/etc/sysusers.d`. Files are read in name order and
    /// `g` entries of all files are created before `u` entries (so a
    /// user's group is there when the user needs it), then `m` entries.
    /// Entries whose name already exists are skipped.
    ///
    /// # Errors
    /// A malformed line (unknown type, bad id, missing field).
    pub fn apply_sysusers(&mut self, tree: &Tree) -> Result<(), ConfigureError> {
        let mut files = std::collections::BTreeMap::new();
        for dir in ["/usr/lib/sysusers.d", "/etc/sysusers.d"] {
            for name in super::list_dir(tree, dir) {
                if name.ends_with(b".conf") {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    files.insert(name.clone(), format!("{dir}/{name}"));
                }
            }
        }
        let mut entries = Vec::new();
        for path in files.values() {
            let Some(bytes) = read_file(tree, path)? else {
                continue;
            };
            let s = text(path, bytes)?;
            for (n, l) in lines(&s) {
                let f = sysusers_fields(l).map_err(|m| parse_err(path, n, m))?;
                entries.push((path.clone(), n, f));
            }
        }
        for pass in ["g", "u", "m"] {
            for (path, n, f) in &entries {
                if f[0] != pass {
                    if !["g", "u", "m", "r"].contains(&f[0].as_str()) {
                        return Err(parse_err(path, *n, format!("unsupported type {}", f[0])));
                    }
                    continue;
                }
                let field = |i: usize| f.get(i).map(String::as_str).filter(|s| *s != "-");
                let name = field(1).ok_or_else(|| parse_err(path, *n, "missing name"))?;
                match pass {
                    "g" => {
                        if self.group(name).is_some() {
                            continue;
                        }
                        let gid = match field(2) {
                            Some(id) => parse_id(path, *n, id)?,
                            None => self.sysusers_free(false)?,
                        };
                        self.check_new_group(name)?;
                        self.push_group(name, gid, "!*");
                    }
                    "u" => {
                        if self.user(name).is_some() {
                            continue;
                        }
                        let (uid, gid) = match field(2) {
                            Some(id) => {
                                let (u, g) = id.split_once(':').unwrap_or((id, id));
                                let uid = parse_id(path, *n, u)?;
                                let gid = match g.parse() {
                                    Ok(g) => g,
                                    Err(_) => self.gid(g).ok_or_else(|| {
                                        parse_err(path, *n, format!("no group {g}"))
                                    })?,
                                };
                                (uid, gid)
                            }
                            None => match self.gid(name) {
                                Some(g) if !self.uid_taken(g) => (g, g),
                                Some(g) => (self.sysusers_free(true)?, g),
                                None => {
                                    let id = self.sysusers_free(true)?;
                                    (id, id)
                                }
                            },
                        };
                        if self.group(name).is_none() && !self.gid_taken(gid) {
                            self.push_group(name, gid, "!*");
                        }
                        self.check_new_user(name)?;
                        self.users.push(User {
                            name: name.into(),
                            uid,
                            gid,
                            gecos: field(3).unwrap_or("").into(),
                            home: field(4).unwrap_or("/").into(),
                            shell: field(5).unwrap_or("/usr/sbin/nologin").into(),
                            shadow: locked_shadow("!*", self.day),
                        });
                    }
                    _ => {
                        let group = field(2).ok_or_else(|| parse_err(path, *n, "missing group"))?;
                        if self.group(group).is_none() {
                            let gid = self.sysusers_free(false)?;
                            self.push_group(group, gid, "!*");
                        }
                        self.add_user_to_group(name, group)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates the system users and groups that the postinsts of the given
    /// packages create, in the fixed order of [`PACKAGE_ACCOUNTS`]
    /// (packages absent from `installed` are skipped).
    ///
    /// # Errors
    /// No free id.
    pub fn apply_package_accounts(&mut self, installed: &[&str]) -> Result<(), ConfigureError> {
        for (pkg, acct) in PACKAGE_ACCOUNTS {
            if !installed.contains(pkg) {
                continue;
            }
            match acct {
                PackageAccount::SystemGroup(g) => {
                    self.add_system_group(g)?;
                }
                PackageAccount::FixedGroup(g, gid) => {
                    if self.group(g).is_none() {
                        self.add_group(g, *gid)?;
                    }
                }
                PackageAccount::SystemUser {
                    name,
                    home,
                    own_group,
                } => {
                    let opts = SystemUser {
                        home: (*home).into(),
                        own_group: *own_group,
                        ..SystemUser::default()
                    };
                    self.add_system_user(name, &opts)?;
                }
            }
        }
        Ok(())
    }

    /// Writes `/etc/passwd` and `/etc/group` (0644 root:root) and
    /// `/etc/shadow` and `/etc/gshadow` (0640 root:shadow), replacing any
    /// existing ones.
    ///
    /// # Errors
    /// A parent directory cannot be created.
    pub fn write(&self, tree: &mut Tree, epoch: Timestamp) -> Result<(), ConfigureError> {
        let shadow_gid = self.gid("shadow").unwrap_or(SHADOW_GID);
        let mut passwd = String::new();
        let mut shadow = String::new();
        for u in &self.users {
            passwd += &format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                u.name, u.uid, u.gid, u.gecos, u.home, u.shell
            );
            shadow += &format!("{}:{}\n", u.name, u.shadow.join(":"));
        }
        let mut group = String::new();
        let mut gshadow = String::new();
        for g in &self.groups {
            let members = g.members.join(",");
            group += &format!("{}:x:{}:{members}\n", g.name, g.gid);
            gshadow += &format!(
                "{}:{}:{}:{members}\n",
                g.name,
                g.password,
                g.admins.join(",")
            );
        }
        let public = Metadata::new(0o644);
        let secret = Metadata::new(0o640).owner(0, shadow_gid);
        write_file(tree, "/etc/passwd", passwd, public.clone(), epoch)?;
        write_file(tree, "/etc/group", group, public, epoch)?;
        write_file(tree, "/etc/shadow", shadow, secret.clone(), epoch)?;
        write_file(tree, "/etc/gshadow", gshadow, secret, epoch)?;
        Ok(())
    }
}

/// Splits a sysusers.d line into fields: whitespace separated, with
/// double-quoted fields (the GECOS) kept whole.
fn sysusers_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut field = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(ch) => field.push(ch),
                    None => return Err("unterminated quote".into()),
                }
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                field.push(ch);
                chars.next();
            }
        }
        out.push(field);
    }
    if out.len() < 2 {
        return Err("expected a type and a name".into());
    }
    Ok(out)
}

/// An account a package's maintainer script creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageAccount {
    /// `addgroup --system NAME`.
    SystemGroup(&'static str),
    /// `groupadd -g GID NAME`.
    FixedGroup(&'static str, u32),
    /// `adduser --system [--group] --home HOME NAME` (shell nologin).
    SystemUser {
        /// Login name.
        name: &'static str,
        /// Home directory.
        home: &'static str,
        /// `--group`.
        own_group: bool,
    },
}

/// The accounts the reviewed postinsts create, by package, in the order a
/// conventional install configures them (so the ids match the reference
/// build: crontab 101, input 102, sgx 103, kvm 104, render 105, _ssh 106,
/// netdev 107, sshd 100).
pub const PACKAGE_ACCOUNTS: &[(&str, PackageAccount)] = &[
    ("passwd", PackageAccount::FixedGroup("shadow", SHADOW_GID)),
    ("cron-daemon-common", PackageAccount::SystemGroup("crontab")),
    ("udev", PackageAccount::SystemGroup("input")),
    ("udev", PackageAccount::SystemGroup("sgx")),
    ("udev", PackageAccount::SystemGroup("kvm")),
    ("udev", PackageAccount::SystemGroup("render")),
    ("openssh-client", PackageAccount::SystemGroup("_ssh")),
    ("ifupdown", PackageAccount::SystemGroup("netdev")),
    (
        "openssh-server",
        PackageAccount::SystemUser {
            name: "sshd",
            home: "/run/sshd",
            own_group: false,
        },
    ),
    (
        "dbus-system-bus-common",
        PackageAccount::SystemUser {
            name: "messagebus",
            home: "/nonexistent",
            own_group: true,
        },
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysusers_line_fields() {
        let f = sysusers_fields(r#"u systemd-network - "systemd Network Management""#).unwrap();
        assert_eq!(
            f,
            ["u", "systemd-network", "-", "systemd Network Management"]
        );
        assert!(sysusers_fields("u \"x").is_err());
        assert!(sysusers_fields("g").is_err());
    }
}
