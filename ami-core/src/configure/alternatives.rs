//! `update-alternatives --install` and the `dpkg-divert` calls of dash, done
//! natively.
//!
//! [`scan_script`] finds the `update-alternatives --install` commands of a
//! maintainer script (backslash continuations and quotes handled; commands
//! built from shell variables are reported, not guessed). [`Alternatives`]
//! collects the candidates per group and [`Alternatives::write`] leaves what
//! update-alternatives leaves in automatic mode:
//!
//! * `/var/lib/dpkg/alternatives/NAME` in dpkg's format: `auto`, the master
//!   link, each slave's name and link, a blank line, then per candidate
//!   (sorted by path) its path, priority and one line per slave (its path or
//!   empty), and a final blank line; slaves are sorted by name;
//! * `/etc/alternatives/NAME` → the best candidate (highest priority, the
//!   first by path on ties), and the public link → `/etc/alternatives/NAME`;
//! * the same for each slave the best candidate provides and whose file
//!   exists in the tree (update-alternatives skips the others).
//!
//! [`dash_diversions`] writes `/var/lib/dpkg/diversions` as dash's postinst
//! leaves it on a fresh install.

use super::{exists, read_file, resolve_follow, write_file, write_symlink, ConfigureError};
use crate::{Metadata, Timestamp, Tree};
use std::collections::BTreeMap;

/// One `update-alternatives --install` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The public link, e.g. `/usr/bin/awk`.
    pub link: String,
    /// The group name, e.g. `awk`.
    pub name: String,
    /// The candidate, e.g. `/usr/bin/mawk`.
    pub path: String,
    /// Its priority.
    pub priority: i64,
    /// `--slave LINK NAME PATH` triples.
    pub slaves: Vec<Slave>,
}

/// A `--slave LINK NAME PATH` of an [`Install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slave {
    /// Public link of the slave.
    pub link: String,
    /// Slave name.
    pub name: String,
    /// The candidate's file for this slave.
    pub path: String,
}

/// What [`scan_script`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptAlternatives {
    /// Fully literal `--install` calls.
    pub installs: Vec<Install>,
    /// `--install` commands that use shell variables or are malformed, as
    /// written (after joining continuation lines).
    pub unresolved: Vec<String>,
}

/// Joins backslash-continued lines and splits shell words (single and
/// double quotes removed). Returns the logical lines.
fn logical_lines(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in script.lines() {
        if let Some(stripped) = line.strip_suffix('\\') {
            cur += stripped;
            cur.push(' ');
        } else {
            cur += line;
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() || c == ';' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Finds the `update-alternatives --install` calls of a script.
pub fn scan_script(script: &[u8]) -> ScriptAlternatives {
    let text = String::from_utf8_lossy(script);
    let mut out = ScriptAlternatives::default();
    for line in logical_lines(&text) {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        let words = shell_words(trimmed);
        let Some(i) = words.iter().position(|w| w == "update-alternatives") else {
            continue;
        };
        let args: Vec<&str> = words[i + 1..]
            .iter()
            .map(String::as_str)
            .take_while(|w| !matches!(*w, "||" | "&&" | "|") && !w.starts_with('>'))
            .filter(|w| *w != "--quiet")
            .collect();
        if args.first() != Some(&"--install") {
            continue;
        }
        match parse_install(&args[1..]) {
            Some(inst) if !line.contains('$') => out.installs.push(inst),
            _ => out.unresolved.push(line.trim().to_owned()),
        }
    }
    out
}

fn parse_install(args: &[&str]) -> Option<Install> {
    let [link, name, path, priority, rest @ ..] = args else {
        return None;
    };
    let mut slaves = Vec::new();
    let mut rest = rest;
    while let [flag, link, name, path, tail @ ..] = rest {
        if *flag != "--slave" {
            return None;
        }
        slaves.push(Slave {
            link: (*link).into(),
            name: (*name).into(),
            path: (*path).into(),
        });
        rest = tail;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(Install {
        link: (*link).into(),
        name: (*name).into(),
        path: (*path).into(),
        priority: priority.parse().ok()?,
        slaves,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Group {
    link: String,
    /// Slave name → link.
    slaves: BTreeMap<String, String>,
    /// Candidate path → (priority, slave name → path).
    choices: BTreeMap<String, (i64, BTreeMap<String, String>)>,
}

/// The alternative groups of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alternatives {
    groups: BTreeMap<String, Group>,
}

impl Alternatives {
    /// No groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one `--install` call.
    ///
    /// # Errors
    /// The group exists with another master link, or a slave name is used
    /// with two links.
    pub fn install(&mut self, inst: &Install) -> Result<(), ConfigureError> {
        let err = |m: String| ConfigureError::Parse {
            path: format!("update-alternatives {}", inst.name),
            line: 0,
            message: m,
        };
        let g = self
            .groups
            .entry(inst.name.clone())
            .or_insert_with(|| Group {
                link: inst.link.clone(),
                ..Group::default()
            });
        if g.link != inst.link {
            return Err(err(format!("master link {} vs {}", g.link, inst.link)));
        }
        let mut slave_paths = BTreeMap::new();
        for s in &inst.slaves {
            match g.slaves.get(&s.name) {
                Some(l) if *l != s.link => {
                    return Err(err(format!("slave {} link {} vs {}", s.name, l, s.link)))
                }
                _ => {
                    g.slaves.insert(s.name.clone(), s.link.clone());
                }
            }
            slave_paths.insert(s.name.clone(), s.path.clone());
        }
        g.choices
            .insert(inst.path.clone(), (inst.priority, slave_paths));
        Ok(())
    }

    /// The group names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    /// The candidate automatic mode selects for `name`.
    pub fn best(&self, name: &str) -> Option<&str> {
        let g = self.groups.get(name)?;
        let mut best: Option<(&String, i64)> = None;
        for (path, (prio, _)) in &g.choices {
            if best.is_none_or(|(_, p)| *prio > p) {
                best = Some((path, *prio));
            }
        }
        best.map(|(p, _)| p.as_str())
    }

    /// The `/var/lib/dpkg/alternatives/NAME` contents.
    pub fn state_file(&self, name: &str) -> Option<String> {
        let g = self.groups.get(name)?;
        let mut s = format!("auto\n{}\n", g.link);
        for (sname, slink) in &g.slaves {
            s += &format!("{sname}\n{slink}\n");
        }
        s.push('\n');
        for (path, (prio, paths)) in &g.choices {
            s += &format!("{path}\n{prio}\n");
            for sname in g.slaves.keys() {
                s += paths.get(sname).map(String::as_str).unwrap_or("");
                s.push('\n');
            }
        }
        s.push('\n');
        Some(s)
    }

    /// Writes the state files and the links of every group.
    ///
    /// # Errors
    /// A selected candidate does not exist in the tree.
    pub fn write(&self, tree: &mut Tree, epoch: Timestamp) -> Result<(), ConfigureError> {
        for (name, g) in &self.groups {
            let best = self.best(name).unwrap_or_default().to_owned();
            if resolve_follow(tree, best.as_bytes()).is_none() {
                return Err(ConfigureError::Missing { path: best });
            }
            let state = self.state_file(name).unwrap_or_default();
            let path = format!("/var/lib/dpkg/alternatives/{name}");
            write_file(tree, &path, state, Metadata::new(0o644), epoch)?;
            write_symlink(tree, &format!("/etc/alternatives/{name}"), &best, epoch)?;
            write_symlink(tree, &g.link, &format!("/etc/alternatives/{name}"), epoch)?;
            let paths = &g.choices[&best].1;
            for (sname, slink) in &g.slaves {
                match paths.get(sname) {
                    Some(p) if resolve_follow(tree, p.as_bytes()).is_some() => {
                        write_symlink(tree, &format!("/etc/alternatives/{sname}"), p, epoch)?;
                        write_symlink(tree, slink, &format!("/etc/alternatives/{sname}"), epoch)?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// dash's postinst on a fresh install: `/bin/sh` diverted to
/// `/bin/sh.distrib` and `sh.1.gz` to `sh.distrib.1.gz` (package dash),
/// recorded in `/var/lib/dpkg/diversions` (three lines each: path, diverted
/// path, package; the most recently added first, as dpkg writes them).
/// `/bin/sh` itself ships in dash's data; it is made the `dash` link if
/// missing. Existing diversions of other paths are kept.
///
/// # Errors
/// The diversions file cannot be read.
pub fn dash_diversions(tree: &mut Tree, epoch: Timestamp) -> Result<(), ConfigureError> {
    let file = "/var/lib/dpkg/diversions";
    let old = read_file(tree, file)?.unwrap_or_default();
    let old = String::from_utf8_lossy(&old);
    let lines: Vec<&str> = old.lines().collect();
    let ours = [
        [
            "/usr/share/man/man1/sh.1.gz",
            "/usr/share/man/man1/sh.distrib.1.gz",
            "dash",
        ],
        ["/bin/sh", "/bin/sh.distrib", "dash"],
    ];
    let mut out = String::new();
    for d in &ours {
        out += &format!("{}\n{}\n{}\n", d[0], d[1], d[2]);
    }
    for chunk in lines.chunks(3) {
        if chunk.len() == 3 && !ours.iter().any(|d| d[0] == chunk[0]) {
            out += &format!("{}\n{}\n{}\n", chunk[0], chunk[1], chunk[2]);
        }
    }
    write_file(tree, file, out, Metadata::new(0o644), epoch)?;
    if !exists(tree, "/bin/sh") {
        write_symlink(tree, "/bin/sh", "dash", epoch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_installs() {
        let s = br#"#!/bin/sh
        update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \
            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \
            --slave /usr/bin/nawk nawk /usr/bin/mawk
update-alternatives --install \
    "/usr/share/man/man7/builtins.7.gz" \
    builtins.7.gz \
    /usr/share/man/man7/bash-builtins.7.gz \
    10 \
  || true
	update-alternatives --install "$BINPATH"/"$BINNAME" "$BINNAME" \
	    "$BINPATH"/"$BINNAME".procps 50
	update-alternatives --remove rcp /usr/bin/scp
"#;
        let a = scan_script(s);
        assert_eq!(a.installs.len(), 2);
        assert_eq!(a.installs[0].slaves.len(), 2);
        assert_eq!(a.installs[0].priority, 5);
        assert_eq!(a.installs[1].link, "/usr/share/man/man7/builtins.7.gz");
        assert_eq!(a.unresolved.len(), 1);
    }
}
