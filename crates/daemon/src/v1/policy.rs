//! `/v1/policies/*` (convoy's addition): set, remove and list scheduled snapshot and backup
//! policies (`docs/operations.md`). The runs themselves are the policy runner's.

use axum::response::Response;
use convoy_api::wire::{
    PolicyActionResponse, PolicyListResponse, PolicyRemoveRequest, PolicyResponse, PolicySetRequest,
};
use convoy_core::{
    format_interval, format_keep, parse_interval, parse_keep, rfc3339, Policy, PolicyStatus,
    ALL_VOLUMES, DEFAULT_POLICY_NAME,
};

use super::{Call, Empty, Shared};
use crate::http::required;
use crate::{Daemon, DaemonError, ErrorKind, Result};

/// A set request as (volume, policy name, policy), every field checked.
pub(crate) fn policy_of(route: &str, r: &PolicySetRequest) -> Result<(String, String, Policy)> {
    let volume = required(route, "VolumeName", &r.volume_name)?
        .trim()
        .to_owned();
    let name = match r.name.trim() {
        "" => DEFAULT_POLICY_NAME.to_owned(),
        n => n.to_owned(),
    };
    let every = |what: &str, text: &str| -> Result<Option<u64>> {
        match text.trim() {
            "" => Ok(None),
            t => parse_interval(what, t).map(Some).map_err(DaemonError::from),
        }
    };
    let keep = |what: &str, text: &str| parse_keep(what, text).map_err(DaemonError::from);
    let text = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
    let policy = Policy {
        snapshot_every: every("snapshot interval (SnapshotEvery)", &r.snapshot_every)?,
        backup_every: every("backup interval (BackupEvery)", &r.backup_every)?,
        backup_dest: text(&r.backup_dest),
        s3_endpoint: text(&r.s3_endpoint),
        keep_snapshots: keep("snapshot retention (KeepSnapshots)", &r.keep_snapshots)?,
        keep_backups: keep("backup retention (KeepBackups)", &r.keep_backups)?,
    };
    policy.validate()?;
    convoy_core::validate_policy_name(&name)?;
    Ok((volume, name, policy))
}

/// Sets a checked policy on an existing volume (or on all).
pub(crate) async fn set_policy(d: &Daemon, volume: &str, name: &str, policy: Policy) -> Result<()> {
    if volume != ALL_VOLUMES {
        d.manager.inspect_volume(volume).await?;
    }
    d.policies
        .set(volume, name, policy)
        .map_err(DaemonError::from)
}

fn time(t: Option<i64>) -> String {
    t.map(rfc3339).unwrap_or_default()
}

fn response(s: PolicyStatus, missing: bool) -> PolicyResponse {
    let action = |every: Option<u64>, a: &convoy_core::policy_state::ActionState| {
        every.map(|every| PolicyActionResponse {
            every: format_interval(every),
            last_run: time(a.last_run),
            last_success: time(a.last_success),
            last_error: a.last_error.clone().unwrap_or_default(),
            next_run: time(a.next_run),
        })
    };
    PolicyResponse {
        snapshot: action(s.policy.snapshot_every, &s.state.snapshot),
        backup: action(s.policy.backup_every, &s.state.backup),
        backup_dest: s.policy.backup_dest.clone().unwrap_or_default(),
        keep_snapshots: format_keep(&s.policy.keep_snapshots),
        keep_backups: format_keep(&s.policy.keep_backups),
        snapshots: s.state.snapshots.iter().map(|m| m.name.clone()).collect(),
        backup_urls: s.state.backups.iter().map(|b| b.url.clone()).collect(),
        protected_snapshot: s.state.protected.clone().unwrap_or_default(),
        from_all_volumes: s.from_all && s.volume != ALL_VOLUMES,
        volume_missing: missing,
        volume_name: s.volume,
        name: s.name,
    }
}

/// Every policy with its state, as `list` shows it.
pub(crate) async fn list(d: &Daemon) -> Result<PolicyListResponse> {
    let volumes: Vec<String> = d
        .manager
        .list_volumes(None)
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let policies = d
        .policies
        .status(&volumes)
        .into_iter()
        .map(|s| {
            let missing = s.volume != ALL_VOLUMES && !volumes.contains(&s.volume);
            response(s, missing)
        })
        .collect();
    Ok(PolicyListResponse { policies })
}

/// `POST /v1/policies/set`: `{VolumeName, Name, SnapshotEvery, BackupEvery, BackupDest,
/// S3Endpoint, KeepSnapshots, KeepBackups}`; answers the volume's policies as they now stand.
pub(crate) async fn set(axum::extract::State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: PolicySetRequest| async move {
        let (volume, name, policy) = policy_of(&route, &r)?;
        set_policy(&d, &volume, &name, policy).await?;
        let mut all = list(&d).await?;
        all.policies
            .retain(|p| p.volume_name == volume && p.name == name);
        Ok(all)
    })
    .await
}

/// `POST /v1/policies/remove`: `{VolumeName, Name}` (no name: all of the volume's).
pub(crate) async fn remove(axum::extract::State(d): Shared, call: Call) -> Response {
    let route = call.route();
    call.answer(|r: PolicyRemoveRequest| async move {
        let volume = required(&route, "VolumeName", &r.volume_name)?
            .trim()
            .to_owned();
        let name = Some(r.name.trim()).filter(|n| !n.is_empty());
        let removed = d
            .policies
            .remove(&volume, name)
            .map_err(|e| DaemonError::failed(ErrorKind::NotFound, format!("{route}: {e}")))?;
        tracing::info!(volume = %volume, removed, "policies removed");
        Ok(Empty {})
    })
    .await
}

/// `GET /v1/policies/list`.
pub(crate) async fn list_route(axum::extract::State(d): Shared, call: Call) -> Response {
    call.answer(|_: serde_json::Value| async move { list(&d).await })
        .await
}
