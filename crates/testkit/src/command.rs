//! External commands: run one and fail the test with its output, find this build's binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `program args...`, panics with its output if it cannot start or fails, answers its
/// stdout (untrimmed).
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Size of a block device in 512-byte sectors (`blockdev --getsz`).
pub fn device_sectors(device: &str) -> u64 {
    run("blockdev", &["--getsz", device])
        .trim()
        .parse()
        .expect("blockdev --getsz prints a number")
}

/// Whether this process runs as root (effective uid 0, read from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A binary of this workspace (`convoy`, `convoy-partition`, `convoy-test-s3`, ...) from the
/// same target directory and profile as the running test (`target/<profile>/deps/<test>` →
/// `target/<profile>/<name>`). Panics if it is not built: `cargo xtask test` builds every
/// workspace binary before the VM tier; on the host, `cargo build --workspace --bins`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_answers_stdout() {
        assert_eq!(run("echo", &["a", "b"]), "a b\n");
    }

    #[test]
    fn run_names_a_failure() {
        let panic =
            std::panic::catch_unwind(|| run("sh", &["-c", "echo out; echo err >&2; exit 3"]))
                .expect_err("a failing command panics");
        let message = panic.downcast_ref::<String>().expect("a formatted message");
        assert!(message.contains("sh"), "{message}");
        assert!(message.contains("out\nerr"), "{message}");
    }

    #[test]
    fn is_root_matches_id_u() {
        let uid = run("id", &["-u"]);
        assert_eq!(is_root(), uid.trim() == "0");
    }
}
