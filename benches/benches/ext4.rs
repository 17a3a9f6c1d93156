//! Throughput of the ext4 writer (`ami_ext4::format`) on generated trees.
//!
//! Every iteration writes a complete filesystem into a truncated temporary
//! file with `assume_zeroed`, as `ami mkfs` does, so the numbers include the
//! system calls but not a disk: the file lives on tmpfs (`/dev/shm`) when
//! there is one, else in the temporary directory; `AMI_BENCH_DIR` overrides
//! that. File contents come from memory, so reading a source is not measured
//! (the `mkfs-vs-mke2fs.sh` script measures the whole command on a real
//! tree).
//!
//! The whole suite runs in well under two minutes:
//! `cargo bench -p ami-benches`.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use ami_core::progress::NoProgress;
use ami_core::Tree;
use ami_ext4::{format, required_size, FormatOptions, Report};
use criterion::{criterion_main, Criterion, SamplingMode, Throughput};

/// Where the images are written.
fn bench_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AMI_BENCH_DIR") {
        return dir.into();
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Writes `tree` into `file`, emptied first so that `assume_zeroed` holds.
fn write_image(file: &mut File, tree: &Tree, options: &FormatOptions) -> Report {
    file.set_len(0).expect("truncating the image");
    file.rewind().expect("rewinding the image");
    let mut out = BufWriter::with_capacity(1 << 20, &*file);
    let report = format(&mut out, tree, options, &NoProgress).expect("formatting");
    out.flush().expect("flushing the image");
    report
}

fn options() -> FormatOptions {
    FormatOptions::new().assume_zeroed(true)
}

/// One benchmark: `tree` formatted over and over into one temporary file.
fn bench_format(c: &mut Criterion, group: &str, name: &str, tree: &Tree, throughput: Throughput) {
    let mut file = tempfile::tempfile_in(bench_dir()).expect("creating the image file");
    let options = options();
    let mut g = c.benchmark_group(group);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(throughput);
    g.bench_function(name, |b| b.iter(|| write_image(&mut file, tree, &options)));
    g.finish();
}

/// Data throughput: 2,000 files of 64 KiB (125 MiB) in directories of 100.
fn data(c: &mut Criterion) {
    let tree = fixtures::bulk_tree(2_000, 64 * 1024, 100);
    let bytes = 2_000 * 64 * 1024;
    bench_format(
        c,
        "ext4-data",
        "2000-files-64KiB",
        &tree,
        Throughput::Bytes(bytes),
    );
}

/// Metadata throughput: 20,000 files of 100 bytes in directories of 200.
fn small_files(c: &mut Criterion) {
    let tree = fixtures::bulk_tree(20_000, 100, 200);
    let entries = tree.node_count() as u64;
    bench_format(
        c,
        "ext4-entries",
        "20000-small-files",
        &tree,
        Throughput::Elements(entries),
    );
}

/// A huge directory (mke2fs -d is quadratic here): 100,000 empty files in
/// one directory, which the writer must index (htree).
fn one_directory(c: &mut Criterion) {
    let tree = fixtures::bulk_tree(100_000, 0, 100_000);
    let entries = tree.node_count() as u64;
    bench_format(
        c,
        "ext4-entries",
        "100000-files-one-dir",
        &tree,
        Throughput::Elements(entries),
    );

    // Planning alone (no I/O): what sizing the image costs.
    let options = options();
    let mut g = c.benchmark_group("ext4-plan");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(entries));
    g.bench_function("required-size-100000-files-one-dir", |b| {
        b.iter(|| required_size(&tree, &options).expect("sizing"))
    });
    g.finish();
}

/// The suite (`criterion_group!` makes a public function without docs).
#[allow(missing_docs)]
mod suite {
    use super::{data, one_directory, small_files};
    use criterion::criterion_group;

    criterion_group!(benches, data, small_files, one_directory);
}

criterion_main!(suite::benches);
