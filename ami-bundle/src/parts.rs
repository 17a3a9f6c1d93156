//! Where the parts and the manifest go, and where unbundling reads them.
//!
//! Part file names depend on the number of parts (`NAME.part.` + the index
//! padded with zeros to the digits of the count, notes §7), which is known
//! only at the end. So a [`PartSink`] receives the parts by index while
//! they are produced and learns their final names in
//! [`PartSink::commit`], together with the manifest, which is always
//! stored last: a manifest never points at missing parts.
//!
//! [`DirSink`] writes into a directory: parts go into a hidden temporary
//! directory inside it and are renamed to their final names (never
//! replacing a file) at the commit; a failed or abandoned bundle leaves
//! nothing behind. [`MemorySink`] keeps everything in memory, for tests and
//! for callers that upload directly.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Part size: 10 MiB. Every part but the last has exactly this size.
pub const PART_SIZE: u64 = 10 * 1024 * 1024;

/// The file name of part `index` of `count` parts of bundle `name`:
/// `NAME.part.N`, with `N` padded with zeros to the number of digits of
/// `count` (1–9 parts: `.part.0`; 10–99: `.part.00`; ...).
pub fn part_name(name: &str, index: usize, count: usize) -> String {
    let digits = count.max(1).to_string().len();
    format!("{name}.part.{index:0digits$}")
}

/// The manifest file name of bundle `name`: `NAME.manifest.xml`.
pub fn manifest_name(name: &str) -> String {
    format!("{name}.manifest.xml")
}

/// Receives a bundle as it is produced.
///
/// The bundler calls [`start`](PartSink::start) once, then for each part
/// [`begin_part`](PartSink::begin_part), [`write`](PartSink::write) (one or
/// more times) and [`end_part`](PartSink::end_part), and finally
/// [`commit`](PartSink::commit) if and only if everything succeeded. A sink
/// dropped without a commit must leave nothing behind.
pub trait PartSink {
    /// The bundle `name` starts. A sink that finds files of another bundle
    /// with this name should fail here ([`Error::Leftovers`]), before any
    /// work is done.
    ///
    /// # Errors
    ///
    /// Whatever the sink cannot do.
    fn start(&mut self, name: &str) -> Result<()>;

    /// Part `index` (0, 1, 2, ... in order) starts.
    ///
    /// # Errors
    ///
    /// Whatever the sink cannot do.
    fn begin_part(&mut self, index: usize) -> Result<()>;

    /// Bytes of the current part.
    ///
    /// # Errors
    ///
    /// Whatever the sink cannot do.
    fn write(&mut self, data: &[u8]) -> Result<()>;

    /// The current part is complete.
    ///
    /// # Errors
    ///
    /// Whatever the sink cannot do.
    fn end_part(&mut self) -> Result<()>;

    /// Everything succeeded: `part_names[i]` is the final file name of part
    /// `i`; the manifest `manifest` (to be stored as `manifest_name`) comes
    /// last.
    ///
    /// # Errors
    ///
    /// Whatever the sink cannot do; it should then remove what it stored.
    fn commit(&mut self, part_names: &[String], manifest_name: &str, manifest: &[u8])
        -> Result<()>;
}

/// Supplies the parts of a bundle to unbundle, by file name.
pub trait PartSource {
    /// Opens the part `filename` (a name from the manifest).
    ///
    /// # Errors
    ///
    /// [`Error::ReadPart`] if it cannot be opened.
    fn open(&mut self, filename: &str) -> Result<Box<dyn Read>>;
}

/// Writes a bundle into a directory (see the module docs).
#[derive(Debug)]
pub struct DirSink {
    dir: PathBuf,
    name: Option<String>,
    temp: Option<tempfile::TempDir>,
    current: Option<(usize, File)>,
    /// Final paths renamed so far during a commit (removed again if it
    /// fails).
    committed: Vec<PathBuf>,
}

impl DirSink {
    /// A sink writing into `dir`, which must exist.
    pub fn new(dir: impl Into<PathBuf>) -> DirSink {
        DirSink {
            dir: dir.into(),
            name: None,
            temp: None,
            current: None,
            committed: Vec::new(),
        }
    }

    /// The destination directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_err(&self, path: PathBuf) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Write { path, source }
    }

    fn temp_path(&self, file: &str) -> Result<PathBuf> {
        match &self.temp {
            Some(t) => Ok(t.path().join(file)),
            None => Err(Error::Sink("DirSink used before start".into())),
        }
    }

    /// Files in the destination that belong to a bundle named `name`.
    fn leftovers(&self, name: &str) -> Result<Vec<String>> {
        let manifest = manifest_name(name);
        let part_prefix = format!("{name}.part.");
        let entries = fs::read_dir(&self.dir).map_err(self.write_err(self.dir.clone()))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(self.write_err(self.dir.clone()))?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if *file == manifest || file.starts_with(&part_prefix) {
                found.push(file.into_owned());
            }
        }
        found.sort();
        Ok(found)
    }

    /// Renames `from` to `to` unless `to` exists.
    fn rename_new(&mut self, from: &Path, to: &Path) -> Result<()> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        use rustix::io::Errno;
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let name = self.name.clone().unwrap_or_default();
                let file = to
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(Error::Leftovers {
                    dir: self.dir.clone(),
                    name,
                    files: vec![file],
                });
            }
            // Filesystems without RENAME_NOREPLACE: check, then rename.
            Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => {
                if to.symlink_metadata().is_ok() {
                    return Err(Error::Leftovers {
                        dir: self.dir.clone(),
                        name: self.name.clone().unwrap_or_default(),
                        files: vec![to.display().to_string()],
                    });
                }
                fs::rename(from, to).map_err(self.write_err(to.to_path_buf()))?;
            }
            Err(e) => return Err((self.write_err(to.to_path_buf()))(e.into())),
        }
        self.committed.push(to.to_path_buf());
        Ok(())
    }

    fn commit_inner(
        &mut self,
        part_names: &[String],
        manifest_name: &str,
        manifest: &[u8],
    ) -> Result<()> {
        for (i, name) in part_names.iter().enumerate() {
            let from = self.temp_path(&format!("part.{i}"))?;
            let to = self.dir.join(name);
            self.rename_new(&from, &to)?;
        }
        let tmp_manifest = self.temp_path("manifest")?;
        let mut file = File::create(&tmp_manifest).map_err(self.write_err(tmp_manifest.clone()))?;
        file.write_all(manifest)
            .and_then(|()| file.sync_all())
            .map_err(self.write_err(tmp_manifest.clone()))?;
        drop(file);
        let to = self.dir.join(manifest_name);
        self.rename_new(&tmp_manifest, &to)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.write_err(self.dir.clone()))?;
        Ok(())
    }
}

impl PartSink for DirSink {
    fn start(&mut self, name: &str) -> Result<()> {
        self.name = Some(name.to_owned());
        let files = self.leftovers(name)?;
        if !files.is_empty() {
            let mut files = files;
            if files.len() > 4 {
                let more = files.len() - 3;
                files.truncate(3);
                files.push(format!("and {more} more"));
            }
            return Err(Error::Leftovers {
                dir: self.dir.clone(),
                name: name.to_owned(),
                files,
            });
        }
        let temp = tempfile::Builder::new()
            .prefix(".ami-bundle-")
            .tempdir_in(&self.dir)
            .map_err(self.write_err(self.dir.clone()))?;
        self.temp = Some(temp);
        Ok(())
    }

    fn begin_part(&mut self, index: usize) -> Result<()> {
        let path = self.temp_path(&format!("part.{index}"))?;
        let file = File::create(&path).map_err(self.write_err(path))?;
        self.current = Some((index, file));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some((index, file)) = &mut self.current else {
            return Err(Error::Sink("DirSink::write outside a part".into()));
        };
        let index = *index;
        file.write_all(data).map_err(|source| Error::Write {
            path: self
                .temp
                .as_ref()
                .map(|t| t.path().join(format!("part.{index}")))
                .unwrap_or_default(),
            source,
        })
    }

    fn end_part(&mut self) -> Result<()> {
        let Some((index, file)) = self.current.take() else {
            return Err(Error::Sink("DirSink::end_part outside a part".into()));
        };
        let path = self.temp_path(&format!("part.{index}"))?;
        file.sync_all().map_err(self.write_err(path))
    }

    fn commit(
        &mut self,
        part_names: &[String],
        manifest_name: &str,
        manifest: &[u8],
    ) -> Result<()> {
        let result = self.commit_inner(part_names, manifest_name, manifest);
        if result.is_err() {
            for path in self.committed.drain(..) {
                let _ = fs::remove_file(path);
            }
        }
        self.committed.clear();
        result
    }
}

/// Reads parts from a directory.
#[derive(Debug, Clone)]
pub struct DirSource {
    dir: PathBuf,
}

impl DirSource {
    /// Parts are read from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> DirSource {
        DirSource { dir: dir.into() }
    }
}

impl PartSource for DirSource {
    /// Opens `DIR/filename`. Only plain file names are accepted: a
    /// manifest cannot make this read outside the directory.
    fn open(&mut self, filename: &str) -> Result<Box<dyn Read>> {
        let err = |source| Error::ReadPart {
            filename: filename.to_owned(),
            source,
        };
        if filename.is_empty() || filename == "." || filename == ".." || filename.contains('/') {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a part file name must be a plain file name",
            )));
        }
        let file = File::open(self.dir.join(filename)).map_err(err)?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, file)))
    }
}

/// A bundle kept in memory: for tests, and for callers that send the
/// parts elsewhere themselves.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    /// The parts: (final name, contents). Names are empty until the commit.
    pub parts: Vec<(String, Vec<u8>)>,
    /// The manifest (name, contents), set by the commit.
    pub manifest: Option<(String, Vec<u8>)>,
    /// The bundle name given to `start`.
    pub name: Option<String>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// The manifest text, after the commit.
    pub fn manifest_text(&self) -> Option<&str> {
        self.manifest
            .as_ref()
            .and_then(|(_, m)| std::str::from_utf8(m).ok())
    }

    /// All parts concatenated (the encrypted stream).
    pub fn concatenated(&self) -> Vec<u8> {
        self.parts
            .iter()
            .flat_map(|(_, p)| p.iter().copied())
            .collect()
    }
}

impl PartSink for MemorySink {
    fn start(&mut self, name: &str) -> Result<()> {
        self.name = Some(name.to_owned());
        self.parts.clear();
        self.manifest = None;
        Ok(())
    }

    fn begin_part(&mut self, index: usize) -> Result<()> {
        if index != self.parts.len() {
            return Err(Error::Sink("parts out of order".into()));
        }
        self.parts.push((String::new(), Vec::new()));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        match self.parts.last_mut() {
            Some((_, part)) => {
                part.extend_from_slice(data);
                Ok(())
            }
            None => Err(Error::Sink("MemorySink::write outside a part".into())),
        }
    }

    fn end_part(&mut self) -> Result<()> {
        Ok(())
    }

    fn commit(
        &mut self,
        part_names: &[String],
        manifest_name: &str,
        manifest: &[u8],
    ) -> Result<()> {
        if part_names.len() != self.parts.len() {
            return Err(Error::Sink("wrong number of part names".into()));
        }
        for ((name, _), final_name) in self.parts.iter_mut().zip(part_names) {
            name.clone_from(final_name);
        }
        self.manifest = Some((manifest_name.to_owned(), manifest.to_vec()));
        Ok(())
    }
}

impl PartSource for MemorySink {
    /// Opens a copy of the part `filename`.
    fn open(&mut self, filename: &str) -> Result<Box<dyn Read>> {
        match self.parts.iter().find(|(name, _)| name == filename) {
            Some((_, data)) => Ok(Box::new(io::Cursor::new(data.clone()))),
            None => Err(Error::ReadPart {
                filename: filename.to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such part"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_padded_to_the_count() {
        assert_eq!(part_name("x", 0, 1), "x.part.0");
        assert_eq!(part_name("x", 8, 9), "x.part.8");
        assert_eq!(part_name("x", 0, 10), "x.part.00");
        assert_eq!(part_name("x", 9, 10), "x.part.09");
        assert_eq!(part_name("x", 10, 11), "x.part.10");
        assert_eq!(part_name("x", 5, 100), "x.part.005");
        assert_eq!(manifest_name("x"), "x.manifest.xml");
    }

    #[test]
    fn dir_sink_commits_atomically_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let list = || {
            let mut names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        // Abandoned: nothing remains.
        {
            let mut sink = DirSink::new(dir.path());
            sink.start("img").unwrap();
            sink.begin_part(0).unwrap();
            sink.write(b"abc").unwrap();
            assert_eq!(list().len(), 1); // the hidden temporary directory
        }
        assert!(list().is_empty());
        // Committed.
        let mut sink = DirSink::new(dir.path());
        sink.start("img").unwrap();
        for i in 0..2 {
            sink.begin_part(i).unwrap();
            sink.write(&[i as u8; 3]).unwrap();
            sink.end_part().unwrap();
        }
        sink.commit(
            &["img.part.0".to_owned(), "img.part.1".to_owned()],
            "img.manifest.xml",
            b"<manifest/>",
        )
        .unwrap();
        drop(sink);
        assert_eq!(list(), ["img.manifest.xml", "img.part.0", "img.part.1"]);
        assert_eq!(fs::read(dir.path().join("img.part.1")).unwrap(), [1, 1, 1]);
        // A second bundle with the same name is refused up front.
        let mut sink = DirSink::new(dir.path());
        assert!(
            matches!(sink.start("img"), Err(Error::Leftovers { files, .. }) if files.len() == 3)
        );
        // Another name is fine.
        let mut sink = DirSink::new(dir.path());
        sink.start("other").unwrap();
    }

    #[test]
    fn dir_sink_commit_never_replaces_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = DirSink::new(dir.path());
        sink.start("img").unwrap();
        sink.begin_part(0).unwrap();
        sink.write(b"new").unwrap();
        sink.end_part().unwrap();
        // Someone else writes a part 1 meanwhile.
        fs::write(dir.path().join("img.part.1"), b"old").unwrap();
        sink.begin_part(1).unwrap();
        sink.end_part().unwrap();
        let err = sink
            .commit(
                &["img.part.0".to_owned(), "img.part.1".to_owned()],
                "img.manifest.xml",
                b"m",
            )
            .unwrap_err();
        assert!(matches!(err, Error::Leftovers { .. }));
        drop(sink);
        // Part 0 was taken back; the other file is untouched.
        assert!(!dir.path().join("img.part.0").exists());
        assert!(!dir.path().join("img.manifest.xml").exists());
        assert_eq!(fs::read(dir.path().join("img.part.1")).unwrap(), b"old");
    }

    #[test]
    fn dir_source_stays_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("p"), b"data").unwrap();
        let mut source = DirSource::new(dir.path());
        let mut data = Vec::new();
        source.open("p").unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(data, b"data");
        for bad in ["../p", "/etc/passwd", "..", ""] {
            assert!(matches!(source.open(bad), Err(Error::ReadPart { .. })));
        }
    }
}
