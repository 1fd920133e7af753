//! Where an ssh destination really leads, as the user's own `ssh -G` resolves it (the
//! `Host` blocks of `~/.ssh/config`, `-p`, `-l`, `-J` and the rest): the cache key names the
//! machine a result came from, not the alias that was typed, so that an alias pointed at
//! another host, port or user is another key.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot run `ssh -G` to resolve the ssh destination `{destination}`: {source}")]
    Spawn {
        destination: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`ssh -G {destination}` failed: {stderr}")]
    Failed { destination: String, stderr: String },
}

/// The settings of `ssh -G` that decide which machine and account a connection reaches.
const DECIDING: [&str; 5] = ["user", "hostname", "port", "proxyjump", "proxycommand"];

/// `destination` with `options` as `ssh -G` resolves it: `user@hostname:port`, then any jump
/// host or proxy command.
pub fn destination(destination: &str, options: &[String]) -> Result<String, ResolveError> {
    let output = Command::new("ssh")
        .args(options)
        .arg("-G")
        .arg("--")
        .arg(destination)
        .output()
        .map_err(|source| ResolveError::Spawn {
            destination: destination.to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(ResolveError::Failed {
            destination: destination.to_string(),
            stderr: crate::printable::Printable(String::from_utf8_lossy(&output.stderr).trim())
                .to_string(),
        });
    }
    Ok(summarize(&String::from_utf8_lossy(&output.stdout)))
}

/// The deciding settings of `ssh -G`'s output (one `name value` per line).
fn summarize(config: &str) -> String {
    let value = |name: &str| {
        config.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().to_string())
        })
    };
    let [user, host, port, jump, command] = DECIDING.map(value);
    let mut resolved = format!(
        "{}@{}:{}",
        user.unwrap_or_default(),
        host.unwrap_or_default(),
        port.unwrap_or_default()
    );
    if let Some(jump) = jump.filter(|j| j != "none") {
        resolved.push_str(&format!(" via {jump}"));
    }
    if let Some(command) = command.filter(|c| c != "none") {
        resolved.push_str(&format!(" through `{command}`"));
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deciding_settings_are_read_from_ssh_g() {
        let config = "user ci\nhostname 10.0.0.7\nport 2222\naddressfamily any\nproxyjump gw\n";
        assert_eq!(summarize(config), "ci@10.0.0.7:2222 via gw");
        let plain = "hostname build-box\nuser me\nport 22\nproxyjump none\n";
        assert_eq!(summarize(plain), "me@build-box:22");
    }

    #[test]
    fn an_alias_resolves_to_its_host_and_port() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "Host box\n  HostName 192.0.2.1\n  Port 2200\n  User builder\n",
        )
        .unwrap();
        let options = vec![format!("-F{}", config.display())];
        assert_eq!(
            destination("box", &options).unwrap(),
            "builder@192.0.2.1:2200"
        );
        let other_port = vec![options[0].clone(), "-p2201".to_string()];
        assert_eq!(
            destination("box", &other_port).unwrap(),
            "builder@192.0.2.1:2201"
        );
    }
}
