//! Our `convoy` client against the original Convoy 0.5.2 daemon (hosts mid-migration run
//! both). The daemon here is a stand-in on a unix socket that answers as the original did — its
//! recorded JSON (`tests/fixtures/convoy-0.5.2/api`, text/plain like the original), bare values
//! for requests whose `Verbose` is false, plain-text errors — and the client's output is compared
//! with what the original CLI printed (`cli-transcript.txt`).

mod cli_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::Value;

const MOUNT: &str = "/mnt/peer-scratch/root-orig/devicemapper/mounts/o-vol";
const BACKUP_URL: &str =
    "vfs:///mnt/peer-scratch/store-orig?backup=backup-333a14cee2d5498a\\u0026volume=o-vol";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/convoy-0.5.2/api")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: String,
}

/// What the original daemon answers to `seen`: (status, body), always text/plain.
fn answer(seen: &Seen) -> (u16, String) {
    let body: Value = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
    let verbose = body["Verbose"].as_bool().unwrap_or(false);
    let route = seen.path.split('?').next().unwrap_or_default();
    match (seen.method.as_str(), route) {
        ("GET", "/v1/info") => (200, fixture("info.json")),
        ("GET", "/v1/volumes/list") => (200, fixture("list.json")),
        ("GET", "/v1/volumes/") if body["VolumeName"] == "o-vol" => (200, fixture("inspect.json")),
        ("GET", "/v1/volumes/") => (404, "Volume not found.\n".into()),
        ("GET", "/v1/snapshots/") => (200, fixture("snapshot-inspect.json")),
        ("GET", "/v1/backups/list") => (200, fixture("backup-list.json")),
        ("GET", "/v1/backups/inspect") => (200, fixture("backup-inspect.json")),
        ("POST", "/v1/volumes/create") if body["Name"] == "y-v1" => {
            (500, "Volume y-v1 already exists\n".into())
        }
        ("POST", "/v1/volumes/create") if verbose => {
            // The new volume, in the form of the recorded one.
            let mut v: Value = serde_json::from_str(&fixture("inspect.json")).unwrap();
            v["Name"] = body["Name"].clone();
            v["DriverInfo"]["VolumeName"] = body["Name"].clone();
            (200, v.to_string())
        }
        ("POST", "/v1/volumes/create") => (
            200,
            body["Name"]
                .as_str()
                .unwrap_or("volume-0123456789abcdef")
                .into(),
        ),
        ("POST", "/v1/volumes/mount") => (200, MOUNT.into()),
        ("POST", "/v1/volumes/umount") => (200, String::new()),
        ("POST", "/v1/snapshots/create") => {
            (200, body["Name"].as_str().unwrap_or("snapshot-0").into())
        }
        ("POST", "/v1/backups/create") => (200, BACKUP_URL.into()),
        ("DELETE", "/v1/volumes/") if body["VolumeName"] == "y-v2" => (
            500,
            "Cannot delete volume y-v2, it hasn't been umounted\n".into(),
        ),
        (method, path) => (404, format!("Handler not found: {method} {path}")),
    }
}

/// The stand-in daemon: answers on `socket` until the test ends; records what it was asked.
fn original_daemon(socket: &Path) -> Arc<Mutex<Vec<Seen>>> {
    let listener = UnixListener::bind(socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
            );
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let request = Seen {
                method,
                path,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let (status, text) = answer(&request);
            log.lock().unwrap().push(request);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    seen
}

struct Client {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Client {
    fn new() -> Client {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("convoy.sock");
        let seen = original_daemon(&socket);
        Client {
            socket,
            _dir: dir,
            seen,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(cli_support::convoy_bin())
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Succeeds; answers standard output, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "convoy {args:?} against the original daemon failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("convoy {args:?}: {e}: {text}"))
    }

    fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

#[test]
fn our_client_prints_what_the_original_client_printed() {
    let c = Client::new();
    // The lines of cli-transcript.txt, against the same answers.
    assert_eq!(c.ok(&["create", "o-vol", "--size", "2G"]), "o-vol");
    let create: Value = serde_json::from_str(&c.last().body).unwrap();
    assert_eq!(create["Name"], "o-vol");
    assert_eq!(c.ok(&["mount", "o-vol"]), MOUNT);
    assert_eq!(
        c.ok(&["snapshot", "create", "o-vol", "--name", "o-s1"]),
        "o-s1"
    );
    assert_eq!(
        c.ok(&[
            "backup",
            "create",
            "o-s1",
            "--dest",
            "vfs:///mnt/peer-scratch/store-orig"
        ]),
        BACKUP_URL
    );
    assert_eq!(
        c.ok(&[
            "create",
            "o-r",
            "--backup",
            "vfs:///mnt/peer-scratch/store-orig?backup=backup-8f51603bef644b6e&volume=o-vol",
        ]),
        "o-r"
    );
    assert_eq!(c.ok(&["umount", "o-vol"]), "");

    // Errors: printed once as {"Error": ...}, exit status 1.
    for (args, message) in [
        (&["create", "y-v1"][..], "Volume y-v1 already exists"),
        (
            &["delete", "y-v2"][..],
            "Cannot delete volume y-v2, it hasn't been umounted",
        ),
        (&["inspect", "ghost"][..], "Volume not found."),
    ] {
        let out = c.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let error: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"));
        let text = error["Error"].as_str().unwrap();
        assert!(text.contains(message), "{args:?}: {text}");
        assert_eq!(text.matches(message).count(), 1, "{args:?}: {text}");
    }
}

#[test]
fn our_client_reads_the_original_daemons_json() {
    let c = Client::new();
    // info: DriverList is a list there.
    let info = c.json(&["info"]);
    assert_eq!(info["General"]["DefaultDriver"], "devicemapper", "{info}");
    assert_eq!(
        info["devicemapper"]["ThinpoolBlockSize"], "2097152",
        "{info}"
    );
    // list, inspect, snapshot inspect: the original's keys come through.
    let list = c.json(&["list"]);
    assert_eq!(list["o-vol"]["MountPoint"], MOUNT, "{list}");
    let inspect = c.json(&["inspect", "o-vol"]);
    assert_eq!(inspect["DriverInfo"]["DevID"], "1", "{inspect}");
    let snap = c.json(&["snapshot", "inspect", "o-s20"]);
    assert_eq!(snap["VolumeName"], "o-vol", "{snap}");
    // backup list / inspect: no BackupUUID there, and the \u0026 form of its URLs.
    let backups = c.json(&["backup", "list", "vfs:///mnt/peer-scratch/store-orig"]);
    let (url, backup) = backups.as_object().unwrap().iter().next().unwrap();
    assert!(url.contains("volume=o-vol"), "{url}");
    assert_eq!(backup["SnapshotName"], "o-s20", "{backups}");
    let inspect = c.json(&["backup", "inspect", url]);
    assert_eq!(inspect["VolumeName"], "o-vol", "{inspect}");
    // The requests were the original's: GETs under /v1, the client's version header.
    let seen = c.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.path.starts_with("/v1/")), "{seen:?}");
}
