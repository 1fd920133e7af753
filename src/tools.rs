//! Tools: programs a task brings along because its image may lack them (`tools = ["protoc",
//! "./bin/mylint"]` in a task file, `--tool` on the command line). They travel the way the
//! buildr binary does, into a directory that comes first in the task's PATH.
//!
//! A tool that cannot run where the task runs is refused before the task starts, never left to
//! fail inside it as "not found":
//! - on this machine, by [`resolve`]: missing, not executable, not a program, or an ELF for
//!   another architecture;
//! - where the task runs, by the shell script of a [`Check`], which looks for what each tool
//!   needs: a dynamically linked ELF's loader and libraries, a script's interpreter.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::backend::executor_command::quote;

/// A program sent along with a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// Its file name in the tools directory: the last component of what the user wrote.
    pub name: String,
    /// The file on this machine (links followed when it is read).
    pub source: PathBuf,
    pub size: u64,
    pub kind: Kind,
    /// What must be there for it to run, checked by [`Check`].
    pub needs: Vec<Need>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A statically linked ELF: runs wherever its architecture does.
    Static,
    /// A dynamically linked ELF.
    Dynamic,
    /// A script (`#!`).
    Script,
}

/// One thing a tool needs where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A dynamic loader, by path (`/lib64/ld-linux-x86-64.so.2`).
    Loader(String),
    /// A shared library, by file name (`libonig.so.5`), looked for in the library directories.
    Library(String),
    /// A script's interpreter, by path (`#!/bin/bash`).
    Interpreter(String),
    /// A script's interpreter found through PATH (`#!/usr/bin/env python3`).
    Command(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("tool `{0}` is not in PATH")]
    NotInPath(String),
    #[error("tool {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("tool {} cannot be read: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("tool {} is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("tool {} is not executable (mode {mode:o}); `chmod +x` it", path.display())]
    NotExecutable { path: PathBuf, mode: u32 },
    #[error("tool {} is neither an ELF executable nor a script starting with `#!`", .0.display())]
    NotAProgram(PathBuf),
    #[error("tool {} is not a usable ELF executable ({reason})", path.display())]
    BadElf { path: PathBuf, reason: String },
    #[error("tool {} is built for {arch}, but the task runs on {target}", path.display())]
    OtherArchitecture {
        path: PathBuf,
        arch: String,
        target: String,
    },
    #[error("tools {} and {} are both named `{name}`; each name can be sent once", first.display(), second.display())]
    SameName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("tool `{tool}` cannot run {place}: {}", unmet.join("; "))]
    Unmet {
        tool: String,
        place: String,
        unmet: Vec<String>,
    },
}

/// Finds and inspects the tools named by `specs`: a bare name in this machine's PATH, a path
/// relative to `repo` (or absolute). Each must be a program that can run on `arch`
/// (`kubernetes.io/arch`).
pub fn resolve(specs: &[String], repo: &Path, arch: &str) -> Result<Vec<Tool>, ToolError> {
    let mut tools: Vec<Tool> = Vec::with_capacity(specs.len());
    for spec in specs {
        let tool = inspect(&locate(spec, repo)?, spec, arch)?;
        if let Some(first) = tools.iter().find(|t| t.name == tool.name) {
            return Err(ToolError::SameName {
                name: tool.name,
                first: first.source.clone(),
                second: tool.source,
            });
        }
        tools.push(tool);
    }
    Ok(tools)
}

/// Where `spec` is on this machine. A bare name is searched like a shell does: the first
/// executable file of that name in PATH (a non-executable one is reported if nothing better is
/// found).
fn locate(spec: &str, repo: &Path) -> Result<PathBuf, ToolError> {
    if spec.contains('/') {
        let path = repo.join(spec);
        // Absolute and without `./`, for the messages and `-v`.
        return Ok(std::path::absolute(&path).unwrap_or(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut candidates = std::env::split_paths(&path)
        .map(|dir| dir.join(spec))
        .filter(|candidate| candidate.is_file());
    let first = candidates
        .next()
        .ok_or_else(|| ToolError::NotInPath(spec.to_string()))?;
    Ok(std::iter::once(first.clone())
        .chain(candidates)
        .find(|candidate| is_executable(candidate))
        .unwrap_or(first))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

fn inspect(path: &Path, spec: &str, arch: &str) -> Result<Tool, ToolError> {
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ToolError::Missing(path.to_path_buf()),
        _ => read_error(path, e),
    })?;
    if !metadata.is_file() {
        return Err(ToolError::NotAFile(path.to_path_buf()));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(ToolError::NotExecutable {
            path: path.to_path_buf(),
            mode,
        });
    }
    let data = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let (kind, needs) = if let Some(script) = data.strip_prefix(b"#!") {
        (Kind::Script, script_needs(script))
    } else if crate::elf::is_elf(&data) {
        let elf = crate::elf::needs(&data).map_err(|reason| ToolError::BadElf {
            path: path.to_path_buf(),
            reason,
        })?;
        if elf.arch != arch {
            return Err(ToolError::OtherArchitecture {
                path: path.to_path_buf(),
                arch: elf.arch,
                target: arch.to_string(),
            });
        }
        match elf.interpreter {
            None => (Kind::Static, Vec::new()),
            Some(loader) => (
                Kind::Dynamic,
                std::iter::once(Need::Loader(loader))
                    .chain(elf.libraries.into_iter().map(Need::Library))
                    .collect(),
            ),
        }
    } else {
        return Err(ToolError::NotAProgram(path.to_path_buf()));
    };
    Ok(Tool {
        name: name_of(spec).to_string(),
        source: path.to_path_buf(),
        size: data.len() as u64,
        kind,
        needs,
    })
}

/// The name a tool is sent under: the last component of what the user wrote (`jq`,
/// `./bin/mylint` -> `mylint`).
pub fn name_of(spec: &str) -> &str {
    spec.rsplit('/').next().unwrap_or(spec)
}

fn read_error(path: &Path, error: std::io::Error) -> ToolError {
    ToolError::Read {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// What the `#!` line (after the `#!`) asks for: its interpreter and, for `/usr/bin/env NAME`,
/// the program env looks up.
fn script_needs(script: &[u8]) -> Vec<Need> {
    let line = script.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(interpreter) = words.next() else {
        return Vec::new();
    };
    let mut needs = vec![Need::Interpreter(interpreter.to_string())];
    if interpreter.rsplit('/').next() == Some("env") {
        // `env -S python3 -u`, `env PYTHONPATH=x python3`: the first word that is neither an
        // option nor an assignment.
        if let Some(program) = words.find(|w| !w.starts_with('-') && !w.contains('=')) {
            needs.push(Need::Command(program.to_string()));
        }
    }
    needs
}

impl fmt::Display for Tool {
    /// `jq (/usr/bin/jq, 1.2 MB, dynamically linked)`, for `buildr run -v`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Static => "statically linked",
            Kind::Dynamic => "dynamically linked",
            Kind::Script => "a script",
        };
        write!(
            f,
            "{} ({}, {}, {kind})",
            self.name,
            self.source.display(),
            human_size(self.size)
        )
    }
}

/// `512 B`, `2.5 kB`, `16.4 MB`, `5.4 GB`.
pub(crate) fn human_size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

/// A shell script that looks, where the task runs, for what the tools need, and reads its
/// answer. POSIX sh only: it runs in whatever image the task names.
#[derive(Debug)]
pub struct Check {
    script: String,
    /// The need each line of the script checks, with its tool; the script prints the index of
    /// each unmet one.
    needs: Vec<(String, Need)>,
}

impl Check {
    /// The check of `tools` for machines of `arch` (which library directories to search).
    pub fn new(tools: &[Tool], arch: &str) -> Self {
        let mut needs = Vec::new();
        let mut script = format!(
            "buildr_lib() {{ for d in {} $(cat /etc/ld.so.conf.d/*.conf 2>/dev/null); do \
             [ -e \"$d/$1\" ] && return 0; done; return 1; }}\n",
            library_dirs(arch).join(" ")
        );
        for tool in tools {
            for need in &tool.needs {
                let index = needs.len();
                let test = match need {
                    Need::Loader(path) => format!("[ -e {} ]", quote(path)),
                    Need::Library(name) => format!("buildr_lib {}", quote(name)),
                    Need::Interpreter(path) => format!("[ -x {} ]", quote(path)),
                    // Another tool may be the interpreter: it will be in PATH, first.
                    Need::Command(name) if tools.iter().any(|t| &t.name == name) => continue,
                    Need::Command(name) => format!("command -v {} >/dev/null", quote(name)),
                };
                script.push_str(&format!("{test} || echo {index}\n"));
                needs.push((tool.name.clone(), need.clone()));
            }
        }
        Self { script, needs }
    }

    /// Whether there is anything to check.
    pub fn is_empty(&self) -> bool {
        self.needs.is_empty()
    }

    /// The script; it prints one line per unmet need and exits 0.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// Reads the script's output: the first tool with unmet needs, as an error naming all of
    /// them and `place` ("in the image `busybox`", "on this machine").
    pub fn verdict(&self, output: &str, place: &str) -> Result<(), ToolError> {
        let unmet: Vec<&(String, Need)> = output
            .split_whitespace()
            .filter_map(|word| self.needs.get(word.parse::<usize>().ok()?))
            .collect();
        let Some((tool, _)) = unmet.first() else {
            return Ok(());
        };
        let mut explained: Vec<String> = unmet
            .iter()
            .filter(|(t, _)| t == tool)
            .map(|(_, need)| explain(need))
            .collect();
        // Without its loader nothing else about a dynamic ELF matters.
        if let Some(loader) = unmet
            .iter()
            .find(|(t, need)| t == tool && matches!(need, Need::Loader(_)))
        {
            explained = vec![explain(&loader.1)];
        }
        Err(ToolError::Unmet {
            tool: tool.clone(),
            place: place.to_string(),
            unmet: explained,
        })
    }
}

fn explain(need: &Need) -> String {
    match need {
        Need::Loader(path) => format!(
            "it is dynamically linked and its loader {path} is not there (a statically linked \
             build runs anywhere)"
        ),
        Need::Library(name) => {
            format!("it is dynamically linked and needs {name}, which no library directory has")
        }
        Need::Interpreter(path) => format!("it is a script for {path}, which is not there"),
        Need::Command(name) => {
            format!("it is a script run by `{name}` through env, which is not in PATH")
        }
    }
}

/// Where loaders look for libraries without a cache: the FHS directories and Debian's
/// multiarch ones for `arch`; `/etc/ld.so.conf.d` adds the rest at check time.
fn library_dirs(arch: &str) -> Vec<String> {
    let mut dirs: Vec<String> = ["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib"]
        .map(String::from)
        .to_vec();
    let triple = match arch {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "ppc64le" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "386" => "i386-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        _ => return dirs,
    };
    dirs.push(format!("/lib/{triple}"));
    dirs.push(format!("/usr/lib/{triple}"));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::arch::host_arch;

    fn write_tool(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Runs the check with this machine's sh, as the local backend does.
    fn check_here(tools: &[Tool]) -> Result<(), ToolError> {
        let check = Check::new(tools, host_arch());
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(check.script())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        check.verdict(&String::from_utf8_lossy(&output.stdout), "on this machine")
    }

    #[test]
    fn a_script_in_the_repository_needs_its_interpreter() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir(repo.path().join("bin")).unwrap();
        write_tool(
            &repo.path().join("bin"),
            "lint",
            b"#!/usr/bin/env -S sh -e\necho ok\n",
            0o755,
        );
        let tools = resolve(&["./bin/lint".to_string()], repo.path(), host_arch()).unwrap();
        assert_eq!(tools[0].name, "lint");
        assert_eq!(tools[0].kind, Kind::Script);
        assert_eq!(
            tools[0].needs,
            [
                Need::Interpreter("/usr/bin/env".to_string()),
                Need::Command("sh".to_string())
            ]
        );
        check_here(&tools).unwrap();
    }

    #[test]
    fn a_bare_name_is_found_in_path_and_its_loader_and_libraries_are_checked() {
        let tools = resolve(&["sh".to_string()], Path::new("/nonexistent"), host_arch()).unwrap();
        assert_eq!(tools[0].name, "sh");
        assert!(tools[0].size > 0);
        check_here(&tools).unwrap();
    }

    #[test]
    fn what_cannot_run_here_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        write_tool(repo, "plain", b"#!/bin/sh\n", 0o644);
        write_tool(repo, "text", b"just text\n", 0o755);
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let arm = crate::elf::relabelled(me, object::elf::EM_AARCH64);
        write_tool(repo, "arm", &arm, 0o755);
        let refused = |spec: &str| {
            resolve(&[spec.to_string()], repo, host_arch())
                .unwrap_err()
                .to_string()
        };
        assert!(
            refused("./missing").ends_with("/missing does not exist"),
            "{}",
            refused("./missing")
        );
        assert_eq!(
            refused("no-such-tool-anywhere"),
            "tool `no-such-tool-anywhere` is not in PATH"
        );
        assert!(refused("./plain").contains("is not executable (mode 644)"));
        assert!(refused("./text").contains("neither an ELF executable nor a script"));
        assert!(refused("./").contains("is not a file"));
        if host_arch() != "arm64" {
            let expected = format!("is built for arm64, but the task runs on {}", host_arch());
            assert!(refused("./arm").contains(&expected), "{}", refused("./arm"));
        }
    }

    #[test]
    fn two_tools_of_one_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_tool(dir.path(), "sh", b"#!/bin/sh\n", 0o755);
        let error = resolve(
            &["sh".to_string(), "./sh".to_string()],
            dir.path(),
            host_arch(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("are both named `sh`"), "{error}");
    }

    #[test]
    fn unmet_needs_are_named_and_a_missing_loader_hides_the_libraries() {
        let tool = |name: &str, needs: Vec<Need>| Tool {
            name: name.to_string(),
            source: PathBuf::from(format!("/host/{name}")),
            size: 1,
            kind: Kind::Dynamic,
            needs,
        };
        let tools = [
            tool(
                "no-such-tool-a",
                vec![
                    Need::Loader("/no/such/ld.so".to_string()),
                    Need::Library("libnot-there.so.9".to_string()),
                ],
            ),
            tool(
                "py",
                vec![
                    Need::Interpreter("/no/such/env".to_string()),
                    Need::Command("no-such-tool-a".to_string()),
                    Need::Command("no-such-python".to_string()),
                ],
            ),
        ];
        let error = check_here(&tools).unwrap_err().to_string();
        assert_eq!(
            error,
            "tool `no-such-tool-a` cannot run on this machine: it is dynamically linked and its loader \
             /no/such/ld.so is not there (a statically linked build runs anywhere)"
        );
        let error = check_here(&tools[1..]).unwrap_err().to_string();
        assert_eq!(
            error,
            "tool `py` cannot run on this machine: it is a script for /no/such/env, which is not \
             there; it is a script run by `no-such-tool-a` through env, which is not in PATH; it is a script \
             run by `no-such-python` through env, which is not in PATH"
        );
        // Among the tools, `no-such-tool-a` is there for `#!/usr/bin/env no-such-tool-a`.
        let tools = [tool("no-such-tool-a", vec![]), tools[1].clone()];
        let error = check_here(&tools).unwrap_err().to_string();
        assert!(!error.contains("`no-such-tool-a` through env"), "{error}");
    }

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2_500), "2.5 kB");
        assert_eq!(human_size(16_472_200), "16.5 MB");
    }

    #[test]
    fn quoting_survives_quotes() {
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote("it's $HOME")))
            .output()
            .unwrap();
        assert_eq!(output.stdout, b"it's $HOME");
    }
}
