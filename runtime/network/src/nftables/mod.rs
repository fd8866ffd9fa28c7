//! Berth's nftables tables, programmed over netlink from inside the engine.
//!
//! The kernel gets the same kind of transaction `nft -f` would send (create the table, delete
//! it, define it anew: one atomic batch), without running `nft`: no process per change on the
//! container start path, and no `nft` with its shared libraries in the VM's initramfs.

mod encode;
pub mod rules;
mod wire;

use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, PoisonError};

use netlink_sys::Socket;

use crate::error::{NetworkError, Result};
use crate::store::State;
use rules::Table;
use wire::{Attrs, Batch, NLM_F_APPEND, NLM_F_CREATE};

// enum nft_table_attributes, nft_chain_attributes, nft_hook_attributes, nft_rule_attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;

/// Whether the calling thread's network namespace has nf_tables.
pub fn available() -> bool {
    wire::nf_tables_answers()
}

/// Programs Berth's tables over a netlink socket kept open between changes: closing one
/// right after a transaction that deleted a table waits for the kernel to free it (an RCU
/// grace period, ~25 ms of every boot under emulation). A socket talks to the network
/// namespace it was made in, so a call from another namespace gets a new one.
#[derive(Default)]
pub struct Nftables {
    socket: Mutex<Option<(NetnsId, Socket)>>,
}

/// A network namespace's identity: the device and inode of its nsfs file.
type NetnsId = (u64, u64);

fn calling_thread_netns() -> std::io::Result<NetnsId> {
    let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((meta.dev(), meta.ino()))
}

impl Nftables {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes tables `ip <name>` and `ip6 <name>` of the calling thread's network namespace
    /// hold exactly the rules for `state`, in one transaction (and removes them when
    /// `state` needs none).
    pub fn apply(&self, name: &str, state: &State) -> Result<()> {
        let fail = |detail: String| NetworkError::Firewall {
            backend: "nftables",
            detail,
        };
        let mut batch = Batch::new();
        for table in rules::tables(name, state) {
            add_table(&mut batch, &table).map_err(|e| fail(e.to_string()))?;
        }
        let netns = calling_thread_netns()
            .map_err(|e| fail(format!("reading the thread's network namespace: {e}")))?;
        let mut cached = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        let socket = match cached.take() {
            Some((id, socket)) if id == netns => socket,
            _ => wire::open().map_err(|e| fail(format!("nfnetlink socket: {e}")))?,
        };
        let result = batch.commit(&socket).map_err(|e| fail(e.to_string()));
        *cached = Some((netns, socket));
        result
    }
}

fn add_table(batch: &mut Batch, table: &Table) -> std::result::Result<(), encode::NameTooLong> {
    let family = table.family.nfproto();
    let label = format!("table {} {}", table.family.name(), table.name);
    let mut named = Attrs::new();
    named.str(NFTA_TABLE_NAME, &table.name);
    let (new, del) = (libc::NFT_MSG_NEWTABLE as u16, libc::NFT_MSG_DELTABLE as u16);
    // Creating first makes the delete succeed whether or not the table existed.
    batch.add(new, NLM_F_CREATE, family, &named, label.clone());
    batch.add(del, 0, family, &named, format!("deleting {label}"));
    let Some(chains) = &table.chains else {
        return Ok(());
    };
    batch.add(new, NLM_F_CREATE, family, &named, label.clone());
    // Every chain exists before the rules, since a rule may jump to a later chain.
    for chain in chains {
        let mut attrs = Attrs::new();
        attrs
            .str(NFTA_CHAIN_TABLE, &table.name)
            .str(NFTA_CHAIN_NAME, chain.name);
        if let Some(h) = chain.hook {
            let mut hook = Attrs::new();
            hook.u32(NFTA_HOOK_HOOKNUM, h.point.number())
                .u32(NFTA_HOOK_PRIORITY, h.priority as u32);
            attrs
                .nested(NFTA_CHAIN_HOOK, &hook)
                .u32(NFTA_CHAIN_POLICY, libc::NF_ACCEPT as u32)
                .str(NFTA_CHAIN_TYPE, h.kind.name());
        }
        let what = format!("chain {} in {label}", chain.name);
        batch.add(
            libc::NFT_MSG_NEWCHAIN as u16,
            NLM_F_CREATE,
            family,
            &attrs,
            what,
        );
    }
    for chain in chains {
        for rule in &chain.rules {
            let mut attrs = Attrs::new();
            attrs
                .str(NFTA_RULE_TABLE, &table.name)
                .str(NFTA_RULE_CHAIN, chain.name)
                .nested(NFTA_RULE_EXPRESSIONS, &encode::expressions(rule)?);
            let what = format!("rule `{rule}` in chain {} of {label}", chain.name);
            let flags = NLM_F_CREATE | NLM_F_APPEND;
            batch.add(libc::NFT_MSG_NEWRULE as u16, flags, family, &attrs, what);
        }
    }
    Ok(())
}
