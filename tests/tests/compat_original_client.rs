//! The original Convoy 0.5.2 client against our daemon: its exact requests (body `null` on
//! `GET`s, `Verbose: false`, `User-Agent: Convoy-Client/1`), replayed for every command, and
//! the answers compared with what the original daemon answered (`tests/fixtures/convoy-0.5.2/api`,
//! recorded from the original itself): keys and JSON types a superset of the recording, bare
//! values where it answered bare values, errors in a form its client prints once.
//!
//! The daemon here runs the vfs driver, so keys that only the devicemapper driver has
//! (`DevID`, `Device`, `Filesystem`, `Size` and the `devicemapper` info section) are left out
//! of the comparison; `cli_devicemapper` covers those on a real pool.

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::TestDaemon;
use serde_json::Value;

/// The keys only a devicemapper volume or snapshot has in `DriverInfo`.
const DM_ONLY: &[&str] = &["DevID", "Device", "Filesystem", "Size", "MountPoint"];

/// [`DM_ONLY`], and `Snapshots` (keyed by names that differ; compared one by one).
const VOLUME_SKIP: &[&str] = &[
    "DevID",
    "Device",
    "Filesystem",
    "Size",
    "MountPoint",
    "Snapshots",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/convoy-0.5.2")
        .join(name)
}

fn recorded(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("api/{name}"))).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// One request as the original client sends it; the status, content type and body.
fn original(d: &TestDaemon, method: &str, path: &str, body: &str) -> (u16, String) {
    let client = convoy_api::Client::new(&d.socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answer = runtime
        .block_on(client.raw_as("Convoy-Client/1", method, path, body.to_string()))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (
        answer.status,
        String::from_utf8(answer.body.to_vec()).expect("UTF-8 answer"),
    )
}

/// What the original CLI prints for an answer (its cli-transcript.txt): the body of a success
/// as is, an error as `{"Error": "Error response from server, <body>"}`.
fn printed(status: u16, body: &str) -> String {
    if status == 200 {
        body.to_string()
    } else {
        let message = format!("Error response from server, {body}");
        serde_json::to_string(&serde_json::json!({ "Error": message })).unwrap()
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of `want` (recursively for objects, except under `skip` keys) is in `got` with
/// the same JSON type; `where_` names the place for the failure message.
fn assert_superset(where_: &str, want: &Value, got: &Value, skip: &[&str]) {
    let (Value::Object(want), Value::Object(got)) = (want, got) else {
        panic!("{where_}: expected objects, got {want} and {got}");
    };
    for (key, w) in want {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let g = got
            .get(key)
            .unwrap_or_else(|| panic!("{where_}: key {key} missing in {got:?}"));
        assert_eq!(
            json_type(w),
            json_type(g),
            "{where_}.{key}: type differs: recorded {w}, ours {g}"
        );
        if let (Value::Object(_), Value::Object(_)) = (w, g) {
            assert_superset(&format!("{where_}.{key}"), w, g, skip);
        }
    }
}

/// Go's `time.RubyDate`, as the original printed every time: `Tue Dec 01 22:08:32 +0000 2026`.
fn assert_ruby_date(what: &str, text: &str) {
    let parts: Vec<&str> = text.split(' ').collect();
    let ok = parts.len() == 6
        && parts[0].len() == 3
        && parts[1].len() == 3
        && parts[2].len() == 2
        && parts[3].len() == 8
        && parts[4] == "+0000"
        && parts[5].len() == 4;
    assert!(ok, "{what}: {text:?} is not in the RubyDate form");
}

#[test]
fn the_original_client_gets_the_original_daemons_answers() {
    let d = TestDaemon::start(&[]);

    // info: body `null`; General a superset with DriverList a list and the booleans.
    let (status, body) = original(&d, "GET", "/v1/info", "null");
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    let want = recorded("info.json");
    assert_superset("info.General", &want["General"], &info["General"], &[]);
    assert_eq!(info["General"]["DriverList"], serde_json::json!(["vfs"]));

    // create, Verbose false: the bare name, as the original printed it.
    let (status, body) = original(
        &d,
        "POST",
        "/v1/volumes/create",
        r#"{"Name":"o-vol","DriverName":"","Size":0,"BackupURL":"","DriverVolumeID":"","Type":"","IOPS":0,"PrepareForVM":false,"Verbose":false}"#,
    );
    assert_eq!((status, printed(status, &body)), (200, "o-vol".to_string()));

    // mount: the bare mount point.
    let (status, mount_point) = original(
        &d,
        "POST",
        "/v1/volumes/mount",
        r#"{"VolumeName":"o-vol","MountPoint":"","Verbose":false}"#,
    );
    assert_eq!(status, 200, "{mount_point}");
    assert!(Path::new(&mount_point).is_dir(), "{mount_point:?}");

    // snapshot create: the bare name.
    let (status, body) = original(
        &d,
        "POST",
        "/v1/snapshots/create",
        r#"{"Name":"o-s1","VolumeName":"o-vol","Verbose":false}"#,
    );
    assert_eq!((status, body.as_str()), (200, "o-s1"));

    // Verbose true: the JSON object, as before.
    let (status, body) = original(
        &d,
        "POST",
        "/v1/snapshots/create",
        r#"{"Name":"o-s2","VolumeName":"o-vol","Verbose":true}"#,
    );
    assert_eq!(status, 200, "{body}");
    let snap: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snap["Name"], "o-s2");

    // list: body `null`; volume and snapshot keys a superset of the recording's.
    let (status, body) = original(&d, "GET", "/v1/volumes/list", "null");
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let want = recorded("list.json");
    let want_volume = &want["o-vol"];
    let got_volume = &list["o-vol"];
    assert_superset("list.o-vol", want_volume, got_volume, VOLUME_SKIP);
    assert_superset(
        "list.o-vol.Snapshots.o-s1",
        &want_volume["Snapshots"]["o-s1"],
        &got_volume["Snapshots"]["o-s1"],
        DM_ONLY,
    );
    assert_eq!(got_volume["DriverInfo"]["VolumeName"], "o-vol");
    assert_eq!(got_volume["DriverInfo"]["Driver"], "vfs");
    let s1 = &got_volume["Snapshots"]["o-s1"]["DriverInfo"];
    assert_eq!(
        (&s1["SnapshotName"], &s1["UUID"], &s1["VolumeUUID"]),
        (
            &Value::from("o-s1"),
            &Value::from("o-s1"),
            &Value::from("o-vol")
        )
    );
    assert_ruby_date(
        "VolumeCreatedAt",
        got_volume["DriverInfo"]["VolumeCreatedAt"]
            .as_str()
            .unwrap(),
    );

    // inspect and snapshot inspect.
    let (status, body) = original(&d, "GET", "/v1/volumes/", r#"{"VolumeName":"o-vol"}"#);
    assert_eq!(status, 200, "{body}");
    let inspect: Value = serde_json::from_str(&body).unwrap();
    let want = recorded("inspect.json");
    assert_superset("inspect", &want, &inspect, VOLUME_SKIP);
    assert_eq!(inspect["MountPoint"], mount_point.as_str());
    let (status, body) = original(&d, "GET", "/v1/snapshots/", r#"{"SnapshotName":"o-s1"}"#);
    assert_eq!(status, 200, "{body}");
    let snapshot: Value = serde_json::from_str(&body).unwrap();
    assert_superset(
        "snapshot inspect",
        &recorded("snapshot-inspect.json"),
        &snapshot,
        DM_ONLY,
    );

    // backup create: the bare URL; list and inspect a superset, times in the RubyDate form.
    let store = d.dir.path().join("store-orig");
    let dest = format!("vfs://{}", store.display());
    let (status, url) = original(
        &d,
        "POST",
        "/v1/backups/create",
        &format!(r#"{{"URL":"{dest}","SnapshotName":"o-s1","Verbose":false}}"#),
    );
    assert_eq!(status, 200, "{url}");
    assert!(url.starts_with(&format!("{dest}?backup=backup-")), "{url}");
    assert!(url.ends_with("&volume=o-vol"), "{url}");
    let (status, body) = original(
        &d,
        "GET",
        "/v1/backups/list",
        &format!(r#"{{"URL":"{dest}","VolumeName":"","SnapshotName":""}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let backups: Value = serde_json::from_str(&body).unwrap();
    let want = recorded("backup-list.json");
    let want_one = want.as_object().unwrap().values().next().unwrap();
    let got_one = &backups[url.as_str()];
    assert_superset("backup list", want_one, got_one, &[]);
    assert_ruby_date(
        "backup CreatedTime",
        got_one["CreatedTime"].as_str().unwrap(),
    );
    assert_eq!(
        got_one["BackupName"].as_str(),
        url.split("backup=")
            .nth(1)
            .and_then(|r| r.split('&').next())
    );

    // The URL as the original printed it (Go's `\u0026`), accepted by inspect and restore.
    let pasted = url.replace('&', "\\u0026");
    let (status, body) = original(
        &d,
        "GET",
        "/v1/backups/inspect",
        &serde_json::to_string(&serde_json::json!({ "URL": pasted })).unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    let inspected: Value = serde_json::from_str(&body).unwrap();
    assert_superset(
        "backup inspect",
        &recorded("backup-inspect.json"),
        &inspected,
        &[],
    );
    let (status, body) = original(
        &d,
        "POST",
        "/v1/volumes/create",
        &serde_json::to_string(&serde_json::json!({
            "Name": "o-r", "DriverName": "", "Size": 0, "BackupURL": pasted, "Verbose": false
        }))
        .unwrap(),
    );
    assert_eq!((status, body.as_str()), (200, "o-r"));

    // Errors: plain text, which the original client wraps once.
    let (status, body) = original(
        &d,
        "POST",
        "/v1/volumes/create",
        r#"{"Name":"o-vol","Verbose":false}"#,
    );
    assert_eq!(status, 409);
    assert!(
        body.ends_with('\n') && !body.contains("\"Error\""),
        "{body:?}"
    );
    let shown = printed(status, &body);
    assert_eq!(shown.matches("Error").count(), 2, "{shown}");
    assert!(shown.contains("o-vol"), "{shown}");

    // umount and delete print nothing the original client shows (it ignores the body).
    let (status, _) = original(
        &d,
        "POST",
        "/v1/volumes/umount",
        r#"{"VolumeName":"o-vol"}"#,
    );
    assert_eq!(status, 200);
    let (status, _) = original(
        &d,
        "DELETE",
        "/v1/backups",
        &serde_json::to_string(&serde_json::json!({ "URL": pasted })).unwrap(),
    );
    assert_eq!(status, 200);

    // Another version of its client library is refused as the original daemon did.
    let client = convoy_api::Client::new(&d.socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime
        .block_on(client.raw_as("Convoy-Client/9", "GET", "/v1/info", "null"))
        .unwrap();
    assert_eq!(answer.status, 404);
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        "client version 9 doesn't match with server 1\n"
    );
}

#[test]
fn other_clients_still_get_json_errors_and_json_answers() {
    let d = TestDaemon::start(&[]);
    // No Verbose field: the JSON object (our client, curl scripts).
    let (status, body) = d.raw("POST", "/v1/volumes/create", r#"{"Name":"j1"}"#);
    assert_eq!((status, body["Name"].clone()), (200, Value::from("j1")));
    let (status, body) = d.raw("POST", "/v1/volumes/create", r#"{"Name":"j1"}"#);
    assert_eq!(status, 409);
    assert!(body["Error"].as_str().unwrap().contains("j1"), "{body}");
    // `null` is an empty request for everyone.
    let (status, body) = d.raw("GET", "/v1/info", "null");
    assert_eq!(status, 200, "{body}");
}
