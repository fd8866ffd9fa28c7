//! `state`: print a container's state as runc does.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use berth_runtime::state::ContainerState;
use serde::Serialize;

use super::Globals;
use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// The JSON object `state` prints and `list --format json` lists, field
/// order and names as runc's.
#[derive(Debug, Serialize)]
pub struct StateView<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: String,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

impl<'a> StateView<'a> {
    pub fn new(s: &'a ContainerState) -> Self {
        Self {
            oci_version: &s.oci_version,
            id: &s.id,
            pid: s.pid,
            status: s.status.to_string(),
            bundle: &s.bundle,
            rootfs: &s.rootfs,
            created: &s.created,
            owner: &s.owner,
            annotations: &s.annotations,
        }
    }
}

pub fn run(args: &Args, g: &Globals) -> Result<()> {
    let c = common::load(&g.runtime(), &args.id)?;
    let json = serde_json::to_string_pretty(&StateView::new(c.state()))
        .context("serialising the state")?;
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::state::Status;

    fn sample() -> ContainerState {
        ContainerState {
            id: "c1".into(),
            status: Status::Running,
            pid: 42,
            pid_start_time: 7,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-03-01T12:00:00.000000001Z".into(),
            owner: String::new(),
            annotations: HashMap::new(),
            cgroup_path: "/berth/c1".into(),
            oci_version: "1.2.0".into(),
            hooks: None,
        }
    }

    #[test]
    fn fields_and_order() {
        let s = sample();
        let json = serde_json::to_string(&StateView::new(&s)).expect("serialise");
        assert_eq!(
            json,
            r#"{"ociVersion":"1.2.0","id":"c1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2026-03-01T12:00:00.000000001Z","owner":""}"#
        );
    }

    #[test]
    fn annotations_when_present() {
        let mut s = sample();
        s.annotations.insert("k".into(), "v".into());
        let v = serde_json::to_value(StateView::new(&s)).expect("serialise");
        assert_eq!(v["annotations"]["k"], "v");
    }
}
