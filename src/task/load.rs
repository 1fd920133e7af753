//! The loader: every task file of a repository, read into one [`TaskSet`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Task, TaskError, closest, parse_file};

/// The directory, under the repository root, that holds the task files.
pub const TASK_DIR: &str = ".buildr";

/// All the tasks of a repository, by name.
#[derive(Debug, Clone, Default)]
pub struct TaskSet {
    dir: PathBuf,
    tasks: BTreeMap<String, Task>,
}

impl TaskSet {
    /// Loads every `*.hcl` file directly under `<repo>/.buildr/`, in order of file name.
    /// No `.buildr` directory gives an empty set.
    pub fn load(repo: &Path) -> Result<TaskSet, TaskError> {
        let dir = repo.join(TASK_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TaskSet {
                    dir,
                    tasks: BTreeMap::new(),
                });
            }
            Err(source) => return Err(TaskError::Read { path: dir, source }),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| TaskError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            // Follows symlinks: a linked task file counts, a directory named `x.hcl` does not.
            if path.extension().is_some_and(|ext| ext == "hcl") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();

        let mut set = TaskSet {
            dir,
            tasks: BTreeMap::new(),
        };
        for path in files {
            let source = std::fs::read_to_string(&path).map_err(|source| TaskError::Read {
                path: path.clone(),
                source,
            })?;
            for task in parse_file(&path, &source)? {
                set.insert(task)?;
            }
        }
        Ok(set)
    }

    fn insert(&mut self, task: Task) -> Result<(), TaskError> {
        if let Some(first) = self.tasks.get(&task.name) {
            return Err(TaskError::Duplicate {
                name: task.name,
                at: task.defined_at,
                first: first.defined_at.clone(),
            });
        }
        self.tasks.insert(task.name.clone(), task);
        Ok(())
    }

    /// The task called `name`; if there is none, the error lists the names there are and
    /// suggests the closest one.
    pub fn get(&self, name: &str) -> Result<&Task, TaskError> {
        self.tasks.get(name).ok_or_else(|| TaskError::Missing {
            name: name.to_string(),
            available: self.tasks.keys().cloned().collect(),
            suggestion: closest(name, self.tasks.keys().map(String::as_str)).map(str::to_string),
            dir: self.dir.clone(),
        })
    }

    /// The tasks, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// The task names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The task directory (`<repo>/.buildr`), whether or not it exists.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
