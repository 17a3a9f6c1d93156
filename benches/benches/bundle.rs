//! Throughput of the bundle pipeline (`ami_bundle`): the parallel gzip
//! stage alone (one thread against all cores) and the whole bundle (tar,
//! SHA-1, gzip, AES-128-CBC, parts) into a sink that drops the parts.
//!
//! The input is 32 MiB of synthetic "disk image" data: a mix of
//! incompressible bytes, text-like runs and zero blocks, so that the
//! compressor does real work (about 3:1). Everything is in memory: no disk
//! is measured. `benches/bundle-vs-ruby-pipeline.sh` measures the whole
//! command on a real image against the Ruby tool's pipeline.
//!
//! `cargo bench -p ami-benches --bench bundle` (well under a minute).

use std::io::Cursor;
use std::time::Duration;

use ami_bundle::{
    keys, AccountId, Arch, BundleOptions, Bundler, ImageInfo, ParallelGzip, PartSink,
};
use ami_core::progress::NoProgress;
use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use rand_chacha::rand_core::SeedableRng;

const LEN: usize = 32 << 20;

/// Synthetic image data: per 64 KiB, a third random bytes, a third words,
/// a third zeros.
fn image() -> Vec<u8> {
    let words: [&[u8]; 6] = [
        b"libc.so.6 ",
        b"GLIBC_2.34 ",
        b"/usr/lib ",
        b"\x7fELF",
        b"main ",
        b"\n",
    ];
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(LEN);
    while out.len() < LEN {
        let third = 65_536 / 3;
        for _ in 0..third {
            out.push((next() >> 24) as u8);
        }
        let start = out.len();
        while out.len() - start < third {
            out.extend_from_slice(words[(next() % 6) as usize]);
        }
        out.resize(out.len() + third, 0);
    }
    out.truncate(LEN);
    out
}

/// Drops the parts.
struct NullSink;

impl PartSink for NullSink {
    fn start(&mut self, _: &str) -> ami_bundle::Result<()> {
        Ok(())
    }
    fn begin_part(&mut self, _: usize) -> ami_bundle::Result<()> {
        Ok(())
    }
    fn write(&mut self, data: &[u8]) -> ami_bundle::Result<()> {
        std::hint::black_box(data);
        Ok(())
    }
    fn end_part(&mut self) -> ami_bundle::Result<()> {
        Ok(())
    }
    fn commit(&mut self, _: &[String], _: &str, _: &[u8]) -> ami_bundle::Result<()> {
        Ok(())
    }
}

fn gzip(c: &mut Criterion) {
    let data = image();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("bundle-gzip");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(LEN as u64));
    for (name, threads, level) in [
        ("level9-1-thread", 1, 9),
        ("level9-all-cores", cores, 9),
        ("level6-all-cores", cores, 6),
    ] {
        let gz = ParallelGzip::new().threads(threads).level(level).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sink = std::io::sink();
                gz.compress(data.as_slice(), &mut sink).unwrap()
            })
        });
    }
    g.finish();
}

fn bundle(c: &mut Criterion) {
    let data = image();
    let user = keys::generate(2048, 1, "bench").unwrap();
    let account: AccountId = "123456789012".parse().unwrap();
    let bundler = Bundler::new(BundleOptions::new(
        "bench.img",
        account,
        Arch::X86_64,
        user.cert,
        user.key,
    ))
    .unwrap();
    let info = ImageInfo::dense(LEN as u64);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("bundle-pipeline");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("32MiB-level9-all-cores", |b| {
        b.iter(|| {
            bundler
                .bundle(
                    Cursor::new(&data),
                    &info,
                    &mut NullSink,
                    &mut rng,
                    &NoProgress,
                )
                .unwrap()
        })
    });
    g.finish();
}

/// The suite (`criterion_group!` makes a public function without docs).
#[allow(missing_docs)]
mod suite {
    use super::{bundle, gzip};
    use criterion::criterion_group;

    criterion_group!(benches, gzip, bundle);
}

criterion_main!(suite::benches);
