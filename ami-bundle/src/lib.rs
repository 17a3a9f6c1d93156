//! EC2 instance-store bundles: what Amazon's `ec2-bundle-image` and
//! `ec2-unbundle` do, natively and in one streaming pass.
//!
//! An instance-store AMI is registered from a *bundle* in S3: the disk
//! image as a GNU tar stream, gzipped, encrypted with AES-128-CBC under a
//! random key, cut into 10 MiB parts, plus a signed XML manifest that lists
//! the parts with their SHA-1 digests and carries the AES key and IV
//! encrypted for EC2's certificate and for the user's. This crate writes
//! bundles byte-compatible with Amazon's Ruby tools (manifest version
//! 2007-10-10) and reads bundles of any producer.
//!
//! # From the top
//!
//! * [`Bundler`] makes a bundle. Its [`BundleOptions`] hold the bundle name,
//!   the [`AccountId`], the [`Arch`], the user's [`Certificate`] and
//!   [`PrivateKey`], the EC2 certificate ([`Ec2Cert`] picks the right one
//!   per region; they ship with the crate), kernel and ramdisk ids, block
//!   device mappings and product codes. [`Bundler::bundle`] reads an image
//!   (any `Read + Seek`, described by an [`ImageInfo`]: size, mode, mtime
//!   and, for a sparse image, its data ranges), takes the random key and
//!   IV from a caller-provided [`rand::CryptoRng`] (seed one for
//!   reproducible bundles), and returns the [`Bundle`]: the signed
//!   [`Manifest`], its text and the part sizes.
//! * A [`PartSink`] receives the parts as they are made and the manifest
//!   last. [`DirSink`] writes `NAME.part.NN` and `NAME.manifest.xml` into a
//!   directory atomically (nothing is left behind on error, and files of
//!   another bundle with the same name are never replaced); [`MemorySink`]
//!   keeps them in memory. An uploader takes the [`Bundle`] (file names
//!   and digests in `manifest.image.parts`, the manifest last) or
//!   implements [`PartSink`] itself.
//! * [`unbundle`] checks a bundle and writes the image back (to any
//!   [`ImageWriter`]); [`unbundle_to_dir`] does it from and to directories,
//!   renaming the image into place only after every check passed.
//! * [`keys::generate`] makes a signing key and its self-signed
//!   certificate, like the tutorial's `openssl req`.
//! * The stages are public too: [`TarStream`] (GNU tar of one file, as
//!   `tar -S` writes it), [`ParallelGzip`] (pigz-style gzip on all
//!   cores), and the [`manifest`] writer, parser and signature check.
//!
//! The byte-level format is described in the module docs of [`tar`],
//! [`gzip`], [`crypto`], [`parts`] and [`manifest`].
//!
//! # Example
//!
//! Bundle a 3 MiB in-memory image with a seeded random source, then
//! unbundle it:
//!
//! ```
//! use std::io::Cursor;
//!
//! use ami_bundle::{keys, unbundle, Arch, BundleOptions, Bundler, ImageInfo, MemorySink, SignatureCheck};
//! use ami_core::progress::NoProgress;
//! use rand::SeedableRng;
//!
//! // The user's key pair (in real use: read with PrivateKey::from_pem and
//! // Certificate::from_pem).
//! let user = keys::generate(2048, 365, "example")?;
//! let options = BundleOptions::new(
//!     "disk.img",
//!     "123456789012".parse()?,
//!     Arch::X86_64,
//!     user.cert.clone(),
//!     user.key.clone(),
//! )
//! .kernel_id(Some("aki-919dcaf8".to_owned()));
//! let bundler = Bundler::new(options)?;
//!
//! let image: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
//! let info = ImageInfo::dense(image.len() as u64);
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(42);
//! let mut sink = MemorySink::new();
//! let bundle = bundler.bundle(Cursor::new(&image), &info, &mut sink, &mut rng, &NoProgress)?;
//!
//! assert_eq!(bundle.manifest_name, "disk.img.manifest.xml");
//! assert_eq!(bundle.manifest.image.parts[0].filename, "disk.img.part.0");
//! assert!(bundle.manifest_xml.starts_with("<?xml version='1.0'?><manifest><version>2007-10-10</version>"));
//! assert!(bundle.manifest_xml.contains("<kernel_id>aki-919dcaf8</kernel_id>"));
//!
//! // Unbundle: the signature, the digests and the padding are checked.
//! let mut out = Cursor::new(Vec::new());
//! let unbundled = unbundle(
//!     &bundle.manifest_xml,
//!     &user.key,
//!     &SignatureCheck::PrivateKey,
//!     &mut sink,
//!     &mut out,
//!     &NoProgress,
//! )?;
//! assert_eq!(unbundled.name, "disk.img");
//! assert_eq!(out.into_inner(), image);
//! # Ok::<(), ami_bundle::Error>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
mod bundle;
pub mod crypto;
mod error;
pub mod gzip;
mod hex;
pub mod keys;
pub mod manifest;
pub mod parts;
pub mod tar;
mod unbundle;

use ami_core::progress::Stage;

pub use bundle::{
    parse_block_device_mapping, AccountId, Arch, Bundle, BundleOptions, Bundler, MAX_IMAGE_SIZE,
    MAX_NAME_LEN,
};
pub use crypto::{Certificate, Ec2Cert, PrivateKey, PublicKey};
pub use error::{Error, Result};
pub use gzip::{GzipStats, ParallelGzip};
pub use manifest::{Manifest, Mapping};
pub use parts::{DirSink, DirSource, MemorySink, PartSink, PartSource, PART_SIZE};
pub use tar::{ImageInfo, ImageWriter, TarStream};
pub use unbundle::{unbundle, unbundle_to_dir, SignatureCheck, Unbundled};

/// The progress stage bundling and unbundling report: amounts are image
/// bytes read when bundling, bundle bytes read when unbundling.
pub const PROGRESS_STAGE: Stage = Stage::WriteData;
