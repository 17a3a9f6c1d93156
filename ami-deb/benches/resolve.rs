//! Parsing a full `Packages` index and resolving the image's package set.
//!
//! Uses the host's apt indices when apt has downloaded any (the real
//! Debian 12 archive: about 50 MB and 66,000 records), and always a
//! synthetic index of the same size, so that the numbers can be compared
//! across machines. Run with `cargo bench -p ami-deb`.

use std::process::Command;

use ami_deb::{resolve, PackageIndex, Request, Variant};
use criterion::{criterion_main, Criterion, Throughput};

/// The host's decompressed `Packages` indices, if apt has any.
fn host_indices() -> Vec<(String, String)> {
    let Ok(out) = Command::new("apt-get")
        .args([
            "indextargets",
            "--format",
            "$(FILENAME)",
            "Identifier: Packages",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|f| std::path::Path::new(f).exists())
        .filter_map(|f| {
            let text = Command::new("/usr/lib/apt/apt-helper")
                .args(["cat-file", f])
                .output()
                .ok()?;
            Some((f.to_owned(), String::from_utf8(text.stdout).ok()?))
        })
        .collect()
}

/// A deterministic synthetic index: `count` records shaped like Debian's
/// (dependencies on earlier records, alternatives, versioned relations,
/// provides, multi-line descriptions).
fn synthetic(count: usize) -> String {
    let mut state: u64 = 42;
    let mut next = move |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n.max(1)
    };
    let mut text = String::with_capacity(count * 800);
    for i in 0..count {
        text.push_str(&format!(
            "Package: pkg{i:05}\nVersion: 1:{}.{}-{}+deb12u1\n",
            i % 7,
            i % 11,
            i % 3
        ));
        text.push_str(if i % 5 == 0 {
            "Architecture: all\n"
        } else {
            "Architecture: amd64\n"
        });
        if i < 10 {
            text.push_str("Essential: yes\n");
        }
        let priority = match i {
            0..30 => "required",
            30..70 => "important",
            70..300 => "standard",
            _ => "optional",
        };
        text.push_str(&format!(
            "Priority: {priority}\nSection: misc\nInstalled-Size: {}\n",
            100 + i % 900
        ));
        text.push_str("Maintainer: Nobody <nobody@example.invalid>\n");
        if i > 0 {
            let deps: Vec<String> = (0..next(6))
                .map(|_| {
                    let target = next(i);
                    match next(4) {
                        0 => format!("pkg{target:05} (>= 1:{}.{})", target % 7, target % 11),
                        1 => format!("pkg{target:05} | virt{}", next(100)),
                        _ => format!("pkg{target:05}"),
                    }
                })
                .collect();
            if !deps.is_empty() {
                text.push_str(&format!("Depends: {}\n", deps.join(", ")));
            }
        }
        if i % 50 == 0 {
            text.push_str(&format!("Provides: virt{} (= 1.0)\n", i % 100));
        }
        text.push_str(&format!(
            "Description: synthetic package {i}\n This is a synthetic package used to measure parsing.\n .\n It has a long description, like most real packages do,\n spread over several continuation lines.\n"
        ));
        text.push_str(&format!(
            "Filename: pool/main/p/pkg{i:05}/pkg{i:05}_1.0_amd64.deb\nSize: {}\nSHA256: {:064x}\n\n",
            1000 + i,
            i
        ));
    }
    text
}

fn bench(c: &mut Criterion) {
    let synthetic = synthetic(60_000);
    let host = host_indices();
    let host_bytes: usize = host.iter().map(|(_, t)| t.len()).sum();
    let load_host = || {
        let mut index = PackageIndex::new("amd64");
        for (label, text) in &host {
            index.add_source(label.clone(), text.as_str()).unwrap();
        }
        index
    };
    let request = Request::new(Variant::Default).packages([
        "usr-is-merged",
        "makedev",
        "sudo",
        "openssh-server",
        "ssh",
        "wget",
        "linux-image-cloud-amd64",
    ]);

    let mut parse = c.benchmark_group("parse");
    parse.sample_size(10);
    parse.throughput(Throughput::Bytes(synthetic.len() as u64));
    parse.bench_function("synthetic 60k records", |b| {
        b.iter(|| PackageIndex::from_text("amd64", synthetic.as_str()).unwrap())
    });
    if !host.is_empty() {
        parse.throughput(Throughput::Bytes(host_bytes as u64));
        parse.bench_function("host indices, then resolve", |b| {
            b.iter(|| resolve(&load_host(), &request).unwrap().len())
        });
    }
    parse.finish();

    let mut solve = c.benchmark_group("resolve");
    solve.sample_size(20);
    let index = PackageIndex::from_text("amd64", synthetic.as_str()).unwrap();
    solve.bench_function("synthetic default", |b| {
        b.iter(|| {
            resolve(&index, &Request::new(Variant::Default).package("pkg59999"))
                .unwrap()
                .len()
        })
    });
    if !host.is_empty() {
        let index = load_host();
        solve.bench_function("host default+extras", |b| {
            b.iter(|| resolve(&index, &request).unwrap().len())
        });
    }
    solve.finish();
}

/// The suite (`criterion_group!` makes a public function without docs).
#[allow(missing_docs)]
mod suite {
    use super::bench;
    use criterion::criterion_group;

    criterion_group!(benches, bench);
}

criterion_main!(suite::benches);
