//! The archive module through its public API, on real files in temporary directories.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use buildr::archive::{
    self, ArchiveError, Deletions, EntryKind, ExtractOptions, InputPaths, Kept, Refusal, Source,
    Writer, frame,
};
use common::frames::{chunks, random_bytes, reassemble, snappy, unsnappy};
use common::tree;
use tar::{EntryType, Header};
use tempfile::TempDir;

mod common;

// ---------------------------------------------------------------- helpers

const LONG_DIR: &str =
    "a-directory-name-that-is-rather-long/and-another-one-that-is-also-quite-long/and-a-third";

/// A tree with every kind of thing a round trip must keep.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    fs::write(root.join("top.txt"), "top\n").unwrap();
    fs::write(root.join("nested/a.txt"), "a\n").unwrap();
    fs::write(root.join("nested/deeper/deepest/b.txt"), "b\n").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("readonly.txt"), "ro\n").unwrap();
    fs::set_permissions(root.join("readonly.txt"), fs::Permissions::from_mode(0o444)).unwrap();
    symlink("a.txt", root.join("nested/link-to-a")).unwrap();
    symlink("../top.txt", root.join("nested/link-up")).unwrap();
    symlink("nested/deeper", root.join("dir-link")).unwrap();
    fs::create_dir(root.join("empty-dir")).unwrap();
    fs::write(root.join("with space.txt"), "spaced\n").unwrap();
    fs::write(root.join("ünïcödé-名前.txt"), "utf8\n").unwrap();
    fs::create_dir_all(root.join(LONG_DIR)).unwrap();
    fs::write(
        root.join(LONG_DIR).join("a-file-with-a-long-name-too.txt"),
        "long\n",
    )
    .unwrap();
    symlink(
        "../../../top.txt-but-this-target-is-long-enough-to-need-a-pax-linkpath-record-xxxxxxxxxxxxxxxxxxx",
        root.join(LONG_DIR).join("long-link"),
    )
    .unwrap();
    fs::write(root.join("zero-bytes"), "").unwrap();
    fs::write(root.join("random.bin"), random_bytes(5 << 20, 42)).unwrap();
    // An mtime that is certainly not "now".
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(root.join("nested/a.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Everything under `root` as (relative path, description) lines, for comparing trees.
fn describe(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let m = fs::symlink_metadata(e.path()).unwrap();
        let d = if m.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            format!("dir {:o} mtime {}", m.mode() & 0o7777, m.mtime())
        } else {
            let data = fs::read(e.path()).unwrap();
            let h = archive::Sha256Writer::new(Vec::new());
            let mut h = h;
            h.write_all(&data).unwrap();
            let (_, sha, _) = h.finish();
            format!(
                "file {:o} {} {} mtime {}",
                m.mode() & 0o7777,
                data.len(),
                sha,
                m.mtime()
            )
        };
        out.push((rel, d));
    }
    out
}

fn create(from: &Path, deleted: &[PathBuf]) -> Vec<u8> {
    let sources = archive::sources_under(from, &[]).unwrap();
    let mut w = Writer::new(Vec::new());
    w.record_deleted(deleted).unwrap();
    for s in &sources {
        w.append(s).unwrap();
    }
    let (bytes, summary) = w.finish().unwrap();
    assert_eq!(summary.bytes_out, bytes.len() as u64);
    assert_eq!(summary.entries, sources.len() as u64);
    bytes
}

/// Extracts `bytes` into `dest`, applying its deletions or not, as `buildr archive extract`
/// does (the task's inputs unknown: only `.git` is kept).
fn extract(
    bytes: &[u8],
    dest: &Path,
    apply_deletions: bool,
) -> Result<archive::Extracted, ArchiveError> {
    let deletions = if apply_deletions {
        Deletions::All
    } else {
        Deletions::Off
    };
    extract_deleting(bytes, dest, deletions)
}

fn extract_deleting(
    bytes: &[u8],
    dest: &Path,
    deletions: Deletions,
) -> Result<archive::Extracted, ArchiveError> {
    let opts = ExtractOptions {
        deletions,
        ..ExtractOptions::default()
    };
    archive::extract(bytes, dest, &opts)
}

/// Deletions applied to `paths` only, as `buildr run` applies them to the task's inputs.
fn inputs(paths: &[&str]) -> Deletions {
    Deletions::Inputs(InputPaths::new(paths.iter().map(PathBuf::from)))
}

/// Builds tar streams by hand, header bytes and all, so that hostile names get through.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(self, name: &str, ty: EntryType, link: &str, data: &[u8]) -> Self {
        self.entry_mode(name, ty, link, 0o644, data)
    }
    fn entry_mode(mut self, name: &str, ty: EntryType, link: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_000_000_000);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }
    fn file(self, name: &str, data: &str) -> Self {
        self.entry(name, EntryType::Regular, "", data.as_bytes())
    }
    fn global(self, records: &[(&str, &str)]) -> Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}={v}\n").as_bytes());
        }
        self.entry("pax_global_header", EntryType::XGlobalHeader, "", &body)
    }
    fn s2(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        snappy(&self.0)
    }
}

/// A destination and a sibling directory that must never change.
struct Arena {
    _tmp: TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Arena {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), "keep").unwrap();
        Arena {
            _tmp: tmp,
            dest,
            outside,
        }
    }

    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
        assert_eq!(fs::read(self.outside.join("keep")).unwrap(), b"keep");
        let parent = self.dest.parent().unwrap();
        let mut siblings: Vec<_> = fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        siblings.sort();
        assert_eq!(siblings, vec!["dest", "outside"]);
    }

    /// Extracts a hostile archive and checks the refusal names `entry` and mentions `why`.
    fn refuses(&self, archive: &[u8], entry: &str, why: &str) -> ArchiveError {
        let err =
            extract(archive, &self.dest, true).expect_err("a hostile archive must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("`{entry}`")),
            "{msg:?} should name `{entry}`"
        );
        assert!(msg.contains(why), "{msg:?} should say {why:?}");
        self.assert_outside_untouched();
        err
    }
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_keeps_contents_modes_links_mtimes_and_odd_names() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let bytes = create(src.path(), &[]);
    let dest = tempfile::tempdir().unwrap();
    let got = extract(&bytes, dest.path(), false).unwrap();
    assert_eq!(describe(dest.path()), describe(src.path()));
    assert_eq!(got.symlinks, 4);
    assert_eq!(got.bytes, (5 << 20) + 4 + 2 + 2 + 18 + 3 + 7 + 5 + 5);
    assert!(got.deleted.is_empty());
    let m = fs::metadata(dest.path().join("run.sh")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o755, "the exec bit survives");
    assert_eq!(
        fs::metadata(dest.path().join("nested/a.txt"))
            .unwrap()
            .mtime(),
        1_000_000_000
    );
}

#[test]
fn extracting_twice_overwrites_files() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let bytes = create(src.path(), &[]);
    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join("top.txt"), "stale content that is longer").unwrap();
    extract(&bytes, dest.path(), false).unwrap();
    extract(&bytes, dest.path(), false).unwrap();
    assert_eq!(describe(dest.path()), describe(src.path()));
}

#[test]
fn create_file_summary_matches_the_file() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join(format!("x.{}", archive::ARCHIVE_EXTENSION));
    let sources = archive::sources_under(src.path(), &[]).unwrap();
    let summary = archive::create_file(&to, &sources, &[PathBuf::from("gone")]).unwrap();
    assert_eq!(summary.sha256, archive::sha256_file(&to).unwrap());
    assert_eq!(summary.bytes_out, fs::metadata(&to).unwrap().len());
    assert_eq!(summary.entries, sources.len() as u64);
    assert_eq!(summary.deleted, 1);
    assert!(summary.bytes_in >= 5 << 20);
    let dest = tempfile::tempdir().unwrap();
    archive::extract_file(&to, dest.path(), &ExtractOptions::default()).unwrap();
    assert_eq!(describe(dest.path()), describe(src.path()));
}

#[test]
fn sources_under_selected_paths() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let sources = archive::sources_under(
        src.path(),
        &[PathBuf::from("nested"), PathBuf::from("top.txt")],
    )
    .unwrap();
    let names: Vec<_> = sources.iter().map(|s| s.name.to_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "nested",
            "nested/a.txt",
            "nested/deeper",
            "nested/deeper/deepest",
            "nested/deeper/deepest/b.txt",
            "nested/link-to-a",
            "nested/link-up",
            "top.txt"
        ]
    );
    // A symlink named directly is stored as a symlink, not followed.
    let link = archive::sources_under(src.path(), &[PathBuf::from("dir-link")]).unwrap();
    assert_eq!(link.len(), 1);
    assert!(archive::sources_under(src.path(), &[PathBuf::from("../x")]).is_err());
    assert!(archive::sources_under(src.path(), &[PathBuf::from("missing")]).is_err());
}

#[test]
fn append_refuses_bad_names_and_special_files() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), "x").unwrap();
    let mut w = Writer::new(Vec::new());
    for bad in ["../f", "/f", "", "."] {
        let err = w
            .append(&Source {
                source: src.path().join("f"),
                name: PathBuf::from(bad),
            })
            .unwrap_err();
        assert!(
            matches!(err, ArchiveError::InvalidName { .. }),
            "{bad}: {err}"
        );
    }
    nix::unistd::mkfifo(&src.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let err = w
        .append(&Source {
            source: src.path().join("fifo"),
            name: PathBuf::from("fifo"),
        })
        .unwrap_err();
    assert!(err.to_string().contains("FIFO"), "{err}");
    // sources_under skips it.
    let names: Vec<_> = archive::sources_under(src.path(), &[])
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, [PathBuf::from("f")]);
}

#[test]
fn read_only_directories_and_a_symlinked_root() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("ro/inner")).unwrap();
    fs::write(src.join("ro/inner/f"), "f").unwrap();
    fs::set_permissions(src.join("ro/inner"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
    symlink(&src, tmp.path().join("via-link")).unwrap();
    // The root is followed when it is a symlink; everything under it is not.
    let sources = archive::sources_under(&tmp.path().join("via-link"), &[]).unwrap();
    assert_eq!(sources.len(), 3);
    let mut w = Writer::new(Vec::new());
    for s in &sources {
        w.append(s).unwrap();
    }
    let (bytes, _) = w.finish().unwrap();
    let dest = tmp.path().join("dest");
    extract(&bytes, &dest, false).unwrap();
    let got = describe(&dest);
    let want = describe(&src);
    for d in [&src, &dest] {
        fs::set_permissions(d.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(d.join("ro/inner"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(got, want);
}

#[test]
fn pax_path_and_gnu_long_names_are_checked_too() {
    let a = Arena::new();
    let record = "../outside/pwned";
    let len = record.len() + "path".len() + 3;
    let len = len + (len + 2).to_string().len();
    let body = format!("{len} path={record}\n");
    assert_eq!(body.len(), len);
    let bytes = RawTar::default()
        .entry("././@PaxHeader", EntryType::XHeader, "", body.as_bytes())
        .file("innocent", "x")
        .s2();
    a.refuses(&bytes, "../outside/pwned", "leaves the destination");
    let bytes = RawTar::default()
        .entry(
            "././@LongLink",
            EntryType::GNULongName,
            "",
            b"../outside/pwned\0",
        )
        .file("innocent", "x")
        .s2();
    a.refuses(&bytes, "../outside/pwned", "leaves the destination");
}

#[test]
fn progress_counts_file_bytes() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let bytes = create(src.path(), &[]);
    let dest = tempfile::tempdir().unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let opts = ExtractOptions {
        progress: Some(bar.clone()),
        ..ExtractOptions::default()
    };
    let got = archive::extract(&bytes[..], dest.path(), &opts).unwrap();
    assert_eq!(bar.position(), got.bytes);
}

// ---------------------------------------------------------------- deletions

#[test]
fn deletions_are_recorded_and_applied_only_on_request() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("new.txt"), "new").unwrap();
    let deleted = [
        PathBuf::from("old.txt"),
        PathBuf::from("old-dir"),
        PathBuf::from("old-link"),
        PathBuf::from("never-existed"),
    ];
    let bytes = create(src.path(), &deleted);

    let listed = archive::list(&bytes[..]).unwrap();
    let del: Vec<_> = listed
        .iter()
        .filter(|e| e.kind == EntryKind::Deleted)
        .map(|e| e.path.clone())
        .collect();
    assert_eq!(del, deleted);

    let populate = |dest: &Path| {
        fs::write(dest.join("old.txt"), "old").unwrap();
        fs::create_dir_all(dest.join("old-dir/sub")).unwrap();
        fs::write(dest.join("old-dir/sub/f"), "f").unwrap();
        symlink("old.txt", dest.join("old-link")).unwrap();
    };

    let kept = tempfile::tempdir().unwrap();
    populate(kept.path());
    let got = extract(&bytes, kept.path(), false).unwrap();
    assert_eq!(got.deleted, deleted);
    assert!(kept.path().join("old.txt").exists());
    assert!(kept.path().join("old-dir/sub/f").exists());
    assert!(kept.path().join("new.txt").exists());

    let applied = tempfile::tempdir().unwrap();
    populate(applied.path());
    let got = extract(&bytes, applied.path(), true).unwrap();
    assert_eq!(got.deleted, deleted);
    assert!(!applied.path().join("old.txt").exists());
    assert!(!applied.path().join("old-dir").exists());
    assert!(fs::symlink_metadata(applied.path().join("old-link")).is_err());
    assert_eq!(fs::read(applied.path().join("new.txt")).unwrap(), b"new");
}

#[test]
fn record_deleted_refuses_paths_outside() {
    let mut w = Writer::new(Vec::new());
    for bad in ["../x", "/etc/passwd", "a/../../x"] {
        let err = w.record_deleted(&[PathBuf::from(bad)]).unwrap_err();
        assert!(
            matches!(err, ArchiveError::InvalidName { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn hostile_deletions_are_refused() {
    for (bad, why) in [
        ("../outside/keep", "leaves the destination"),
        ("/etc/passwd", "absolute"),
    ] {
        let a = Arena::new();
        let bytes = RawTar::default().global(&[("BUILDR.deleted.0", bad)]).s2();
        let err = extract(&bytes, &a.dest, true).unwrap_err();
        assert!(matches!(err, ArchiveError::RefusedDeletion { .. }), "{err}");
        assert!(
            err.to_string().contains(bad) && err.to_string().contains(why),
            "{err}"
        );
        // Refused even when deletions are not applied: the archive is hostile.
        assert!(extract(&bytes, &a.dest, false).is_err());
        a.assert_outside_untouched();
    }
}

#[test]
fn deletion_through_a_symlink_is_refused() {
    let a = Arena::new();
    symlink(&a.outside, a.dest.join("out")).unwrap();
    let bytes = RawTar::default()
        .global(&[("BUILDR.deleted.0", "out/keep")])
        .s2();
    let err = extract(&bytes, &a.dest, true).unwrap_err();
    assert!(err.to_string().contains("`out/keep`"), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    a.assert_outside_untouched();
}

// ---------------------------------------------------------------- hostile archives

#[test]
fn absolute_path_is_refused() {
    let a = Arena::new();
    let target = a.outside.join("pwned");
    let bytes = RawTar::default().file(target.to_str().unwrap(), "x").s2();
    a.refuses(&bytes, target.to_str().unwrap(), "absolute path");
}

#[test]
fn dotdot_path_is_refused() {
    let a = Arena::new();
    let bytes = RawTar::default()
        .file("fine.txt", "ok")
        .file("../outside/pwned", "x")
        .s2();
    a.refuses(&bytes, "../outside/pwned", "path leaves the destination");
    // Refused before anything was put in place.
    assert_eq!(fs::read_dir(&a.dest).unwrap().count(), 0);
}

#[test]
fn symlink_then_file_through_it_is_refused() {
    for target in ["/etc", "../..", "../outside", "OUTSIDE"] {
        let a = Arena::new();
        let abs = a.outside.to_str().unwrap().to_string();
        let target = if target == "OUTSIDE" {
            abs.as_str()
        } else {
            target
        };
        let bytes = RawTar::default()
            .entry("evil", EntryType::Symlink, target, b"")
            .file("evil/pwned", "x")
            .s2();
        let why = if target.starts_with('/') {
            "absolute symlink target"
        } else {
            "leaves the destination"
        };
        a.refuses(&bytes, "evil", why);
        assert!(fs::symlink_metadata(a.dest.join("evil")).is_err());
    }
}

#[test]
fn link_climbing_through_another_link_is_refused() {
    // d/e/f -> ../../g is inside; but x -> d/e/f/../../.. would climb out through it.
    let a = Arena::new();
    let bytes = RawTar::default()
        .entry("d/e/f", EntryType::Symlink, "../../g", b"")
        .entry("x", EntryType::Symlink, "d/e/f/../../..", b"")
        .file("x/outside/pwned", "x")
        .s2();
    a.refuses(&bytes, "x", "`..` after a normal component");
}

#[test]
fn existing_symlink_in_dest_is_never_written_through() {
    let a = Arena::new();
    // A parent that is a symlink: refused.
    symlink(&a.outside, a.dest.join("out")).unwrap();
    let bytes = RawTar::default().file("out/pwned", "x").s2();
    a.refuses(&bytes, "out/pwned", "is a symlink");
    // A symlink at the entry's own path: replaced, not followed.
    symlink(a.outside.join("keep"), a.dest.join("keep")).unwrap();
    let bytes = RawTar::default()
        .file("keep", "replaced")
        .entry("out", EntryType::Directory, "", b"")
        .s2();
    extract(&bytes, &a.dest, false).unwrap();
    assert_eq!(fs::read(a.dest.join("keep")).unwrap(), b"replaced");
    assert!(
        !fs::symlink_metadata(a.dest.join("keep"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::symlink_metadata(a.dest.join("out")).unwrap().is_dir());
    a.assert_outside_untouched();
}

#[test]
fn hard_links_are_refused() {
    let a = Arena::new();
    let target = a.outside.join("keep");
    let bytes = RawTar::default()
        .entry("hard", EntryType::Link, target.to_str().unwrap(), b"")
        .file("hard", "overwrite")
        .s2();
    let err = a.refuses(&bytes, "hard", "hard links are refused");
    assert!(matches!(
        err,
        ArchiveError::Refused {
            reason: Refusal::HardLink(_),
            ..
        }
    ));
    let bytes = RawTar::default()
        .file("inside", "x")
        .entry("hard", EntryType::Link, "inside", b"")
        .s2();
    a.refuses(&bytes, "hard", "hard links are refused");
}

#[test]
fn devices_and_fifos_are_refused() {
    for (ty, why) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "FIFO"),
    ] {
        let a = Arena::new();
        let bytes = RawTar::default().entry("dev", ty, "", b"").s2();
        a.refuses(&bytes, "dev", why);
        assert!(fs::symlink_metadata(a.dest.join("dev")).is_err());
    }
}

#[test]
fn truncated_or_garbage_input_is_an_error() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let bytes = create(src.path(), &[]);
    let dest = tempfile::tempdir().unwrap();
    let err = extract(&bytes[..bytes.len() / 2], dest.path(), false).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::ReadArchive(_) | ArchiveError::Corrupt { .. }
        ),
        "{err}"
    );
    let err = extract(b"definitely not snappy", dest.path(), false).unwrap_err();
    assert!(matches!(err, ArchiveError::ReadArchive(_)), "{err}");
    assert!(archive::list(&b"nope"[..]).is_err());
}

// ---------------------------------------------------------------- list and GNU tar

#[test]
fn list_shows_kinds_modes_sizes_and_targets() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let bytes = create(src.path(), &[PathBuf::from("gone.txt")]);
    let entries = archive::list(&bytes[..]).unwrap();
    let find = |p: &str| {
        entries
            .iter()
            .find(|e| e.path == Path::new(p))
            .unwrap_or_else(|| panic!("{p} listed"))
    };
    assert_eq!(find("gone.txt").kind, EntryKind::Deleted);
    let run = find("run.sh");
    assert_eq!((run.kind, run.mode, run.size), (EntryKind::File, 0o755, 18));
    assert_eq!(find("random.bin").size, 5 << 20);
    assert_eq!(find("empty-dir").kind, EntryKind::Dir);
    let link = find("nested/link-up");
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(link.link_target.as_deref(), Some(Path::new("../top.txt")));
    let long = format!("{LONG_DIR}/a-file-with-a-long-name-too.txt");
    assert!(long.len() > 100);
    assert_eq!(find(&long).size, 5);
    // A hard link shows up as what it is (and extract refuses it).
    let raw = RawTar::default().entry("h", EntryType::Link, "x", b"").s2();
    assert_eq!(
        archive::list(&raw[..]).unwrap()[0].kind,
        EntryKind::Other('1')
    );
}

#[test]
fn gnu_tar_extracts_the_stream_and_ignores_the_deletion_record() {
    if Command::new("tar").arg("--version").output().is_err() {
        eprintln!("no tar here; skipped");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let bytes = create(src.path(), &[PathBuf::from("deleted.txt")]);
    let work = tempfile::tempdir().unwrap();
    let tar_path = work.path().join("plain.tar");
    fs::write(&tar_path, unsnappy(&bytes)).unwrap();
    let dest = work.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&dest)
        .arg("--no-same-owner")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tar -x: {stderr}");
    // Not even a warning about the BUILDR.deleted keyword.
    assert!(stderr.is_empty(), "tar -x said: {stderr}");
    assert_eq!(describe(&dest), describe(src.path()));
    assert!(!dest.join("deleted.txt").exists());
    assert!(!dest.join("pax_global_header").exists());
}

// ---------------------------------------------------------------- the parallel encoder

#[test]
fn parallel_encoder_output_decodes_and_matches_a_single_frame_encoder() {
    let b = frame::BLOCK_SIZE;
    let mut text = Vec::new();
    let mut i = 0u64;
    while text.len() < 4 * b {
        text.extend_from_slice(format!("word{} other{} ", i % 1000, i % 37).as_bytes());
        i += 1;
    }
    for len in [0, 1, 1000, b - 1, b, b + 1, 3 * b + b / 2] {
        for workers in [1, 2, 3] {
            let input = if len % 2 == 0 {
                text[..len].to_vec()
            } else {
                random_bytes(len, len as u64 + 1)
            };
            let mut enc = frame::ParallelEncoder::with_workers(Vec::new(), workers);
            // Uneven writes, to cross block boundaries at odd places.
            for piece in input.chunks(77_777) {
                enc.write_all(piece).unwrap();
            }
            let out = enc.finish().unwrap();
            assert_eq!(unsnappy(&out), input, "len {len}, {workers} workers");
            if len > 0 {
                assert_eq!(out, snappy(&input), "len {len}: same bytes as snap alone");
            } else {
                assert_eq!(&out[..], &frame::STREAM_IDENTIFIER[..]);
            }
        }
    }
}

#[test]
fn adaptive_encoder_output_decodes() {
    let mut text = Vec::new();
    let mut i = 0u64;
    while text.len() < 24 * frame::BLOCK_SIZE + 12345 {
        text.extend_from_slice(format!("word{} other{} ", i % 1000, i % 37).as_bytes());
        i += 1;
    }
    for workers in [1, 2] {
        let mut enc = frame::ParallelEncoder::with_workers(Vec::new(), workers).adaptive(true);
        for piece in text.chunks(1 << 20) {
            enc.write_all(piece).unwrap();
        }
        let out = enc.finish().unwrap();
        assert_eq!(unsnappy(&out), text, "{workers} workers");
        eprintln!(
            "adaptive, {workers} workers: {} -> {} bytes",
            text.len(),
            out.len()
        );
    }
    // Through the archive writer too.
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let mut w = Writer::with_workers(Vec::new(), 1).adaptive(true);
    for s in archive::sources_under(src.path(), &[]).unwrap() {
        w.append(&s).unwrap();
    }
    let (bytes, _) = w.finish().unwrap();
    let dest = tempfile::tempdir().unwrap();
    extract(&bytes, dest.path(), false).unwrap();
    assert_eq!(describe(dest.path()), describe(src.path()));
}

// ---------------------------------------------------------------- issue 8: trust nothing

/// A buildr archive of the sample tree with two deletions, and its chunks.
fn sample_archive() -> (TempDir, Vec<u8>, Vec<std::ops::Range<usize>>) {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let bytes = create(
        src.path(),
        &[PathBuf::from("gone"), PathBuf::from("d/gone")],
    );
    let ranges = chunks(&bytes);
    (src, bytes, ranges)
}

/// A destination holding one file, and a check that an extraction left it exactly as it was.
struct Untouched {
    _tmp: TempDir,
    dest: PathBuf,
    before: Vec<(PathBuf, String)>,
}

impl Untouched {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("top.txt"), "mine").unwrap();
        let before = describe(&dest);
        Untouched {
            _tmp: tmp,
            dest,
            before,
        }
    }

    /// Extraction of `bytes` fails, in one line, and the destination is as it was.
    fn refuses(&self, bytes: &[u8], what: &str) -> ArchiveError {
        let err = extract(bytes, &self.dest, true)
            .err()
            .unwrap_or_else(|| panic!("{what}: extracted"));
        let chain = error_chain(&err);
        assert!(!chain.contains('\n'), "{what}: {chain}");
        assert_eq!(describe(&self.dest), self.before, "{what}: {chain}");
        err
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// A header with a numeric field written as GNU base-256 (`bytes` after the marker byte).
fn base256(field: &mut [u8], bytes: &[u8]) {
    field.fill(0);
    field[0] = 0x80;
    let start = field.len() - bytes.len();
    field[start..].copy_from_slice(bytes);
}

#[test]
fn a_huge_mtime_does_not_panic() {
    for mtime in [&[0x7f; 11][..], &[0xff; 8], &[0x01, 0, 0, 0, 0, 0, 0, 0]] {
        let mut raw = RawTar::default().file("f", "x").0;
        base256(&mut raw[136..148], mtime);
        let header: &mut [u8; 512] = (&mut raw[..512]).try_into().unwrap();
        let mut h = Header::from_byte_slice(header).clone();
        h.set_cksum();
        raw[..512].copy_from_slice(h.as_bytes());
        let bytes = RawTar(raw).s2();
        let dest = tempfile::tempdir().unwrap();
        // Extracted or refused in one line; never a panic.
        if let Err(e) = extract(&bytes, dest.path(), false) {
            assert!(!error_chain(&e).contains('\n'), "{e}");
        }
        archive::list(&bytes[..]).map(|_| ()).unwrap_or(());
    }
}

#[test]
fn empty_and_identifier_only_archives_are_truncated() {
    let a = Untouched::new();
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("stream identifier only", frame::STREAM_IDENTIFIER.to_vec()),
        ("one zero block", snappy(&[0; 512])),
    ] {
        let err = a.refuses(&bytes, what);
        assert!(err.to_string().contains("end-of-archive"), "{what}: {err}");
        assert!(archive::list(&bytes[..]).is_err(), "{what}");
    }
}

#[test]
fn an_archive_cut_at_any_chunk_boundary_is_refused() {
    let (_src, bytes, ranges) = sample_archive();
    let a = Untouched::new();
    for r in &ranges[..ranges.len() - 1] {
        a.refuses(&bytes[..r.end], &format!("cut after byte {}", r.end));
        assert!(archive::list(&bytes[..r.end]).is_err());
    }
}

#[test]
fn an_archive_cut_at_an_entry_boundary_is_refused() {
    let (_src, bytes, _) = sample_archive();
    let plain = unsnappy(&bytes);
    let a = Untouched::new();
    // Every header boundary after the format record: cut there, then end the tar stream
    // properly.
    let mut at = 1024;
    let mut cuts = 0;
    while at < plain.len() - 1024 {
        let h = Header::from_byte_slice(&plain[at..at + 512]);
        // The volume header after the closing record carries nothing to lose.
        if h.entry_type().as_byte() == b'V' {
            break;
        }
        let size = h.entry_size().unwrap().div_ceil(512) * 512;
        let cut = [&plain[..at], &[0u8; 1024][..]].concat();
        a.refuses(&snappy(&cut), &format!("cut at entry byte {at}"));
        cuts += 1;
        at += 512 + size as usize;
    }
    assert!(cuts > 20, "{cuts} cuts");
}

#[test]
fn dropped_duplicated_or_reordered_chunks_are_caught() {
    let (_src, bytes, ranges) = sample_archive();
    let a = Untouched::new();
    let join = |order: &[usize]| reassemble(&bytes, &ranges, order);
    let all: Vec<usize> = (0..ranges.len()).collect();
    let mid = ranges.len() / 2;
    assert!(ranges.len() > 20, "{} chunks", ranges.len());
    let mut dropped = all.clone();
    dropped.remove(mid);
    let mut duplicated = all.clone();
    duplicated.insert(mid, mid);
    let mut reordered = all.clone();
    reordered.swap(mid, mid + 1);
    for (what, order) in [
        ("dropped", dropped),
        ("duplicated", duplicated),
        ("reordered", reordered),
    ] {
        let err = a.refuses(&join(&order), what);
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{what}: {err}");
    }
    // The random file's chunks swapped keep the tar structure intact: only the closing
    // record can tell.
    let mut swapped = all.clone();
    swapped.swap(3, 4);
    let err = a.refuses(&join(&swapped), "swapped data chunks");
    assert!(err.to_string().contains("closing record"), "{err}");
}

#[test]
fn a_corrupt_archive_leaves_the_destination_as_it_was() {
    let (_src, bytes, ranges) = sample_archive();
    let a = Untouched::new();
    // A bit flipped in the last data chunk: everything before it is fine.
    let last = &ranges[ranges.len() - 2];
    let mut flipped = bytes.clone();
    flipped[last.end - 3] ^= 0x10;
    a.refuses(&flipped, "a flipped bit at the end");
    let staging: Vec<_> = fs::read_dir(&a.dest).unwrap().collect();
    assert_eq!(staging.len(), 1, "no staging directory is left behind");
    // A destination that did not exist does not either.
    let fresh = a.dest.parent().unwrap().join("fresh");
    extract(&flipped, &fresh, false).unwrap_err();
    assert!(!fresh.exists());
}

/// A GNU long name or PAX header claiming `size` bytes of zeros (actually sent), as the
/// Snappy-framed stream `buildr archive list -` reads on stdin; returns its exit status, its
/// stderr and its peak RSS in KiB. GNU time measures it: a child spawned from this (big) test
/// process would inherit the parent's high-water mark through vfork.
fn list_bomb(flag: EntryType, size: u64) -> (std::process::ExitStatus, String, u64) {
    use std::process::Stdio;
    let mut h = Header::new_ustar();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(flag);
    h.set_size(size);
    h.set_cksum();
    let rss = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(rss.path())
        .args([
            "-f",
            "%M",
            env!("CARGO_BIN_EXE_buildr"),
            "archive",
            "list",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut enc = snap::write::FrameEncoder::new(stdin);
        let zeros = vec![0u8; 1 << 20];
        let _ = enc.write_all(h.as_bytes());
        for _ in 0..size >> 20 {
            if enc.write_all(&zeros).is_err() {
                break; // the reader stopped, as it should
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("Command exited"))
        .collect::<Vec<_>>()
        .join("\n");
    let rss = fs::read_to_string(rss.path()).unwrap();
    let peak = rss.lines().last().unwrap().trim().parse().unwrap();
    (out.status, stderr, peak)
}

#[test]
fn long_name_and_pax_bombs_are_refused_in_bounded_memory() {
    for flag in [
        EntryType::GNULongName,
        EntryType::XHeader,
        EntryType::XGlobalHeader,
    ] {
        let (status, stderr, peak_kib) = list_bomb(flag, 1 << 30);
        eprintln!("{flag:?}: peak RSS {peak_kib} KiB");
        assert_eq!(status.code(), Some(1), "{flag:?}: {stderr}");
        assert!(stderr.contains("over the limit"), "{flag:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flag:?}: {stderr}");
        assert!(peak_kib < 100 * 1024, "{flag:?}: peak RSS {peak_kib} KiB");
    }
    // A long name a little over what Linux accepts is refused too.
    let name = "d/".repeat(2100);
    let bytes = RawTar::default()
        .entry(
            "././@LongLink",
            EntryType::GNULongName,
            "",
            format!("{name}\0").as_bytes(),
        )
        .file("x", "x")
        .s2();
    let err = Untouched::new().refuses(&bytes, "a 4200-byte name");
    assert!(err.to_string().contains("limit of 4095"), "{err}");
}

#[test]
fn control_characters_in_names_are_quoted_in_listings_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = "evil\u{1b}]0;pwned\u{7}\nsecond line";
    let archive = tmp.path().join("a.tar.s2");
    fs::write(&archive, RawTar::default().file(evil, "x").s2()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_buildr"))
        .args(["archive", "list"])
        .arg(&archive)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert!(!stdout.contains(['\u{1b}', '\u{7}']), "{stdout:?}");
    assert!(
        stdout.contains("evil\\u{1b}]0;pwned\\u{7}\\nsecond line"),
        "{stdout:?}"
    );

    let absolute = format!("/{evil}");
    fs::write(&archive, RawTar::default().file(&absolute, "x").s2()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_buildr"))
        .args(["archive", "extract", "--to"])
        .arg(tmp.path().join("dest"))
        .arg(&archive)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(!stderr.contains(['\u{1b}', '\u{7}']), "{stderr:?}");
    assert!(stderr.contains("absolute path"), "{stderr:?}");

    // A corrupt header is described in buildr's words, not dumped.
    let mut raw = RawTar::default().file("f", "x").0;
    raw[0..8].copy_from_slice(b"\x1b[2J\x07\n\n\n");
    raw.extend_from_slice(&[0; 1024]);
    fs::write(&archive, snappy(&raw)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_buildr"))
        .args(["archive", "list"])
        .arg(&archive)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("checksum"), "{stderr:?}");
}

#[test]
fn python_tarfile_sees_every_deletion_and_the_real_unicode_name() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("ünïcödé-名前.txt"), "u").unwrap();
    let deleted: Vec<PathBuf> = ["a", "dir/b", "ç/d", "with space"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let bytes = create(src.path(), &deleted);
    let work = tempfile::tempdir().unwrap();
    let tar_path = work.path().join("plain.tar");
    fs::write(&tar_path, unsnappy(&bytes)).unwrap();
    let script = r#"
import sys, tarfile
t = tarfile.open(sys.argv[1], encoding="utf-8")
names = [m.name for m in t.getmembers()]
dels = sorted((k, v) for k, v in t.pax_headers.items() if k.startswith("BUILDR.deleted."))
print("\n".join(v for _, v in dels))
print("--")
print("\n".join(names))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&tar_path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (dels, names) = stdout.split_once("--\n").unwrap();
    let mut want: Vec<_> = deleted.iter().map(|p| p.to_str().unwrap()).collect();
    want.sort();
    let mut got: Vec<_> = dels.lines().collect();
    got.sort();
    assert_eq!(got, want);
    // The empty volume header after the closing record is a member to Python.
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["ünïcödé-名前.txt", "buildr archive end"]
    );
    // The ustar name field itself is ASCII; a PAX `path` record carries the name.
    let plain = unsnappy(&bytes);
    let mut at = 0;
    while at + 512 <= plain.len() {
        let h = Header::from_byte_slice(&plain[at..at + 512]);
        if h.as_bytes().iter().all(|&b| b == 0) {
            break;
        }
        assert!(h.as_old().name.is_ascii(), "header at {at}");
        at += 512 + (h.entry_size().unwrap().div_ceil(512) * 512) as usize;
    }
    let pax = String::from_utf8_lossy(&plain);
    assert!(pax.contains("path=ünïcödé-名前.txt\n"));
}

#[test]
fn archives_from_gnu_tar_extract_when_complete() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let work = tempfile::tempdir().unwrap();
    let tar_path = work.path().join("gnu.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar_path)
        .arg("-C")
        .arg(src.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let plain = fs::read(&tar_path).unwrap();
    let dest = work.path().join("dest");
    extract(&snappy(&plain), &dest, false).unwrap();
    assert_eq!(describe(&dest), describe(src.path()));
    // Without its end-of-archive marker (all its zero blocks), it is truncated.
    let end = plain.len() - plain.iter().rev().take_while(|&&b| b == 0).count();
    let cut = snappy(&plain[..end.div_ceil(512) * 512]);
    Untouched::new().refuses(&cut, "GNU tar without its end marker");
}

// ---------------------------------------------------------------- links

#[test]
fn link_policy_refuses_skips_or_keeps_links_that_point_outside() {
    let raw = || {
        RawTar::default()
            .entry(
                "venv/bin/python",
                EntryType::Symlink,
                "/usr/bin/python3",
                b"",
            )
            .entry("up", EntryType::Symlink, "../../etc", b"")
            .entry("inside", EntryType::Symlink, "venv/bin", b"")
            .file("venv/ok.txt", "ok")
            .s2()
    };
    let with = |links| ExtractOptions {
        links,
        ..ExtractOptions::default()
    };
    let a = Arena::new();
    let err =
        archive::extract(&raw()[..], &a.dest, &with(archive::LinkPolicy::Refuse)).unwrap_err();
    assert!(err.to_string().contains("absolute symlink target"), "{err}");
    assert_eq!(fs::read_dir(&a.dest).unwrap().count(), 0);

    let got = archive::extract(&raw()[..], &a.dest, &with(archive::LinkPolicy::Skip)).unwrap();
    let skipped: Vec<_> = got.skipped_links.iter().map(|l| l.path.clone()).collect();
    assert_eq!(
        skipped,
        [PathBuf::from("venv/bin/python"), PathBuf::from("up")]
    );
    assert_eq!(fs::read(a.dest.join("venv/ok.txt")).unwrap(), b"ok");
    assert_eq!(
        fs::read_link(a.dest.join("inside")).unwrap(),
        Path::new("venv/bin")
    );
    assert!(fs::symlink_metadata(a.dest.join("up")).is_err());

    let b = Arena::new();
    archive::extract(&raw()[..], &b.dest, &with(archive::LinkPolicy::Allow)).unwrap();
    assert_eq!(
        fs::read_link(b.dest.join("venv/bin/python")).unwrap(),
        Path::new("/usr/bin/python3")
    );
    assert_eq!(
        fs::read_link(b.dest.join("up")).unwrap(),
        Path::new("../../etc")
    );
    b.assert_outside_untouched();
}

#[test]
fn an_allowed_link_is_never_written_through() {
    // Every link is allowed in, and still nothing goes through one: not a file, not a
    // directory, not a deletion, whether the link came in the archive or was there before.
    let a = Arena::new();
    let opts = ExtractOptions {
        deletions: Deletions::All,
        links: archive::LinkPolicy::Allow,
        ..ExtractOptions::default()
    };
    let outside = a.outside.to_str().unwrap();
    for (what, bytes) in [
        (
            "file through a link",
            RawTar::default()
                .entry("evil", EntryType::Symlink, outside, b"")
                .file("evil/pwned", "x")
                .s2(),
        ),
        (
            "directory through a link",
            RawTar::default()
                .entry("evil2", EntryType::Symlink, outside, b"")
                .entry("evil2/sub/", EntryType::Directory, "", b"")
                .s2(),
        ),
        (
            "deletion through a link",
            RawTar::default()
                .entry("evil3", EntryType::Symlink, outside, b"")
                .global(&[("BUILDR.deleted.0", "evil3/keep")])
                .s2(),
        ),
        (
            "link through a link",
            RawTar::default()
                .entry("evil4", EntryType::Symlink, outside, b"")
                .entry("evil4/l", EntryType::Symlink, "/", b"")
                .s2(),
        ),
    ] {
        let err = archive::extract(&bytes[..], &a.dest, &opts).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{what}: {err}");
        a.assert_outside_untouched();
    }
}

// ---------------------------------------------------------------- the trust boundary

#[test]
fn paths_under_git_are_left_out_and_the_rest_lands() {
    let a = Arena::new();
    fs::create_dir_all(a.dest.join(".git/hooks")).unwrap();
    fs::write(a.dest.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::create_dir_all(a.dest.join("sub")).unwrap();
    let bytes = RawTar::default()
        .global(&[("BUILDR.deleted.0", ".git"), ("BUILDR.deleted.1", "gone")])
        .entry_mode(
            ".git/hooks/pre-commit",
            EntryType::Regular,
            "",
            0o755,
            b"#!/bin/sh\ntouch /tmp/pwned\n",
        )
        .file("sub/.git/config", "[core]\n\tfsmonitor = evil\n")
        .entry("Sub/.GIT", EntryType::Directory, "", b"")
        .file("built.txt", "built")
        .file("sub/kept.txt", "kept")
        .s2();
    fs::write(a.dest.join("gone"), "old").unwrap();
    let got = extract(&bytes, &a.dest, true).unwrap();

    assert_eq!(fs::read(a.dest.join("built.txt")).unwrap(), b"built");
    assert_eq!(fs::read(a.dest.join("sub/kept.txt")).unwrap(), b"kept");
    assert!(!a.dest.join("gone").exists());
    assert_eq!(
        fs::read(a.dest.join(".git/HEAD")).unwrap(),
        b"ref: refs/heads/main\n"
    );
    assert!(!a.dest.join(".git/hooks/pre-commit").exists());
    assert!(!a.dest.join("sub/.git").exists());
    assert!(!a.dest.join("Sub").exists());
    a.assert_outside_untouched();
    assert_eq!(got.git_left_out.count, 4);
    assert_eq!(got.git_left_out.first, Some(PathBuf::from(".git")));
    assert_eq!(got.deleted, [PathBuf::from("gone")]);
    assert_eq!((got.files, got.dirs), (2, 0));
}

#[test]
fn a_link_into_git_is_left_out_with_the_git_paths() {
    let a = Arena::new();
    fs::create_dir_all(a.dest.join(".git/hooks")).unwrap();
    fs::create_dir_all(a.dest.join("vendor/lib/.git/hooks")).unwrap();
    let bytes = RawTar::default()
        .file(".git/hooks/post-checkout", "#!/bin/sh\n")
        .entry("hook", EntryType::Symlink, ".git/hooks/pre-commit", b"")
        .entry("sub/cfg", EntryType::Symlink, "../.git/config", b"")
        .entry(
            "sub/deep",
            EntryType::Symlink,
            "../vendor/lib/.GIT/hooks",
            b"",
        )
        .entry("sub/git", EntryType::Symlink, "../.git", b"")
        // The destination may be a directory of a repository: `up` would be its hook.
        .entry("up", EntryType::Symlink, "../.git/hooks/pre-commit", b"")
        .entry("fine", EntryType::Symlink, ".gitignore", b"")
        .entry("sub/ok", EntryType::Symlink, "../vendor/lib.git", b"")
        .s2();
    let got = extract(&bytes, &a.dest, false).unwrap();
    for link in ["hook", "sub/cfg", "sub/deep", "sub/git", "up"] {
        assert!(fs::symlink_metadata(a.dest.join(link)).is_err(), "{link}");
    }
    assert_eq!(
        fs::read_link(a.dest.join("fine")).unwrap(),
        Path::new(".gitignore")
    );
    assert_eq!(
        fs::read_link(a.dest.join("sub/ok")).unwrap(),
        Path::new("../vendor/lib.git")
    );
    assert_eq!(tree(&a.dest.join(".git")), ["hooks"]);
    assert_eq!(got.git_left_out.count, 6);
    assert_eq!(
        got.git_left_out.first,
        Some(PathBuf::from(".git/hooks/post-checkout"))
    );
    assert_eq!(got.symlinks, 2);
    a.assert_outside_untouched();
}

/// A repository's tree as a task's run finds it: a submodule whose `.git` is a file, a nested
/// repository, an ignored `config/.env`, and a directory whose every path was an input.
fn populate_for_deletions(dest: &Path) {
    for (path, data) in [
        ("vendor/README", "vendored"),
        ("vendor/lib/.git", "gitdir: ../../.git/modules/lib"),
        ("vendor/lib/lib.c", "int lib;"),
        ("vendor/lib/src/impl.c", "int impl;"),
        ("vendor/nested/.GIT/config", "[core]"),
        ("config/.env", "SECRET=1"),
        ("config/app.toml", "port = 1"),
        ("whole/a/b.txt", "b"),
        ("whole/c.txt", "c"),
    ] {
        fs::create_dir_all(dest.join(path).parent().unwrap()).unwrap();
        fs::write(dest.join(path), data).unwrap();
    }
}

/// The deletions of `vendor`, `config` and `whole`, and a new file.
fn deleting_three_directories() -> Vec<u8> {
    RawTar::default()
        .global(&[
            ("BUILDR.deleted.0", "vendor"),
            ("BUILDR.deleted.1", "config"),
            ("BUILDR.deleted.2", "whole"),
        ])
        .file("new.txt", "new")
        .s2()
}

/// What the task had of [`populate_for_deletions`]'s tree: no `.git`, no `config/.env`.
const GIVEN: &[&str] = &[
    "config",
    "config/app.toml",
    "vendor",
    "vendor/README",
    "vendor/lib",
    "vendor/lib/lib.c",
    "vendor/lib/src",
    "vendor/lib/src/impl.c",
    "vendor/nested",
    "whole",
    "whole/a",
    "whole/a/b.txt",
    "whole/c.txt",
];

#[test]
fn a_deleted_directory_takes_only_the_inputs_under_it() {
    let a = Arena::new();
    populate_for_deletions(&a.dest);
    let got = extract_deleting(&deleting_three_directories(), &a.dest, inputs(GIVEN)).unwrap();
    assert_eq!(
        tree(&a.dest),
        [
            "config",
            "config/.env",
            "new.txt",
            "vendor",
            "vendor/lib",
            "vendor/lib/.git",
            "vendor/nested",
            "vendor/nested/.GIT",
            "vendor/nested/.GIT/config",
        ]
    );
    let read = |p: &str| fs::read_to_string(a.dest.join(p)).unwrap();
    assert_eq!(read("vendor/lib/.git"), "gitdir: ../../.git/modules/lib");
    assert_eq!(read("vendor/nested/.GIT/config"), "[core]");
    assert_eq!(read("config/.env"), "SECRET=1");
    assert_eq!(
        got.deleted,
        [Path::new("vendor"), Path::new("config"), Path::new("whole")]
    );
    let kept = Kept {
        count: 3,
        first: Some(PathBuf::from("vendor/lib/.git")),
    };
    assert_eq!(got.kept, kept);
    assert_eq!(got.git_left_out.count, 0);
    a.assert_outside_untouched();
}

#[test]
fn without_the_inputs_a_deleted_directory_keeps_only_its_git() {
    let a = Arena::new();
    populate_for_deletions(&a.dest);
    let got = extract(&deleting_three_directories(), &a.dest, true).unwrap();
    assert_eq!(
        tree(&a.dest),
        [
            "new.txt",
            "vendor",
            "vendor/lib",
            "vendor/lib/.git",
            "vendor/nested",
            "vendor/nested/.GIT",
            "vendor/nested/.GIT/config",
        ]
    );
    assert_eq!(
        fs::read_to_string(a.dest.join("vendor/lib/.git")).unwrap(),
        "gitdir: ../../.git/modules/lib"
    );
    assert_eq!(got.kept.count, 2);
    a.assert_outside_untouched();
}

#[test]
fn a_deleted_file_the_task_was_not_given_stays() {
    let a = Arena::new();
    populate_for_deletions(&a.dest);
    let bytes = RawTar::default()
        .global(&[
            ("BUILDR.deleted.0", "config/.env"),
            ("BUILDR.deleted.1", "config/app.toml"),
        ])
        .s2();
    let got = extract_deleting(&bytes, &a.dest, inputs(GIVEN)).unwrap();
    assert_eq!(fs::read(a.dest.join("config/.env")).unwrap(), b"SECRET=1");
    assert!(!a.dest.join("config/app.toml").exists());
    assert_eq!(got.kept.first, Some(PathBuf::from("config/.env")));
}

#[test]
fn buildr_archive_extract_keeps_a_git_under_a_deleted_directory_and_says_so() {
    let a = Arena::new();
    populate_for_deletions(&a.dest);
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.tar.s2");
    fs::write(&archive, deleting_three_directories()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_buildr"))
        .args(["archive", "extract", "--apply-deletions", "--to"])
        .arg(&a.dest)
        .arg(&archive)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert_eq!(
        fs::read_to_string(a.dest.join("vendor/lib/.git")).unwrap(),
        "gitdir: ../../.git/modules/lib"
    );
    assert!(!a.dest.join("config").exists(), "{err}");
    let warnings: Vec<_> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(
        warnings,
        [
            "buildr: warning: kept 2 paths under deleted directories, and the directories that hold \
          them (the first: `vendor/lib/.git`): a deletion never removes a .git, nor what the task \
          was not given"
        ],
        "{err}"
    );
    a.assert_outside_untouched();
}

#[test]
fn a_directory_a_deletion_keeps_is_not_replaced_and_nothing_changes() {
    // The task made files of `vendor` and `whole`; `vendor` holds what it never had.
    let a = Arena::new();
    populate_for_deletions(&a.dest);
    let before = describe(&a.dest);
    let replacing = |dir: &str| {
        RawTar::default()
            .global(&[("BUILDR.deleted.0", "whole"), ("BUILDR.deleted.1", dir)])
            .file("whole", "now a file")
            .file(dir, "now a file")
            .s2()
    };
    let err = extract_deleting(&replacing("vendor"), &a.dest, inputs(GIVEN)).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Refused { entry, reason: Refusal::NonEmptyDirectory } if entry == Path::new("vendor")),
        "{err}"
    );
    assert_eq!(describe(&a.dest), before);

    // A directory that held only inputs is replaced.
    extract_deleting(&replacing("whole"), &a.dest, inputs(GIVEN)).unwrap();
    assert_eq!(fs::read(a.dest.join("whole")).unwrap(), b"now a file");
    a.assert_outside_untouched();
}

/// `buildr archive extract` of `archive` into `dest` under `umask`.
fn extract_with_umask(umask: &str, archive: &Path, dest: &Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_buildr"))
        .args(["archive", "extract", "--to"])
        .arg(dest)
        .arg(archive)
        .output()
        .unwrap()
}

#[test]
fn modes_get_the_umask_and_existing_directories_keep_theirs() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.tar.s2");
    let bytes = RawTar::default()
        .entry_mode("existing", EntryType::Directory, "", 0o777, b"")
        .entry_mode("mine", EntryType::Directory, "", 0o777, b"")
        .entry_mode("fresh", EntryType::Directory, "", 0o777, b"")
        .entry_mode("private", EntryType::Directory, "", 0o700, b"")
        .entry_mode("fresh/rw.txt", EntryType::Regular, "", 0o666, b"rw")
        .entry_mode("tool", EntryType::Regular, "", 0o777, b"#!/bin/sh\n")
        .entry_mode("implicit/deep/f", EntryType::Regular, "", 0o664, b"f")
        .s2();
    fs::write(&archive, bytes).unwrap();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    for (umask, want) in [
        (
            "022",
            [0o755, 0o700, 0o755, 0o700, 0o644, 0o755, 0o755, 0o644],
        ),
        (
            "027",
            [0o755, 0o700, 0o750, 0o700, 0o640, 0o750, 0o750, 0o640],
        ),
    ] {
        let dest = tmp.path().join(format!("dest-{umask}"));
        fs::create_dir_all(dest.join("existing")).unwrap();
        fs::set_permissions(dest.join("existing"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dest.join("mine")).unwrap();
        fs::set_permissions(dest.join("mine"), fs::Permissions::from_mode(0o700)).unwrap();
        let out = extract_with_umask(umask, &archive, &dest);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<u32> = [
            "existing",
            "mine",
            "fresh",
            "private",
            "fresh/rw.txt",
            "tool",
            "implicit/deep",
            "implicit/deep/f",
        ]
        .iter()
        .map(|p| mode(&dest.join(p)))
        .collect();
        let show = |v: &[u32]| v.iter().map(|m| format!("{m:o}")).collect::<Vec<_>>();
        assert_eq!(show(&got), show(&want), "umask {umask}");
    }
}

/// Three 10-byte files under `d/`, one directory entry and one deletion: 5 entries, plus `d`
/// created for them (the directory entry comes last).
fn five_entries() -> Vec<u8> {
    RawTar::default()
        .global(&[("BUILDR.deleted.0", "old")])
        .file("d/one", "0123456789")
        .file("d/two", "0123456789")
        .file("d/three", "0123456789")
        .entry("d", EntryType::Directory, "", b"")
        .s2()
}

#[test]
fn an_archive_over_a_limit_is_refused_whole_naming_the_flag() {
    let a = Arena::new();
    fs::write(a.dest.join("old"), "old").unwrap();
    fs::create_dir(a.dest.join("d")).unwrap();
    fs::write(a.dest.join("d/one"), "before").unwrap();
    let before = describe(&a.dest);
    let bytes = five_entries();
    let within = |max_bytes, max_entries| {
        let opts = ExtractOptions {
            deletions: Deletions::All,
            ..ExtractOptions::default()
        };
        let limits = archive::Limits {
            max_bytes,
            max_entries,
        };
        archive::extract_within(&bytes[..], &a.dest, &opts, limits)
    };
    for (max_bytes, max_entries, flag) in [
        (29, 100, "--max-output-bytes"),
        (100, 4, "--max-output-entries"),
    ] {
        let err = within(max_bytes, max_entries).unwrap_err();
        assert!(matches!(err, ArchiveError::OverLimit { .. }), "{err}");
        assert!(err.to_string().contains(flag), "{err}");
        assert_eq!(describe(&a.dest), before, "nothing applied");
        a.assert_outside_untouched();
    }
    // The directories extraction would create count too.
    let deep = RawTar::default().file("x/y/z/f", "f").s2();
    let opts = ExtractOptions::default();
    let limits = archive::Limits {
        max_bytes: 100,
        max_entries: 3,
    };
    let err = archive::extract_within(&deep[..], &a.dest, &opts, limits).unwrap_err();
    assert!(err.to_string().contains("--max-output-entries"), "{err}");
    assert_eq!(describe(&a.dest), before, "nothing applied");
    // At the limits exactly, it lands.
    within(30, 5).unwrap();
    assert_eq!(fs::read(a.dest.join("d/one")).unwrap(), b"0123456789");
    assert!(!a.dest.join("old").exists());
}

#[test]
fn archive_extract_takes_the_limit_flags_with_human_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.tar.s2");
    let big = vec![7u8; 3 << 10];
    fs::write(
        &archive,
        RawTar::default()
            .entry("big", EntryType::Regular, "", &big)
            .s2(),
    )
    .unwrap();
    let dest = tmp.path().join("dest");
    let run = |flag: &str, value: &str| {
        Command::new(env!("CARGO_BIN_EXE_buildr"))
            .args(["archive", "extract", flag, value, "--to"])
            .arg(&dest)
            .arg(&archive)
            .output()
            .unwrap()
    };
    let out = run("--max-output-bytes", "2KiB");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("limit of 2048 bytes"), "{stderr}");
    assert!(stderr.contains("--max-output-bytes"), "{stderr}");
    assert!(
        !dest.exists(),
        "a destination that did not exist is not left behind"
    );
    let out = run("--max-output-entries", "0");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-output-entries"));
    let out = run("--max-output-bytes", "3KiB");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(dest.join("big")).unwrap(), big);
}

/// Extracts `bytes` into a destination `prepare` filled, expects the refusal of `entry` saying
/// `why`, and checks that nothing at all changed (what came before in the archive included).
fn refused_before_anything_lands(prepare: impl Fn(&Arena), bytes: &[u8], entry: &str, why: &str) {
    let a = Arena::new();
    prepare(&a);
    let before = describe(&a.dest);
    let err = a.refuses(bytes, entry, why);
    assert!(
        matches!(
            err,
            ArchiveError::Refused { .. } | ArchiveError::RefusedDeletion { .. }
        ),
        "{err}"
    );
    assert_eq!(describe(&a.dest), before, "the destination changed");
}

#[test]
fn refusals_that_depend_on_the_destination_are_decided_before_the_first_rename() {
    // A file where a parent directory goes.
    refused_before_anything_lands(
        |a| fs::write(a.dest.join("a"), "file").unwrap(),
        &RawTar::default().file("z_first", "z").file("a/b", "b").s2(),
        "a/b",
        "its parent `a` exists and is not a directory",
    );
    // A symlink on the way.
    refused_before_anything_lands(
        |a| symlink(&a.outside, a.dest.join("link")).unwrap(),
        &RawTar::default().file("ok", "ok").file("link/x", "x").s2(),
        "link/x",
        "its parent `link` is a symlink",
    );
    // A non-empty directory where a file goes.
    refused_before_anything_lands(
        |a| {
            fs::create_dir(a.dest.join("d")).unwrap();
            fs::write(a.dest.join("d/keep"), "keep").unwrap();
        },
        &RawTar::default().file("ok", "ok").file("d", "file").s2(),
        "d",
        "non-empty directory",
    );
    // A deletion through a symlink, after an entry.
    refused_before_anything_lands(
        |a| symlink(&a.outside, a.dest.join("out")).unwrap(),
        &RawTar::default()
            .file("ok", "ok")
            .global(&[("BUILDR.deleted.0", "out/keep")])
            .s2(),
        "out/keep",
        "symlink",
    );
    // What the archive itself put there earlier: a file, then something beneath it.
    refused_before_anything_lands(
        |_| {},
        &RawTar::default()
            .file("ok", "ok")
            .file("f", "f")
            .file("f/x", "x")
            .s2(),
        "f/x",
        "its parent `f` exists and is not a directory",
    );
    // A link the archive created, then a file through it.
    refused_before_anything_lands(
        |_| {},
        &RawTar::default()
            .file("ok", "ok")
            .entry("l", EntryType::Symlink, "sub", b"")
            .file("l/x", "x")
            .s2(),
        "l/x",
        "its parent `l` is a symlink",
    );
    // A file into a directory, then a file in place of that directory.
    refused_before_anything_lands(
        |_| {},
        &RawTar::default()
            .file("ok", "ok")
            .file("d/x", "x")
            .file("d", "file")
            .s2(),
        "d",
        "non-empty directory",
    );
}

#[test]
fn what_the_archive_does_earlier_clears_the_way() {
    let a = Arena::new();
    fs::write(a.dest.join("was-file"), "file").unwrap();
    symlink(&a.outside, a.dest.join("was-link")).unwrap();
    fs::create_dir_all(a.dest.join("full/sub")).unwrap();
    fs::write(a.dest.join("full/sub/f"), "f").unwrap();
    fs::create_dir(a.dest.join("emptied")).unwrap();
    fs::write(a.dest.join("emptied/f"), "f").unwrap();
    let bytes = RawTar::default()
        .global(&[
            ("BUILDR.deleted.0", "full"),
            ("BUILDR.deleted.1", "emptied/f"),
        ])
        // A directory entry replaces a file and a link.
        .entry("was-file", EntryType::Directory, "", b"")
        .file("was-file/x", "x")
        .entry("was-link", EntryType::Directory, "", b"")
        .file("was-link/y", "y")
        // A deleted directory is gone: a file takes its place, and another goes beneath a
        // new one there.
        .file("full", "now a file")
        .file("emptied", "now a file")
        .s2();
    extract(&bytes, &a.dest, true).unwrap();
    assert_eq!(fs::read(a.dest.join("was-file/x")).unwrap(), b"x");
    assert_eq!(fs::read(a.dest.join("was-link/y")).unwrap(), b"y");
    assert_eq!(fs::read(a.dest.join("full")).unwrap(), b"now a file");
    assert_eq!(fs::read(a.dest.join("emptied")).unwrap(), b"now a file");
    a.assert_outside_untouched();
}
