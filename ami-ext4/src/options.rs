//! [`FormatOptions`]: everything that shapes an image, with documented
//! defaults. Options are checked when [`format()`](crate::format()) runs, not in
//! the setters, because they often come from user input.

use ami_core::Timestamp;

/// The ext4 feature set to write (see the module docs of the crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Debian 12 `mke2fs -t ext4` defaults: has_journal, ext_attr,
    /// resize_inode, dir_index, filetype, extent, 64bit, flex_bg,
    /// sparse_super, large_file, huge_file, dir_nlink, extra_isize,
    /// metadata_csum. For HVM/UEFI root filesystems.
    #[default]
    Default,
    /// The same without `64bit` (Xen's PV-GRUB misreads it) and with
    /// `uninit_bg` (CRC-16 group checksums) instead of `metadata_csum`:
    /// 32-byte group descriptors, no other checksums. For PV-GRUB images.
    PvGrub,
}

impl Profile {
    /// Whether the profile uses `metadata_csum` (crc32c everywhere).
    pub fn metadata_csum(self) -> bool {
        self == Profile::Default
    }

    /// Whether the profile uses the `64bit` feature (64-byte descriptors).
    pub fn is_64bit(self) -> bool {
        self == Profile::Default
    }
}

/// How big the filesystem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Exactly this many bytes (rounded down to whole blocks; a trailing
    /// group too small for its own metadata is dropped, as mke2fs does).
    Bytes(u64),
    /// The smallest size that holds the tree, plus free space of this many
    /// percent of the blocks the tree uses.
    Fit {
        /// Extra free space in percent of the blocks in use.
        headroom_percent: u32,
    },
}

/// How many inodes the filesystem has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inodes {
    /// At least this many inodes in total (rounded up to whole inode-table
    /// blocks per group).
    Count(u64),
    /// One inode per this many bytes of filesystem (mke2fs `-i`).
    Ratio(u64),
}

/// Options for [`format()`](crate::format()). Build with [`FormatOptions::new`]
/// and the by-value setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    pub(crate) profile: Profile,
    pub(crate) block_size: u32,
    pub(crate) size: Size,
    pub(crate) inodes: Option<Inodes>,
    pub(crate) inode_size: u16,
    pub(crate) label: Vec<u8>,
    pub(crate) uuid: [u8; 16],
    pub(crate) hash_seed: Option<[u8; 16]>,
    pub(crate) reserved_percent: u8,
    pub(crate) timestamp: Timestamp,
    pub(crate) assume_zeroed: bool,
    pub(crate) journal: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl FormatOptions {
    /// The defaults: [`Profile::Default`], 4 KiB blocks,
    /// [`Size::Fit`] with 20 % headroom, inode count fitted to the tree
    /// (with 20 % spare) when the size is fitted and one inode per 16 KiB
    /// otherwise, 256-byte inodes, no label, the all-zero UUID replaced by a
    /// fixed derived one, hash seed derived from the UUID, 5 % reserved
    /// blocks, timestamp 0 (1970), storage not assumed zeroed, a journal.
    pub fn new() -> Self {
        FormatOptions {
            profile: Profile::Default,
            block_size: 4096,
            size: Size::Fit {
                headroom_percent: 20,
            },
            inodes: None,
            inode_size: 256,
            label: Vec::new(),
            uuid: [0; 16],
            hash_seed: None,
            reserved_percent: 5,
            timestamp: Timestamp::default(),
            assume_zeroed: false,
            journal: true,
        }
    }

    /// Feature profile. Default: [`Profile::Default`].
    #[must_use]
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Block size in bytes: 1024, 2048 or 4096. Default: 4096.
    #[must_use]
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }

    /// Filesystem size. Default: `Size::Fit { headroom_percent: 20 }`.
    #[must_use]
    pub fn size(mut self, size: Size) -> Self {
        self.size = size;
        self
    }

    /// Inode count or ratio. Default: fitted (see [`new`](Self::new)).
    #[must_use]
    pub fn inodes(mut self, inodes: Inodes) -> Self {
        self.inodes = Some(inodes);
        self
    }

    /// Inode size in bytes: 256, 512, 1024 (a power of two ≥ 256; 128 is
    /// rejected because it cannot hold nanosecond times). Default: 256.
    #[must_use]
    pub fn inode_size(mut self, inode_size: u16) -> Self {
        self.inode_size = inode_size;
        self
    }

    /// Volume label, at most 16 bytes. Default: none.
    #[must_use]
    pub fn label(mut self, label: impl AsRef<[u8]>) -> Self {
        self.label = label.as_ref().to_vec();
        self
    }

    /// Filesystem UUID. Default: all zero, which is replaced by a fixed
    /// UUID derived from the label (never random).
    #[must_use]
    pub fn uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = uuid;
        self
    }

    /// Seed of the directory-index hash. Default: derived from the UUID.
    #[must_use]
    pub fn hash_seed(mut self, seed: [u8; 16]) -> Self {
        self.hash_seed = Some(seed);
        self
    }

    /// Blocks reserved for root, in percent (0-50). Default: 5.
    #[must_use]
    pub fn reserved_percent(mut self, percent: u8) -> Self {
        self.reserved_percent = percent;
        self
    }

    /// Time written into the filesystem's own metadata (superblock times,
    /// the journal, resize and lost+found inodes). Default: 0 (1970).
    #[must_use]
    pub fn timestamp(mut self, t: Timestamp) -> Self {
        self.timestamp = t;
        self
    }

    /// Whether the storage already reads as zeros where nothing is written
    /// (a new or truncated file). When true, zero-filled regions (journal,
    /// unused inode-table space) are skipped and stay holes. Default: false.
    #[must_use]
    pub fn assume_zeroed(mut self, yes: bool) -> Self {
        self.assume_zeroed = yes;
        self
    }

    /// Whether to create the jbd2 journal (`has_journal`), sized like
    /// mke2fs does (1024 blocks up to 32768 blocks, 64 MiB for 2-16 GiB with
    /// 4 KiB blocks, ...). As with mke2fs, a filesystem under 2048 blocks
    /// gets none. Default: true.
    #[must_use]
    pub fn journal(mut self, yes: bool) -> Self {
        self.journal = yes;
        self
    }
}
