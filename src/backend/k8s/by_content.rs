//! What a run's pod gets of the inputs by content, prepared while the pod is taken or started:
//!
//! - a pod of a pool that names a seed most likely holds it: the tree is only scanned meanwhile,
//!   and once the pod is taken, the difference from its seed (made against the seed's index,
//!   [`crate::snapshot::delta`]) goes through exec with the contents it writes; the registry is
//!   not asked for anything (unless this machine has yet to read the seed's index);
//! - any other pod pulls the snapshot, pushed meanwhile (or, for a pod that turned out to hold
//!   no seed or one whose index cannot be had, pushed then).
//!
//! Whatever cannot be done by content is said in one warning line, and the inputs are then
//! copied whole.

use std::sync::Arc;

use foldhash::HashSet;

use super::InputsRegistry;
use crate::backend::by_content::{MadePacks, make_packs};
use crate::snapshot::delta::{Delta, SeedIndex, SeedIndexes};
use crate::snapshot::push::{push_scanned, scan_recorded};
use crate::snapshot::{Entry, Pushed};
use crate::task::InputFile;

/// The inputs by content, as far as they could be prepared before the pod was there.
pub enum Prepared {
    Pushed(Pushed),
    /// The tree, scanned for a pod that holds a seed.
    Scanned(Vec<Entry>),
}

/// What goes to the pod by content.
pub enum ToPod {
    /// A snapshot in the registry, for the pod to pull.
    Pushed(Pushed),
    /// The difference from the pod's seed.
    Difference(SeedDifference),
}

impl ToPod {
    /// Its phase in the run's timeline.
    pub fn phase(&self) -> String {
        match self {
            Self::Pushed(pushed) => format!(
                "push inputs: {} entries, {} of {} packs new, {}",
                pushed.entries,
                pushed.packs_pushed,
                pushed.packs,
                crate::tools::human_size(pushed.bytes_pushed)
            ),
            Self::Difference(difference) => format!(
                "diff against the pod's seed: {} entries written, {} removed, {}",
                difference.written,
                difference.removed,
                crate::tools::human_size(difference.bytes)
            ),
        }
    }
}

/// The difference from a pod's seed, ready to travel.
pub struct SeedDifference {
    /// The [`Delta`]'s bytes.
    pub delta: Vec<u8>,
    pub packs: MadePacks,
    /// The digest of the tree it makes, as the cache's key digests it.
    pub tree: [u8; 32],
    /// For the timeline: entries written and removed, and the packs' bytes.
    pub written: usize,
    pub removed: usize,
    pub bytes: u64,
}

/// Prepares the inputs for the run's pod (pushed), or for a pod of a pool that names a seed:
/// scanned only, unless `own_pod` says that the pool had no pod ready and the run starts one
/// of its own, which pulls (pushed then, while it starts). None, with one warning line, when
/// they cannot go by content.
pub async fn prepare(
    registry: &InputsRegistry,
    inputs: &Arc<[InputFile]>,
    own_pod: Option<OwnPod>,
) -> Option<Prepared> {
    let scanned = scan(registry, inputs).await?;
    if let Some(mut own_pod) = own_pod {
        let started = own_pod.wait_for(Option::is_some).await;
        if !matches!(started.as_deref(), Ok(Some(true))) {
            return Some(Prepared::Scanned(scanned));
        }
    }
    push_or_warn(registry, inputs, scanned)
        .await
        .map(Prepared::Pushed)
}

/// Whether the run's pod is one of its own, being started: known once the take is settled
/// (none until then; the sender dropped without saying: not one of its own).
pub type OwnPod = tokio::sync::watch::Receiver<Option<bool>>;

/// The index of the seed `seed` a taken pod holds, for the difference (read while the tree is
/// still being scanned); none when it cannot be had (said with -v: the pod can still pull the
/// pushed snapshot onto its seed).
pub async fn seed_index(registry: &InputsRegistry, seed: &str) -> Option<SeedIndex> {
    let seeds = SeedIndexes::in_cache(&registry.records.as_ref()?.cache_dir);
    let began = std::time::Instant::now();
    match seeds.get(seed, registry.preloaded_seed.as_deref()).await {
        Ok(seed_index) => {
            tracing::debug!("the seed's index read in {:?}", began.elapsed());
            Some(seed_index)
        }
        Err(e) => {
            tracing::info!("cannot read the index of the pod's seed {seed}: {e}");
            None
        }
    }
}

/// What goes to the pod taken: the difference from its seed when the tree was scanned for one
/// and `seed_index` is the index of the seed it holds; else the snapshot, pushed.
pub async fn for_pod(
    registry: &InputsRegistry,
    inputs: &Arc<[InputFile]>,
    prepared: Prepared,
    seed_index: Option<SeedIndex>,
) -> Option<ToPod> {
    let entries = match prepared {
        Prepared::Pushed(pushed) => return Some(ToPod::Pushed(pushed)),
        Prepared::Scanned(entries) => entries,
    };
    let Some(seed_index) = seed_index else {
        return push_or_warn(registry, inputs, entries)
            .await
            .map(ToPod::Pushed);
    };
    let inputs = inputs.clone();
    let made = tokio::task::spawn_blocking(move || {
        difference(seed_index.index, seed_index.digest, entries, &inputs)
    });
    match made.await.expect("making a difference does not panic") {
        Ok(difference) => Some(ToPod::Difference(difference)),
        Err(e) => {
            copied_whole(registry, e);
            None
        }
    }
}

/// The difference from the seed (`seed`, whose index's bytes have the digest `seed_digest`) to
/// the tree `entries` of `inputs`, with the packs of the contents it writes.
fn difference(
    seed: crate::snapshot::Index,
    seed_digest: [u8; 32],
    entries: Vec<Entry>,
    inputs: &[InputFile],
) -> Result<SeedDifference, crate::backend::by_content::PackingError> {
    let began = std::time::Instant::now();
    let mut delta = Delta::between(&seed, seed_digest, entries);
    drop(seed);
    tracing::debug!("the difference found in {:?}", began.elapsed());
    let written: HashSet<&str> = delta.write.iter().map(|e| e.path.as_str()).collect();
    // The inputs of the written entries, in the same order (both are in the tree's).
    let sources: Vec<InputFile> = inputs
        .iter()
        .filter(|input| {
            input
                .dest
                .to_str()
                .is_some_and(|dest| written.contains(dest))
        })
        .cloned()
        .collect();
    drop(written);
    let (packs, made) = make_packs(&delta.write, &sources, Vec::new())?;
    delta.packs = packs;
    Ok(SeedDifference {
        delta: postcard::to_stdvec(&delta).expect("a difference always serializes"),
        tree: delta.tree,
        written: delta.write.len(),
        removed: delta.remove.len(),
        bytes: made.new.iter().map(|(_, size)| size).sum(),
        packs: made,
    })
}

/// The tree of `inputs`, scanned on a thread of its own (the run's one async thread takes the
/// pod meanwhile); none, with one warning line, when it cannot be.
async fn scan(registry: &InputsRegistry, inputs: &Arc<[InputFile]>) -> Option<Vec<Entry>> {
    let (inputs, records) = (inputs.clone(), registry.records.clone());
    let scanned = tokio::task::spawn_blocking(move || {
        let began = std::time::Instant::now();
        let scanned = scan_recorded(&inputs, records.as_ref());
        tracing::debug!("the tree scanned in {:?}", began.elapsed());
        scanned
    });
    match scanned.await.expect("a scan does not panic") {
        Ok(entries) => Some(entries),
        Err(e) => {
            copied_whole(registry, e);
            None
        }
    }
}

/// The inputs pushed to `registry` by content; none, with one warning line, when they cannot
/// be (the inputs are then copied whole).
async fn push_or_warn(
    registry: &InputsRegistry,
    inputs: &[InputFile],
    entries: Vec<Entry>,
) -> Option<Pushed> {
    let location = &registry.location;
    let pushed = push_scanned(location, None, (inputs, entries), registry.records.as_ref());
    match pushed.await {
        Ok(pushed) => {
            tracing::info!(
                "pushed {} of {} packs ({}) to {location} in {:.2}s",
                pushed.packs_pushed,
                pushed.packs,
                crate::tools::human_size(pushed.bytes_pushed),
                pushed.seconds
            );
            Some(pushed)
        }
        Err(e) => {
            copied_whole(registry, e);
            None
        }
    }
}

/// The one warning line of inputs that go whole after all, and why.
fn copied_whole(registry: &InputsRegistry, why: impl Into<anyhow::Error>) {
    eprintln!(
        "buildr: warning: cannot send the inputs by content to {}: {:#}; copying them whole",
        registry.location,
        why.into()
    );
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::backend::by_content::write_stream;
    use crate::cache::stat_cache::StatCache;
    use crate::snapshot::Index;
    use crate::snapshot::apply::tests::{fill_tree, listing};
    use crate::snapshot::delta::{DELTA_FILE, apply_sent};
    use crate::task::collect_inputs;

    /// apply's test tree, and a file that comes after `src/…` as a path and before it as
    /// text: a merge in the wrong order shows.
    fn tree(root: &Path) {
        fill_tree(root);
        fs::write(root.join("src-y.txt"), "kept\n").unwrap();
    }

    fn scanned(root: &Path) -> (Arc<[InputFile]>, Vec<Entry>) {
        let inputs: Arc<[InputFile]> = collect_inputs(root, &[]).unwrap().into();
        let mut stat_cache = StatCache::load(Default::default());
        let entries = crate::snapshot::index::scan(&inputs, &mut stat_cache).unwrap();
        (inputs, entries)
    }

    /// A pod's workspace holding the seed of `root`'s tree as the pool's controller leaves it,
    /// with the seed's index beside it: the pod's directory, the workspace, the index file.
    fn seeded_pod(root: &Path) -> (tempfile::TempDir, PathBuf, PathBuf, Index) {
        let pod = tempfile::tempdir().unwrap();
        let (inputs, entries) = scanned(root);
        let (packs, made) = make_packs(&entries, &inputs, Vec::new()).unwrap();
        let seed = Index { entries, packs };
        let sent = pod.path().join("sent");
        let stream = write_stream(Vec::new(), ("index", &seed.to_bytes()), &made).unwrap();
        tar::Archive::new(&stream[..]).unpack(&sent).unwrap();
        let workspace = pod.path().join("workspace");
        fs::create_dir(&workspace).unwrap();
        crate::snapshot::host::apply_sent(&sent, None, &workspace).unwrap();
        let seed_index = pod.path().join("seed-index");
        fs::write(&seed_index, seed.to_bytes()).unwrap();
        (pod, workspace, seed_index, seed)
    }

    /// The difference from `seed` to `root`'s tree, as the pod unpacks it from the stream.
    fn sent_to_pod(root: &Path, seed: Index) -> (SeedDifference, tempfile::TempDir) {
        let (inputs, entries) = scanned(root);
        let seed_digest: [u8; 32] = Sha256::digest(seed.to_bytes()).into();
        let sent = difference(seed, seed_digest, entries, &inputs).unwrap();
        let stream = write_stream(Vec::new(), (DELTA_FILE, &sent.delta), &sent.packs).unwrap();
        let unpacked = tempfile::tempdir().unwrap();
        tar::Archive::new(&stream[..])
            .unpack(unpacked.path())
            .unwrap();
        (sent, unpacked)
    }

    #[test]
    fn a_seeded_workspace_brought_to_the_tree_by_the_difference_sent_equals_a_fresh_copy() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        tree(root);
        let (_pod, workspace, seed_index, seed) = seeded_pod(root);

        // Then: an edit in a read-only directory, a removal, a mode, a link retargeted, a file
        // become a directory, and new paths.
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("locked/inside"), "edited\n").unwrap();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::remove_dir_all(root.join("src/deep")).unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink("run.sh", root.join("link")).unwrap();
        fs::remove_file(root.join("src/a.rs")).unwrap();
        fs::create_dir(root.join("src/a.rs")).unwrap();
        fs::write(root.join("src/a.rs/now"), "a directory\n").unwrap();
        fs::write(root.join("src-x.txt"), "new\n").unwrap();
        fs::write(root.join("a.txt"), "fn a() {}\n").unwrap();

        let (sent, unpacked) = sent_to_pod(root, seed);
        assert_eq!((sent.written, sent.removed), (6, 4));
        let applied = apply_sent(unpacked.path(), &seed_index, &workspace).unwrap();

        assert_eq!(listing(&workspace), listing(root));
        assert_eq!(applied.files, 4, "only what changed is written");
        let (_, entries) = scanned(root);
        let keyed = Index {
            entries,
            packs: Vec::new(),
        };
        assert_eq!(sent.tree, keyed.tree_digest());
    }

    #[test]
    fn a_difference_from_another_seed_applies_nothing_and_leaves_the_workspace_empty() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        tree(root);
        let (_pod, workspace, seed_index, seed) = seeded_pod(root);
        // The client diffs against a seed with one more file than the pod's.
        fs::write(root.join("more.txt"), "more\n").unwrap();
        let (_, entries) = scanned(root);
        let other = Index {
            entries,
            packs: seed.packs.clone(),
        };
        fs::write(root.join("src/a.rs"), "fn a() { changed }\n").unwrap();
        let (_, unpacked) = sent_to_pod(root, other);

        let error = apply_sent(unpacked.path(), &seed_index, &workspace).unwrap_err();
        assert!(error.is_other_seed(), "{error}");
        assert!(error.to_string().contains("another digest"), "{error}");
        assert_eq!(fs::read_dir(&workspace).unwrap().count(), 0);
    }

    #[test]
    fn a_difference_that_does_not_make_the_tree_sent_applies_nothing() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        tree(root);
        let (_pod, workspace, seed_index, seed) = seeded_pod(root);
        fs::write(root.join("src/a.rs"), "fn a() { changed }\n").unwrap();
        let (_, unpacked) = sent_to_pod(root, seed);
        // The difference says the tree it makes is another one.
        let file = unpacked.path().join(DELTA_FILE);
        let mut delta: Delta = postcard::from_bytes(&fs::read(&file).unwrap()).unwrap();
        delta.modes.push(("run.sh".to_string(), 0o700));
        fs::write(&file, postcard::to_stdvec(&delta).unwrap()).unwrap();

        let error = apply_sent(unpacked.path(), &seed_index, &workspace).unwrap_err();
        assert!(error.is_other_seed(), "{error}");
        assert!(
            error.to_string().contains("do not make the tree"),
            "{error}"
        );
        assert_eq!(fs::read_dir(&workspace).unwrap().count(), 0);
    }
}
