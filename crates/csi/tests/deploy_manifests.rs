//! The Kubernetes manifests in `deploy/kubernetes/` parse, name the driver, the standard
//! sidecar images and one CSI socket consistently, and pass convoyd only flags it has.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use serde_yaml_ng::Value;

fn manifests() -> BTreeMap<String, Vec<Value>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
                .map(|d| {
                    serde::Deserialize::deserialize(d)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                })
                .collect();
            all.insert(
                path.file_name().unwrap().to_string_lossy().into_owned(),
                docs,
            );
        }
    }
    all
}

fn of_kind(all: &BTreeMap<String, Vec<Value>>, kind: &str) -> Vec<Value> {
    all.values()
        .flatten()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .cloned()
        .collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The flags `convoyd` takes (its `Cli`: socket, debug, the daemon's and the CSI flags).
#[derive(Debug, Parser)]
struct Convoyd {
    #[arg(short = 's', long)]
    socket: Option<PathBuf>,
    #[arg(long)]
    debug: bool,
    #[command(flatten)]
    daemon: convoy_daemon::DaemonArgs,
    #[command(flatten)]
    csi: convoy_csi::launch::CsiArgs,
}

#[test]
fn manifests_name_the_driver_images_and_sockets() {
    let all = manifests();
    for file in [
        "csi-driver.yaml",
        "node.yaml",
        "rbac.yaml",
        "storageclass.yaml",
        "snapshotclass.yaml",
    ] {
        assert!(
            all.contains_key(file),
            "deploy/kubernetes/{file} is missing"
        );
    }
    let drivers = of_kind(&all, "CSIDriver");
    assert_eq!(drivers.len(), 1);
    assert_eq!(
        drivers[0]["metadata"]["name"].as_str(),
        Some(convoy_csi::PLUGIN_NAME)
    );
    assert_eq!(drivers[0]["spec"]["attachRequired"].as_bool(), Some(false));

    let sets = of_kind(&all, "DaemonSet");
    assert_eq!(sets.len(), 1);
    let pod = &sets[0]["spec"]["template"]["spec"];
    let plugin_dir = format!("/var/lib/kubelet/plugins/{}", convoy_csi::PLUGIN_NAME);
    let volumes = pod["volumes"].as_sequence().unwrap();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .and_then(|v| v["hostPath"]["path"].as_str())
            .unwrap_or_else(|| panic!("no hostPath volume {name}"))
            .to_string()
    };
    assert_eq!(host_path("plugin-dir"), plugin_dir);
    assert_eq!(
        host_path("registration-dir"),
        "/var/lib/kubelet/plugins_registry"
    );

    let containers = pod["containers"].as_sequence().unwrap();
    let mut sidecars = BTreeMap::new();
    for c in containers {
        let name = c["name"].as_str().unwrap().to_string();
        let image = c["image"].as_str().unwrap().to_string();
        let args = strs(&c["args"]);
        // Every container reaches the CSI socket through the plugin dir mounted at /csi.
        let mounts = c["volumeMounts"].as_sequence().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["name"].as_str() == Some("plugin-dir")
                    && m["mountPath"].as_str() == Some("/csi")),
            "{name} does not mount the plugin dir at /csi"
        );
        if name == "convoy" {
            let mut argv = vec!["convoyd".to_string()];
            argv.extend(args.iter().map(|a| a.replace("$(NODE_NAME)", "node-1")));
            let cli =
                Convoyd::try_parse_from(&argv).unwrap_or_else(|e| panic!("convoyd {argv:?}: {e}"));
            let csi = cli.csi.options().unwrap().expect("--csi-endpoint is set");
            assert_eq!(csi.socket, PathBuf::from("/csi/csi.sock"));
            assert_eq!(csi.node_id, "node-1");
            assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(true));
            let kubelet = mounts
                .iter()
                .find(|m| m["mountPath"].as_str() == Some("/var/lib/kubelet"))
                .expect("the kubelet dir is mounted");
            assert_eq!(kubelet["mountPropagation"].as_str(), Some("Bidirectional"));
            continue;
        }
        assert!(
            args.contains(&"--csi-address=/csi/csi.sock".to_string()),
            "{name}: {args:?}"
        );
        sidecars.insert(name, (image, args));
    }
    let expected = [
        (
            "node-driver-registrar",
            "registry.k8s.io/sig-storage/csi-node-driver-registrar:v",
        ),
        (
            "csi-provisioner",
            "registry.k8s.io/sig-storage/csi-provisioner:v",
        ),
        (
            "csi-snapshotter",
            "registry.k8s.io/sig-storage/csi-snapshotter:v",
        ),
        ("csi-resizer", "registry.k8s.io/sig-storage/csi-resizer:v"),
    ];
    for (name, image) in expected {
        let (got, _) = sidecars
            .get(name)
            .unwrap_or_else(|| panic!("no {name} sidecar"));
        assert!(got.starts_with(image), "{name}: {got}");
    }
    let registrar = &sidecars["node-driver-registrar"].1;
    assert!(registrar.contains(&format!(
        "--kubelet-registration-path={plugin_dir}/csi.sock"
    )));
    let provisioner = &sidecars["csi-provisioner"].1;
    assert!(provisioner.contains(&"--node-deployment=true".to_string()));

    for class in of_kind(&all, "StorageClass") {
        assert_eq!(class["provisioner"].as_str(), Some(convoy_csi::PLUGIN_NAME));
        for (key, _) in class["parameters"].as_mapping().unwrap() {
            let key = key.as_str().unwrap();
            let known = [
                convoy_csi::PARAM_DRIVER,
                convoy_csi::PARAM_FS_TYPE,
                convoy_csi::PARAM_BACKUP_URL,
                convoy_csi::PARAM_S3_ENDPOINT,
            ];
            assert!(
                known.contains(&key) || key.starts_with("csi.storage.k8s.io/"),
                "StorageClass parameter {key} is not one the driver takes"
            );
        }
    }
    let snapshot_classes = of_kind(&all, "VolumeSnapshotClass");
    assert_eq!(snapshot_classes.len(), 1);
    assert_eq!(
        snapshot_classes[0]["driver"].as_str(),
        Some(convoy_csi::PLUGIN_NAME)
    );
}
