//! version, info, system df/info/prune.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::Client;
use crate::format::{human_size, print_table, render_template};

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Format output using a template ('{{json .}}', '{{.ServerVersion}}').
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage.
    Df(FormatArgs),
    /// Display system-wide information.
    Info(FormatArgs),
}

pub async fn system_command(client: &Client, command: SystemCommand) -> Result<()> {
    match command {
        SystemCommand::Df(a) => df(client, &a).await,
        SystemCommand::Info(a) => info(client, &a).await,
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

pub async fn version(client: &Client, args: &VersionArgs) -> Result<()> {
    let client_part = serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": crate::client::API_VERSION,
        "Os": std::env::consts::OS,
        "Arch": std::env::consts::ARCH,
    });
    let server = client.get_json::<Value>("/version").await;
    if let Some(template) = &args.format {
        let all = serde_json::json!({"Client": client_part, "Server": server.as_ref().ok()});
        println!("{}", render_template(template, &all));
        return server.map(|_| ());
    }
    println!("Client: Berth");
    println!(" Version:           {}", s(&client_part["Version"]));
    println!(" API version:       {}", s(&client_part["ApiVersion"]));
    println!(
        " OS/Arch:           {}/{}",
        s(&client_part["Os"]),
        s(&client_part["Arch"])
    );
    let server = server?;
    println!();
    println!("Server: {}", s(&server["Platform"]["Name"]));
    println!(" Engine:");
    println!("  Version:          {}", s(&server["Version"]));
    println!(
        "  API version:      {} (minimum version {})",
        s(&server["ApiVersion"]),
        s(&server["MinAPIVersion"])
    );
    println!(
        "  OS/Arch:          {}/{}",
        s(&server["Os"]),
        s(&server["Arch"])
    );
    println!("  Kernel Version:   {}", s(&server["KernelVersion"]));
    Ok(())
}

pub async fn info(client: &Client, args: &FormatArgs) -> Result<()> {
    let info: Value = client.get_json("/info").await?;
    if let Some(template) = &args.format {
        println!("{}", render_template(template, &info));
        return Ok(());
    }
    println!("Server:");
    for (label, key) in [
        ("Containers", "Containers"),
        (" Running", "ContainersRunning"),
        (" Paused", "ContainersPaused"),
        (" Stopped", "ContainersStopped"),
        ("Images", "Images"),
        ("Server Version", "ServerVersion"),
        ("Storage Driver", "Driver"),
        ("Logging Driver", "LoggingDriver"),
        ("Cgroup Driver", "CgroupDriver"),
        ("Cgroup Version", "CgroupVersion"),
        ("Default Runtime", "DefaultRuntime"),
        ("Kernel Version", "KernelVersion"),
        ("Operating System", "OperatingSystem"),
        ("OSType", "OSType"),
        ("Architecture", "Architecture"),
        ("CPUs", "NCPU"),
        ("Name", "Name"),
        ("Berth Root Dir", "DockerRootDir"),
        ("Live Restore Enabled", "LiveRestoreEnabled"),
    ] {
        println!(" {label}: {}", s(&info[key]));
    }
    println!(
        " Total Memory: {}",
        human_size(info["MemTotal"].as_f64().unwrap_or(0.0))
    );
    for warning in info["Warnings"].as_array().into_iter().flatten() {
        eprintln!("{}", s(warning));
    }
    Ok(())
}

pub async fn df(client: &Client, args: &FormatArgs) -> Result<()> {
    let df: Value = client.get_json("/system/df").await?;
    let images = df["Images"].as_array().cloned().unwrap_or_default();
    let containers = df["Containers"].as_array().cloned().unwrap_or_default();
    let volumes = df["Volumes"].as_array().cloned().unwrap_or_default();
    let image_size: f64 = images.iter().filter_map(|i| i["Size"].as_f64()).sum();
    let container_size: f64 = containers.iter().filter_map(|c| c["SizeRw"].as_f64()).sum();
    let volume_size: f64 = volumes
        .iter()
        .filter_map(|v| v["UsageData"]["Size"].as_f64())
        .sum();
    let active_images = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) > 0)
        .count();
    let rows = vec![
        serde_json::json!({"Type": "Images", "TotalCount": images.len(), "Active": active_images,
            "Size": human_size(image_size), "Reclaimable": human_size(image_size)}),
        serde_json::json!({"Type": "Containers", "TotalCount": containers.len(), "Active": 0,
            "Size": human_size(container_size), "Reclaimable": human_size(container_size)}),
        serde_json::json!({"Type": "Local Volumes", "TotalCount": volumes.len(), "Active": 0,
            "Size": human_size(volume_size), "Reclaimable": human_size(volume_size)}),
        serde_json::json!({"Type": "Build Cache", "TotalCount": 0, "Active": 0,
            "Size": "0B", "Reclaimable": "0B"}),
    ];
    if let Some(template) = &args.format {
        for r in &rows {
            println!("{}", render_template(template, r));
        }
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            ["Type", "TotalCount", "Active", "Size", "Reclaimable"]
                .iter()
                .map(|k| s(&r[*k]))
                .collect()
        })
        .collect();
    print_table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &table);
    Ok(())
}
