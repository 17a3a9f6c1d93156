//! The bundle format checked against the spec with the real tools: GNU tar
//! (byte-identical tar streams, extraction), gzip, sha1sum and the openssl
//! command (key unwrapping, decryption, signature verification).

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ami_bundle::{
    Bundle, BundleOptions, Bundler, DirSink, Ec2Cert, ImageInfo, MemorySink, TarStream, PART_SIZE,
};
use ami_core::progress::NoProgress;
use common::*;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// GNU tar's stream for `dir/name`, exactly as Amazon's tool runs it.
fn gnu_tar(dir: &Path, name: &str) -> Vec<u8> {
    run(
        "tar",
        &[
            os("-c"),
            os("-h"),
            os("-S"),
            os("--owner"),
            os("0"),
            os("--group"),
            os("0"),
            os("-C"),
            dir.as_os_str(),
            os("-f"),
            os("-"),
            os(name),
        ],
        None,
    )
    .stdout
}

fn our_tar(path: &Path, name: &str) -> Vec<u8> {
    let file = File::open(path).unwrap();
    let info = ImageInfo::from_file(&file).unwrap();
    let mut out = Vec::new();
    TarStream::new(&file, &info, name)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn assert_same_tar(ours: &[u8], gnu: &[u8]) {
    assert_eq!(ours.len(), gnu.len(), "tar stream lengths differ");
    if let Some(i) = ours.iter().zip(gnu).position(|(a, b)| a != b) {
        panic!(
            "tar streams differ at byte {i} (block {}, offset {} in the block): ours {:?}, GNU {:?}",
            i / 512,
            i % 512,
            &ours[i - i % 512..(i - i % 512 + 512).min(ours.len())],
            &gnu[i - i % 512..(i - i % 512 + 512).min(gnu.len())]
        );
    }
}

#[test]
fn dense_tar_streams_are_gnu_tars() {
    let dir = tempfile::tempdir().unwrap();
    for (name, len, mode, mtime) in [
        ("dense.img", 100_000usize, 0o644, 1_704_067_200u64),
        ("one", 1, 0o600, 0),
        ("exactly-512", 512, 0o755, 4_000_000_000),
        (&*"long-name-".repeat(12), 3000, 0o640, 1),
        (&*"n".repeat(100), 10, 0o644, 7),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, noise(len, 1)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, mtime);
        assert_same_tar(&our_tar(&path, name), &gnu_tar(dir.path(), name));
    }
}

#[test]
fn sparse_tar_streams_are_gnu_tars() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = |seed| noise(5000, seed);
    type Case = (&'static str, u64, Vec<(u64, Vec<u8>)>);
    let cases: Vec<Case> = vec![
        ("all-hole", 1 << 20, vec![]),
        ("head", 1 << 20, vec![(0, chunk(1))]),
        ("tail", 1 << 20, vec![(1_048_570, vec![1; 6])]),
        (
            "three",
            5 << 20,
            vec![
                (65_536, chunk(2)),
                (2 << 20, chunk(3)),
                ((5 << 20) - 1, vec![9]),
            ],
        ),
        // 30 regions: the map spills into two extension blocks.
        (
            "many",
            4 << 20,
            (0..30).map(|i| (i * 131_072 + 4096, chunk(i))).collect(),
        ),
        // Over 8 GiB: base-256 real size and offsets.
        (
            "huge",
            9 << 30,
            vec![(1 << 20, chunk(5)), ((9 << 30) - 3, vec![1, 2, 3])],
        ),
    ];
    for (name, size, data) in cases {
        let path = dir.path().join(name);
        sparse_file(&path, size, &data);
        set_mtime(&path, 1_700_000_000);
        let file = File::open(&path).unwrap();
        let info = ImageInfo::from_file(&file).unwrap();
        if fs::metadata(&path).unwrap().blocks() * 512 >= size {
            panic!("the test directory's filesystem does not keep holes");
        }
        assert!(info.data.is_some(), "{name} should be sparse");
        let ours = our_tar(&path, name);
        assert_eq!(ours[156], b'S', "{name}");
        assert_same_tar(&ours, &gnu_tar(dir.path(), name));
    }
}

/// Bundles `image` into a new directory with `options`; returns the
/// directory and the bundle.
fn bundle_to_dir(image: &Path, options: BundleOptions, seed: u64) -> (tempfile::TempDir, Bundle) {
    let dest = tempfile::tempdir().unwrap();
    let bundle = Bundler::new(options)
        .unwrap()
        .bundle_file(image, dest.path(), &mut rng(seed), &NoProgress)
        .unwrap();
    (dest, bundle)
}

/// Checks a bundle with the real tools only, as the notes describe it:
/// part digests with sha1sum, the key and IV unwrapped with `openssl
/// pkeyutl`, the parts decrypted with `openssl enc`, checked with `gzip
/// -t`, the tar stream's sha1sum against the manifest, the signature with
/// `openssl dgst -verify`, and extraction with GNU tar. Returns the
/// extracted image.
fn check_with_tools(bundle_dir: &Path, name: &str, work: &Path) -> PathBuf {
    let manifest_path = bundle_dir.join(format!("{name}.manifest.xml"));
    let manifest = fs::read_to_string(&manifest_path).unwrap();
    assert!(!manifest.ends_with('\n'));
    assert!(manifest.starts_with("<?xml version='1.0'?><manifest><version>2007-10-10</version>"));

    // Parts: names, sizes, digests.
    let count: usize = manifest
        .split("<parts count='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap()
        .parse()
        .unwrap();
    let digits = count.to_string().len();
    let mut all = Vec::new();
    let mut bundled = 0;
    for i in 0..count {
        let file = format!("{name}.part.{i:0digits$}");
        let part = bundle_dir.join(&file);
        let entry = format!(
            "<part index='{i}'><filename>{file}</filename><digest algorithm='SHA1'>{}</digest></part>",
            sha1sum(&part)
        );
        assert!(manifest.contains(&entry), "manifest lacks {entry}");
        let len = fs::metadata(&part).unwrap().len();
        if i + 1 < count {
            assert_eq!(len, PART_SIZE, "part {i} is not 10 MiB");
        } else {
            assert!(len > 0 && len <= PART_SIZE);
        }
        bundled += len;
        all.extend_from_slice(&fs::read(&part).unwrap());
    }
    assert_eq!(element(&manifest, "bundled_size"), bundled.to_string());
    let mut names: Vec<String> = fs::read_dir(bundle_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), count + 1, "unexpected files: {names:?}");

    // Key and IV: RSA PKCS#1 v1.5 of the hex text.
    let unwrap = |element_name: &str| {
        let bin = work.join(format!("{element_name}.bin"));
        fs::write(&bin, unhex(element(&manifest, element_name))).unwrap();
        let out = run(
            "openssl",
            &[
                os("pkeyutl"),
                os("-decrypt"),
                os("-inkey"),
                data("user-key.pem").as_os_str(),
                os("-in"),
                bin.as_os_str(),
            ],
            None,
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            text.len(),
            32,
            "{element_name} does not hold 32 hex characters"
        );
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        text
    };
    let key = unwrap("user_encrypted_key");
    let iv = unwrap("user_encrypted_iv");

    // Decrypt, test and unpack the gzip stream.
    let enc = work.join("all.enc");
    fs::write(&enc, &all).unwrap();
    let gz = work.join("all.tar.gz");
    run(
        "openssl",
        &[
            os("enc"),
            os("-d"),
            os("-aes-128-cbc"),
            os("-K"),
            os(&key),
            os("-iv"),
            os(&iv),
            os("-in"),
            enc.as_os_str(),
            os("-out"),
            gz.as_os_str(),
        ],
        None,
    );
    fs::remove_file(&enc).unwrap();
    run("gzip", &[os("-t"), gz.as_os_str()], None);
    let tar = work.join("all.tar");
    let status = Command::new(tool("gzip"))
        .arg("-dc")
        .arg(&gz)
        .stdout(File::create(&tar).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    fs::remove_file(&gz).unwrap();
    assert_eq!(
        manifest.split("<digest algorithm='SHA1'>").nth(1).unwrap()[..40],
        sha1sum(&tar),
        "the image digest is not the tar stream's SHA-1"
    );

    // Signature over machine_configuration + image.
    let signed = work.join("signed.bin");
    fs::write(&signed, signed_bytes(&manifest)).unwrap();
    let sig = work.join("sig.bin");
    fs::write(&sig, unhex(element(&manifest, "signature"))).unwrap();
    let pubkey = work.join("pub.pem");
    let out = run(
        "openssl",
        &[
            os("x509"),
            os("-in"),
            data("user-cert.pem").as_os_str(),
            os("-pubkey"),
            os("-noout"),
        ],
        None,
    );
    fs::write(&pubkey, out.stdout).unwrap();
    let out = run(
        "openssl",
        &[
            os("dgst"),
            os("-sha1"),
            os("-verify"),
            pubkey.as_os_str(),
            os("-signature"),
            sig.as_os_str(),
            signed.as_os_str(),
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");

    // GNU tar extracts the image.
    let out_dir = work.join("x");
    fs::create_dir(&out_dir).unwrap();
    run(
        "tar",
        &[
            os("-x"),
            os("-f"),
            tar.as_os_str(),
            os("-C"),
            out_dir.as_os_str(),
        ],
        None,
    );
    fs::remove_file(&tar).unwrap();
    let entries: Vec<_> = fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "the tar stream holds more than the image");
    out_dir.join(name)
}

#[test]
fn dense_bundle_checks_out_with_the_real_tools() {
    let src = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // Incompressible: 10 MiB + 1 of image gives a ciphertext just over one
    // part.
    let image = src.path().join("dense.img");
    fs::write(&image, noise((10 << 20) + 1, 3)).unwrap();
    set_mtime(&image, 1_600_000_000);
    let (dest, bundle) = bundle_to_dir(&image, options("dense.img"), 1);
    assert_eq!(bundle.part_sizes.len(), 2);
    assert_eq!(bundle.part_sizes[0], PART_SIZE);
    let extracted = check_with_tools(dest.path(), "dense.img", work.path());
    assert_same_file(&extracted, &image);
    assert_eq!(fs::metadata(&extracted).unwrap().mtime(), 1_600_000_000);
}

#[test]
fn sparse_bundle_checks_out_with_the_real_tools() {
    let src = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = src.path().join("sparse.img");
    let data: Vec<(u64, Vec<u8>)> = (0..12)
        .map(|i| (i * 1_000_000 + 12_345, noise(20_000, i)))
        .chain([(((64 << 20) - 1), vec![0xff])])
        .collect();
    sparse_file(&image, 64 << 20, &data);
    let (dest, bundle) = bundle_to_dir(&image, options("sparse.img"), 2);
    assert_eq!(bundle.manifest.image.size, 64 << 20);
    // Only the data regions were stored.
    assert!(bundle.tar_bytes < 2 << 20);
    let extracted = check_with_tools(dest.path(), "sparse.img", work.path());
    assert_same_file(&extracted, &image);
    // GNU tar recreated the holes.
    assert!(fs::metadata(&extracted).unwrap().blocks() * 512 < 4 << 20);
}

#[test]
fn ten_gib_sparse_image_checks_out_with_the_real_tools() {
    let src = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = src.path().join("max.img");
    let size = ami_bundle::MAX_IMAGE_SIZE;
    sparse_file(
        &image,
        size,
        &[(9 << 30, noise(4096, 9)), (size - 1, vec![7])],
    );
    let (dest, _) = bundle_to_dir(&image, options("max.img"), 3);
    let extracted = check_with_tools(dest.path(), "max.img", work.path());
    let meta = fs::metadata(&extracted).unwrap();
    assert_eq!(meta.len(), size);
    assert!(meta.blocks() * 512 < 1 << 20);
    let read_at = |offset: u64, len: usize| {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        File::open(&extracted)
            .unwrap()
            .read_exact_at(&mut buf, offset)
            .unwrap();
        buf
    };
    assert_eq!(read_at(9 << 30, 4096), noise(4096, 9));
    assert_eq!(read_at(size - 2, 2), [0, 7]);
    assert_eq!(read_at(5 << 30, 3), [0, 0, 0]);
}

#[test]
fn ec2_copy_of_the_key_is_wrapped_for_the_ec2_certificate() {
    let work = tempfile::tempdir().unwrap();
    let image = noise(5000, 4);
    let bundle = |options: BundleOptions| {
        let mut sink = MemorySink::new();
        Bundler::new(options)
            .unwrap()
            .bundle(
                std::io::Cursor::new(&image),
                &ImageInfo::dense(image.len() as u64),
                &mut sink,
                &mut rng(4),
                &NoProgress,
            )
            .unwrap()
    };
    // A stand-in EC2 certificate whose private key we have.
    let b = bundle(options("x").ec2_cert(other_cert()));
    let decrypt = |hex: &str| {
        let bin = work.path().join("wrapped.bin");
        fs::write(&bin, unhex(hex)).unwrap();
        let out = run(
            "openssl",
            &[
                os("pkeyutl"),
                os("-decrypt"),
                os("-inkey"),
                data("other-key.pem").as_os_str(),
                os("-in"),
                bin.as_os_str(),
            ],
            None,
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let key = decrypt(&b.manifest.image.ec2_encrypted_key);
    let iv = decrypt(&b.manifest.image.ec2_encrypted_iv);
    assert_eq!(key.len(), 32);
    assert_eq!(iv.len(), 32);
    assert_ne!(key, iv);
    // The region's certificates: 1024-bit keys (128 bytes), China 2048.
    for (cert, bytes) in [
        (Ec2Cert::Standard, 128),
        (Ec2Cert::GovCloud, 128),
        (Ec2Cert::China, 256),
    ] {
        let b = bundle(options("x").ec2_cert(cert.certificate().unwrap()));
        assert_eq!(b.manifest.image.ec2_encrypted_key.len(), bytes * 2);
        assert_eq!(b.manifest.image.ec2_encrypted_iv.len(), bytes * 2);
        assert_eq!(b.manifest.image.user_encrypted_key.len(), 512);
    }
    // The default is the commercial regions' certificate.
    let default = bundle(options("x"));
    let standard = bundle(options("x").ec2_cert(Ec2Cert::Standard.certificate().unwrap()));
    assert_eq!(default.manifest_xml, standard.manifest_xml);
}

/// The seeded bundle of the golden test.
fn golden_bundle(seed: u64) -> (Bundle, MemorySink) {
    // Partly incompressible, so that the bundle has several parts.
    let mut image = noise(10_000, 11);
    image.extend((0..290_000u32).map(|i| if i % 7 == 0 { (i % 256) as u8 } else { b'a' }));
    let info = ImageInfo {
        size: image.len() as u64,
        mode: 0o644,
        mtime: 1_704_067_200,
        data: None,
    };
    let options = options("golden.img")
        .kernel_id(Some("aki-919dcaf8".to_owned()))
        .ramdisk_id(Some("ari-00000000".to_owned()))
        .block_device_mapping(
            ami_bundle::parse_block_device_mapping(
                "root=/dev/sda1,ami=sda1,swap=sda3,ephemeral0=sda2",
            )
            .unwrap(),
        )
        .product_codes(vec!["ABCDEFGH".to_owned(), "IJKLMNOP".to_owned()])
        .part_size(4096)
        // Fixed, so that the golden file does not change with the crate
        // version.
        .bundler(ami_bundle::manifest::BundlerInfo {
            name: "ami".to_owned(),
            version: "0.1".to_owned(),
            release: "0".to_owned(),
        });
    let mut sink = MemorySink::new();
    let bundle = Bundler::new(options)
        .unwrap()
        .bundle(
            std::io::Cursor::new(&image),
            &info,
            &mut sink,
            &mut rng(seed),
            &NoProgress,
        )
        .unwrap();
    (bundle, sink)
}

#[test]
fn golden_manifest_and_deterministic_output() {
    let (bundle, sink) = golden_bundle(2024);
    let golden = data("golden.manifest.xml");
    if std::env::var_os("AMI_BLESS").is_some() {
        fs::write(&golden, &bundle.manifest_xml).unwrap();
    }
    let expected = fs::read_to_string(&golden).unwrap();
    assert_eq!(bundle.manifest_xml, expected);
    // The same seed gives the same bundle, byte for byte.
    let (again, sink_again) = golden_bundle(2024);
    assert_eq!(again.manifest_xml, bundle.manifest_xml);
    assert_eq!(sink_again.parts, sink.parts);
    // Another seed: another key, IV and ciphertext.
    let (other, sink_other) = golden_bundle(2025);
    assert_ne!(
        other.manifest.image.user_encrypted_key,
        bundle.manifest.image.user_encrypted_key
    );
    assert_ne!(sink_other.parts[0].1, sink.parts[0].1);
    // The tar digest does not depend on the key.
    assert_eq!(other.manifest.image.digest, bundle.manifest.image.digest);
}

#[test]
fn manifest_follows_the_ruby_layout() {
    let (bundle, _) = golden_bundle(1);
    let xml = &bundle.manifest_xml;
    let order = [
        "<?xml version='1.0'?>",
        "<manifest>",
        "<version>2007-10-10</version>",
        "<bundler>",
        "<machine_configuration><architecture>x86_64</architecture>",
        "<block_device_mapping><mapping><virtual>ami</virtual><device>sda1</device></mapping>\
         <mapping><virtual>ephemeral0</virtual><device>sda2</device></mapping>\
         <mapping><virtual>root</virtual><device>/dev/sda1</device></mapping>\
         <mapping><virtual>swap</virtual><device>sda3</device></mapping></block_device_mapping>",
        "<kernel_id>aki-919dcaf8</kernel_id>",
        "<ramdisk_id>ari-00000000</ramdisk_id>",
        "<product_codes><product_code>ABCDEFGH</product_code><product_code>IJKLMNOP</product_code></product_codes>",
        "</machine_configuration><image><name>golden.img</name><user>123456789012</user><type>machine</type>",
        "<digest algorithm='SHA1'>",
        "<size>300000</size>",
        "<bundled_size>",
        "<ec2_encrypted_key algorithm='AES-128-CBC'>",
        "<user_encrypted_key algorithm='AES-128-CBC'>",
        "<ec2_encrypted_iv>",
        "<user_encrypted_iv>",
        "<parts count='",
        "<part index='0'><filename>golden.img.part.0",
        "</parts></image><signature>",
        "</signature></manifest>",
    ];
    let mut at = 0;
    for piece in order {
        let found = xml[at..]
            .find(piece)
            .unwrap_or_else(|| panic!("{piece:?} missing or out of order in {xml}"));
        at += found + piece.len();
    }
    assert_eq!(at, xml.len());
    assert!(!xml.contains('\n') && !xml.contains('"') && !xml.contains("> <"));
}

#[test]
fn part_names_are_padded_like_the_ruby_tool() {
    let src = tempfile::tempdir().unwrap();
    let image = src.path().join("many.img");
    fs::write(&image, noise(50_000, 6)).unwrap();
    let (dest, bundle) = bundle_to_dir(&image, options("many.img").part_size(4096), 6);
    let count = bundle.part_sizes.len();
    assert_eq!(count, 13);
    let mut names: Vec<String> = fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..count)
        .map(|i| format!("many.img.part.{i:02}"))
        .collect();
    expected.insert(0, "many.img.manifest.xml".to_owned());
    assert_eq!(names, expected);
    assert!(bundle.part_sizes[..12].iter().all(|&s| s == 4096));
    // 1 to 9 parts: one digit.
    let (_, small) = bundle_to_dir(&image, options("many.img").part_size(8 << 10), 6);
    assert_eq!(small.manifest.image.parts[6].filename, "many.img.part.6");
}

#[test]
fn bundles_sink_into_directories_only_when_complete() {
    // DirSink leaves only the parts and the manifest.
    let src = tempfile::tempdir().unwrap();
    let image = src.path().join("d.img");
    fs::write(&image, noise(1000, 8)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let bundler = bundler("d.img");
    bundler
        .bundle_file(&image, dest.path(), &mut rng(8), &NoProgress)
        .unwrap();
    let mut names: Vec<String> = fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["d.img.manifest.xml", "d.img.part.0"]);
    let mut sink = DirSink::new(dest.path());
    let err = bundler
        .bundle(
            File::open(&image).unwrap(),
            &ImageInfo::dense(1000),
            &mut sink,
            &mut rng(8),
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, ami_bundle::Error::Leftovers { .. }), "{err}");
}
