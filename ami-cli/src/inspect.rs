//! `ami inspect`: looks inside an ext4 image with the project's own reader
//! (no mount, no root): the superblock summary, a directory listing, an
//! inode's metadata, or a file's contents.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use ami_ext4::reader::{Ext4Reader, InodeInfo, InodeKind};
use anyhow::{Context, Result};

use crate::json::JsonObject;

/// Arguments of `ami inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The ext4 image.
    image: PathBuf,

    /// A path inside the image: a directory is listed, anything else is
    /// described. Without it, the filesystem is summarised.
    path: Option<std::ffi::OsString>,

    /// Print the contents of the file at PATH to stdout instead.
    #[arg(long, requires = "path")]
    cat: bool,

    /// Machine-readable output.
    #[arg(long, conflicts_with = "cat")]
    json: bool,
}

fn kind_char(k: InodeKind) -> char {
    match k {
        InodeKind::File => '-',
        InodeKind::Dir => 'd',
        InodeKind::Symlink => 'l',
        InodeKind::CharDevice => 'c',
        InodeKind::BlockDevice => 'b',
        InodeKind::Fifo => 'p',
        InodeKind::Socket => 's',
    }
}

fn mode_string(m: &InodeInfo) -> String {
    let mut s = String::new();
    s.push(kind_char(m.kind));
    let bits = m.mode;
    for (i, c) in ['r', 'w', 'x', 'r', 'w', 'x', 'r', 'w', 'x']
        .iter()
        .enumerate()
    {
        let set = bits & (0o400 >> i) != 0;
        let special = match i {
            2 => bits & 0o4000 != 0,
            5 => bits & 0o2000 != 0,
            8 => bits & 0o1000 != 0,
            _ => false,
        };
        s.push(match (set, special, i) {
            (true, true, 8) => 't',
            (false, true, 8) => 'T',
            (true, true, _) => 's',
            (false, true, _) => 'S',
            (true, false, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid_text(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn inode_json(m: &InodeInfo, name: Option<&[u8]>) -> String {
    let mut o = JsonObject::new();
    if let Some(n) = name {
        o.string("name", &String::from_utf8_lossy(n));
    }
    o.number("ino", m.ino);
    o.string("type", &kind_char(m.kind).to_string());
    o.string("mode", &format!("{:o}", m.mode & 0o7777));
    o.number("uid", m.uid);
    o.number("gid", m.gid);
    o.number("size", m.size);
    o.number("links", m.links);
    o.number("mtime", m.mtime.secs);
    o.finish()
}

/// Runs `ami inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let file =
        File::open(&args.image).with_context(|| format!("opening {}", args.image.display()))?;
    let mut fs = Ext4Reader::new(BufReader::new(file))
        .with_context(|| format!("reading {} as ext4", args.image.display()))?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let Some(path) = &args.path else {
        let i = fs.superblock_info();
        if args.json {
            let mut o = JsonObject::new();
            o.string("uuid", &uuid_text(&i.uuid));
            o.string("label", &String::from_utf8_lossy(&i.label));
            o.number("block_size", i.block_size);
            o.number("blocks", i.blocks_count);
            o.number("free_blocks", i.free_blocks_count);
            o.number("inodes", i.inodes_count);
            o.number("free_inodes", i.free_inodes_count);
            o.string("features", &i.features.join(" "));
            writeln!(out, "{}", o.finish())?;
        } else {
            writeln!(out, "UUID:        {}", uuid_text(&i.uuid))?;
            writeln!(out, "label:       {}", String::from_utf8_lossy(&i.label))?;
            writeln!(out, "block size:  {}", i.block_size)?;
            writeln!(
                out,
                "blocks:      {} ({} free)",
                i.blocks_count, i.free_blocks_count
            )?;
            writeln!(
                out,
                "inodes:      {} ({} free)",
                i.inodes_count, i.free_inodes_count
            )?;
            writeln!(out, "groups:      {}", i.groups)?;
            writeln!(out, "features:    {}", i.features.join(" "))?;
            writeln!(out, "clean:       {}", i.clean)?;
        }
        return Ok(());
    };
    let p = path.as_bytes();
    let ino = fs
        .lookup(p)
        .with_context(|| format!("looking up {}", path.to_string_lossy()))?;
    if args.cat {
        fs.read_file_to(ino, &mut out)
            .with_context(|| format!("reading {}", path.to_string_lossy()))?;
        return Ok(());
    }
    let meta = fs.metadata(ino)?;
    if meta.kind == InodeKind::Dir {
        let mut entries = fs.read_dir(ino)?;
        entries.sort();
        let mut rows = Vec::new();
        for (name, child, _) in &entries {
            let m = fs.metadata(*child)?;
            if args.json {
                rows.push(inode_json(&m, Some(name)));
            } else {
                let mut line = format!(
                    "{} {:>5} {:>6} {:>6} {:>12} {}",
                    mode_string(&m),
                    m.links,
                    m.uid,
                    m.gid,
                    m.size,
                    String::from_utf8_lossy(name)
                );
                if m.kind == InodeKind::Symlink {
                    line.push_str(" -> ");
                    line.push_str(&String::from_utf8_lossy(&fs.read_link(*child)?));
                }
                rows.push(line);
            }
        }
        if args.json {
            writeln!(out, "[{}]", rows.join(","))?;
        } else {
            for r in rows {
                writeln!(out, "{r}")?;
            }
        }
    } else if args.json {
        writeln!(out, "{}", inode_json(&meta, None))?;
    } else {
        writeln!(out, "inode:  {}", meta.ino)?;
        writeln!(
            out,
            "mode:   {} ({:o})",
            mode_string(&meta),
            meta.mode & 0o7777
        )?;
        writeln!(out, "owner:  {}:{}", meta.uid, meta.gid)?;
        writeln!(out, "size:   {}", meta.size)?;
        writeln!(out, "links:  {}", meta.links)?;
        writeln!(out, "mtime:  {}.{:09}", meta.mtime.secs, meta.mtime.nanos)?;
        if let Some(d) = meta.rdev {
            writeln!(out, "device: {}:{}", d.major, d.minor)?;
        }
        if meta.kind == InodeKind::Symlink {
            writeln!(
                out,
                "target: {}",
                String::from_utf8_lossy(&fs.read_link(ino)?)
            )?;
        }
        for (name, value) in fs.xattrs(ino)? {
            writeln!(
                out,
                "xattr:  {} = 0x{}",
                String::from_utf8_lossy(&name),
                hex(&value)
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_and_hex_text() {
        let u = [
            0x12u8, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(uuid_text(&u), "12345678-9abc-def0-0102-030405060708");
    }
}
