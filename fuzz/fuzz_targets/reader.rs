//! Feeds arbitrary bytes to `ami_ext4::Ext4Reader` as an image and calls
//! every reader function on it, with and without checksum verification.
//! Errors are expected; a panic, a hang or an unbounded allocation is a bug.
#![no_main]

use std::io::{self, Cursor, Write};

use ami_ext4::Ext4Reader;
use libfuzzer_sys::fuzz_target;

/// A writer that takes `.0` more bytes, then fails (bounds `read_file_to`
/// on files that claim terabytes of holes).
struct Limited(usize);

impl Write for Limited {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::other("limit reached"));
        }
        let n = data.len().min(self.0);
        self.0 -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    for verify in [true, false] {
        let Ok(mut fs) = Ext4Reader::new(Cursor::new(data)) else {
            return;
        };
        fs.set_verify_checksums(verify);
        fs.set_max_read_size(1 << 20);
        let info = fs.superblock_info();
        for path in [
            &b"/"[..],
            b"/etc/hostname",
            b"/boot/grub/menu.lst",
            b"/lost+found/..",
            b"/a/b/c/d",
        ] {
            let _ = fs.lookup(path);
            let _ = fs.read_path(path);
        }
        let mut inos: Vec<u32> = (1..=info.inodes_count.min(32)).collect();
        let mut dirs = vec![2u32];
        while let Some(dir) = dirs.pop() {
            if inos.len() > 256 {
                break;
            }
            if let Ok(entries) = fs.read_dir(dir) {
                for (_, ino, ftype) in entries.into_iter().take(64) {
                    if ftype == 2 && !inos.contains(&ino) {
                        dirs.push(ino);
                    }
                    inos.push(ino);
                }
            }
        }
        for ino in inos {
            let _ = fs.metadata(ino);
            let _ = fs.read_file(ino);
            let _ = fs.read_link(ino);
            let _ = fs.xattrs(ino);
            let _ = fs.file_extents(ino);
            let _ = fs.read_file_to(ino, &mut Limited(1 << 20));
        }
    }
});
