//! csi-sanity's "ListSnapshots", "DeleteSnapshot", "CreateSnapshot", "ExpandVolume" and
//! "ModifyVolume" groups (the rest of `controller.go`) and the GroupController groups
//! (`groupcontroller.go`).

use convoy_csi::pb::controller_service_capability::rpc::Type as CtrlRpc;
use convoy_csi::pb::plugin_capability::service::Type as PluginService;
use convoy_csi::pb::*;
use tonic::Code;

use super::{expect_code, gated, verify_snapshot, Case, Ctx, Outcome};
use crate::{case, skip_unless};

const LIST: &str = "ListSnapshots [Controller Server]";
const DELETE: &str = "DeleteSnapshot [Controller Server]";
const CREATE: &str = "CreateSnapshot [Controller Server]";
const EXPAND: &str = "ExpandVolume [Controller Server]";
const MODIFY: &str = "ModifyVolume [Controller Server]";
const GROUP: &str = "GroupController Service";

pub fn cases() -> Vec<Case> {
    vec![
        case!(LIST, "should return appropriate values (no optional values added)", list_plain),
        case!(LIST, "should return snapshots that match the specified snapshot id", list_by_id),
        case!(LIST, "should return empty when the specified snapshot id does not exist", list_missing_id),
        case!(LIST, "should return snapshots that match the specified source volume id", list_by_source),
        case!(LIST, "should return empty when the specified source volume id does not exist", list_missing_source),
        case!(LIST, "check the presence of new snapshots in the snapshot list", list_presence),
        case!(LIST, "should return next token when a limited number of entries are requested", list_pages),
        case!(DELETE, "should fail when no snapshot id is provided", delete_no_id),
        case!(DELETE, "should succeed when an invalid snapshot id is used", delete_invalid_id),
        case!(DELETE, "should return appropriate values (no optional values added)", delete_plain),
        case!(CREATE, "should fail when no name is provided", create_no_name),
        case!(CREATE, "should fail when no source volume id is provided", create_no_source),
        case!(CREATE, "should succeed when requesting to create a snapshot with already existing name and same source volume ID", create_twice),
        case!(CREATE, "should fail when requesting to create a snapshot with already existing name and different source volume ID", create_other_source),
        case!(CREATE, "should succeed when creating snapshot with maximum-length name", create_max_name),
        case!(EXPAND, "should fail if no volume id is given", expand_no_id),
        case!(EXPAND, "should fail if no capacity range is given", expand_no_range),
        case!(EXPAND, "should work", expand_works),
        case!(MODIFY, "should fail if no volume id is given", modify_gated),
        case!(MODIFY, "should fail if volume does not exist", modify_gated),
        case!(MODIFY, "should fail if specified mutable parameters are not supported by the volume", modify_gated),
        case!(MODIFY, "should modify a volume created without a volume attribute class", modify_gated),
        case!(MODIFY, "should modify a volume created with a volume attribute class", modify_gated),
        case!(MODIFY, "should fail to modify a volume created with a volume attribute class if new mutable parameters are not supported by volume", modify_gated),
        case!(GROUP, "[GroupController Server] GroupControllerGetCapabilities should return appropriate capabilities", group_gated),
        case!(GROUP, "[GroupController VolumeGroupSnapshots] CreateVolumeGroupSnapshot should fail when no name is provided", group_gated),
        case!(GROUP, "[GroupController VolumeGroupSnapshots] GetVolumeGroupSnapshot should fail when no volume id is provided", group_gated),
        case!(GROUP, "[GroupController VolumeGroupSnapshots] GetVolumeGroupSnapshot should fail when an invalid volume id is used", group_gated),
        case!(GROUP, "[GroupController VolumeGroupSnapshots] DeleteVolumeGroupSnapshot should fail when no volume id is provided", group_gated),
        case!(GROUP, "[GroupController VolumeGroupSnapshots] DeleteVolumeGroupSnapshot should succeed when an invalid volume id is used", group_gated),
    ]
}

async fn list(s: &Ctx, req: ListSnapshotsRequest) -> ListSnapshotsResponse {
    s.c.clone().list_snapshots(req).await.unwrap().into_inner()
}

fn ids(r: &ListSnapshotsResponse) -> Vec<Snapshot> {
    r.entries
        .iter()
        .map(|e| e.snapshot.clone().unwrap())
        .collect()
}

async fn has_list(s: &Ctx) -> bool {
    s.controller_has(CtrlRpc::ListSnapshots).await
}

async fn list_plain(s: Ctx) -> Outcome {
    skip_unless!(has_list(&s).await, "ListSnapshots not supported");
    for snap in ids(&list(&s, ListSnapshotsRequest::default()).await) {
        verify_snapshot(&snap);
    }
    Outcome::Pass
}

/// Three volumes with a snapshot each (`<kind>-1`, the target, `<kind>-2`); answers the
/// target's snapshot.
async fn three(s: &Ctx, kind: &str) -> Snapshot {
    let one = |what: &str, which: &str| {
        (
            s.make_create_volume_req(
                &s.unique(&format!("listSnapshots-volume-{what}-{kind}{which}")),
            ),
            s.unique(&format!("listSnapshots-snapshot-{what}-{kind}{which}")),
        )
    };
    let (req, name) = one("unrelated", "-1");
    s.must_create_snapshot_from_volume(req, &name).await;
    let (req, name) = one("target", "");
    let (target, _) = s.must_create_snapshot_from_volume(req, &name).await;
    let (req, name) = one("unrelated", "-2");
    s.must_create_snapshot_from_volume(req, &name).await;
    target
}

async fn list_by_id(s: Ctx) -> Outcome {
    skip_unless!(has_list(&s).await, "ListSnapshots not supported");
    let target = three(&s, "s").await;
    let found = ids(&list(
        &s,
        ListSnapshotsRequest {
            snapshot_id: target.snapshot_id.clone(),
            ..Default::default()
        },
    )
    .await);
    assert_eq!(found.len(), 1, "{found:?}");
    verify_snapshot(&found[0]);
    assert_eq!(found[0].snapshot_id, target.snapshot_id);
    Outcome::Pass
}

async fn list_missing_id(s: Ctx) -> Outcome {
    skip_unless!(has_list(&s).await, "ListSnapshots not supported");
    let r = list(
        &s,
        ListSnapshotsRequest {
            snapshot_id: "none-exist-id".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(r.entries.is_empty(), "{r:?}");
    Outcome::Pass
}

async fn list_by_source(s: Ctx) -> Outcome {
    skip_unless!(has_list(&s).await, "ListSnapshots not supported");
    let target = three(&s, "v").await;
    let found = ids(&list(
        &s,
        ListSnapshotsRequest {
            source_volume_id: target.source_volume_id.clone(),
            ..Default::default()
        },
    )
    .await);
    assert_eq!(found.len(), 1, "{found:?}");
    verify_snapshot(&found[0]);
    assert_eq!(found[0].source_volume_id, target.source_volume_id);
    Outcome::Pass
}

async fn list_missing_source(s: Ctx) -> Outcome {
    skip_unless!(has_list(&s).await, "ListSnapshots not supported");
    let r = list(
        &s,
        ListSnapshotsRequest {
            source_volume_id: super::controller::fake_volume_id(),
            ..Default::default()
        },
    )
    .await;
    assert!(r.entries.is_empty(), "{r:?}");
    Outcome::Pass
}

async fn list_presence(s: Ctx) -> Outcome {
    skip_unless!(has_list(&s).await, "ListSnapshots not supported");
    let total = list(&s, ListSnapshotsRequest::default())
        .await
        .entries
        .len();
    let req = s.make_create_volume_req(&s.unique("listSnapshots-volume-3"));
    let (snap, _) = s
        .must_create_snapshot_from_volume(req, &s.unique("listSnapshots-snapshot-3"))
        .await;
    verify_snapshot(&snap);
    assert_eq!(
        list(&s, ListSnapshotsRequest::default())
            .await
            .entries
            .len(),
        total + 1
    );
    s.delete_snapshot(&snap.snapshot_id).await.unwrap();
    assert_eq!(
        list(&s, ListSnapshotsRequest::default())
            .await
            .entries
            .len(),
        total
    );
    Outcome::Pass
}

async fn list_pages(s: Ctx) -> Outcome {
    skip_unless!(has_list(&s).await, "ListSnapshots not supported");
    let (min, max) = (5, 2);
    let initial = list(&s, ListSnapshotsRequest::default())
        .await
        .entries
        .len();
    let mut total = initial;
    if initial < min {
        for i in 1..=(min - initial) {
            let req = s.make_create_volume_req(&s.unique(&format!("volume{i}")));
            let (snap, _) = s
                .must_create_snapshot_from_volume(req, &s.unique(&format!("snapshot{i}")))
                .await;
            verify_snapshot(&snap);
        }
        total = min;
    }
    let first = list(
        &s,
        ListSnapshotsRequest {
            max_entries: max as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(first.entries.len(), max);
    // The token without max_entries: all the rest at once.
    let rest = list(
        &s,
        ListSnapshotsRequest {
            starting_token: first.next_token,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest.entries.len(), total - max);
    Outcome::Pass
}

async fn has_snapshots(s: &Ctx) -> bool {
    s.controller_has(CtrlRpc::CreateDeleteSnapshot).await
}

async fn delete_no_id(s: Ctx) -> Outcome {
    skip_unless!(has_snapshots(&s).await, "DeleteSnapshot not supported");
    let r =
        s.c.clone()
            .delete_snapshot(DeleteSnapshotRequest::default())
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn delete_invalid_id(s: Ctx) -> Outcome {
    skip_unless!(has_snapshots(&s).await, "DeleteSnapshot not supported");
    s.delete_snapshot("reallyfakesnapshotid").await.unwrap();
    Outcome::Pass
}

async fn delete_plain(s: Ctx) -> Outcome {
    skip_unless!(has_snapshots(&s).await, "DeleteSnapshot not supported");
    let v = s
        .create_volume(s.make_create_volume_req(&s.unique("DeleteSnapshot-volume-1")))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    s.must_create_snapshot(
        s.make_create_snapshot_req(&s.unique("DeleteSnapshot-snapshot-1"), &v.volume_id),
    )
    .await;
    Outcome::Pass
}

async fn create_no_name(s: Ctx) -> Outcome {
    skip_unless!(has_snapshots(&s).await, "CreateSnapshot not supported");
    let r = s
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: "testId".into(),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn create_no_source(s: Ctx) -> Outcome {
    skip_unless!(has_snapshots(&s).await, "CreateSnapshot not supported");
    let r = s
        .create_snapshot(CreateSnapshotRequest {
            name: "name".into(),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn create_twice(s: Ctx) -> Outcome {
    skip_unless!(has_snapshots(&s).await, "CreateSnapshot not supported");
    let v = s
        .must_create_volume(s.make_create_volume_req(&s.unique("CreateSnapshot-volume-1")))
        .await;
    let req = s.make_create_snapshot_req(&s.unique("CreateSnapshot-snapshot-1"), &v.volume_id);
    s.must_create_snapshot(req.clone()).await;
    s.must_create_snapshot(req).await;
    Outcome::Pass
}

async fn create_other_source(s: Ctx) -> Outcome {
    skip_unless!(has_snapshots(&s).await, "CreateSnapshot not supported");
    let name = s.unique("CreateSnapshot-snapshot-2");
    let req = s.make_create_volume_req(&s.unique("CreateSnapshot-volume-2"));
    s.must_create_snapshot_from_volume(req, &name).await;
    let v2 = s
        .must_create_volume(s.make_create_volume_req(&s.unique("CreateSnapshot-volume-3")))
        .await;
    let r = s
        .create_snapshot(s.make_create_snapshot_req(&name, &v2.volume_id))
        .await;
    expect_code(r, Code::AlreadyExists);
    Outcome::Pass
}

async fn create_max_name(s: Ctx) -> Outcome {
    skip_unless!(has_snapshots(&s).await, "CreateSnapshot not supported");
    let v = s
        .must_create_volume(
            s.make_create_volume_req(&s.unique("CreateSnapshot-volume-maxlen-name")),
        )
        .await;
    let name = s.unique_with_length("CreateSnapshot-snapshot-maxlen", super::MAX_NAME_LENGTH);
    let req = s.make_create_snapshot_req(&name, &v.volume_id);
    s.must_create_snapshot(req.clone()).await;
    s.must_create_snapshot(req).await;
    Outcome::Pass
}

/// csi-sanity's `MakeExpandVolumeReq`.
pub fn make_expand_req(s: &Ctx, id: &str) -> ControllerExpandVolumeRequest {
    ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: s.config.expand_size,
            limit_bytes: 0,
        }),
        volume_capability: Some(s.writer()),
        ..Default::default()
    }
}

async fn has_expand(s: &Ctx) -> bool {
    s.controller_has(CtrlRpc::ExpandVolume).await
}

async fn expand_no_id(s: Ctx) -> Outcome {
    skip_unless!(has_expand(&s).await, "ControllerExpandVolume not supported");
    let r =
        s.c.clone()
            .controller_expand_volume(make_expand_req(&s, ""))
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn expand_no_range(s: Ctx) -> Outcome {
    skip_unless!(has_expand(&s).await, "ControllerExpandVolume not supported");
    let r =
        s.c.clone()
            .controller_expand_volume(ControllerExpandVolumeRequest::default())
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn expand_works(s: Ctx) -> Outcome {
    skip_unless!(has_expand(&s).await, "ControllerExpandVolume not supported");
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("sanity-expand-volume")))
        .await;
    let r =
        s.c.clone()
            .controller_expand_volume(make_expand_req(&s, &v.volume_id))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(r.capacity_bytes, s.config.expand_size);
    Outcome::Pass
}

async fn modify_gated(s: Ctx) -> Outcome {
    gated(
        s.controller_has(CtrlRpc::ModifyVolume).await,
        "MODIFY_VOLUME",
    )
}

async fn group_gated(s: Ctx) -> Outcome {
    gated(
        s.plugin_has(PluginService::GroupControllerService).await,
        "GROUP_CONTROLLER_SERVICE",
    )
}
