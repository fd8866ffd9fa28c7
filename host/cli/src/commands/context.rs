//! `context create/ls/use/rm/inspect/show`: named engine endpoints, chosen
//! with `--context`, `BERTH_CONTEXT` or `context use` (see [`crate::config`]).

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::config::{self, Context, ContextStore, Selection, DEFAULT_CONTEXT};
use crate::format::{print_formatted, print_table};

#[derive(Debug, Clone, Subcommand)]
pub enum ContextCommand {
    /// Create a context.
    Create(CreateArgs),
    /// List contexts.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Set the current context.
    Use { name: String },
    /// Remove one or more contexts.
    #[command(alias = "remove")]
    Rm(RemoveArgs),
    /// Display detailed information on one or more contexts.
    Inspect {
        /// Format output using a template.
        #[arg(short, long)]
        format: Option<String>,
        names: Vec<String>,
    },
    /// Print the name of the current context.
    Show,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    name: String,
    /// Description of the context.
    #[arg(long, default_value = "")]
    description: String,
    /// The engine's address (unix:///path/to/berth.sock).
    #[arg(long, conflicts_with = "docker")]
    host: Option<String>,
    /// Docker's spelling of the endpoint: host=unix:///path.
    #[arg(long)]
    docker: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only show context names.
    #[arg(short, long)]
    quiet: bool,
    /// Format output using a template ('{{json .}}', 'table {{.Name}}').
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// Force the removal of a context in use.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

/// What the flags and environment select, for `ls`/`show` and the
/// `default` context's endpoint.
#[derive(Debug, Default)]
pub struct Globals {
    pub host: Option<String>,
    pub context: Option<String>,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn current_name(globals: &Globals, store: &ContextStore) -> Result<String> {
    let (host_env, context_env) = (env("BERTH_HOST"), env("BERTH_CONTEXT"));
    let selection = Selection {
        host_flag: globals.host.as_deref(),
        context_flag: globals.context.as_deref(),
        host_env: host_env.as_deref(),
        context_env: context_env.as_deref(),
    };
    config::context_name(&selection, store.current()?.as_deref())
}

fn default_context(globals: &Globals) -> Context {
    let host_env = env("BERTH_HOST");
    Context {
        name: DEFAULT_CONTEXT.into(),
        description: "Current BERTH_HOST based configuration".into(),
        host: config::default_host(&Selection {
            host_flag: globals.host.as_deref(),
            host_env: host_env.as_deref(),
            ..Selection::default()
        }),
    }
}

fn endpoint_of(args: &CreateArgs) -> Result<String> {
    if let Some(h) = &args.host {
        return Ok(h.clone());
    }
    if let Some(spec) = &args.docker {
        for part in spec.split(',') {
            if let Some(h) = part.trim().strip_prefix("host=") {
                return Ok(h.to_string());
            }
        }
        bail!("--docker {spec:?}: expected host=unix:///path/to/socket");
    }
    Ok(config::DEFAULT_HOST.to_string())
}

pub fn context_command(globals: &Globals, command: ContextCommand) -> Result<()> {
    let store = ContextStore::open()?;
    match command {
        ContextCommand::Create(args) => {
            let host = endpoint_of(&args)?;
            // Refuse an address the client could never use.
            crate::client::Endpoint::parse(&host)?;
            store.create(&Context {
                name: args.name.clone(),
                description: args.description.clone(),
                host,
            })?;
            println!("{}", args.name);
            eprintln!("Successfully created context {:?}", args.name);
        }
        ContextCommand::Ls(args) => {
            let current = current_name(globals, &store)?;
            let mut all = vec![default_context(globals)];
            all.extend(store.list()?);
            if args.quiet {
                for c in &all {
                    println!("{}", c.name);
                }
                return Ok(());
            }
            let rows: Vec<Value> = all
                .iter()
                .map(|c| {
                    json!({
                        "Name": c.name,
                        "Current": c.name == current,
                        "Description": c.description,
                        "DockerEndpoint": c.host,
                    })
                })
                .collect();
            if let Some(template) = &args.format {
                print_formatted(
                    template,
                    &rows,
                    &[
                        ("DockerEndpoint", "DOCKER ENDPOINT"),
                        ("Current", "CURRENT"),
                    ],
                );
                return Ok(());
            }
            let table: Vec<Vec<String>> = all
                .iter()
                .map(|c| {
                    let marker = if c.name == current { " *" } else { "" };
                    vec![
                        format!("{}{marker}", c.name),
                        c.description.clone(),
                        c.host.clone(),
                    ]
                })
                .collect();
            print_table(&["NAME", "DESCRIPTION", "DOCKER ENDPOINT"], &table);
        }
        ContextCommand::Use { name } => {
            store.set_current(&name)?;
            println!("{name}");
            if env("BERTH_HOST").is_some_and(|h| !h.is_empty()) {
                eprintln!("Warning: BERTH_HOST environment variable overrides the active context. To use {name:?}, either set the global --context flag, or unset BERTH_HOST environment variable.");
            }
            eprintln!("Current context is now {name:?}");
        }
        ContextCommand::Rm(args) => {
            let current = store.current()?;
            let mut failed = Vec::new();
            for name in &args.names {
                let result = if name == DEFAULT_CONTEXT {
                    Err(anyhow::anyhow!(
                        "default: context \"default\" cannot be removed"
                    ))
                } else if current.as_deref() == Some(name.as_str()) && !args.force {
                    Err(anyhow::anyhow!(
                        "context {name:?} is in use, set a different context with `berth context use` or use --force"
                    ))
                } else {
                    store.remove(name).and_then(|()| {
                        if current.as_deref() == Some(name.as_str()) {
                            store.set_current(DEFAULT_CONTEXT)?;
                        }
                        Ok(())
                    })
                };
                match result {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("{e:#}");
                        failed.push(name.as_str());
                    }
                }
            }
            if !failed.is_empty() {
                bail!("failed to remove context(s): {}", failed.join(", "));
            }
        }
        ContextCommand::Inspect { format, names } => {
            let names = if names.is_empty() {
                vec![current_name(globals, &store)?]
            } else {
                names
            };
            let mut found = Vec::new();
            for name in &names {
                let c = if name == DEFAULT_CONTEXT {
                    default_context(globals)
                } else {
                    store.get(name)?
                };
                found.push(json!({
                    "Name": c.name,
                    "Metadata": {"Description": c.description},
                    "Endpoints": {"docker": {"Host": c.host}},
                }));
            }
            match format {
                Some(t) => {
                    for v in &found {
                        println!("{}", crate::format::render_template(&t, v));
                    }
                }
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&found).context("formatting contexts")?
                ),
            }
        }
        ContextCommand::Show => println!("{}", current_name(globals, &store)?),
    }
    Ok(())
}
