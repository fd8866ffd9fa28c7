//! Names of a machine's local endpoints that are not files: on Windows the
//! Docker API is a named pipe (as Docker Desktop's `//./pipe/docker_engine`)
//! and the VM's serial console is another one that HCS connects to.
//! The Windows server itself is in `pipe_endpoint.rs`.

use crate::machine::{MachineConfig, MachineDir, MachineError};

/// The `DOCKER_HOST` of a machine's API on this host: its named pipe on
/// Windows, the Unix socket in its directory elsewhere.
pub fn machine_docker_host(dir: &MachineDir, machine: &str) -> Result<String, MachineError> {
    docker_host_for(cfg!(windows), dir, machine)
}

fn docker_host_for(windows: bool, dir: &MachineDir, machine: &str) -> Result<String, MachineError> {
    if windows {
        let pipe = api_pipe_name(machine)?;
        pipe_docker_host(&pipe).ok_or_else(|| MachineError::BadName(machine.to_string()))
    } else {
        checked(machine)?;
        Ok(format!("unix://{}", dir.api_socket().display()))
    }
}

/// `\\.\pipe\berth-<machine>`: the machine's Docker API on Windows.
pub fn api_pipe_name(machine: &str) -> Result<String, MachineError> {
    checked(machine)?;
    Ok(format!(r"\\.\pipe\berth-{machine}"))
}

/// `\\.\pipe\berth-<machine>-console`: the guest's COM1, which the Windows
/// backend copies into the console log.
pub fn console_pipe_name(machine: &str) -> Result<String, MachineError> {
    checked(machine)?;
    Ok(format!(r"\\.\pipe\berth-{machine}-console"))
}

/// What `DOCKER_HOST` says for a pipe: `npipe:////./pipe/<name>`.
pub fn pipe_docker_host(pipe: &str) -> Option<String> {
    let name = pipe.strip_prefix(r"\\.\pipe\")?;
    if name.is_empty() || name.contains(['\\', '/']) {
        return None;
    }
    Some(format!("npipe:////./pipe/{name}"))
}

/// The inverse of [`pipe_docker_host`] (Docker also accepts `npipe://./pipe/x`).
pub fn pipe_from_docker_host(host: &str) -> Option<String> {
    let rest = host.strip_prefix("npipe://")?;
    let name = rest
        .strip_prefix("//./pipe/")
        .or_else(|| rest.strip_prefix("./pipe/"))?;
    if name.is_empty() || name.contains(['\\', '/']) {
        return None;
    }
    Some(format!(r"\\.\pipe\{name}"))
}

/// Machine names are already restricted to letters, digits, `-` and `_`
/// (at most 32), which are all valid in a pipe name.
fn checked(machine: &str) -> Result<(), MachineError> {
    MachineConfig::new(machine).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_names_follow_the_machine_name() {
        assert_eq!(
            api_pipe_name("default").expect("name"),
            r"\\.\pipe\berth-default"
        );
        assert_eq!(
            console_pipe_name("dev_2").expect("name"),
            r"\\.\pipe\berth-dev_2-console"
        );
        for bad in ["", "a/b", r"a\b", "x y", "..", &"n".repeat(33)] {
            assert!(api_pipe_name(bad).is_err(), "{bad:?}");
            assert!(console_pipe_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_machine_is_reached_by_pipe_on_windows_and_socket_elsewhere() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = MachineDir::new(tmp.path(), "dev").expect("dir");
        assert_eq!(
            docker_host_for(true, &dir, "dev").expect("windows"),
            "npipe:////./pipe/berth-dev"
        );
        assert_eq!(
            docker_host_for(false, &dir, "dev").expect("unix"),
            format!("unix://{}", tmp.path().join("dev/berth.sock").display())
        );
        assert!(docker_host_for(true, &dir, "a b").is_err());
        assert!(docker_host_for(false, &dir, "a b").is_err());
    }

    #[test]
    fn docker_host_spelling_round_trips() {
        let pipe = api_pipe_name("m1").expect("name");
        let host = pipe_docker_host(&pipe).expect("host");
        assert_eq!(host, "npipe:////./pipe/berth-m1");
        assert_eq!(pipe_from_docker_host(&host).as_deref(), Some(pipe.as_str()));
        assert_eq!(
            pipe_from_docker_host("npipe://./pipe/docker_engine").as_deref(),
            Some(r"\\.\pipe\docker_engine")
        );
        assert_eq!(pipe_from_docker_host("unix:///x.sock"), None);
        assert_eq!(pipe_from_docker_host("npipe:////./pipe/"), None);
        assert_eq!(pipe_from_docker_host("npipe:////./pipe/a/b"), None);
        assert_eq!(pipe_docker_host(r"C:\x"), None);
    }
}
