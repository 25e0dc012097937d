//! `deploy/convoy.service` is a unit systemd accepts without a warning (`systemd-analyze
//! verify`, with `ExecStart` pointed at the built binary), ordered before Docker, and its
//! `ExecStart` command line is one the `convoy` binary parses (`--help` appended).

mod cli_support;

use std::path::Path;
use std::process::Command;

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/convoy.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What `systemd-analyze verify` says of `text` as `name` (warnings and errors).
fn verify(name: &str, text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) must be installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_service_unit_verifies_without_warnings() {
    let bin = cli_support::convoy_bin();
    let text = unit().replace("/usr/local/bin/convoy", bin.to_str().unwrap());
    let (ok, said) = verify("convoy.service", &text);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // The check can fail: a misspelt key and a bad value are reported.
    let broken = text
        .replace("KillMode=mixed", "KillMode=sometimes")
        .replace("Before=", "Befor=");
    let (_, said) = verify("convoy.service", &broken);
    assert!(
        said.contains("kill mode") && said.contains("Befor"),
        "{said}"
    );

    for line in [
        "Before=docker.service",
        "WantedBy=multi-user.target docker.service",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
}

#[test]
fn the_service_command_line_is_one_convoy_parses() {
    let exec = unit()
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .replace("$CONVOY_DAEMON_ARGS", "")
        .to_owned();
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/convoy"));
    let out = Command::new(cli_support::convoy_bin())
        .args(words)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{exec} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--root"));
}
