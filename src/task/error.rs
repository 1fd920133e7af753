//! Why tasks could not be loaded, found or their inputs gathered.

use std::path::{Path, PathBuf};

use super::Location;

/// Why tasks could not be loaded, found or their inputs gathered.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A task file or directory could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid HCL.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// The file is valid HCL but not a valid task file; `message` says what was expected.
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    /// The same task name is defined twice.
    #[error("{at}: task \"{name}\" is defined twice; it is also defined at {first}")]
    Duplicate {
        name: String,
        at: Location,
        first: Location,
    },
    /// No task has this name.
    #[error("{}", missing_message(name, available, suggestion.as_deref(), dir))]
    Missing {
        name: String,
        /// The names of all tasks, sorted.
        available: Vec<String>,
        /// The closest name, if any is close.
        suggestion: Option<String>,
        /// The task directory searched.
        dir: PathBuf,
    },
    /// An input mapping's `from` is not in the repository.
    #[error("input `{}` does not exist: {} not found", from.display(), path.display())]
    MissingInput { from: PathBuf, path: PathBuf },
    /// An input mapping's `from` is excluded by `.gitignore` or `.buildrignore`.
    #[error(
        "input `{}` is excluded by a .gitignore or .buildrignore file; un-ignore it or map another path",
        from.display()
    )]
    IgnoredInput { from: PathBuf },
    /// An input mapping has an absolute path or `..` in it.
    #[error("input mapping `{}` -> `{}`: {reason}", from.display(), to.display())]
    BadInputMapping {
        from: PathBuf,
        to: PathBuf,
        reason: String,
    },
    /// Two inputs would land on the same workspace path.
    #[error(
        "inputs {} and {} both map to `{}` in the workspace",
        first.display(), second.display(), dest.display()
    )]
    InputConflict {
        dest: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
    /// A `.gitignore` or `.buildrignore` line is not a valid pattern. It is an error, not a
    /// warning: a pattern dropped silently would send what it was meant to keep back.
    #[error("{}:{line}: {message}", file.display())]
    BadIgnorePattern {
        file: PathBuf,
        line: u64,
        message: String,
    },
    /// Walking the repository failed.
    #[error("failed to walk the inputs under {}", root.display())]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
}

fn missing_message(
    name: &str,
    available: &[String],
    suggestion: Option<&str>,
    dir: &Path,
) -> String {
    let mut message = format!("no task named `{name}`");
    if let Some(suggestion) = suggestion {
        message.push_str(&format!("; did you mean `{suggestion}`?"));
    }
    if available.is_empty() {
        message.push_str(&format!(
            "; no tasks are defined (task files are {}/*.hcl)",
            dir.display()
        ));
    } else {
        let sep = if suggestion.is_some() { " " } else { "; " };
        message.push_str(&format!(
            "{sep}{} tasks: {}",
            if suggestion.is_some() {
                "Available"
            } else {
                "available"
            },
            available.join(", ")
        ));
    }
    message
}
