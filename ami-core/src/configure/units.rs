//! systemd unit enablement, as `deb-systemd-helper` (called by the
//! `dh_installsystemd` snippets in the postinsts) and `systemctl enable`
//! leave it.
//!
//! Enabling a unit creates, from its `[Install]` section:
//!
//! * for each `WantedBy=T` (`RequiredBy=T`), the symlink
//!   `/etc/systemd/system/T.wants/UNIT` (`T.requires/UNIT`);
//! * for each `Alias=A`, the symlink `/etc/systemd/system/A`;
//! * the links of every unit named by `Also=`, recursively;
//!
//! each pointing at the unit file by its absolute path in the first of
//! `/etc/systemd/system`, `/lib/systemd/system`, `/usr/lib/systemd/system`
//! that has it (bookworm's units live in `/lib/systemd/system`). A template
//! unit with `DefaultInstance=I` is linked under its instance name.
//!
//! `deb-systemd-helper` also keeps state under
//! `/var/lib/systemd/deb-systemd-helper-enabled/`: `UNIT.dsh-also` lists the
//! links of the unit (Also and Alias ones in file order, then the wants and
//! requires links), and for every link it created an empty stamp file at the
//! link's path relative to `/etc/systemd/system`. Without these, a later
//! upgrade takes the unit for one the administrator disabled.

use super::{exists, read_file, write_dir, write_file, write_symlink, ConfigureError};
use crate::{Metadata, Timestamp, Tree};

/// Where the state of `deb-systemd-helper` lives.
pub const STATE_DIR: &str = "/var/lib/systemd/deb-systemd-helper-enabled";
const ETC_UNITS: &str = "/etc/systemd/system";
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// One symlink an enablement creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitLink {
    /// The link, e.g. `/etc/systemd/system/multi-user.target.wants/ssh.service`.
    pub link: String,
    /// Its target, e.g. `/lib/systemd/system/ssh.service`.
    pub target: String,
}

/// The absolute path of the unit file `name` (`/lib/systemd/system/NAME`
/// for a package's unit); a template instance (`getty@tty1.service`) is
/// found through its template (`getty@.service`).
pub fn find_unit(tree: &Tree, name: &str) -> Option<String> {
    let template = template_of(name);
    for n in [Some(name.to_owned()), template].into_iter().flatten() {
        for dir in UNIT_DIRS {
            let p = format!("{dir}/{n}");
            if super::resolve_follow(tree, p.as_bytes()).is_some() {
                return Some(p);
            }
        }
    }
    None
}

/// `getty@tty1.service` → `getty@.service`.
fn template_of(name: &str) -> Option<String> {
    let (prefix, rest) = name.split_once('@')?;
    let (instance, suffix) = rest.rsplit_once('.')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

/// The links enabling `name` creates, in `deb-systemd-helper`'s order.
///
/// # Errors
/// The unit file (or one named by `Also=`) is not in the tree.
pub fn link_closure(tree: &Tree, name: &str) -> Result<Vec<UnitLink>, ConfigureError> {
    let mut visited = vec![name.to_owned()];
    closure(tree, name, &mut visited)
}

fn closure(
    tree: &Tree,
    name: &str,
    visited: &mut Vec<String>,
) -> Result<Vec<UnitLink>, ConfigureError> {
    let path = find_unit(tree, name).ok_or_else(|| ConfigureError::Missing {
        path: format!("/lib/systemd/system/{name}"),
    })?;
    let text = read_file(tree, &path)?.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let file_name = path.rsplit('/').next().unwrap_or(name).to_owned();
    // An explicit instance is linked under its own name.
    let mut wanted_name = if file_name == name {
        file_name.clone()
    } else {
        name.to_owned()
    };
    let mut links = Vec::new();
    let mut wants = Vec::new();
    let mut in_install = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let values = value.split_whitespace().map(unquote);
        match key.to_ascii_lowercase().as_str() {
            "wantedby" => wants.extend(values.map(|v| format!("{ETC_UNITS}/{v}.wants/"))),
            "requiredby" => wants.extend(values.map(|v| format!("{ETC_UNITS}/{v}.requires/"))),
            "also" => {
                for v in values {
                    if v != file_name && !visited.iter().any(|x| x == v) {
                        visited.push(v.to_owned());
                        links.extend(closure(tree, v, visited)?);
                    }
                }
            }
            "alias" => {
                for v in values {
                    if v != file_name {
                        links.push(UnitLink {
                            link: format!("{ETC_UNITS}/{v}"),
                            target: path.clone(),
                        });
                    }
                }
            }
            "defaultinstance" if file_name == name => {
                if let (Some(inst), Some((prefix, suffix))) =
                    (values.into_iter().next(), file_name.rsplit_once('.'))
                {
                    wanted_name = format!("{prefix}{inst}.{suffix}");
                }
            }
            _ => {}
        }
    }
    for w in wants {
        links.push(UnitLink {
            link: format!("{w}{wanted_name}"),
            target: path.clone(),
        });
    }
    Ok(links)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// `systemctl enable NAME`: creates the unit's links (no
/// `deb-systemd-helper` state). Returns the links.
///
/// # Errors
/// The unit file is missing, or a link's directory cannot be created.
pub fn systemctl_enable(
    tree: &mut Tree,
    name: &str,
    epoch: Timestamp,
) -> Result<Vec<UnitLink>, ConfigureError> {
    let links = link_closure(tree, name)?;
    for l in &links {
        if !exists(tree, &l.link) {
            write_symlink(tree, &l.link, &l.target, epoch)?;
        }
    }
    Ok(links)
}

/// `deb-systemd-helper enable NAME` on a fresh install: the links, the
/// `NAME.dsh-also` state file and a stamp file per link.
///
/// # Errors
/// As [`systemctl_enable`].
pub fn dsh_enable(tree: &mut Tree, name: &str, epoch: Timestamp) -> Result<(), ConfigureError> {
    let links = systemctl_enable(tree, name, epoch)?;
    record_state(tree, name, &links, epoch)?;
    for l in &links {
        let rel = l.link.strip_prefix(ETC_UNITS).unwrap_or(&l.link);
        let stamp = format!("{STATE_DIR}{rel}");
        if !exists(tree, &stamp) {
            write_file(tree, &stamp, Vec::new(), Metadata::new(0o644), epoch)?;
        }
    }
    Ok(())
}

/// `deb-systemd-helper update-state NAME`: only the `NAME.dsh-also` state
/// file (what a unit that is not enabled on install gets).
///
/// # Errors
/// The unit file is missing.
pub fn dsh_update_state(
    tree: &mut Tree,
    name: &str,
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    let links = link_closure(tree, name)?;
    record_state(tree, name, &links, epoch)
}

fn record_state(
    tree: &mut Tree,
    name: &str,
    links: &[UnitLink],
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    let path = format!("{STATE_DIR}/{name}.dsh-also");
    let old = read_file(tree, &path)?.unwrap_or_default();
    let mut text = String::from_utf8_lossy(&old).into_owned();
    for l in links {
        if !text.lines().any(|x| x == l.link) {
            text += &l.link;
            text.push('\n');
        }
    }
    write_dir(tree, "/var/lib/systemd", Metadata::new(0o755), epoch)?;
    write_file(tree, &path, text, Metadata::new(0o644), epoch)?;
    Ok(())
}

/// What a postinst does to units on a fresh install, found by scanning it
/// for the `dh_installsystemd` snippets and `systemctl enable` calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostinstUnits {
    /// `deb-systemd-helper enable` runs (the snippet's `was-enabled` check
    /// is true on a fresh install, and the unit is not behind a
    /// `debian-installed` check as `--no-enable` units are).
    pub enable: Vec<String>,
    /// Units that only get `deb-systemd-helper update-state`.
    pub update_state: Vec<String>,
    /// `systemctl enable` calls (systemd's own postinst).
    pub systemctl_enable: Vec<String>,
}

/// Scans a postinst for unit enablement.
pub fn scan_postinst(script: &[u8]) -> PostinstUnits {
    let text = String::from_utf8_lossy(script);
    let mut out = PostinstUnits::default();
    let mut was_enabled = Vec::new();
    let mut guarded = Vec::new();
    let mut state = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(i) = words.iter().position(|w| *w == "deb-systemd-helper") {
            let args: Vec<&str> = words[i + 1..]
                .iter()
                .copied()
                .filter(|w| !w.starts_with("--"))
                .take_while(|w| !w.starts_with('>') && *w != "||" && *w != "&&")
                .collect();
            if let Some((verb, units)) = args.split_first() {
                let units = units.iter().map(|u| unquote(u).to_owned());
                match *verb {
                    "was-enabled" => was_enabled.extend(units),
                    "debian-installed" => guarded.extend(units),
                    "enable" | "update-state" => state.extend(units),
                    _ => {}
                }
            }
        }
        if let Some(i) = words.iter().position(|w| *w == "systemctl") {
            let rest = &words[i + 1..];
            if let Some(j) = rest.iter().position(|w| *w == "enable") {
                for u in &rest[j + 1..] {
                    if u.starts_with('-') || u.starts_with('>') || *u == "||" {
                        break;
                    }
                    push_unique(&mut out.systemctl_enable, unquote(u));
                }
            }
        }
    }
    for u in state {
        if was_enabled.contains(&u) && !guarded.contains(&u) {
            push_unique(&mut out.enable, &u);
        } else if !out.enable.contains(&u) {
            push_unique(&mut out.update_state, &u);
        }
    }
    out.update_state.retain(|u| !out.enable.contains(u));
    out
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_owned());
    }
}

/// Applies a scanned postinst: `systemctl enable` calls, then the
/// `deb-systemd-helper` enables and state updates.
///
/// # Errors
/// A unit file is missing.
pub fn apply_postinst(
    tree: &mut Tree,
    units: &PostinstUnits,
    epoch: Timestamp,
) -> Result<(), ConfigureError> {
    for u in &units.systemctl_enable {
        systemctl_enable(tree, u, epoch)?;
    }
    for u in &units.enable {
        dsh_enable(tree, u, epoch)?;
    }
    for u in &units.update_state {
        dsh_update_state(tree, u, epoch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_dh_snippets() {
        let s = br#"
	deb-systemd-helper unmask 'ssh.service' >/dev/null || true
	if deb-systemd-helper --quiet was-enabled 'ssh.service'; then
		deb-systemd-helper enable 'ssh.service' >/dev/null || true
	else
		deb-systemd-helper update-state 'ssh.service' >/dev/null || true
	fi
	if deb-systemd-helper debian-installed 'ssh.socket'; then
		if deb-systemd-helper --quiet was-enabled 'ssh.socket'; then
			deb-systemd-helper enable 'ssh.socket' >/dev/null || true
		fi
	fi
	deb-systemd-helper update-state 'ssh.socket' >/dev/null || true
    systemctl ${DPKG_ROOT:+--root="$DPKG_ROOT"} enable getty@tty1.service || true
"#;
        let u = scan_postinst(s);
        assert_eq!(u.enable, ["ssh.service"]);
        assert_eq!(u.update_state, ["ssh.socket"]);
        assert_eq!(u.systemctl_enable, ["getty@tty1.service"]);
        assert_eq!(template_of("getty@tty1.service").unwrap(), "getty@.service");
        assert!(template_of("getty@.service").is_none());
    }
}
