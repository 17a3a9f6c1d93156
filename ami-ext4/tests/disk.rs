//! End-to-end checks of the disk-layout writer (`ami_ext4::disk`): GPT disks
//! with an ESP and an ext4 root, and MBR disks, checked with `sgdisk`,
//! `sfdisk`, `fsck.vfat` and `e2fsck` (packages gdisk, fdisk, dosfstools,
//! e2fsprogs) and read back with the independent `gpt`, `mbrman` and
//! `fatfs` crates.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ami_core::progress::NoProgress;
use ami_core::{FileData, Metadata, Node, Tree};
use ami_ext4::disk::esp::{write_esp, EspFile, EspOptions};
use ami_ext4::disk::{
    disk_byte_ranges, plan, write_partition_table, DiskIds, DiskPlan, Error, Guid, Layout, Window,
    DEFAULT_ESP_SIZE, ESP_TYPE, LINUX_DATA_TYPE, MIB, MIN_ESP_SIZE, ROOT_ARM64_TYPE,
    ROOT_X86_64_TYPE,
};
use ami_ext4::{format, BlockMap, FormatOptions, Size};
use tempfile::TempDir;

const SEED: &[u8] = b"test build seed";
const TIMESTAMP: i64 = 1_700_000_000;

fn tree() -> Tree {
    let mut t = Tree::new(Metadata::new(0o755));
    let etc = t.create_dir_all(b"/etc", Metadata::new(0o755)).unwrap();
    t.add(
        etc,
        b"hostname",
        Node::file(
            FileData::from_bytes(b"ami\n".to_vec()),
            Metadata::new(0o644),
        ),
    )
    .unwrap();
    t
}

fn esp_files() -> Vec<EspFile> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    vec![
        EspFile::new(
            "EFI/debian/grub.cfg",
            b"search --label rootfs --set=root\n".to_vec(),
        ),
        EspFile::new("EFI/BOOT/BOOTX64.EFI", big),
    ]
}

/// Runs `tool`, panicking with the package to install when it is missing.
fn run(tool: &str, package: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); install the {package} package"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds a whole disk image in a new file and returns it with its plan.
fn build(layout: Layout, disk_size: Option<u64>) -> (TempDir, PathBuf, DiskPlan) {
    let root_size = 16 * MIB;
    let plan = plan(layout, root_size, disk_size).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let mut file = File::create_new(&path).unwrap();
    file.set_len(plan.disk_size).unwrap();
    let ids = DiskIds::derive(SEED);
    write_partition_table(&mut file, &plan, &ids).unwrap();
    if let Some(esp) = &plan.esp {
        let options = EspOptions::new(0x1234_ABCD)
            .label("ESP")
            .timestamp(TIMESTAMP)
            .assume_zeroed(true);
        write_esp(
            &mut Window::new(&mut file, esp.clone()),
            &esp_files(),
            &options,
        )
        .unwrap();
    }
    let root_len = plan.root.end - plan.root.start;
    let options = FormatOptions::new()
        .label("rootfs")
        .size(Size::Bytes(root_len));
    let mut window = Window::new(&mut file, plan.root.clone());
    let report = format(&mut window, &tree(), &options, &NoProgress).unwrap();
    assert_eq!(report.size_bytes(), root_len);
    file.flush().unwrap();
    assert_eq!(file.metadata().unwrap().len(), plan.disk_size);
    (dir, path, plan)
}

/// Copies the byte range `range` of `disk` to a new file `name` in `dir`.
fn extract(disk: &Path, range: &std::ops::Range<u64>, dir: &Path, name: &str) -> PathBuf {
    let mut f = File::open(disk).unwrap();
    f.seek(SeekFrom::Start(range.start)).unwrap();
    let mut bytes = vec![0u8; (range.end - range.start) as usize];
    f.read_exact(&mut bytes).unwrap();
    let out = dir.join(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

fn e2fsck_clean(image: &Path) {
    let out = run("e2fsck", "e2fsprogs", &["-fn", image.to_str().unwrap()]);
    assert!(out.status.success(), "e2fsck -fn: {}", text(&out));
}

/// `fsck.vfat -n` exits 0 and prints nothing but its version and the
/// summary line (no repairs, no warnings such as an uninitialized free
/// cluster count).
fn fsck_vfat_clean(image: &Path) {
    let out = run("fsck.vfat", "dosfstools", &["-n", image.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "fsck.vfat -n: {t}");
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 2, "fsck.vfat -n: {t}");
    assert!(lines[1].contains(" files, "), "fsck.vfat -n: {t}");
}

fn lower(g: Guid) -> String {
    g.to_string().to_lowercase()
}

#[test]
fn gpt_disk_passes_sgdisk_fsck_and_independent_readers() {
    let (dir, path, plan) = build(Layout::Gpt { esp_size: 40 * MIB }, None);
    let p = path.to_str().unwrap();
    let ids = DiskIds::derive(SEED);
    assert_eq!(plan.disk_size, 58 * MIB);
    assert_eq!(plan.esp, Some(MIB..41 * MIB));
    assert_eq!(plan.root, 41 * MIB..57 * MIB);

    let out = run("sgdisk", "gdisk", &["-v", p]);
    assert!(out.status.success(), "sgdisk -v: {}", text(&out));
    assert!(
        text(&out).contains("No problems found"),
        "sgdisk -v: {}",
        text(&out)
    );

    let out = run("sgdisk", "gdisk", &["-p", p]);
    let t = text(&out);
    assert!(out.status.success(), "sgdisk -p: {t}");
    assert!(
        t.contains(&format!("Disk identifier (GUID): {}", ids.disk_guid)),
        "{t}"
    );
    assert!(t.contains("First usable sector is 34"), "{t}");
    // sgdisk names the type from its own table: an independent check of the
    // type GUIDs and their byte order.
    let rows = [
        (
            "1",
            ids.esp_guid,
            ESP_TYPE,
            "EFI system partition",
            "EFI System",
            2048,
            41 * 2048 - 1,
        ),
        (
            "2",
            ids.root_guid,
            ROOT_X86_64_TYPE,
            "Linux x86-64 root (/)",
            "rootfs",
            41 * 2048,
            57 * 2048 - 1,
        ),
    ];
    for (n, guid, ty, ty_name, name, first, last) in rows {
        let out = run("sgdisk", "gdisk", &["-i", n, p]);
        let t = text(&out);
        assert!(
            t.contains(&format!("Partition GUID code: {ty} ({ty_name})")),
            "{t}"
        );
        assert!(t.contains(&format!("Partition unique GUID: {guid}")), "{t}");
        assert!(t.contains(&format!("First sector: {first} ")), "{t}");
        assert!(t.contains(&format!("Last sector: {last} ")), "{t}");
        assert!(t.contains(&format!("Partition name: '{name}'")), "{t}");
    }

    // The gpt crate reads the same table (it checks both headers' CRCs).
    let disk = gpt::GptConfig::new().writable(false).open(&path).unwrap();
    assert_eq!(disk.guid().to_string(), lower(ids.disk_guid));
    let parts = disk.partitions();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[&1].part_type_guid.guid.to_string(), lower(ESP_TYPE));
    assert_eq!(parts[&1].part_guid.to_string(), lower(ids.esp_guid));
    assert_eq!(
        (parts[&1].first_lba, parts[&1].name.as_str()),
        (2048, "EFI System")
    );
    assert_eq!(
        parts[&2].part_type_guid.guid.to_string(),
        lower(ROOT_X86_64_TYPE)
    );
    assert_eq!(parts[&2].part_guid.to_string(), lower(ids.root_guid));
    assert_eq!(parts[&2].last_lba, 57 * 2048 - 1);

    // mbrman sees the protective MBR.
    let mut f = File::open(&path).unwrap();
    let mbr = mbrman::MBR::read_from(&mut f, 512).unwrap();
    assert_eq!(mbr[1].sys, 0xEE);
    assert_eq!(mbr[1].starting_lba, 1);
    assert_eq!(mbr[1].sectors, (58 * MIB / 512 - 1) as u32);
    assert!(!mbr[2].is_used());

    // The ESP: fsck.vfat clean, files read back with fatfs.
    let esp = extract(&path, plan.esp.as_ref().unwrap(), dir.path(), "esp.img");
    fsck_vfat_clean(&esp);
    let fs = fatfs::FileSystem::new(
        Cursor::new(std::fs::read(&esp).unwrap()),
        fatfs::FsOptions::new(),
    )
    .unwrap();
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
    assert_eq!(fs.volume_id(), 0x1234_ABCD);
    assert_eq!(fs.volume_label(), "ESP");
    for f in esp_files() {
        let mut data = Vec::new();
        let mut file = fs.root_dir().open_file(&f.path).unwrap();
        file.read_to_end(&mut data).unwrap();
        assert_eq!(data, f.data, "{}", f.path);
        let (parent, name) = f.path.rsplit_once('/').unwrap();
        let entry = fs
            .root_dir()
            .open_dir(parent)
            .unwrap()
            .iter()
            .map(Result::unwrap)
            .find(|e| e.file_name() == name)
            .unwrap();
        let m = entry.modified(); // 2023-11-14 22:13:20 UTC
        assert_eq!((m.date.year, m.date.month, m.date.day), (2023, 11, 14));
        assert_eq!((m.time.hour, m.time.min, m.time.sec), (22, 13, 20));
    }

    // The root filesystem.
    let root = extract(&path, &plan.root, dir.path(), "root.img");
    e2fsck_clean(&root);
}

#[test]
fn two_builds_are_byte_identical() {
    for layout in [
        Layout::Gpt {
            esp_size: MIN_ESP_SIZE,
        },
        Layout::Mbr,
    ] {
        let (_a, pa, _) = build(layout, None);
        let (_b, pb, _) = build(layout, None);
        let (a, b) = (std::fs::read(pa).unwrap(), std::fs::read(pb).unwrap());
        assert!(a == b, "{layout:?}: two builds differ");
    }
    // A different seed changes every identity.
    let (x, y) = (DiskIds::derive(b"one"), DiskIds::derive(b"two"));
    assert_ne!(x.disk_guid, y.disk_guid);
    assert_ne!(x.esp_guid, x.root_guid);
    assert_ne!(x.mbr_signature, y.mbr_signature);
}

#[test]
fn esp_bytes_do_not_depend_on_previous_contents() {
    let options = EspOptions::new(7).timestamp(TIMESTAMP);
    let mut clean = Cursor::new(vec![0u8; MIN_ESP_SIZE as usize]);
    write_esp(&mut clean, &esp_files(), &options).unwrap();
    let mut dirty = Cursor::new(vec![0xD1u8; MIN_ESP_SIZE as usize]);
    // Same files in another order.
    let mut files = esp_files();
    files.reverse();
    write_esp(&mut dirty, &files, &options).unwrap();
    assert!(clean.get_ref() == dirty.get_ref());
}

#[test]
fn mbr_disk_has_one_bootable_linux_partition() {
    let (dir, path, plan) = build(Layout::Mbr, Some(32 * MIB));
    let ids = DiskIds::derive(SEED);
    assert_eq!(plan.root, MIB..32 * MIB);
    assert_eq!(plan.esp, None);

    let out = run("sfdisk", "fdisk", &["-d", path.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "sfdisk -d: {t}");
    assert!(t.contains("label: dos"), "{t}");
    assert!(
        t.contains(&format!("label-id: {:#010x}", ids.mbr_signature)),
        "{t}"
    );
    let parts: Vec<&str> = t.lines().filter(|l| l.contains("start=")).collect();
    assert_eq!(parts.len(), 1, "{t}");
    let line: String = parts[0].split_whitespace().collect();
    assert!(
        line.contains(&format!("start=2048,size={},type=83,bootable", 31 * 2048)),
        "{t}"
    );

    let mut f = File::open(&path).unwrap();
    let mbr = mbrman::MBR::read_from(&mut f, 512).unwrap();
    assert_eq!(mbr.header.disk_signature, ids.mbr_signature.to_le_bytes());
    assert_eq!(mbr[1].boot, mbrman::BOOT_ACTIVE);
    assert_eq!((mbr[1].sys, mbr[1].starting_lba), (0x83, 2048));
    assert!(!mbr[2].is_used());

    e2fsck_clean(&extract(&path, &plan.root, dir.path(), "root.img"));
}

#[test]
fn layout_names() {
    for name in ["pvgrub", "pvgrub-mbr", "uefi"] {
        assert_eq!(name.parse::<Layout>().unwrap().name(), name);
    }
    assert_eq!(
        "uefi".parse::<Layout>().unwrap(),
        Layout::Gpt {
            esp_size: DEFAULT_ESP_SIZE
        }
    );
    let e = "bios".parse::<Layout>().unwrap_err();
    assert!(
        e.to_string()
            .contains("expected pvgrub, pvgrub-mbr or uefi"),
        "{e}"
    );
}

#[test]
fn plain_layout_is_the_filesystem() {
    let plan = plan(Layout::Plain, 16 * MIB, None).unwrap();
    assert_eq!((plan.disk_size, plan.root.clone()), (16 * MIB, 0..16 * MIB));
    let mut disk = Cursor::new(Vec::new());
    write_partition_table(&mut disk, &plan, &DiskIds::derive(SEED)).unwrap();
    assert!(disk.get_ref().is_empty());
    assert!(plan.table_ranges().is_empty());
}

#[test]
fn a_larger_disk_extends_the_root_partition() {
    let plan = plan(
        Layout::Gpt {
            esp_size: 100 * MIB,
        },
        16 * MIB,
        Some(1 << 30),
    )
    .unwrap();
    assert_eq!(plan.root, 101 * MIB..(1 << 30) - MIB);
    assert_eq!(
        plan.table_ranges(),
        vec![0..34 * 512, (1 << 30) - 33 * 512..1 << 30]
    );
}

#[test]
fn bad_inputs_give_clear_errors() {
    let gpt = Layout::Gpt { esp_size: 40 * MIB };
    let e = plan(gpt, 16 * MIB, Some(32 * MIB)).unwrap_err();
    assert!(
        matches!(e, Error::RootTooLarge { needed, .. } if needed == 58 * MIB),
        "{e:?}"
    );
    assert!(e.to_string().contains("does not fit"), "{e}");
    let e = plan(Layout::Gpt { esp_size: 20 * MIB }, 16 * MIB, None).unwrap_err();
    assert!(matches!(e, Error::EspTooSmall { .. }), "{e:?}");
    assert!(e.to_string().contains("FAT32 needs at least"), "{e}");
    let e = plan(
        Layout::Gpt {
            esp_size: 40 * MIB + 512,
        },
        16 * MIB,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Misaligned {
                what: "the ESP size",
                ..
            }
        ),
        "{e:?}"
    );
    let e = plan(Layout::Mbr, 1000, None).unwrap_err();
    assert!(matches!(e, Error::Misaligned { .. }), "{e:?}");
    let e = plan(Layout::Mbr, 16 * MIB, Some(3 << 40)).unwrap_err();
    assert!(matches!(e, Error::DiskTooLarge { .. }), "{e:?}");
    let e = plan(Layout::Plain, 16 * MIB, Some(8 * MIB)).unwrap_err();
    assert!(matches!(e, Error::RootTooLarge { .. }), "{e:?}");

    let options = EspOptions::new(1);
    let mut small = Cursor::new(vec![0u8; 20 << 20]);
    let e = write_esp(&mut small, &[], &options).unwrap_err();
    assert!(
        matches!(e, Error::EspTooSmall { size, .. } if size == 20 << 20),
        "{e:?}"
    );
    let mut esp = Cursor::new(vec![0u8; MIN_ESP_SIZE as usize]);
    let e = write_esp(&mut esp, &[], &EspOptions::new(1).label("bad.label")).unwrap_err();
    assert!(matches!(e, Error::InvalidLabel { .. }), "{e:?}");
    let e = write_esp(&mut esp, &[EspFile::new("EFI/../x", vec![])], &options).unwrap_err();
    assert!(matches!(e, Error::InvalidPath { .. }), "{e:?}");
    // More data than the ESP holds.
    let huge = EspFile::new("big", vec![1u8; MIN_ESP_SIZE as usize]);
    let e = write_esp(&mut esp, &[huge], &options).unwrap_err();
    assert!(
        matches!(e, Error::Fat { ref what, .. } if what == "big"),
        "{e:?}"
    );
}

#[test]
fn window_confines_reads_writes_and_seeks() {
    let mut disk = Cursor::new(vec![0u8; 100]);
    let mut w = Window::new(&mut disk, 10..20);
    assert_eq!(w.len(), 10);
    assert_eq!(w.seek(SeekFrom::End(0)).unwrap(), 10);
    w.seek(SeekFrom::Start(8)).unwrap();
    assert_eq!(w.write(&[1, 2, 3, 4]).unwrap(), 2);
    assert!(w.write(&[5]).is_err());
    assert!(w.seek(SeekFrom::Current(-11)).is_err());
    w.seek(SeekFrom::Start(0)).unwrap();
    w.write_all(&[9]).unwrap();
    let mut buf = Vec::new();
    w.seek(SeekFrom::Start(0)).unwrap();
    w.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, [9, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    let bytes = disk.into_inner();
    assert_eq!(&bytes[9..21], &[0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0]);
}

#[test]
fn block_maps_shift_to_disk_bytes() {
    let map = BlockMap {
        block_size: 4096,
        runs: vec![0..2, 10..11],
    };
    assert_eq!(
        disk_byte_ranges(&map, MIB),
        vec![MIB..MIB + 8192, MIB + 40960..MIB + 45056]
    );
}

#[test]
fn guids_parse_and_print() {
    let g: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
    assert_eq!(g, ESP_TYPE);
    assert_eq!(g.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(&g.0[..4], &[0x28, 0x73, 0x2A, 0xC1]);
    for (c, text) in [
        (ROOT_X86_64_TYPE, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        (ROOT_ARM64_TYPE, "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
        (LINUX_DATA_TYPE, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    ] {
        assert_eq!(c, text.parse().unwrap());
        assert_eq!(c.to_string(), text);
    }
    assert!("C12A7328-F81F-11D2-BA4B".parse::<Guid>().is_err());
    assert!("G12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        .parse::<Guid>()
        .is_err());
    let d = Guid::derive(SEED, "x");
    assert_eq!(d.to_string().as_bytes()[14], b'4', "version 4: {d}");
    assert!(matches!(
        d.to_string().as_bytes()[19],
        b'8' | b'9' | b'A' | b'B'
    ));
}

#[test]
fn esp_with_deep_and_crowded_directories_passes_fsck() {
    // 40 entries overflow the 512-byte clusters of the root and of a subdirectory.
    let mut files: Vec<EspFile> = (0..40)
        .map(|i| {
            EspFile::new(
                format!("EFI/many/file-with-a-long-name-{i:02}.txt"),
                vec![i as u8; 700],
            )
        })
        .collect();
    files.extend((0..20).map(|i| EspFile::new(format!("top{i}"), vec![1, 2, 3])));
    files.push(EspFile::new("a/b/c/d/e/deep.efi", b"deep".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esp.img");
    let mut f = File::create_new(&path).unwrap();
    f.set_len(MIN_ESP_SIZE).unwrap();
    write_esp(&mut f, &files, &EspOptions::new(3).timestamp(TIMESTAMP)).unwrap();
    drop(f);
    fsck_vfat_clean(&path);
    let fs = fatfs::FileSystem::new(File::open(&path).unwrap(), fatfs::FsOptions::new()).unwrap();
    for f in &files {
        let mut data = Vec::new();
        fs.root_dir()
            .open_file(&f.path)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data, f.data, "{}", f.path);
    }
    let names: Vec<String> = fs
        .root_dir()
        .open_dir("a/b")
        .unwrap()
        .iter()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".", "..", "c"]);
}
