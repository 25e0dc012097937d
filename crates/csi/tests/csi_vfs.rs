//! The CSI services through a real tonic client over the unix socket, against a daemon with the
//! vfs driver (host tier): identity, controller volumes and snapshots, idempotency, error
//! codes, pagination (the Node service: `csi_node_vfs.rs`).

mod support;

use convoy_csi::pb::*;
use support::{block_cap, create, mount_cap, Server, NODE};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_answers_name_capabilities_and_probe() {
    let server = Server::vfs().await;
    let mut id = server.identity().await;
    let info = id
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, convoy_csi::PLUGIN_NAME);
    assert!(!info.vendor_version.is_empty());
    let caps = id
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    use plugin_capability::service::Type as S;
    assert!(services.contains(&(S::ControllerService as i32)));
    assert!(services.contains(&(S::VolumeAccessibilityConstraints as i32)));
    let probe = id.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));

    let mut node = server.node().await;
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, NODE);
    assert_eq!(info.max_volumes_per_node, 7);
    let segments = info.accessible_topology.unwrap().segments;
    assert_eq!(
        segments.get(convoy_csi::TOPOLOGY_KEY).map(String::as_str),
        Some(NODE)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_is_idempotent_and_conflicts_are_already_exists() {
    let server = Server::vfs().await;
    let mut c = server.controller().await;
    let first = c
        .create_volume(create("pvc-one", 0, mount_cap("")))
        .await
        .unwrap()
        .into_inner();
    let volume = first.volume.unwrap();
    assert_eq!(volume.volume_id, "pvc-one");
    assert_eq!(
        volume.accessible_topology[0]
            .segments
            .get(convoy_csi::TOPOLOGY_KEY)
            .map(String::as_str),
        Some(NODE)
    );
    // The same request again: the same volume.
    let again = c
        .create_volume(create("pvc-one", 0, mount_cap("")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.volume.unwrap().volume_id, "pvc-one");
    // The same name with another capacity: ALREADY_EXISTS, and the volume is untouched.
    let conflict = c
        .create_volume(create("pvc-one", 1 << 30, mount_cap("")))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    // The daemon's own API sees the CSI volume (one process, one pool).
    let list = server.v1_get("/v1/volumes/list").await;
    assert!(list.contains("\"pvc-one\""), "{list}");
    // A name that is not a convoy name maps to a stable id.
    let odd = c
        .create_volume(create("odd name/with slash", 0, mount_cap("")))
        .await
        .unwrap();
    let odd_id = odd.into_inner().volume.unwrap().volume_id;
    assert_eq!(odd_id, convoy_csi::util::convoy_name("odd name/with slash"));
    let odd_again = c
        .create_volume(create("odd name/with slash", 0, mount_cap("")))
        .await
        .unwrap();
    assert_eq!(odd_again.into_inner().volume.unwrap().volume_id, odd_id);
    // Delete twice: both succeed; an unknown id succeeds too.
    for id in ["pvc-one", "pvc-one", "never-made", odd_id.as_str()] {
        c.delete_volume(DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let list = server.v1_get("/v1/volumes/list").await;
    assert!(!list.contains("pvc-one"), "{list}");
    // Gone, the name can be made again with other parameters.
    c.create_volume(create("pvc-one", 1 << 30, mount_cap("")))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_errors_use_the_spec_codes() {
    let server = Server::vfs().await;
    let mut c = server.controller().await;
    let code =
        |r: Result<tonic::Response<CreateVolumeResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(c.create_volume(create("", 0, mount_cap(""))).await),
        Code::InvalidArgument
    );
    let mut no_caps = create("pvc-x", 0, mount_cap(""));
    no_caps.volume_capabilities.clear();
    assert_eq!(code(c.create_volume(no_caps).await), Code::InvalidArgument);
    // vfs volumes are directories: raw block and filesystem types are refused.
    assert_eq!(
        code(c.create_volume(create("pvc-x", 0, block_cap())).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.create_volume(create("pvc-x", 0, mount_cap("xfs"))).await),
        Code::InvalidArgument
    );
    let mut multi = create("pvc-x", 0, mount_cap(""));
    multi.volume_capabilities[0].access_mode = Some(volume_capability::AccessMode {
        mode: volume_capability::access_mode::Mode::MultiNodeMultiWriter as i32,
    });
    assert_eq!(code(c.create_volume(multi).await), Code::InvalidArgument);
    let mut bad_param = create("pvc-x", 0, mount_cap(""));
    bad_param.parameters.insert("colour".into(), "blue".into());
    assert_eq!(
        code(c.create_volume(bad_param).await),
        Code::InvalidArgument
    );
    let mut bad_range = create("pvc-x", 2 << 30, mount_cap(""));
    bad_range.capacity_range.as_mut().unwrap().limit_bytes = 1 << 30;
    assert_eq!(code(c.create_volume(bad_range).await), Code::OutOfRange);
    let mut elsewhere = create("pvc-x", 0, mount_cap(""));
    elsewhere.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![Topology {
            segments: [(convoy_csi::TOPOLOGY_KEY.to_string(), "node-b".to_string())].into(),
        }],
        preferred: vec![],
    });
    assert_eq!(
        code(c.create_volume(elsewhere).await),
        Code::ResourceExhausted
    );
    let mut from_nothing = create("pvc-x", 0, mount_cap(""));
    from_nothing.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: "no-such-snap".into(),
            },
        )),
    });
    assert_eq!(code(c.create_volume(from_nothing).await), Code::NotFound);
    // None of the refused requests left a volume behind.
    let list = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.entries.is_empty(), "{list:?}");

    let err = c
        .delete_volume(DeleteVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "nope".into(),
            volume_capabilities: vec![mount_cap("")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: "nope".into(),
            name: "snap-x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .create_snapshot(CreateSnapshotRequest {
            name: "snap-x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: "nope".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 30,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: "nope".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_list_in_pages_and_clone() {
    let server = Server::vfs().await;
    let mut c = server.controller().await;
    c.create_volume(create("pvc-src", 0, mount_cap("")))
        .await
        .unwrap();
    c.create_volume(create("pvc-other", 0, mount_cap("")))
        .await
        .unwrap();
    let mut made = Vec::new();
    for i in 0..5 {
        let req = CreateSnapshotRequest {
            source_volume_id: "pvc-src".into(),
            name: format!("snap-{i}"),
            ..Default::default()
        };
        let s = c
            .create_snapshot(req.clone())
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        assert!(s.ready_to_use);
        assert_eq!(s.source_volume_id, "pvc-src");
        assert!(
            s.creation_time.is_some_and(|t| t.seconds > 1_600_000_000),
            "{s:?}"
        );
        // Repeated: the same snapshot.
        let again = c
            .create_snapshot(req)
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        assert_eq!(again, s);
        made.push(s.snapshot_id);
    }
    let conflict = c
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: "pvc-other".into(),
            name: "snap-0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    // Pages of two: 2 + 2 + 1, every snapshot once.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_snapshots(ListSnapshotsRequest {
                max_entries: 2,
                starting_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| e.snapshot.unwrap().snapshot_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!((pages, seen.clone()), (3, made.clone()));
    let bad = c
        .list_snapshots(ListSnapshotsRequest {
            starting_token: "zzz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::Aborted);
    let one = c
        .list_snapshots(ListSnapshotsRequest {
            snapshot_id: "snap-3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.entries.len(), 1);
    let none = c
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: "pvc-other".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.entries.is_empty());

    // A volume with snapshots is FAILED_PRECONDITION to delete (its snapshots go with it).
    let busy = c
        .delete_volume(DeleteVolumeRequest {
            volume_id: "pvc-src".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition);

    // A clone from a snapshot names its source.
    let mut clone = create("pvc-clone", 0, mount_cap(""));
    clone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: "snap-2".into(),
            },
        )),
    });
    let v = c
        .create_volume(clone.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.content_source, clone.volume_content_source);
    let got = c
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: "pvc-clone".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.volume.unwrap().content_source,
        clone.volume_content_source
    );
    assert!(!got.status.unwrap().volume_condition.unwrap().abnormal);

    for s in &made {
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: s.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.delete_volume(DeleteVolumeRequest {
        volume_id: "pvc-src".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let cap = c
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cap.available_capacity > 0, "{cap:?}");
    let elsewhere = c
        .get_capacity(GetCapacityRequest {
            accessible_topology: Some(Topology {
                segments: [(convoy_csi::TOPOLOGY_KEY.to_string(), "node-b".to_string())].into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(elsewhere.available_capacity, 0);
    let listed = c
        .list_volumes(ListVolumesRequest {
            max_entries: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    assert!(!listed.next_token.is_empty());
    let valid = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-clone".into(),
            volume_capabilities: vec![mount_cap("")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(valid.confirmed.is_some());
    let refused = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-clone".into(),
            volume_capabilities: vec![block_cap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(refused.confirmed.is_none() && !refused.message.is_empty());
    server.stop().await;
}
