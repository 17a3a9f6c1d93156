//! Benchmarks of the `ami` workspace; this library is empty.
//!
//! * `benches/ext4.rs` (criterion, `cargo bench -p ami-benches`): the ext4
//!   writer on generated in-memory trees.
//! * `mkfs-vs-mke2fs.sh`: `ami mkfs` against `mke2fs -d` and a plain copy
//!   on a real directory tree.
//!
//! See `benches/README.md` for how to run them and read the results.
