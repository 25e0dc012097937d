//! Reliability suite, hostile input: bad names, sizes, URLs, driver options and malformed HTTP
//! bodies thrown at a real daemon (vfs driver) through the CLI, the `/v1` API and the Docker
//! plugin endpoints. Every input must be refused with an error that says what is wrong; the
//! daemon keeps serving; nothing is created inside or outside its directories.

mod cli_support;
#[path = "hostile/http_bodies.rs"]
mod http_bodies;
mod rel_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cli_support::{convoy_bin, TestDaemon};
use rel_support::{by_scale, rng, Figure};
use serde_json::{json, Value};

/// Every path under `dir` (relative), except the daemon's log.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "daemon.log") {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

/// One HTTP/1.1 request over the daemon's socket with raw body bytes; returns the status and
/// body. `None` when the daemon closed the connection without an answer (allowed only for
/// bodies over its limit).
fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(socket).expect("daemon socket accepts connections");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: convoy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A daemon refusing a huge body may close early; a broken pipe is then fine.
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Some((status, body))
}

/// Hostile names: path tricks, control characters, lengths around the limits, unicode, empty.
fn hostile_names(escape: &str) -> Vec<String> {
    let mut names: Vec<String> = [
        "a/b",
        "/etc",
        "..",
        ".",
        "../x",
        "./x",
        "x/..",
        "a/../../b",
        "-rf",
        ".hidden",
        "_x",
        "a b",
        "a\tb",
        "a\nb",
        "a\rb",
        "\u{1b}[31mred",
        "a\u{7f}b",
        "vol\u{0}x",
        "\u{0}",
        "ünïcödé",
        "日本語",
        "vol\u{200b}",
        "a\\b",
        "a:b",
        "a*b",
        "a?b",
        "%2e%2e",
        "x",
        "",
        " ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push(escape.to_string());
    names.push(format!("../../../../../../..{escape}"));
    for len in [65, 255, 256, 4096, 4097] {
        names.push("v".repeat(len));
    }
    names
}

/// Asserts `msg` is a real error message (not empty, not a panic, no internal leak).
fn clear(what: &str, msg: &str) {
    assert!(!msg.trim().is_empty(), "{what}: empty error message");
    assert!(
        !msg.contains("panicked") && !msg.contains("RUST_BACKTRACE"),
        "{what}: a panic as error: {msg}"
    );
}

struct Run {
    fig: Figure,
}

impl Run {
    fn input(&mut self) {
        self.fig.inputs += 1;
    }
    fn check(&mut self) {
        self.fig.checks += 1;
    }
    /// A CLI call that must fail with a clear JSON error.
    fn cli_refused(&mut self, d: &TestDaemon, args: &[&str], mentions: &[&str]) {
        self.input();
        let out = d.convoy(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "convoy {args:?} was accepted: {stdout}"
        );
        assert!(
            out.status.code().is_some(),
            "convoy {args:?} died of a signal"
        );
        let msg = match serde_json::from_str::<Value>(&stdout) {
            Ok(v) => v["Error"].as_str().unwrap_or_default().to_string(),
            Err(_) => stderr.to_string(), // clap's own usage errors go to stderr
        };
        clear(&format!("convoy {args:?}"), &msg);
        let lower = msg.to_lowercase();
        assert!(
            mentions.is_empty() || mentions.iter().any(|m| lower.contains(m)),
            "convoy {args:?}: error does not say what is wrong (expected one of {mentions:?}): {msg}"
        );
        self.check();
    }
    /// A `/v1` call that must be refused (4xx with an `Error`).
    fn api_refused(&mut self, d: &TestDaemon, method: &str, path: &str, body: &[u8]) {
        self.input();
        let (status, text) = http(&d.socket, method, path, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert!(
            (400..500).contains(&status),
            "{method} {path} {:?}: status {status}: {text}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: error answer is not JSON ({e}): {text}"));
        clear(
            &format!("{method} {path}"),
            v["Error"].as_str().unwrap_or(""),
        );
        self.check();
    }
    /// A Docker plugin call that must be refused (HTTP 200 with a non-empty `Err`, as dockerd
    /// expects, or a 4xx with an error for bodies that are not JSON).
    fn plugin_refused(&mut self, d: &TestDaemon, endpoint: &str, body: &[u8]) {
        self.input();
        let (status, text) = http(&d.socket, "POST", endpoint, body)
            .unwrap_or_else(|| panic!("{endpoint}: no answer"));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{endpoint}: answer is not JSON ({e}): {text}"));
        let err = v["Err"].as_str().or(v["Error"].as_str()).unwrap_or("");
        assert!(
            status == 200 || (400..500).contains(&status),
            "{endpoint}: status {status}: {text}"
        );
        assert!(
            !err.is_empty(),
            "{endpoint} {:?} was accepted: {text}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        clear(endpoint, err);
        self.check();
    }
    /// The daemon still answers and lists exactly `volumes`.
    fn alive(&mut self, d: &TestDaemon, volumes: &[&str]) {
        let list = d.json(&["list"]);
        let names: BTreeSet<String> = list
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let want: BTreeSet<String> = volumes.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, want, "volume list changed: {list}");
        self.check();
    }
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_hostile_names_sizes_urls_refused() {
    let mut run = Run {
        fig: Figure::new(
            "hostile-input",
            "names, sizes, URLs via CLI, /v1 and plugin",
        ),
    };
    guarded(&mut run, names_sizes_urls);
}

/// Runs `body`, emits the figure whatever happened, then lets a failure through.
fn guarded(run: &mut Run, body: fn(&mut Run)) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(run)));
    run.fig.emit();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn names_sizes_urls(run: &mut Run) {
    let d = TestDaemon::start(&[]);
    let mut r = rng("hostile-names");
    let escape_dir = tempfile::tempdir().unwrap();
    let escape = escape_dir.path().join(format!("escaped-{}", r.u32(..)));
    let escape_s = escape.to_str().unwrap().to_string();

    d.ok(&["create", "good1"]);
    d.ok(&["snapshot", "create", "good1", "--name", "snap1"]);
    let before = tree(d.dir.path());

    // Names through the CLI (argv cannot carry NUL: those go through the API below).
    for name in hostile_names(&escape_s) {
        if name.contains('\0') {
            continue;
        }
        let n = name.as_str();
        if !n.is_empty() {
            // An empty create name means "generate one"; not hostile.
            run.cli_refused(&d, &["create", n], &["name", "character", "long", "empty"]);
        }
        run.cli_refused(&d, &["inspect", n], &[]);
        run.cli_refused(&d, &["delete", n], &[]);
        run.cli_refused(&d, &["mount", n], &[]);
        run.cli_refused(&d, &["umount", n], &[]);
        if !n.is_empty() {
            // An empty snapshot name means "generate one", as in the original; not hostile.
            run.cli_refused(&d, &["snapshot", "create", "good1", "--name", n], &[]);
            run.cli_refused(&d, &["snapshot", "create", n], &[]);
        }
        run.cli_refused(&d, &["snapshot", "inspect", n], &[]);
        run.cli_refused(&d, &["snapshot", "delete", n], &[]);
    }
    run.alive(&d, &["good1"]);

    // Names through /v1 and the plugin, NUL included, as JSON strings.
    for name in hostile_names(&escape_s) {
        let n = json!(name).to_string();
        if !name.is_empty() {
            let body = format!(r#"{{"Name":{n}}}"#);
            run.api_refused(&d, "POST", "/v1/volumes/create", body.as_bytes());
            run.plugin_refused(&d, "/VolumeDriver.Create", body.as_bytes());
            let body = format!(r#"{{"Name":{n},"VolumeName":"good1"}}"#);
            run.api_refused(&d, "POST", "/v1/snapshots/create", body.as_bytes());
        }
        let body = format!(r#"{{"VolumeName":{n}}}"#);
        run.api_refused(&d, "DELETE", "/v1/volumes/", body.as_bytes());
        run.api_refused(&d, "POST", "/v1/volumes/mount", body.as_bytes());
        run.api_refused(&d, "GET", "/v1/volumes/", body.as_bytes());
        let body = format!(r#"{{"Name":{n},"ID":"{}"}}"#, cli_support::docker_id());
        run.plugin_refused(&d, "/VolumeDriver.Mount", body.as_bytes());
        run.plugin_refused(&d, "/VolumeDriver.Path", body.as_bytes());
        run.plugin_refused(&d, "/VolumeDriver.Get", body.as_bytes());
        run.plugin_refused(&d, "/VolumeDriver.Remove", body.as_bytes());
    }
    run.alive(&d, &["good1"]);

    // Sizes: zero, negative, absurd, garbage units.
    let sizes = [
        "0",
        "-1",
        "-1G",
        "1E",
        "16E",
        "1P",
        "18446744073709551616",
        "18446744073709551615T",
        "99999999999999999999999",
        "17179869184T",
        "1.5G",
        "0x10",
        "1e9",
        "10Q",
        "G",
        "",
        " ",
        "10 G",
        "+5G",
        "NaN",
        "∞",
        "1,000",
    ];
    for (i, size) in sizes.iter().enumerate() {
        let name = format!("sz{i}");
        run.cli_refused(&d, &["create", &name, "--size", size], &["size"]);
        if !size.trim().is_empty() {
            // A blank JSON Size means "unset" (the original's clients send it); not hostile.
            let body = json!({"Name": name, "Size": size}).to_string();
            run.api_refused(&d, "POST", "/v1/volumes/create", body.as_bytes());
        }
        let body = json!({"Name": name, "Opts": {"size": size}}).to_string();
        run.plugin_refused(&d, "/VolumeDriver.Create", body.as_bytes());
    }
    for size in [
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(true),
        json!([1]),
        json!({"G": 1}),
    ] {
        let body = json!({"Name": "szj", "Size": size}).to_string();
        run.api_refused(&d, "POST", "/v1/volumes/create", body.as_bytes());
    }
    let body = br#"{"Name":"szj","Size":18446744073709551616}"#;
    run.api_refused(&d, "POST", "/v1/volumes/create", body);
    run.alive(&d, &["good1"]);

    // Drivers and backup URLs.
    for driver in ["nosuch", "../vfs", "vfs/..", "VFS ", "devicemapper"] {
        run.cli_refused(&d, &["create", "drv1", "--driver", driver], &["driver"]);
    }
    let urls = [
        "",
        "vfs://",
        "vfs://relative/path",
        "vfs:///a/../b",
        "vfs:///../../etc",
        "s3://",
        "s3://UPPER",
        "s3://b@/x",
        "s3://ab/x",
        "s3://bucket/../x",
        "http://example.invalid/x",
        "file:///tmp",
        "/tmp/x",
        "vfs:///tmp?backup=x",
        "vfs:///tmp?backup=../x&volume=good1",
        "vfs:///tmp?backup=b1&volume=../../x",
        "vfs:///tmp?backup=b1&volume=good1&extra=1",
        "vfs:///nonexistent-dir/x?backup=b1&volume=good1",
    ];
    for url in urls {
        run.cli_refused(&d, &["create", "fromurl", "--backup", url], &[]);
        run.cli_refused(&d, &["backup", "inspect", url], &[]);
        run.cli_refused(&d, &["backup", "delete", url], &[]);
        if !url.contains('?') {
            run.cli_refused(&d, &["backup", "create", "snap1", "--dest", url], &[]);
            run.cli_refused(&d, &["backup", "list", url], &[]);
        }
        let body = json!({"Name": "fromurl2", "Opts": {"backup": url}}).to_string();
        if !url.is_empty() {
            run.plugin_refused(&d, "/VolumeDriver.Create", body.as_bytes());
        }
    }
    for opts in [
        json!({"bogus": "1"}),
        json!({"driver": "nosuch"}),
        json!({"size": "10G", "../x": "1"}),
        json!("size=10G"),
        json!(["size", "10G"]),
        json!({"size": 10}),
    ] {
        let body = json!({"Name": "optvol", "Opts": opts}).to_string();
        run.plugin_refused(&d, "/VolumeDriver.Create", body.as_bytes());
    }
    run.alive(&d, &["good1"]);

    let after = tree(d.dir.path());
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "hostile inputs created files: {new:?}");
    assert!(!escape.exists(), "{} was created", escape.display());
    assert_eq!(
        std::fs::read_dir(escape_dir.path()).unwrap().count(),
        0,
        "something was created beside the escape target"
    );
    run.check();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_hostile_daemon_options_refused() {
    let mut run = Run {
        fig: Figure::new(
            "hostile-input",
            "bad driver options and block sizes at daemon start",
        ),
    };
    guarded(&mut run, daemon_options);
}

fn daemon_options(run: &mut Run) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.img");
    let meta = dir.path().join("meta.img");
    for f in [&data, &meta] {
        std::fs::File::create(f).unwrap().set_len(64 << 20).unwrap();
    }
    let dm = |extra: &str| {
        vec![
            "--drivers".to_string(),
            "devicemapper".to_string(),
            "--driver-opts".to_string(),
            format!("dm.datadev={}", data.display()),
            "--driver-opts".to_string(),
            format!("dm.metadatadev={}", meta.display()),
            "--driver-opts".to_string(),
            extra.to_string(),
        ]
    };
    let mut cases: Vec<(Vec<String>, &[&str])> = Vec::new();
    for bs in [
        "0",
        "-1",
        "100",
        "1000",
        "2m",
        "1E",
        "4096k",
        "64x",
        "",
        "18446744073709551616",
    ] {
        cases.push((
            dm(&format!("dm.thinpoolblocksize={bs}")),
            &["blocksize", "block size"],
        ));
    }
    for size in ["0", "-1G", "1E", "1.5G", "garbage"] {
        cases.push((dm(&format!("dm.defaultvolumesize={size}")), &["size"]));
    }
    for (opt, words) in [
        ("dm.fs=btrfs", &["fs", "filesystem"][..]),
        ("dm.thinpoolname=a/b", &["name", "thinpoolname"]),
        ("dm.thinpoolname=../../x", &["name", "thinpoolname"]),
        ("dm.nosuch=1", &["dm.nosuch", "unknown"]),
        ("dm.datadev", &["dm.datadev", "="]),
    ] {
        cases.push((dm(opt), words));
    }
    for (flags, words) in [
        (vec!["--drivers", "nosuch"], &["nosuch", "driver"][..]),
        (vec!["--drivers", "vfs"], &["vfs.path"]),
        (
            vec!["--drivers", "vfs", "--driver-opts", "vfs.path="],
            &["vfs.path"],
        ),
        (
            vec!["--drivers", "vfs", "--driver-opts", "vfs.path=relative/x"],
            &["vfs.path", "absolute"],
        ),
        (
            vec!["--drivers", "vfs", "--driver-opts", "vfs.bogus=1"],
            &["vfs.bogus", "unknown"],
        ),
        (
            vec!["--drivers", "vfs", "--driver-opts", "novalue"],
            &["novalue", "="],
        ),
    ] {
        cases.push((flags.iter().map(|s| s.to_string()).collect(), words));
    }
    let escape = dir.path().join("escaped");
    for (i, (flags, words)) in cases.iter().enumerate() {
        run.input();
        let root = dir.path().join(format!("root{i}"));
        let socket = dir.path().join(format!("s{i}.sock"));
        let mut cmd = Command::new(convoy_bin());
        cmd.arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .arg("--root")
            .arg(&root)
            .args(flags);
        let out = cmd.output().expect("run convoy daemon");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "daemon started with {flags:?}: {text}"
        );
        assert!(
            out.status.code().is_some(),
            "daemon died of a signal with {flags:?}: {text}"
        );
        clear(&format!("daemon {flags:?}"), &text);
        let lower = text.to_lowercase();
        assert!(
            words.iter().any(|w| lower.contains(w)),
            "daemon {flags:?}: error does not name the option (expected one of {words:?}): {text}"
        );
        assert!(!socket.exists(), "daemon {flags:?} left a socket behind");
        run.check();
    }
    assert!(!escape.exists());
    run.check();
}
