//! The Debian side of ami: reading repository metadata and deciding which
//! packages make up an image.
//!
//! Reading metadata and resolving are pure logic, with no I/O:
//!
//! * [`version`]: Debian version numbers, compared exactly as dpkg does
//!   ([`Version`]);
//! * [`control`]: a zero-copy deb822 paragraph parser (`Packages`,
//!   `Release`, dpkg `status`) and an editable paragraph that writes itself
//!   back ([`control::ParagraphBuf`]);
//! * [`relation`]: `Depends`-style fields: groups of `|` alternatives with
//!   version constraints, architecture qualifiers and restrictions;
//! * [`index`]: [`PackageIndex`], the records of one or more `Packages`
//!   files for one architecture, with lookups by name and by provided
//!   (virtual) name; each [`Package`] keeps its raw paragraph;
//! * [`resolve`](mod@resolve): the resolver: a variant (minbase, default, ...)
//!   plus requested packages to a validated set of records ([`Resolution`]),
//!   following apt's choices, with errors that explain the chain of
//!   dependencies that failed.
//!
//! Installing the chosen packages into an [`ami_core::Tree`] (this part
//! reads `.deb` files and writes a cache directory, nothing else):
//!
//! * [`deb`]: the `.deb` format: `ar` members, control archive, tar
//!   listings with dpkg's rules;
//! * [`unpack`]: verified, cached decompression of data archives (in
//!   parallel) and unpacking into the tree with dpkg's semantics (merged
//!   `/usr`, overwrite checks, `Replaces`, conffiles);
//! * [`dpkgdb`]: the dpkg database under `/var/lib/dpkg`, as dpkg writes
//!   it.
//!
//! [`bootstrap`] does all of it in one call: [`Bootstrap::run`] updates the
//! verified indices of a [`repo::Repository`], resolves a [`Request`],
//! downloads the packages in parallel into the cache, decompresses them on
//! every core, unpacks them into a tree in dependency order over the
//! merged-`/usr` links, and writes the dpkg database; its
//! [`BootstrapReport`] lists the packages, the bytes downloaded and found
//! in the cache, the time of each stage, and the unpacked packages with
//! their maintainer scripts for the configuration step.
//!
//! # Example
//!
//! ```
//! use ami_deb::{resolve, PackageIndex, Request, Variant};
//!
//! // Two suites: the release and its security updates.
//! let release = "\
//! Package: libc6
//! Version: 2.36-9
//! Architecture: amd64
//! Priority: optional
//! Multi-Arch: same
//!
//! Package: mawk
//! Version: 1.3.4.20200120-3.1
//! Architecture: amd64
//! Essential: yes
//! Priority: required
//! Provides: awk
//! Depends: libc6 (>= 2.34)
//!
//! Package: openssh-server
//! Version: 1:9.2p1-2
//! Architecture: amd64
//! Priority: optional
//! Depends: libc6 (>= 2.36), sudo | doas, awk
//!
//! Package: sudo
//! Version: 1.9.13p3-1
//! Architecture: amd64
//! Priority: optional
//! Depends: libc6 (>= 2.34)
//! ";
//! let security = "\
//! Package: libc6
//! Version: 2.36-9+deb12u4
//! Architecture: amd64
//! Priority: optional
//! Multi-Arch: same
//! ";
//! let mut index = PackageIndex::new("amd64");
//! index.add_source("bookworm/main", release)?;
//! index.add_source("bookworm-security/main", security)?;
//!
//! let request = Request::new(Variant::Minbase).package("openssh-server");
//! let resolution = resolve(&index, &request)?;
//! let chosen: Vec<String> = resolution.packages().map(|p| p.to_string()).collect();
//! assert_eq!(
//!     chosen,
//!     ["libc6 2.36-9+deb12u4", "mawk 1.3.4.20200120-3.1", "openssh-server 1:9.2p1-2", "sudo 1.9.13p3-1"]
//! );
//! // The newest libc6 comes from the security suite.
//! let libc6 = resolution.get("libc6").unwrap();
//! assert_eq!(index.source(libc6.source()).label(), "bookworm-security/main");
//! // Why sudo is there: the first alternative of openssh-server's dependency.
//! assert_eq!(resolution.reason("sudo").unwrap().to_string(), "openssh-server depends on sudo | doas");
//!
//! // Failures name the dependency and how it was reached.
//! let strict = PackageIndex::from_text("amd64", release.replace("libc6 (>= 2.34)\n\nPackage: openssh", "libc6 (>= 2.38)\n\nPackage: openssh"))?;
//! let error = resolve(&strict, &Request::new(Variant::Custom).package("openssh-server")).unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "mawk depends on libc6 (>= 2.38), but only libc6 2.36-9 is available (required by: openssh-server -> mawk)"
//! );
//! # Ok::<(), ami_deb::Error>(())
//! ```
#![deny(missing_docs)]

pub mod bootstrap;
pub mod cache;
pub mod control;
pub mod deb;
pub mod dpkgdb;
mod error;
pub mod fetch;
pub mod index;
pub mod keyring;
pub mod relation;
pub mod release;
pub mod repo;
pub mod resolve;
pub mod sources;
pub mod unpack;
pub mod version;

pub use bootstrap::{Bootstrap, BootstrapReport};
pub use error::{Conflict, Error, Result, Unresolvable};
pub use index::{Package, PackageId, PackageIndex};
pub use resolve::{resolve, validate, Request, Resolution, Variant};
pub use version::Version;
