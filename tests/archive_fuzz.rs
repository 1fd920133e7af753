//! A property test over mutated real archives (stable Rust, proptest): bit flips, truncation
//! at every chunk boundary, dropped, duplicated and reordered chunks, huge length fields,
//! garbage header fields, and long-name and PAX bombs. For every mutant, listing and extraction
//! must not panic, must stay in bounded memory, must write nothing outside the destination, and
//! either reproduce the original exactly or fail, in one line, leaving the destination as it
//! was. `PROPTEST_CASES` sets the number of mutants (default 400, about a minute in a debug
//! build on two cores).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use buildr::archive::{self, Entry, ExtractOptions, Writer};
use common::frames::{chunks, random_bytes, reassemble, snappy};
use proptest::prelude::*;
use tar::{EntryType, Header};

mod common;

/// The original: a small tree with every kind of entry, archived with two deletions.
struct Original {
    archive: Vec<u8>,
    /// The tar stream inside it.
    plain: Vec<u8>,
    listed: Vec<Entry>,
    /// The destination after extracting the original over [`populate`].
    extracted: Vec<(PathBuf, String)>,
}

fn original() -> &'static Original {
    static ORIGINAL: OnceLock<Original> = OnceLock::new();
    ORIGINAL.get_or_init(|| {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        fs::create_dir_all(root.join("dir/empty")).unwrap();
        fs::write(root.join("a.txt"), "a\n").unwrap();
        fs::write(root.join("top.txt"), "theirs\n").unwrap();
        fs::write(root.join("dir/random.bin"), random_bytes(300 << 10, 7)).unwrap();
        fs::write(
            root.join(format!("dir/{}", "long-name-".repeat(15))),
            "long\n",
        )
        .unwrap();
        fs::write(root.join("dir/ünïcödé.txt"), "u\n").unwrap();
        symlink("../a.txt", root.join("dir/link")).unwrap();
        // Left out at extraction, whatever the mutation.
        fs::create_dir_all(root.join("dir/.git/hooks")).unwrap();
        fs::write(root.join("dir/.git/hooks/pre-commit"), "#!/bin/sh\n").unwrap();
        let mut w = Writer::with_workers(Vec::new(), 1);
        let deleted = ["gone", "dir/gone", ".git"].map(PathBuf::from);
        w.record_deleted(&deleted).unwrap();
        for s in archive::sources_under(root, &[]).unwrap() {
            w.append(&s).unwrap();
        }
        let (bytes, _) = w.finish().unwrap();
        let mut plain = Vec::new();
        snap::read::FrameDecoder::new(&bytes[..])
            .read_to_end(&mut plain)
            .unwrap();
        let dest = tempfile::tempdir().unwrap();
        populate(dest.path());
        archive::extract(&bytes[..], dest.path(), &options()).unwrap();
        Original {
            listed: archive::list(&bytes[..]).unwrap(),
            archive: bytes,
            plain,
            extracted: describe(dest.path()),
        }
    })
}

fn options() -> ExtractOptions {
    ExtractOptions {
        deletions: buildr::archive::Deletions::All,
        ..ExtractOptions::default()
    }
}

/// What a destination holds before each extraction.
fn populate(dest: &Path) {
    fs::write(dest.join("top.txt"), "mine\n").unwrap();
    fs::write(dest.join("gone"), "to be deleted\n").unwrap();
    fs::create_dir(dest.join("dir")).unwrap();
    // A repository's own: nothing an archive holds ever lands in or removes it.
    fs::create_dir(dest.join(".git")).unwrap();
    fs::write(dest.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    // A fixed mtime, so that trees populated at different times compare equal.
    fs::File::options()
        .write(true)
        .open(dest.join(".git/HEAD"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        .unwrap();
}

fn describe(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            format!("dir {:o}", m.mode() & 0o7777)
        } else {
            let data = fs::read(e.path()).unwrap();
            let sum: u64 = data
                .iter()
                .enumerate()
                .map(|(i, &b)| (i as u64 + 1) * b as u64)
                .sum();
            format!(
                "file {:o} {} {sum} {}",
                m.mode() & 0o7777,
                data.len(),
                m.mtime()
            )
        };
        out.push((rel, what));
    }
    out
}

/// Offsets of the tar headers (up to the end-of-archive marker).
fn headers(plain: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= plain.len() && plain[at..at + 512].iter().any(|&b| b != 0) {
        out.push(at);
        let size = Header::from_byte_slice(&plain[at..at + 512])
            .entry_size()
            .unwrap();
        at += 512 + size.div_ceil(512) as usize * 512;
    }
    out
}

/// A header block for an extended header of `size` bytes.
fn extended_header(flag: EntryType, size: u64) -> Vec<u8> {
    let mut h = Header::new_ustar();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(flag);
    h.set_size(size);
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[derive(Debug, Clone)]
enum Mutation {
    BitFlip {
        at: usize,
        bit: u8,
    },
    TruncateAtChunk(usize),
    DropChunk(usize),
    DuplicateChunk(usize),
    SwapChunks(usize, usize),
    /// A header's size field set to a huge number (checksum fixed, so the tar layer sees it).
    HugeSize {
        header: usize,
        base256: bool,
    },
    /// Random bytes over a header field, the checksum fixed or not.
    GarbageField {
        header: usize,
        at: usize,
        bytes: Vec<u8>,
        fix: bool,
    },
    /// A GNU long name, PAX or PAX global header of `size` bytes (zeros) before a header.
    Bomb {
        header: usize,
        kind: u8,
        size: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::BitFlip { at, bit }),
        any::<usize>().prop_map(Mutation::TruncateAtChunk),
        any::<usize>().prop_map(Mutation::DropChunk),
        any::<usize>().prop_map(Mutation::DuplicateChunk),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapChunks(a, b)),
        (any::<usize>(), any::<bool>())
            .prop_map(|(header, base256)| Mutation::HugeSize { header, base256 }),
        (
            any::<usize>(),
            0usize..512,
            proptest::collection::vec(any::<u8>(), 1..16),
            any::<bool>()
        )
            .prop_map(|(header, at, bytes, fix)| Mutation::GarbageField {
                header,
                at,
                bytes,
                fix
            }),
        (
            any::<usize>(),
            0u8..3,
            prop_oneof![
                Just(5000u64),
                Just(2 << 20),
                Just(1 << 30),
                Just(u64::MAX >> 2)
            ]
        )
            .prop_map(|(header, kind, size)| Mutation::Bomb { header, kind, size }),
    ]
}

/// The mutant stream.
fn apply(m: &Mutation) -> Vec<u8> {
    let o = original();
    let bytes = &o.archive;
    let ranges = chunks(bytes);
    let join = |order: &[usize]| reassemble(bytes, &ranges, order);
    let all: Vec<usize> = (0..ranges.len()).collect();
    let heads = headers(&o.plain);
    match m {
        Mutation::BitFlip { at, bit } => {
            let mut out = bytes.clone();
            out[at % bytes.len()] ^= 1 << bit;
            out
        }
        Mutation::TruncateAtChunk(i) => bytes[..ranges[i % (ranges.len() - 1)].end].to_vec(),
        Mutation::DropChunk(i) => {
            let mut order = all;
            order.remove(1 + i % (ranges.len() - 1));
            join(&order)
        }
        Mutation::DuplicateChunk(i) => {
            let mut order = all;
            let i = 1 + i % (ranges.len() - 1);
            order.insert(i, i);
            join(&order)
        }
        Mutation::SwapChunks(a, b) => {
            let mut order = all;
            order.swap(1 + a % (ranges.len() - 1), 1 + b % (ranges.len() - 1));
            join(&order)
        }
        Mutation::HugeSize { header, base256 } => {
            let mut plain = o.plain.clone();
            let at = heads[header % heads.len()];
            edit_header(&mut plain, at, |h| {
                h.as_old_mut().size = if *base256 {
                    [
                        0x80, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    ]
                } else {
                    *b"77777777777\0"
                };
                h.set_cksum();
            });
            snappy(&plain)
        }
        Mutation::GarbageField {
            header,
            at,
            bytes: garbage,
            fix,
        } => {
            let mut plain = o.plain.clone();
            let start = heads[header % heads.len()];
            let at = start + (*at).min(512 - garbage.len());
            plain[at..at + garbage.len()].copy_from_slice(garbage);
            if *fix {
                edit_header(&mut plain, start, Header::set_cksum);
            }
            snappy(&plain)
        }
        Mutation::Bomb { header, kind, size } => {
            let flag = [
                EntryType::GNULongName,
                EntryType::XHeader,
                EntryType::XGlobalHeader,
            ][*kind as usize];
            let at = heads[header % heads.len()];
            let mut plain = o.plain[..at].to_vec();
            plain.extend(extended_header(flag, *size));
            // Real bytes for the small ones; the big ones claim more than follows.
            let real = (*size).min(4 << 20) as usize;
            plain.extend(vec![b'x'; real.div_ceil(512) * 512]);
            plain.extend_from_slice(&o.plain[at..]);
            snappy(&plain)
        }
    }
}

/// Changes the header at `at` in place.
fn edit_header(plain: &mut [u8], at: usize, edit: impl FnOnce(&mut Header)) {
    let mut h = Header::from_byte_slice(&plain[at..at + 512]).clone();
    edit(&mut h);
    plain[at..at + 512].copy_from_slice(h.as_bytes());
}

/// The process's peak resident memory, in KiB.
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn check(m: &Mutation) -> Result<(), TestCaseError> {
    let o = original();
    let mutant = apply(m);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    populate(&dest);
    let before = describe(&dest);

    match archive::list(&mutant[..]) {
        Ok(listed) => prop_assert_eq!(&listed, &o.listed, "a corrupt archive listed"),
        Err(e) => prop_assert!(!e.to_string().contains('\n'), "{}", e),
    }
    match archive::extract(&mutant[..], &dest, &options()) {
        Ok(_) => {
            prop_assert_eq!(&describe(&dest), &o.extracted, "corruption accepted");
            let git: Vec<_> = fs::read_dir(dest.join(".git")).unwrap().collect();
            prop_assert_eq!(git.len(), 1, "something landed in .git");
        }
        Err(e) => {
            let mut chain = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                chain.push_str(&format!(": {c}"));
                cur = c.source();
            }
            prop_assert!(!chain.contains('\n'), "{}", chain);
            prop_assert_eq!(&describe(&dest), &before, "changed after: {}", chain);
        }
    }
    // Nothing beside the destination.
    let siblings: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    prop_assert_eq!(siblings.len(), 1);
    prop_assert!(
        peak_rss_kib() < 100 * 1024,
        "peak RSS {} KiB",
        peak_rss_kib()
    );
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn mutated_archives_are_refused_or_exact(m in mutation()) {
        check(&m)?;
    }
}

/// Every chunk boundary, not just the ones the random cases hit.
#[test]
fn truncation_at_every_chunk_boundary() {
    let n = chunks(&original().archive).len();
    assert!(n > 5, "{n} chunks");
    for i in 0..n - 1 {
        check(&Mutation::TruncateAtChunk(i)).unwrap();
    }
}
