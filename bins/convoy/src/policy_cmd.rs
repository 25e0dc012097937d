//! `convoy policy set|list|remove`: scheduled snapshots and backups with retention
//! (`docs/operations.md`).

use clap::{Args, Subcommand};
use convoy_api::wire::{PolicyRemoveRequest, PolicyResponse, PolicySetRequest};
use convoy_api::Client;

use crate::output::{print_json, print_line};

/// `convoy policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set (or replace) a policy of a volume, or of every volume with --all.
    Set(PolicySetArgs),
    /// Show every policy with its last run, last success, last error and next run.
    List,
    /// Remove a policy (every policy of the volume without --name); what it made stays.
    Remove {
        /// The volume (or `*` for the all-volumes policies).
        #[arg(required_unless_present = "all")]
        volume: Option<String>,
        /// The all-volumes policies.
        #[arg(long, conflicts_with = "volume")]
        all: bool,
        /// The policy's name.
        #[arg(long)]
        name: Option<String>,
    },
}

/// `convoy policy set`.
#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// The volume.
    #[arg(required_unless_present = "all")]
    pub volume: Option<String>,
    /// For every volume (a volume's own policy of the same name wins).
    #[arg(long, conflicts_with = "volume")]
    pub all: bool,
    /// The policy's name, for several policies on one volume (default: default).
    #[arg(long)]
    pub name: Option<String>,
    /// Take a snapshot this often (30s, 15m, 1h, 1d, 1w).
    #[arg(long, value_name = "DURATION")]
    pub snapshot_every: Option<String>,
    /// Snapshot and back up (incrementally) this often.
    #[arg(long, value_name = "DURATION", requires = "backup_dest")]
    pub backup_every: Option<String>,
    /// Where the backups go (vfs:///path, s3://bucket@region/path).
    #[arg(long, value_name = "URL", requires = "backup_every")]
    pub backup_dest: Option<String>,
    /// S3 endpoint of the destination (e.g. MinIO).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Which of the policy's snapshots to keep: last=N,hourly=N,daily=N,weekly=N,monthly=N.
    #[arg(long, value_name = "RULE")]
    pub keep_snapshots: Option<String>,
    /// Which of the policy's backups to keep (same form).
    #[arg(long, value_name = "RULE")]
    pub keep_backups: Option<String>,
}

fn volume_arg(volume: Option<String>, all: bool) -> String {
    if all {
        convoy_core::ALL_VOLUMES.to_owned()
    } else {
        volume.unwrap_or_default()
    }
}

/// Runs a `policy` command.
pub async fn policy(client: &Client, command: PolicyCommand, verbose: bool) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Set(a) => {
            let request = PolicySetRequest {
                volume_name: volume_arg(a.volume, a.all),
                name: a.name.unwrap_or_default(),
                snapshot_every: a.snapshot_every.unwrap_or_default(),
                backup_every: a.backup_every.unwrap_or_default(),
                backup_dest: a.backup_dest.unwrap_or_default(),
                s3_endpoint: a.s3_endpoint.unwrap_or_default(),
                keep_snapshots: a.keep_snapshots.unwrap_or_default(),
                keep_backups: a.keep_backups.unwrap_or_default(),
            };
            let set = client.set_policy(&request).await?;
            if verbose {
                print_json(&set);
            } else {
                print_table(&set.policies);
            }
        }
        PolicyCommand::List => {
            let all = client.list_policies().await?;
            if verbose {
                print_json(&all);
            } else {
                print_table(&all.policies);
            }
        }
        PolicyCommand::Remove { volume, all, name } => {
            let request = PolicyRemoveRequest {
                volume_name: volume_arg(volume, all),
                name: name.unwrap_or_default(),
            };
            client.remove_policy(&request).await?;
        }
    }
    Ok(())
}

/// One line per policy and action: what it is, when it last ran and succeeded, when next, and
/// the last run's error.
fn print_table(policies: &[PolicyResponse]) {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut rows = vec![[
        "VOLUME",
        "POLICY",
        "ACTION",
        "EVERY",
        "KEEP",
        "LAST RUN",
        "LAST SUCCESS",
        "NEXT RUN",
        "LAST ERROR",
    ]
    .map(str::to_owned)];
    for p in policies {
        let mut volume = p.volume_name.clone();
        if p.from_all_volumes {
            volume.push_str(" (all)");
        }
        if p.volume_missing {
            volume.push_str(" (gone)");
        }
        for (action, state, keep) in [
            ("snapshot", &p.snapshot, &p.keep_snapshots),
            ("backup", &p.backup, &p.keep_backups),
        ] {
            let Some(s) = state else { continue };
            let every = if action == "backup" {
                format!("{} to {}", s.every, p.backup_dest)
            } else {
                s.every.clone()
            };
            rows.push([
                volume.clone(),
                p.name.clone(),
                action.to_owned(),
                every,
                keep.clone(),
                dash(&s.last_run),
                dash(&s.last_success),
                dash(&s.next_run),
                dash(&s.last_error),
            ]);
        }
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        print_line(line.join("  ").trim_end());
    }
}
