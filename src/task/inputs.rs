//! Which files of the repository go to the workspace, and where.

use std::fs::FileType;
use std::path::{Component, Path, PathBuf};

use ignore::WalkBuilder;

use super::{InputMapping, TaskError};

/// The per-directory ignore file, in `.gitignore` syntax, for what should not be sent to a
/// workspace but stays in git.
pub const BUILDR_IGNORE: &str = ".buildrignore";

/// One entry to send to the workspace: a file, a directory (so that empty ones exist there too)
/// or a symbolic link (sent as a link, never followed). Tell which with
/// `std::fs::symlink_metadata(&source)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputFile {
    /// Absolute path on disk.
    pub source: PathBuf,
    /// Relative path in the workspace; never empty, never absolute, no `..`.
    pub dest: PathBuf,
}

/// Gathers the entries to send to the workspace, sorted by `dest` (so a directory comes before
/// what it holds).
///
/// With no mappings, the whole repository. With mappings, each `from` (a file or a directory,
/// relative to `repo`; `.` is the whole repository) is sent to `to` (relative to the workspace;
/// a file mapped to `.` lands at the root under its own name). The parent directories of a
/// `to` are not listed: whoever writes the workspace creates them.
///
/// Either way `.git` is left out (at any depth), and so is whatever `.gitignore` and
/// `.buildrignore` files exclude: at any depth, whether or not `repo` is a git repository, and
/// only those inside `repo` (nothing from its parents, no global git excludes, no
/// `.git/info/exclude`, no `.ignore`), so the result is the same on every machine. Hidden
/// files are included.
pub fn collect_inputs(repo: &Path, mappings: &[InputMapping]) -> Result<Vec<InputFile>, TaskError> {
    let root = std::path::absolute(repo).map_err(|source| TaskError::Read {
        path: repo.to_path_buf(),
        source,
    })?;
    let whole = [InputMapping {
        from: PathBuf::from("."),
        to: PathBuf::from("."),
    }];
    let mappings = if mappings.is_empty() {
        &whole[..]
    } else {
        mappings
    };

    let mut entries: Vec<(InputFile, bool)> = Vec::new();
    for mapping in mappings {
        let bad = |reason: String| TaskError::BadInputMapping {
            from: mapping.from.clone(),
            to: mapping.to.clone(),
            reason,
        };
        let from = relative_or_empty(clean_relative(&mapping.from).map_err(bad)?);
        let to = relative_or_empty(clean_relative(&mapping.to).map_err(bad)?);
        let from_abs = root.join(&from);
        if let Err(source) = std::fs::symlink_metadata(&from_abs) {
            return Err(if source.kind() == std::io::ErrorKind::NotFound {
                TaskError::MissingInput {
                    from: mapping.from.clone(),
                    path: from_abs,
                }
            } else {
                TaskError::Read {
                    path: from_abs,
                    source,
                }
            });
        }
        let found = walk(&root, &from, &to, &mut entries)?;
        if !found {
            return Err(TaskError::IgnoredInput {
                from: mapping.from.clone(),
            });
        }
    }

    entries.sort_by(|(a, _), (b, _)| (&a.dest, &a.source).cmp(&(&b.dest, &b.source)));
    let mut result: Vec<InputFile> = Vec::with_capacity(entries.len());
    let mut last_is_dir = false;
    for (file, is_dir) in entries {
        if let Some(last) = result.last()
            && last.dest == file.dest
        {
            // Overlapping mappings: the same entry twice, or two directories merged, is fine.
            if last.source == file.source || (last_is_dir && is_dir) {
                continue;
            }
            return Err(TaskError::InputConflict {
                dest: file.dest,
                first: last.source.clone(),
                second: file.source,
            });
        }
        last_is_dir = is_dir;
        result.push(file);
    }
    Ok(result)
}

/// Walks `root`, descending only towards and into `from`, and records what lies under `from`
/// at its place under `to`. Returns whether `from` itself was reached (it is not when ignored).
fn walk(
    root: &Path,
    from: &Path,
    to: &Path,
    entries: &mut Vec<(InputFile, bool)>,
) -> Result<bool, TaskError> {
    let filter_root = root.to_path_buf();
    let filter_from = from.to_path_buf();
    let walker = WalkBuilder::new(root)
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .git_ignore(true)
        .require_git(false)
        .add_custom_ignore_filename(BUILDR_IGNORE)
        .follow_links(false)
        .filter_entry(move |entry| {
            if entry.file_name() == ".git" {
                return false;
            }
            let rel = entry
                .path()
                .strip_prefix(&filter_root)
                .unwrap_or(entry.path());
            // On the way to `from`, or inside it.
            filter_from.starts_with(rel) || rel.starts_with(&filter_from)
        })
        .build();

    let mut found = false;
    for entry in walker {
        let entry = entry.map_err(|source| TaskError::Walk {
            root: root.to_path_buf(),
            source,
        })?;
        // The walker attaches the errors of a directory's ignore files to its entry.
        if let Some(error) = entry.error() {
            return Err(ignore_error(error, entry.path()));
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(suffix) = rel.strip_prefix(from).ok() else {
            continue; // a directory on the way to `from`
        };
        found = true;
        let is_dir = entry.file_type().is_some_and(|t: FileType| t.is_dir());
        let dest = if suffix.as_os_str().is_empty() && to.as_os_str().is_empty() && !is_dir {
            // A single file mapped to the workspace root keeps its name.
            PathBuf::from(rel.file_name().unwrap_or_default())
        } else if suffix.as_os_str().is_empty() {
            to.to_path_buf() // `join("")` would add a trailing slash
        } else {
            to.join(suffix)
        };
        if dest.as_os_str().is_empty() {
            continue; // the workspace root itself
        }
        entries.push((
            InputFile {
                source: entry.path().to_path_buf(),
                dest,
            },
            is_dir,
        ));
    }
    Ok(found)
}

/// The first bad line of an ignore file, as file:line and what is wrong with it (the walker's
/// error nests the file, the line number and the glob error, or lists several).
fn ignore_error(error: &ignore::Error, dir: &Path) -> TaskError {
    let (mut file, mut line) = (dir.to_path_buf(), 0);
    let mut cur = error;
    loop {
        match cur {
            ignore::Error::Partial(errors) if !errors.is_empty() => cur = &errors[0],
            ignore::Error::WithPath { path, err } => {
                file = path.clone();
                cur = err;
            }
            ignore::Error::WithLineNumber { line: n, err } => {
                line = *n;
                cur = err;
            }
            ignore::Error::WithDepth { err, .. } => cur = err,
            other => {
                return TaskError::BadIgnorePattern {
                    file,
                    line,
                    message: other.to_string(),
                };
            }
        }
    }
}

/// `.` as the empty path, which `Path::join` and `starts_with` treat as "here".
fn relative_or_empty(path: PathBuf) -> PathBuf {
    if path == Path::new(".") {
        PathBuf::new()
    } else {
        path
    }
}

/// `path` without `.` components, or `.` for "here"; refuses absolute paths and `..`.
pub(crate) fn clean_relative(path: &Path) -> Result<PathBuf, String> {
    if path.as_os_str().is_empty() {
        return Err("expected a relative path, found an empty string".to_string());
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("`..` is not allowed in paths, found {path:?}"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "expected a relative path, found the absolute path {path:?}"
                ));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        clean.push(".");
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_relative_normalizes_and_refuses_escapes() {
        assert_eq!(
            clean_relative(Path::new("./a//b/")).unwrap(),
            Path::new("a/b")
        );
        assert_eq!(clean_relative(Path::new("./")).unwrap(), Path::new("."));
        assert!(clean_relative(Path::new("a/../b")).is_err());
        assert!(clean_relative(Path::new("/etc")).is_err());
        assert!(clean_relative(Path::new("")).is_err());
    }
}
