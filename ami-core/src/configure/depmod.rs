//! A native `depmod`: the module indexes the linux-image postinst would
//! write with `depmod -a VERSION`, generated from the tree.
//!
//! The kernel package ships only `modules.order`, `modules.builtin` and
//! `modules.builtin.modinfo`. [`depmod`] reads every module (`*.ko`) under
//! `/lib/modules/VERSION`, parses its ELF `.modinfo` strings, exported
//! symbols (`__crc_*` symbols of `.symtab`, else `__ksymtab_strings`) and
//! undefined symbols, and writes the same files, byte for byte, as kmod 30's
//! `depmod -b ROOT VERSION` without configuration in `depmod.d`:
//!
//! * text: `modules.dep`, `modules.alias`, `modules.softdep`,
//!   `modules.symbols`, `modules.devname`;
//! * binary indexes (read by libkmod, so by udev and `modprobe`):
//!   `modules.dep.bin`, `modules.alias.bin`, `modules.symbols.bin`,
//!   `modules.builtin.bin`, `modules.builtin.alias.bin`.
//!
//! Byte identity depends on depmod's orders, which this module reproduces:
//! modules sorted by `modules.order`; dependencies from undefined symbols
//! resolved against exported ones, in `.symtab` order; transitive
//! dependencies listed in the order of a stack-based topological sort;
//! `modules.symbols` in the iteration order of kmod's hash table (2048
//! buckets, Paul Hsieh's "superfast" hash, keys sorted in each bucket);
//! index values sorted by priority, later insertions first among equals.
//!
//! Limits: compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are refused
//! with [`DepmodError::Compressed`] (Debian's bookworm kernels ship them
//! uncompressed); two modules with the same name (which depmod resolves
//! with its `search` configuration) are refused with
//! [`DepmodError::DuplicateModule`]; `depmod.d` configuration is not read;
//! modules missing from `modules.order` come last in path order, where
//! depmod uses the host's `readdir` order (every module of a Debian kernel
//! package is listed).

use super::{read_file, resolve_follow, write_file, ConfigureError};
use crate::{Metadata, NodeKind, Timestamp, Tree};
use std::collections::BTreeMap;

/// Errors of [`depmod`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepmodError {
    /// Reading from or writing to the tree failed.
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    /// `/lib/modules/VERSION` is not a directory in the tree.
    #[error("{path} is not a directory in the tree")]
    NoModuleDir {
        /// The path inside the tree.
        path: String,
    },
    /// A module is not a well-formed ELF relocatable object.
    #[error("{path}: malformed ELF module: {message}")]
    Elf {
        /// The path inside the tree.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A module is compressed, which this implementation does not read.
    #[error("{path}: compressed modules are not supported")]
    Compressed {
        /// The path inside the tree.
        path: String,
    },
    /// Two module files have the same module name.
    #[error("module {name} is both {first} and {second}")]
    DuplicateModule {
        /// The normalized module name.
        name: String,
        /// The first path (relative to the module directory).
        first: String,
        /// The second path.
        second: String,
    },
    /// A path or index key is not what depmod can handle (non-UTF-8 path,
    /// non-ASCII index key).
    #[error("unsupported name: {0}")]
    Unsupported(String),
    /// The symbol dependencies form a cycle, which depmod refuses too.
    #[error("dependency cycle among modules: {}", .0.join(", "))]
    Cycle(Vec<String>),
}

/// What [`depmod`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepmodReport {
    /// The module directory, as given (`/lib/modules/VERSION`).
    pub module_dir: String,
    /// Number of modules indexed.
    pub modules: usize,
    /// Number of `alias=` entries of the modules.
    pub aliases: usize,
    /// Number of symbols exported by modules.
    pub symbols: usize,
    /// Names of the files written into the module directory.
    pub files: Vec<String>,
}

/// The files written by [`depmod`], in the order depmod writes them.
pub const OUTPUT_FILES: [&str; 10] = [
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
];

/// One module as depmod sees it.
struct Module {
    /// Normalized name (basename up to the first dot, `-` → `_`).
    name: String,
    /// Path relative to the module directory.
    relpath: String,
    /// `key=value` strings of `.modinfo`, split at the first `=`.
    info: Vec<(Vec<u8>, Vec<u8>)>,
    /// Exported symbols, in depmod's reading order.
    exports: Vec<Vec<u8>>,
    /// Undefined symbols, in depmod's reading order.
    imports: Vec<Vec<u8>>,
    /// Direct dependencies (indexes into the sorted module list).
    deps: Vec<usize>,
    /// How many modules depend on this one directly.
    users: usize,
    /// Position in the topological sort.
    dep_sort_idx: usize,
}

/// Runs depmod for `kernel_version` on `tree`: reads the modules under
/// `/lib/modules/<kernel_version>` and writes the files of
/// [`OUTPUT_FILES`] next to them (mode 0644, times `epoch`).
///
/// # Errors
/// See [`DepmodError`]; nothing is written when reading fails.
pub fn depmod(
    tree: &mut Tree,
    kernel_version: &str,
    epoch: Timestamp,
) -> Result<DepmodReport, DepmodError> {
    let dir = format!("/lib/modules/{kernel_version}");
    let outputs = generate(tree, &dir)?;
    let mut report = outputs.report;
    for (name, contents) in outputs.files {
        write_file(
            tree,
            &format!("{dir}/{name}"),
            contents,
            Metadata::new(0o644),
            epoch,
        )?;
        report.files.push(name.to_owned());
    }
    Ok(report)
}

/// The generated files, not yet written.
struct Outputs {
    report: DepmodReport,
    files: Vec<(&'static str, Vec<u8>)>,
}

fn generate(tree: &Tree, dir: &str) -> Result<Outputs, DepmodError> {
    match resolve_follow(tree, dir.as_bytes()).map(|id| &tree.node(id).kind) {
        Some(NodeKind::Dir(_)) => {}
        _ => {
            return Err(DepmodError::NoModuleDir {
                path: dir.to_owned(),
            })
        }
    }
    let mut paths = Vec::new();
    find_modules(tree, dir, "", &mut paths)?;
    let mut mods = load_modules(tree, dir, &paths)?;
    sort_modules(tree, dir, &mut mods)?;
    let symbols = symbol_table(&mods);
    resolve_dependencies(&mut mods, &symbols);
    topological_sort(&mut mods)?;

    let files = vec![
        ("modules.dep", output_deps(&mods)),
        ("modules.dep.bin", output_deps_bin(&mods)?),
        ("modules.alias", output_aliases(&mods)),
        ("modules.alias.bin", output_aliases_bin(&mods)?),
        ("modules.softdep", output_softdeps(&mods)),
        ("modules.symbols", output_symbols(&mods, &symbols)),
        ("modules.symbols.bin", output_symbols_bin(&mods, &symbols)?),
        (
            "modules.builtin.bin",
            output_builtin_bin(read_file(tree, &format!("{dir}/modules.builtin"))?)?,
        ),
        (
            "modules.builtin.alias.bin",
            output_builtin_alias_bin(read_file(tree, &format!("{dir}/modules.builtin.modinfo"))?)?,
        ),
        ("modules.devname", output_devname(&mods)),
    ];
    let report = DepmodReport {
        module_dir: dir.to_owned(),
        modules: mods.len(),
        aliases: mods
            .iter()
            .map(|m| m.info.iter().filter(|(k, _)| k == b"alias").count())
            .sum(),
        symbols: symbols.len(),
        files: Vec::new(),
    };
    Ok(Outputs { report, files })
}

/// Collects the relative paths of module files under `dir/rel`, depth
/// first in name order, skipping `build` and `source` like depmod.
fn find_modules(
    tree: &Tree,
    dir: &str,
    rel: &str,
    out: &mut Vec<String>,
) -> Result<(), DepmodError> {
    let here = if rel.is_empty() {
        dir.to_owned()
    } else {
        format!("{dir}/{rel}")
    };
    let Some(id) = resolve_follow(tree, here.as_bytes()) else {
        return Ok(());
    };
    let NodeKind::Dir(d) = &tree.node(id).kind else {
        return Ok(());
    };
    let names: Vec<Vec<u8>> = d.entries().map(|(n, _)| n.to_vec()).collect();
    for name in names {
        if name == b"build" || name == b"source" {
            continue;
        }
        let name = String::from_utf8(name)
            .map_err(|e| DepmodError::Unsupported(String::from_utf8_lossy(e.as_bytes()).into()))?;
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Some(child) = resolve_follow(tree, format!("{dir}/{child_rel}").as_bytes()) else {
            continue;
        };
        match &tree.node(child).kind {
            NodeKind::Dir(_) => find_modules(tree, dir, &child_rel, out)?,
            NodeKind::File(_) => {
                if [".ko.gz", ".ko.xz", ".ko.zst"]
                    .iter()
                    .any(|e| name.len() > e.len() && name.ends_with(e))
                {
                    return Err(DepmodError::Compressed {
                        path: format!("{dir}/{child_rel}"),
                    });
                }
                if name.len() > 3 && name.ends_with(".ko") {
                    out.push(child_rel);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// kmod's `modname_normalize`: up to the first `.`, `-` replaced by `_`.
fn modname_normalize(name: &[u8]) -> Vec<u8> {
    name.iter()
        .take_while(|&&c| c != b'.' && c != 0)
        .map(|&c| if c == b'-' { b'_' } else { c })
        .collect()
}

/// kmod's `alias_normalize`: `-` → `_` outside `[...]`; `None` on an
/// unmatched bracket.
fn alias_normalize(alias: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(alias.len());
    let mut i = 0;
    while i < alias.len() {
        match alias[i] {
            b'-' => out.push(b'_'),
            b']' => return None,
            b'[' => {
                while i < alias.len() && alias[i] != b']' {
                    out.push(alias[i]);
                    i += 1;
                }
                if i == alias.len() {
                    return None;
                }
                out.push(b']');
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

fn load_modules(tree: &Tree, dir: &str, paths: &[String]) -> Result<Vec<Module>, DepmodError> {
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    let mut mods = Vec::with_capacity(paths.len());
    for rel in paths {
        let base = rel.rsplit('/').next().unwrap_or(rel);
        let name = String::from_utf8_lossy(&modname_normalize(base.as_bytes())).into_owned();
        if let Some(first) = by_name.insert(name.clone(), rel.clone()) {
            return Err(DepmodError::DuplicateModule {
                name,
                first,
                second: rel.clone(),
            });
        }
        let path = format!("{dir}/{rel}");
        let data = read_file(tree, &path)?.unwrap_or_default();
        let elf = Elf::parse(&data).map_err(|message| DepmodError::Elf {
            path: path.clone(),
            message,
        })?;
        let info = elf
            .strings(".modinfo")
            .into_iter()
            .map(|s| match s.iter().position(|&c| c == b'=') {
                Some(i) => (s[..i].to_vec(), s[i + 1..].to_vec()),
                None => (s.to_vec(), Vec::new()),
            })
            .collect();
        let exports = elf.exported_symbols();
        let imports = elf.undefined_symbols();
        mods.push(Module {
            name,
            relpath: rel.clone(),
            info,
            exports,
            imports,
            deps: Vec::new(),
            users: 0,
            dep_sort_idx: usize::MAX,
        });
    }
    Ok(mods)
}

/// Orders the modules as depmod does: first the modules_by_name hash
/// iteration order, then (when `modules.order` is well formed) a sort by
/// position in `modules.order`, unlisted modules last in discovery order.
fn sort_modules(tree: &Tree, dir: &str, mods: &mut Vec<Module>) -> Result<(), DepmodError> {
    // Discovery order gives depmod's initial sort_idx (count + 1).
    let mut sort_idx: Vec<i64> = (0..mods.len()).map(|i| i as i64 + 1).collect();
    let mut hash = KmodHash::new(512);
    for (i, m) in mods.iter().enumerate() {
        hash.add(m.name.as_bytes().to_vec(), i);
    }
    let hash_order: Vec<usize> = hash.iter().map(|(_, v)| v).collect();
    let Some(order) = read_file(tree, &format!("{dir}/modules.order"))? else {
        reorder(mods, &hash_order);
        return Ok(());
    };
    if order.last().is_some_and(|&c| c != b'\n') {
        // depmod reports a corrupted modules.order and keeps hash order.
        reorder(mods, &hash_order);
        return Ok(());
    }
    let lines: Vec<&[u8]> = order
        .split_inclusive(|&c| c == b'\n')
        .map(|l| &l[..l.len() - 1])
        .collect();
    let total = lines.len() as i64 + 1;
    let mut by_uncrelpath: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (i, m) in mods.iter().enumerate() {
        let rel = m.relpath.as_bytes();
        let slash = rel.iter().rposition(|&c| c == b'/').map_or(0, |p| p + 1);
        let len = (slash + m.name.len() + 3).min(rel.len());
        by_uncrelpath.insert(rel[..len].to_vec(), i);
    }
    for (n, line) in lines.iter().enumerate() {
        if let Some(&i) = by_uncrelpath.get(*line) {
            sort_idx[i] = n as i64 + 1 - total;
        }
    }
    let mut order: Vec<usize> = hash_order;
    order.sort_by_key(|&i| sort_idx[i]);
    reorder(mods, &order);
    Ok(())
}

fn reorder(mods: &mut Vec<Module>, order: &[usize]) {
    let mut slots: Vec<Option<Module>> = mods.drain(..).map(Some).collect();
    mods.extend(order.iter().filter_map(|&i| slots[i].take()));
}

/// The exported-symbol table, in kmod's hash (later modules replace
/// earlier owners of the same symbol).
fn symbol_table(mods: &[Module]) -> KmodHash {
    let mut symbols = KmodHash::new(2048);
    for (i, m) in mods.iter().enumerate() {
        for sym in &m.exports {
            symbols.add(sym.clone(), i);
        }
    }
    symbols
}

fn resolve_dependencies(mods: &mut [Module], symbols: &KmodHash) {
    for i in 0..mods.len() {
        let mut deps: Vec<usize> = Vec::new();
        for sym in &mods[i].imports {
            let name = sym.strip_prefix(b".").unwrap_or(sym);
            if let Some(owner) = symbols.find(name) {
                if !deps.contains(&owner) {
                    deps.push(owner);
                }
            }
        }
        for &d in &deps {
            mods[d].users += 1;
        }
        mods[i].deps = deps;
    }
}

fn topological_sort(mods: &mut [Module]) -> Result<(), DepmodError> {
    let mut users: Vec<usize> = mods.iter().map(|m| m.users).collect();
    let mut roots: Vec<usize> = (0..mods.len()).filter(|&i| users[i] == 0).collect();
    let mut sorted = 0;
    while let Some(src) = roots.pop() {
        mods[src].dep_sort_idx = sorted;
        sorted += 1;
        for k in 0..mods[src].deps.len() {
            let dst = mods[src].deps[k];
            users[dst] -= 1;
            if users[dst] == 0 {
                roots.push(dst);
            }
        }
    }
    if sorted < mods.len() {
        return Err(DepmodError::Cycle(
            mods.iter()
                .zip(&users)
                .filter(|(_, &u)| u > 0)
                .map(|(m, _)| m.name.clone())
                .collect(),
        ));
    }
    Ok(())
}

/// All (transitive) dependencies of module `i`, sorted by `dep_sort_idx`.
fn all_sorted_dependencies(mods: &[Module], i: usize) -> Vec<usize> {
    let mut seen = vec![false; mods.len()];
    let mut out = Vec::new();
    let mut stack: Vec<usize> = mods[i].deps.iter().rev().copied().collect();
    while let Some(d) = stack.pop() {
        if seen[d] {
            continue;
        }
        seen[d] = true;
        out.push(d);
        stack.extend(mods[d].deps.iter().rev());
    }
    out.sort_by_key(|&d| mods[d].dep_sort_idx);
    out
}

fn dep_line(mods: &[Module], i: usize) -> Vec<u8> {
    let mut line = format!("{}:", mods[i].relpath).into_bytes();
    for d in all_sorted_dependencies(mods, i) {
        line.push(b' ');
        line.extend_from_slice(mods[d].relpath.as_bytes());
    }
    line
}

fn output_deps(mods: &[Module]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..mods.len() {
        out.extend(dep_line(mods, i));
        out.push(b'\n');
    }
    out
}

fn output_deps_bin(mods: &[Module]) -> Result<Vec<u8>, DepmodError> {
    let mut idx = Index::new();
    for (i, m) in mods.iter().enumerate() {
        idx.insert(m.name.as_bytes(), &dep_line(mods, i), i as u32)?;
    }
    Ok(idx.write())
}

fn infos<'a>(m: &'a Module, key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    m.info
        .iter()
        .filter(move |(k, _)| k.as_slice() == key)
        .map(|(_, v)| v.as_slice())
}

fn output_aliases(mods: &[Module]) -> Vec<u8> {
    let mut out = b"# Aliases extracted from modules themselves.\n".to_vec();
    for m in mods {
        for v in infos(m, b"alias") {
            out.extend_from_slice(b"alias ");
            out.extend_from_slice(v);
            out.push(b' ');
            out.extend_from_slice(m.name.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

fn output_aliases_bin(mods: &[Module]) -> Result<Vec<u8>, DepmodError> {
    let mut idx = Index::new();
    for (i, m) in mods.iter().enumerate() {
        for v in infos(m, b"alias") {
            if let Some(alias) = alias_normalize(v) {
                idx.insert(&alias, m.name.as_bytes(), i as u32)?;
            }
        }
    }
    Ok(idx.write())
}

fn output_softdeps(mods: &[Module]) -> Vec<u8> {
    let mut out = b"# Soft dependencies extracted from modules themselves.\n".to_vec();
    for m in mods {
        for v in infos(m, b"softdep") {
            out.extend_from_slice(b"softdep ");
            out.extend_from_slice(m.name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(v);
            out.push(b'\n');
        }
    }
    out
}

fn output_symbols(mods: &[Module], symbols: &KmodHash) -> Vec<u8> {
    let mut out = b"# Aliases for symbols, used by symbol_request().\n".to_vec();
    for (name, owner) in symbols.iter() {
        out.extend_from_slice(b"alias symbol:");
        out.extend_from_slice(name);
        out.push(b' ');
        out.extend_from_slice(mods[owner].name.as_bytes());
        out.push(b'\n');
    }
    out
}

fn output_symbols_bin(mods: &[Module], symbols: &KmodHash) -> Result<Vec<u8>, DepmodError> {
    let mut idx = Index::new();
    for (name, owner) in symbols.iter() {
        let mut key = b"symbol:".to_vec();
        key.extend_from_slice(name);
        idx.insert(&key, mods[owner].name.as_bytes(), owner as u32)?;
    }
    Ok(idx.write())
}

fn output_builtin_bin(builtin: Option<Vec<u8>>) -> Result<Vec<u8>, DepmodError> {
    let Some(builtin) = builtin else {
        return Ok(Vec::new());
    };
    let mut idx = Index::new();
    for line in builtin.split_inclusive(|&c| c == b'\n') {
        if !line[0].is_ascii_alphabetic() {
            continue;
        }
        let base = line.rsplit(|&c| c == b'/').next().unwrap_or(line);
        idx.insert(&modname_normalize(base), b"", 0)?;
    }
    Ok(idx.write())
}

/// Reads bytes until `end`, NUL or the end of `data`, like depmod's
/// `flush_stream_to`: returns what was read when it stopped at `end`, an
/// empty slice otherwise.
fn flush_to<'a>(data: &'a [u8], pos: &mut usize, end: u8) -> &'a [u8] {
    let start = *pos;
    while *pos < data.len() {
        let c = data[*pos];
        *pos += 1;
        if c == end || c == 0 {
            return if c == end {
                &data[start..*pos - 1]
            } else {
                &[]
            };
        }
    }
    &[]
}

fn output_builtin_alias_bin(modinfo: Option<Vec<u8>>) -> Result<Vec<u8>, DepmodError> {
    let Some(data) = modinfo else {
        return Ok(Vec::new());
    };
    let mut idx = Index::new();
    let mut pos = 0;
    while pos < data.len() {
        let modname = flush_to(&data, &mut pos, b'.');
        if modname.is_empty() {
            continue;
        }
        let key = flush_to(&data, &mut pos, b'=');
        if key != b"alias" {
            flush_to(&data, &mut pos, 0);
            continue;
        }
        let value = flush_to(&data, &mut pos, 0);
        if value.is_empty() {
            continue;
        }
        if let Some(alias) = alias_normalize(value) {
            idx.insert(&alias, modname, 0)?;
        }
    }
    Ok(idx.write())
}

/// `sscanf(value, "<prefix>%u-%u")`.
fn parse_major_minor(value: &[u8], prefix: &[u8]) -> Option<(u32, u32)> {
    fn number(s: &[u8]) -> Option<(u32, &[u8])> {
        let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
        let v = std::str::from_utf8(&s[..n]).ok()?.parse().ok()?;
        Some((v, &s[n..]))
    }
    let rest = value.strip_prefix(prefix)?;
    let (major, rest) = number(rest)?;
    let (minor, _) = number(rest.strip_prefix(b"-")?)?;
    Some((major, minor))
}

fn output_devname(mods: &[Module]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in mods {
        let mut devname: Option<&[u8]> = None;
        let mut dev: Option<(char, u32, u32)> = None;
        for v in infos(m, b"alias") {
            if let Some(name) = v.strip_prefix(b"devname:") {
                devname = Some(name);
            } else if let Some((a, b)) = parse_major_minor(v, b"char-major-") {
                dev = Some(('c', a, b));
            } else if let Some((a, b)) = parse_major_minor(v, b"block-major-") {
                dev = Some(('b', a, b));
            }
            if dev.is_some() && devname.is_some() {
                break;
            }
        }
        if let (Some(name), Some((kind, major, minor))) = (devname, dev) {
            if out.is_empty() {
                out.extend_from_slice(b"# Device nodes to trigger on-demand module loading.\n");
            }
            out.extend_from_slice(m.name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(name);
            out.extend_from_slice(format!(" {kind}{major}:{minor}\n").as_bytes());
        }
    }
    out
}

/// kmod's hash table (`shared/hash.c`): the iteration order depmod writes
/// `modules.symbols` in. Values are module indexes.
struct KmodHash {
    buckets: Vec<Vec<(Vec<u8>, usize)>>,
    count: usize,
}

impl KmodHash {
    fn new(n_buckets: usize) -> Self {
        KmodHash {
            buckets: vec![Vec::new(); n_buckets.next_power_of_two()],
            count: 0,
        }
    }

    fn bucket(&self, key: &[u8]) -> usize {
        superfast_hash(key) as usize & (self.buckets.len() - 1)
    }

    /// Adds or replaces `key`.
    fn add(&mut self, key: Vec<u8>, value: usize) {
        let b = self.bucket(&key);
        let bucket = &mut self.buckets[b];
        match bucket.binary_search_by(|(k, _)| k.as_slice().cmp(&key)) {
            Ok(i) => bucket[i].1 = value,
            Err(i) => {
                bucket.insert(i, (key, value));
                self.count += 1;
            }
        }
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let bucket = &self.buckets[self.bucket(key)];
        bucket
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .map(|i| bucket[i].1)
    }

    fn len(&self) -> usize {
        self.count
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], usize)> + '_ {
        self.buckets
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_slice(), *v))
    }
}

/// Paul Hsieh's "SuperFastHash" as kmod implements it (little-endian
/// 16-bit reads, `char` signed).
fn superfast_hash(key: &[u8]) -> u32 {
    let signed = |c: u8| c as i8 as i32 as u32;
    let rd16 = |k: &[u8]| u32::from(u16::from_le_bytes([k[0], k[1]]));
    let len = key.len() as u32;
    let mut hash = len;
    let mut k = key;
    for _ in 0..key.len() / 4 {
        hash = hash.wrapping_add(rd16(k));
        let tmp = (rd16(&k[2..]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        k = &k[4..];
        hash = hash.wrapping_add(hash >> 11);
    }
    match key.len() & 3 {
        3 => {
            hash = hash.wrapping_add(rd16(k));
            hash ^= hash << 16;
            hash ^= signed(k[2]) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        2 => {
            hash = hash.wrapping_add(rd16(k));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        1 => {
            hash = hash.wrapping_add(signed(k[0]));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash = hash.wrapping_add(hash >> 6);
    hash
}

/// Magic number of kmod's index files.
const INDEX_MAGIC: u32 = 0xB007_F457;
/// Index format version 2.1.
const INDEX_VERSION: u32 = 0x0002_0001;
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;

/// One trie node of a kmod index.
#[derive(Default)]
struct IndexNode {
    prefix: Vec<u8>,
    children: BTreeMap<u8, usize>,
    /// (priority, value), sorted by priority, later insertions first.
    values: Vec<(u32, Vec<u8>)>,
}

/// A kmod index (libkmod's "index v2.1"): a prefix trie whose nodes carry
/// sorted values with priorities, written children first.
pub struct Index {
    nodes: Vec<IndexNode>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Index {
            nodes: vec![IndexNode::default()],
        }
    }

    /// Adds `value` with `priority` under `key`, as depmod's
    /// `index_insert`: values of one key are kept sorted by priority, a
    /// new value going before existing ones of the same priority.
    ///
    /// # Errors
    /// [`DepmodError::Unsupported`] when `key` is not 7-bit ASCII or
    /// contains NUL.
    pub fn insert(&mut self, key: &[u8], value: &[u8], priority: u32) -> Result<(), DepmodError> {
        if key.iter().any(|&c| c == 0 || c >= 128) {
            return Err(DepmodError::Unsupported(format!(
                "index key {:?} is not 7-bit ASCII",
                String::from_utf8_lossy(key)
            )));
        }
        let mut node = 0;
        let mut i = 0;
        loop {
            let prefix_len = self.nodes[node].prefix.len();
            let common = self.nodes[node]
                .prefix
                .iter()
                .zip(&key[i..])
                .take_while(|(a, b)| a == b)
                .count();
            if common < prefix_len {
                // Split: this node keeps prefix[..common]; a new child at
                // prefix[common] takes the rest with the old contents.
                let old = std::mem::take(&mut self.nodes[node]);
                let ch = old.prefix[common];
                let child = IndexNode {
                    prefix: old.prefix[common + 1..].to_vec(),
                    children: old.children,
                    values: old.values,
                };
                self.nodes.push(child);
                let child_id = self.nodes.len() - 1;
                let n = &mut self.nodes[node];
                n.prefix = old.prefix[..common].to_vec();
                n.children.insert(ch, child_id);
            }
            i += common;
            let Some(&ch) = key.get(i) else {
                let values = &mut self.nodes[node].values;
                let at = values.partition_point(|(p, _)| *p < priority);
                values.insert(at, (priority, value.to_vec()));
                return Ok(());
            };
            match self.nodes[node].children.get(&ch) {
                Some(&next) => {
                    node = next;
                    i += 1;
                }
                None => {
                    self.nodes.push(IndexNode {
                        prefix: key[i + 1..].to_vec(),
                        children: BTreeMap::new(),
                        values: vec![(priority, value.to_vec())],
                    });
                    let id = self.nodes.len() - 1;
                    self.nodes[node].children.insert(ch, id);
                    return Ok(());
                }
            }
        }
    }

    /// The index file's bytes, in depmod's exact layout.
    pub fn write(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&INDEX_MAGIC.to_be_bytes());
        out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        let root = self.write_node(0, &mut out);
        out[8..12].copy_from_slice(&root.to_be_bytes());
        out
    }

    fn write_node(&self, id: usize, out: &mut Vec<u8>) -> u32 {
        let node = &self.nodes[id];
        let mut child_offs = Vec::new();
        let range = node
            .children
            .keys()
            .next()
            .zip(node.children.keys().next_back())
            .map(|(&f, &l)| (f, l));
        if let Some((first, last)) = range {
            for ch in first..=last {
                child_offs.push(match node.children.get(&ch) {
                    Some(&c) => self.write_node(c, out),
                    None => 0,
                });
            }
        }
        let mut offset = out.len() as u32;
        if !node.prefix.is_empty() {
            out.extend_from_slice(&node.prefix);
            out.push(0);
            offset |= NODE_PREFIX;
        }
        if let Some((first, last)) = range {
            out.push(first);
            out.push(last);
            for c in child_offs {
                out.extend_from_slice(&c.to_be_bytes());
            }
            offset |= NODE_CHILDS;
        }
        if !node.values.is_empty() {
            out.extend_from_slice(&(node.values.len() as u32).to_be_bytes());
            for (priority, value) in &node.values {
                out.extend_from_slice(&priority.to_be_bytes());
                out.extend_from_slice(value);
                out.push(0);
            }
            offset |= NODE_VALUES;
        }
        offset
    }
}

/// The parts of an ELF relocatable object depmod reads.
struct Elf<'a> {
    data: &'a [u8],
    is64: bool,
    le: bool,
    /// (name, offset, size) of each section, index 0 included.
    sections: Vec<(&'a [u8], usize, usize)>,
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, String> {
        if data.len() < 52 || &data[..4] != b"\x7fELF" {
            return Err("not an ELF file".into());
        }
        let is64 = match data[4] {
            1 => false,
            2 => true,
            c => return Err(format!("unknown ELF class {c}")),
        };
        let le = match data[5] {
            1 => true,
            2 => false,
            e => return Err(format!("unknown ELF data encoding {e}")),
        };
        let mut elf = Elf {
            data,
            is64,
            le,
            sections: Vec::new(),
        };
        let (shoff, shentsize, shnum, shstrndx) = if is64 {
            (
                elf.uint(0x28, 8),
                elf.uint(0x3A, 2),
                elf.uint(0x3C, 2),
                elf.uint(0x3E, 2),
            )
        } else {
            (
                elf.uint(0x20, 4),
                elf.uint(0x2E, 2),
                elf.uint(0x30, 2),
                elf.uint(0x32, 2),
            )
        };
        let (shoff, shentsize, shnum, shstrndx) = (
            shoff.ok_or("truncated header")? as usize,
            shentsize.ok_or("truncated header")? as usize,
            shnum.ok_or("truncated header")? as usize,
            shstrndx.ok_or("truncated header")? as usize,
        );
        let mut raw = Vec::with_capacity(shnum);
        for i in 0..shnum {
            let h = shoff + i * shentsize;
            let (name, off, size) = if is64 {
                (elf.uint(h, 4), elf.uint(h + 24, 8), elf.uint(h + 32, 8))
            } else {
                (elf.uint(h, 4), elf.uint(h + 16, 4), elf.uint(h + 20, 4))
            };
            let (name, off, size) = (
                name.ok_or("truncated section headers")? as usize,
                off.ok_or("truncated section headers")? as usize,
                size.ok_or("truncated section headers")? as usize,
            );
            raw.push((name, off, size));
        }
        let names = raw
            .get(shstrndx)
            .and_then(|&(_, off, size)| data.get(off..off.checked_add(size)?))
            .ok_or("bad section name table")?;
        for (i, &(name, off, size)) in raw.iter().enumerate() {
            let in_bounds = off.checked_add(size).is_some_and(|e| e <= data.len());
            let name = if i == 0 || !in_bounds {
                &[][..]
            } else {
                names.get(name..).map_or(&[][..], cstr)
            };
            elf.sections.push((name, off, size));
        }
        Ok(elf)
    }

    fn uint(&self, off: usize, size: usize) -> Option<u64> {
        let b = self.data.get(off..off.checked_add(size)?)?;
        Some(if self.le {
            b.iter().rev().fold(0, |a, &c| (a << 8) | u64::from(c))
        } else {
            b.iter().fold(0, |a, &c| (a << 8) | u64::from(c))
        })
    }

    /// The contents of the first section named `name`.
    fn section(&self, name: &str) -> Option<&'a [u8]> {
        self.sections
            .iter()
            .skip(1)
            .find(|(n, _, _)| *n == name.as_bytes())
            .map(|&(_, off, size)| &self.data[off..off + size])
    }

    /// The non-empty NUL-separated strings of a section.
    fn strings(&self, name: &str) -> Vec<&'a [u8]> {
        self.section(name)
            .map(|s| s.split(|&c| c == 0).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// (name, shndx) of each `.symtab` entry after the null one; `None`
    /// when there is no usable symbol table.
    fn symbols(&self) -> Option<Vec<(&'a [u8], u16)>> {
        let strtab = self.section(".strtab")?;
        let symtab = self.section(".symtab")?;
        let symlen = if self.is64 { 24 } else { 16 };
        if symtab.len() % symlen != 0 {
            return None;
        }
        let base = symtab.as_ptr() as usize - self.data.as_ptr() as usize;
        let mut out = Vec::new();
        for i in 1..symtab.len() / symlen {
            let s = base + i * symlen;
            let name_off = self.uint(s, 4)? as usize;
            let shndx = self.uint(s + if self.is64 { 6 } else { 14 }, 2)? as u16;
            let name = cstr(strtab.get(name_off..)?);
            out.push((name, shndx));
        }
        Some(out)
    }

    /// Exported symbols: the `__crc_*` symbols of `.symtab` (prefix
    /// removed), else the strings of `__ksymtab_strings`.
    fn exported_symbols(&self) -> Vec<Vec<u8>> {
        let crcs: Vec<Vec<u8>> = self
            .symbols()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, _)| n.strip_prefix(b"__crc_").map(<[u8]>::to_vec))
            .collect();
        if !crcs.is_empty() {
            return crcs;
        }
        self.strings("__ksymtab_strings")
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Undefined symbols in `.symtab` order, then the `__versions` entries
    /// no undefined symbol matched.
    fn undefined_symbols(&self) -> Vec<Vec<u8>> {
        let Some(symbols) = self.symbols() else {
            return Vec::new();
        };
        let verlen = 64;
        let crclen = if self.is64 { 8 } else { 4 };
        let versions: Vec<&[u8]> = self
            .section("__versions")
            .filter(|v| v.len() % verlen == 0)
            .map(|v| v.chunks(verlen).map(|e| cstr(&e[crclen..])).collect())
            .unwrap_or_default();
        let mut visited = vec![false; versions.len()];
        let mut out = Vec::new();
        for (name, shndx) in symbols {
            if shndx != 0 || name.is_empty() {
                continue;
            }
            if let Some(i) = versions.iter().position(|v| *v == name) {
                visited[i] = true;
            }
            out.push(name.to_vec());
        }
        for (v, seen) in versions.iter().zip(visited) {
            if !seen {
                out.push(v.to_vec());
            }
        }
        out
    }
}

/// The bytes of `s` up to its first NUL.
fn cstr(s: &[u8]) -> &[u8] {
    s.iter().position(|&c| c == 0).map_or(s, |n| &s[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_normalization() {
        assert_eq!(
            alias_normalize(b"pci:v-[a-b]x-y").unwrap(),
            b"pci:v_[a-b]x_y"
        );
        assert!(alias_normalize(b"a[b").is_none());
        assert!(alias_normalize(b"a]b").is_none());
        assert_eq!(modname_normalize(b"xen-netfront.ko"), b"xen_netfront");
    }

    #[test]
    fn hash_buckets_sorted_and_replacing() {
        let mut h = KmodHash::new(4);
        h.add(b"b".to_vec(), 1);
        h.add(b"a".to_vec(), 2);
        h.add(b"b".to_vec(), 3);
        assert_eq!(h.len(), 2);
        assert_eq!(h.find(b"b"), Some(3));
        assert_eq!(h.find(b"c"), None);
    }

    #[test]
    fn major_minor() {
        assert_eq!(
            parse_major_minor(b"char-major-10-229", b"char-major-"),
            Some((10, 229))
        );
        assert_eq!(parse_major_minor(b"char-major-10-*", b"char-major-"), None);
    }
}
