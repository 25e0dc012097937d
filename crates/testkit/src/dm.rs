//! The device-mapper devices a test made, found and removed by a tag in their names.

use std::process::{Command, Stdio};

/// The device-mapper devices whose name contains `tag` (every device for `""`); none when
/// `dmsetup` cannot run.
pub fn dm_names(tag: &str) -> Vec<String> {
    let Ok(out) = Command::new("dmsetup").arg("ls").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("No devices found"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(tag))
        .map(str::to_string)
        .collect()
}

/// Removes every device-mapper device whose name contains the tag when dropped: each is
/// lazily unmounted first, thin devices go before pools (names ending in `pool`).
///
/// Declare it after the daemon that makes the devices and before the loop devices under them,
/// so that it drops after the daemon stops and before the loop devices detach.
#[derive(Debug)]
pub struct DmCleanup(pub String);

impl Drop for DmCleanup {
    fn drop(&mut self) {
        let mut names = dm_names(&self.0);
        names.sort_by_key(|n| n.ends_with("pool"));
        for name in names {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(format!("/dev/mapper/{name}"))
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("dmsetup")
                .args(["remove", "--force", &name])
                .status();
        }
    }
}
