//! The shared model of the `ami` image builder: an in-memory filesystem
//! [`Tree`], the way file contents are referenced ([`FileData`]), progress
//! reporting ([`progress`]) and reading a host directory into a tree
//! ([`scan`]).
//!
//! Every later stage hands a [`Tree`] on: the Debian unpacker fills it, the
//! native configuration edits it, and the ext4 writer (`ami-ext4`) turns it
//! into an image. A tree holds *metadata* (owners, modes, device numbers,
//! xattrs) as plain values, so building a root-owned system needs no root.
//!
//! File contents are referenced, never copied: bytes in memory, a byte range
//! of a file on the host, or zeros. Sparse files keep a list of the ranges
//! that hold data; everything else is a hole.
//!
//! # Example
//!
//! ```
//! use ami_core::{FileData, Metadata, Node, NodeKind, Tree};
//!
//! let mut tree = Tree::new(Metadata::new(0o755));
//! let etc = tree.create_dir_all(b"/etc", Metadata::new(0o755))?;
//! let hostname = tree.add(
//!     etc,
//!     b"hostname",
//!     Node::file(FileData::from_bytes(b"ami\n".to_vec()), Metadata::new(0o644)),
//! )?;
//! // A second name for the same inode.
//! tree.link(etc, b"hostname.bak", hostname)?;
//! assert_eq!(tree.link_count(hostname), 2);
//! assert_eq!(tree.lookup(b"/etc/hostname"), Some(hostname));
//! assert!(matches!(tree.node(hostname).kind, NodeKind::File(_)));
//! # Ok::<(), ami_core::TreeError>(())
//! ```
#![deny(missing_docs)]

pub mod configure;
pub mod progress;
pub mod recipe;
pub mod scan;
mod tree;

pub use tree::{
    DeviceNumber, Dir, FileData, Metadata, Node, NodeId, NodeKind, Source, Timestamp, Tree,
    TreeError, Walk,
};
