//! `inspect`: low-level JSON of containers and images (whichever the name
//! is; a container wins, as in Docker), whole or through `-f` templates.

use anyhow::{bail, Result};
use clap::Args;
use hyper::StatusCode;
use serde_json::Value;

use crate::client::{path_segment, ApiError, Client};
use crate::format::render_template;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a template ('{{.State.Status}}', '{{json .Config}}').
    #[arg(short, long)]
    format: Option<String>,
    /// Return JSON for the specified type (container, image).
    #[arg(long = "type", value_parser = ["container", "image"])]
    kind: Option<String>,
    /// Display total file sizes if the type is container.
    #[arg(short, long)]
    size: bool,
    #[arg(required = true, value_name = "NAME|ID")]
    names: Vec<String>,
}

impl InspectArgs {
    /// `container inspect`: only containers are looked up.
    pub fn containers_only(mut self) -> Self {
        self.kind = Some("container".into());
        self
    }
}

fn not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|a| a.status == StatusCode::NOT_FOUND)
}

/// The object named `name`: a container, else an image (or only the
/// `kind` asked for). None if there is no such object.
async fn find(
    client: &Client,
    name: &str,
    kind: Option<&str>,
    size: bool,
) -> Result<Option<Value>> {
    let size = if size { "?size=1" } else { "" };
    let container = format!("/containers/{}/json{size}", path_segment(name));
    let image = format!("/images/{}/json", path_segment(name));
    let paths: Vec<&str> = match kind {
        Some("container") => vec![&container],
        Some("image") => vec![&image],
        _ => vec![&container, &image],
    };
    for path in paths {
        match client.get_json::<Value>(path).await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

pub async fn inspect(client: &Client, args: &InspectArgs) -> Result<()> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in &args.names {
        match find(client, name, args.kind.as_deref(), args.size).await? {
            Some(v) => found.push(v),
            None => missing.push(name.as_str()),
        }
    }
    match &args.format {
        Some(template) => {
            for v in &found {
                println!("{}", render_template(template, v));
            }
        }
        None => {
            // Docker prints the array indented by four spaces.
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(&found, &mut ser)?;
            println!("{}", String::from_utf8_lossy(&out));
        }
    }
    if !missing.is_empty() {
        for name in &missing {
            let what = args.kind.as_deref().unwrap_or("object");
            eprintln!("Error: No such {what}: {name}");
        }
        bail!(
            "{} of {} objects not found",
            missing.len(),
            args.names.len()
        );
    }
    Ok(())
}
