//! The PAM `common-*` files, as `pam-auth-update --package --force` writes
//! them on a fresh install (libpam-runtime's postinst).
//!
//! The profiles in `/usr/share/pam-configs/*` are parsed; the enabled ones
//! are those with `Default: yes` (on a fresh install nothing was "seen"
//! before and the debconf selection is empty); they are sorted by
//! `Priority` (highest first, then name in reverse byte order) and spliced
//! into the templates `/usr/share/pam/common-{auth,account,password,session,
//! session-noninteractive}`, between the "Primary" and "Additional" block
//! markers. `end` in a Primary line's control field becomes the number of
//! Primary lines that follow it (the jump over the rest of the block to the
//! `pam_permit` after the fallback `pam_deny`); in the Additional block it
//! counts the Additional lines that follow. The first module of each block
//! uses its `*-Initial` lines when it has them.
//!
//! The state pam-auth-update keeps in `/var/lib/pam` (one file per type
//! listing the modules' lines, and `seen`) is written too, so that a later
//! run on the booted system sees unmodified files.

use super::{list_dir, read_file, write_dir, write_file, ConfigureError};
use crate::{Metadata, Timestamp, Tree};
use std::collections::{BTreeMap, BTreeSet};

/// Directory of the profiles.
pub const PROFILE_DIR: &str = "/usr/share/pam-configs";
/// Directory of the pristine templates.
pub const TEMPLATE_DIR: &str = "/usr/share/pam";
/// The five types, in pam-auth-update's order.
pub const TYPES: [&str; 5] = [
    "auth",
    "account",
    "password",
    "session",
    "session-noninteractive",
];

const PRIMARY_MARK: &str = "# here are the per-package modules (the \"Primary\" block)";
const FALLBACK_MARK: &str = "# here's the fallback if no module succeeds";
const ADDITIONAL_MARK: &str = "# and here are more per-package modules (the \"Additional\" block)";
const END_MARK: &str = "# end of pam-auth-update config";

/// A parsed `pam-configs` profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Fields by name (`Name`, `Default`, `Priority`, `Auth-Type`, `Auth`,
    /// `Auth-Initial`, ...); a `-Final` suffix is dropped, continuation
    /// lines are joined with newlines and trimmed.
    pub fields: BTreeMap<String, String>,
    /// Profiles this one conflicts with.
    pub conflicts: BTreeSet<String>,
    /// The profile uses a module pam-auth-update refuses (`pam_tally`).
    pub disabled: bool,
}

impl Profile {
    /// Parses a profile's text.
    pub fn parse(text: &str) -> Profile {
        let mut p = Profile::default();
        let mut current: Option<String> = None;
        for line in text.split_inclusive('\n') {
            if let Some((name, value)) = field_line(line) {
                let name = name.strip_suffix("-Final").unwrap_or(name).to_owned();
                if name == "Conflicts" {
                    p.conflicts.extend(value.split(", ").map(str::to_owned));
                } else {
                    p.fields.insert(name.clone(), value.to_owned());
                }
                current = Some(name);
            } else {
                let t = line.trim();
                let key = current.clone().unwrap_or_default();
                let v = p.fields.entry(key).or_default();
                if !t.is_empty() {
                    v.push('\n');
                    v.push_str(t);
                }
                if v.contains("pam_tally") {
                    p.disabled = true;
                }
                let trimmed = v.trim_start_matches(|c: char| c.is_whitespace()).to_owned();
                *v = trimmed;
            }
        }
        if !p.fields.contains_key("Session-Interactive-Only") {
            for suffix in ["-Type", "", "-Initial"] {
                if let Some(v) = p.fields.get(&format!("Session{suffix}")).cloned() {
                    p.fields
                        .insert(format!("Session-noninteractive{suffix}"), v);
                }
            }
        }
        p
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn priority(&self) -> i64 {
        // Perl's numeric conversion: leading digits, otherwise 0.
        let v = self
            .fields
            .get("Priority")
            .map(String::as_str)
            .unwrap_or("");
        let v = v.trim_start();
        let digits: String = v
            .char_indices()
            .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && *c == '-'))
            .map(|(_, c)| c)
            .collect();
        digits.parse().unwrap_or(0)
    }

    /// The lines for `uctype` (`Auth`, `Session-noninteractive`, ...), the
    /// `-Initial` variant for the first module of a block.
    fn lines_for(&self, uctype: &str, first: bool) -> &str {
        if first {
            if let Some(v) = self.get(&format!("{uctype}-Initial")) {
                return v;
            }
        }
        self.fields.get(uctype).map(String::as_str).unwrap_or("")
    }
}

/// `^(\S+):\s+(.*)\s*$` on one line (with its newline).
fn field_line(line: &str) -> Option<(&str, &str)> {
    let colon = line.find(':')?;
    let name = &line[..colon];
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let rest = &line[colon + 1..];
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let value = rest.trim_start_matches(char::is_whitespace);
    Some((name, value.strip_suffix('\n').unwrap_or(value)))
}

/// What pam-auth-update writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PamFiles {
    /// `/etc/pam.d/common-TYPE` contents by type.
    pub common: BTreeMap<String, String>,
    /// `/var/lib/pam/NAME` contents by name (the five types and `seen`).
    pub state: BTreeMap<String, String>,
}

/// Merges the profiles (by file name) into the templates (by type, the
/// contents of `/usr/share/pam/common-TYPE`).
///
/// # Errors
/// A template lacks the block markers, a profile line has no control and
/// module fields, or enabled profiles conflict.
pub fn merge(
    profiles: &BTreeMap<String, Profile>,
    templates: &BTreeMap<String, String>,
) -> Result<PamFiles, ConfigureError> {
    let profiles: BTreeMap<&String, &Profile> =
        profiles.iter().filter(|(_, p)| !p.disabled).collect();
    let mut sorted: Vec<&String> = profiles.keys().copied().collect();
    sorted.sort_by(|a, b| {
        profiles[b]
            .priority()
            .cmp(&profiles[a].priority())
            .then_with(|| b.as_bytes().cmp(a.as_bytes()))
    });
    let enabled: Vec<&String> = sorted
        .iter()
        .copied()
        .filter(|n| profiles[n].fields.get("Default").map(String::as_str) == Some("yes"))
        .collect();
    for a in &enabled {
        for b in &enabled {
            if profiles[a].conflicts.contains(b.as_str()) {
                return Err(ConfigureError::Parse {
                    path: format!("{PROFILE_DIR}/{a}"),
                    line: 0,
                    message: format!("conflicts with enabled profile {b}"),
                });
            }
        }
    }
    let mut out = PamFiles::default();
    let seen: String = sorted.iter().map(|n| format!("{n}\n")).collect();
    out.state.insert("seen".into(), seen);
    for ty in TYPES {
        let uctype = ucfirst(ty);
        let template = templates.get(ty).ok_or_else(|| ConfigureError::Missing {
            path: format!("{TEMPLATE_DIR}/common-{ty}"),
        })?;
        let block = |val: &str| -> Vec<&Profile> {
            enabled
                .iter()
                .map(|n| profiles[n])
                .filter(|p| p.get(&format!("{uctype}-Type")) == Some(val))
                .collect()
        };
        let common = fill_template(
            ty,
            &uctype,
            template,
            &block("Primary"),
            &block("Additional"),
        )?;
        out.common.insert(ty.to_owned(), common);
        // The state file: Primary modules, or the null module, then the
        // Additional ones.
        let mut state = String::new();
        for (val, null) in [("Primary", true), ("Additional", false)] {
            let mut i = 0;
            for name in &enabled {
                let p = profiles[name];
                if p.get(&format!("{uctype}-Type")) != Some(val) {
                    continue;
                }
                let lines = p.lines_for(&uctype, i == 0);
                i += 1;
                if !lines.is_empty() {
                    state += &format!("Module: {name}\n{lines}\n");
                }
            }
            if null && i == 0 {
                state += "Module: null\n[default=1]\t\t\tpam_permit.so\n";
            }
        }
        out.state.insert(ty.to_owned(), state);
    }
    Ok(out)
}

fn ucfirst(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Splices the blocks into one template.
fn fill_template(
    ty: &str,
    uctype: &str,
    template: &str,
    primary: &[&Profile],
    additional: &[&Profile],
) -> Result<String, ConfigureError> {
    let short = ty.strip_suffix("-noninteractive").unwrap_or(ty);
    let mut out = String::new();
    let mut state = 0;
    for line in template.split_inclusive('\n') {
        match state {
            1 | 3 => {
                let mark = if state == 1 { FALLBACK_MARK } else { END_MARK };
                if line.starts_with(mark) {
                    out += line;
                    state += 1;
                }
                continue;
            }
            _ => out += line,
        }
        let (mark, mods, is_primary) = match state {
            0 => (PRIMARY_MARK, primary, true),
            2 => (ADDITIONAL_MARK, additional, false),
            _ => continue,
        };
        if !line.starts_with(mark) {
            continue;
        }
        let chosen: Vec<&str> = mods
            .iter()
            .enumerate()
            .map(|(i, p)| p.lines_for(uctype, i == 0))
            .collect();
        let mut count: i64 = chosen
            .iter()
            .map(|o| o.split('\n').filter(|l| !l.is_empty()).count() as i64)
            .sum();
        if !is_primary {
            count -= 1;
        }
        if is_primary && count == 0 {
            out += &format!("{short}\t[default=1]\t\t\tpam_permit.so\n");
        }
        for o in chosen {
            if o.is_empty() {
                continue;
            }
            for l in o.split('\n') {
                out += &format!("{short}\t{}", merge_one_line(l, count, ty)?);
                count -= 1;
            }
        }
        state += 1;
    }
    if state < 4 {
        return Err(ConfigureError::Parse {
            path: format!("{TEMPLATE_DIR}/common-{ty}"),
            line: 0,
            message: "missing pam-auth-update block markers".into(),
        });
    }
    Ok(out)
}

/// One profile line: `CONTROL MODULE OPTIONS...`, with `end` in the control
/// and module part replaced by `count`, options joined by single spaces.
fn merge_one_line(line: &str, count: i64, ty: &str) -> Result<String, ConfigureError> {
    let bad = || ConfigureError::Parse {
        path: format!("{PROFILE_DIR} ({ty})"),
        line: 0,
        message: format!("bad module line {line:?}"),
    };
    // The control: a bracketed list or a word.
    let ctl_end = if line.starts_with('[') {
        line.find(']').ok_or_else(bad)? + 1
    } else {
        line.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(line.len())
    };
    if ctl_end == 0 {
        return Err(bad());
    }
    let after_ctl = &line[ctl_end..];
    let ws = after_ctl.len() - after_ctl.trim_start().len();
    if ws == 0 {
        return Err(bad());
    }
    let module_start = ctl_end + ws;
    let module_end = line[module_start..]
        .find(char::is_whitespace)
        .map_or(line.len(), |i| module_start + i);
    if module_end == module_start {
        return Err(bad());
    }
    let modline = line[..module_end].replace("end", &count.to_string());
    let opts: Vec<&str> = line[module_end..].split_whitespace().collect();
    Ok(format!("{modline} {}\n", opts.join(" ")))
}

/// Reads the profiles of `dir` in the tree (skipping editor backups as
/// pam-auth-update does).
///
/// # Errors
/// A profile cannot be read.
pub fn read_profiles(tree: &Tree, dir: &str) -> Result<BTreeMap<String, Profile>, ConfigureError> {
    let mut out = BTreeMap::new();
    for name in list_dir(tree, dir) {
        let name = String::from_utf8_lossy(&name).into_owned();
        if name.ends_with('~') || (name.len() > 1 && name.starts_with('#') && name.ends_with('#')) {
            continue;
        }
        let path = format!("{dir}/{name}");
        if let Some(bytes) = read_file(tree, &path)? {
            out.insert(name, Profile::parse(&String::from_utf8_lossy(&bytes)));
        }
    }
    Ok(out)
}

/// Runs the merge on the tree's profiles and templates and writes
/// `/etc/pam.d/common-*` and `/var/lib/pam/*` (0644 root:root).
///
/// # Errors
/// Missing templates, or as [`merge`].
pub fn configure(tree: &mut Tree, epoch: Timestamp) -> Result<(), ConfigureError> {
    let profiles = read_profiles(tree, PROFILE_DIR)?;
    let mut templates = BTreeMap::new();
    for ty in TYPES {
        let path = format!("{TEMPLATE_DIR}/common-{ty}");
        let bytes = read_file(tree, &path)?.ok_or(ConfigureError::Missing { path })?;
        templates.insert(ty.to_owned(), String::from_utf8_lossy(&bytes).into_owned());
    }
    let files = merge(&profiles, &templates)?;
    write_dir(tree, "/var/lib/pam", Metadata::new(0o755), epoch)?;
    for (ty, text) in files.common {
        let path = format!("/etc/pam.d/common-{ty}");
        write_file(tree, &path, text, Metadata::new(0o644), epoch)?;
    }
    for (name, text) in files.state {
        let path = format!("/var/lib/pam/{name}");
        write_file(tree, &path, text, Metadata::new(0o644), epoch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line() {
        let l = "[success=end default=ignore]\tpam_unix.so nullok  try_first_pass";
        assert_eq!(
            merge_one_line(l, 2, "auth").unwrap(),
            "[success=2 default=ignore]\tpam_unix.so nullok try_first_pass\n"
        );
        assert_eq!(
            merge_one_line("required\tpam_unix.so", 0, "session").unwrap(),
            "required\tpam_unix.so \n"
        );
        assert!(merge_one_line("pam_unix.so", 0, "auth").is_err());
    }

    #[test]
    fn profile_fields() {
        let p = Profile::parse(
            "Name: X\nDefault: yes\nPriority: 10\nAuth-Type: Primary\nAuth-Final:\n\tfoo\tbar.so a\n\n\tbaz  q.so\n",
        );
        assert_eq!(p.fields["Auth"], "foo\tbar.so a\nbaz  q.so");
        assert_eq!(p.priority(), 10);
        assert!(!p.disabled);
        assert!(Profile::parse("Auth:\n required pam_tally.so\n").disabled);
    }
}
