//! Mount state from `/proc/self/mountinfo` (exact paths, by device number), and the external
//! tools the driver runs: `mkfs.*`, `mount`, `umount`, `fsfreeze`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// One line of mountinfo: the device (`major:minor`) and where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Mount point, with mountinfo's octal escapes decoded.
    pub mount_point: PathBuf,
}

/// Decodes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let _id = f.next()?;
            let _parent = f.next()?;
            let (major, minor) = f.next()?.split_once(':')?;
            let _root = f.next()?;
            let mount_point = f.next()?;
            Some(MountEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mount_point: PathBuf::from(unescape(mount_point)),
            })
        })
        .collect()
}

/// The current mounts (of the `--mnt-ns` namespace when one is set).
pub(crate) fn mounts() -> Result<Vec<MountEntry>> {
    let path = "/proc/self/mountinfo";
    let settings = crate::external::current();
    let text = if settings.mount_namespace.is_some() {
        run_with(&settings, true, "cat", &[path])?
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?
    };
    Ok(parse_mountinfo(&text))
}

/// Where device `major:minor` is mounted.
pub(crate) fn mount_points_of(major: u32, minor: u32) -> Result<Vec<PathBuf>> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.major == major && m.minor == minor)
        .map(|m| m.mount_point)
        .collect())
}

/// The device mounted exactly at `path`, if any (the last mount over it wins).
pub(crate) fn device_at(path: &Path) -> Result<Option<(u32, u32)>> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.mount_point == path)
        .map(|m| (m.major, m.minor))
        .next_back())
}

/// `program` as a command that the kernel kills if the thread that started it dies: run
/// under util-linux `setpriv --pdeathsig KILL`, so a daemon killed with `kill -9` leaves no
/// `mkfs` or `mount` running on a device it no longer tracks. (The signal follows the starting
/// thread, a blocking-pool thread that waits for the child, so it outlives the child.)
pub(crate) fn command(program: &str) -> Command {
    let mut command = Command::new(SETPRIV);
    command.args(["--pdeathsig", "KILL", "--", program]);
    command
}

/// The wrapper that sets the parent-death signal (util-linux, on every Debian system).
const SETPRIV: &str = "setpriv";

/// Runs a tool in the daemon's namespace with the `--cmd-timeout` limit, mapping a failure to
/// [`Error::Command`] with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<()> {
    run_with(&crate::external::current(), false, program, args).map(drop)
}

/// Runs a tool that acts on mount points: in the `--mnt-ns` namespace when one is set.
fn run_mounts(program: &str, args: &[&str]) -> Result<()> {
    run_with(&crate::external::current(), true, program, args).map(drop)
}

/// Runs `program` (through `nsenter --mount=NS` when `in_namespace` and a namespace is set),
/// killed after the timeout if one is set; returns its stdout.
pub(crate) fn run_with(
    settings: &crate::external::ExternalCommands,
    in_namespace: bool,
    program: &str,
    args: &[&str],
) -> Result<String> {
    let mut command = match settings.mount_namespace.as_ref().filter(|_| in_namespace) {
        Some(ns) => {
            let mut c = command("nsenter");
            c.arg(format!("--mount={}", ns.display()))
                .arg("--")
                .arg(program);
            c
        }
        None => command(program),
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = format!("{program} {}", args.join(" "));
    let fail = |status: String, stderr: String| Error::Command {
        command: line.clone(),
        status,
        stderr,
    };
    let child = command
        .spawn()
        .map_err(|e| fail("not started".into(), e.to_string()))?;
    let out = match settings.timeout {
        None => child.wait_with_output(),
        Some(limit) => {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let (tx, rx) = std::sync::mpsc::channel();
            let waiter = std::thread::spawn(move || {
                let _ = tx.send(child.wait_with_output());
            });
            match rx.recv_timeout(limit) {
                Ok(out) => {
                    let _ = waiter.join();
                    out
                }
                Err(_) => {
                    // The waiter still owns the child: killing it ends the wait and reaps it.
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = waiter.join();
                    return Err(fail(
                        format!("killed after --cmd-timeout {}", humanize(limit)),
                        "the command did not finish in time".into(),
                    ));
                }
            }
        }
    }
    .map_err(|e| fail("not waited for".into(), e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else if out.status.code() == Some(127) && stderr.starts_with("setpriv: failed to execute") {
        Err(fail("not started".into(), stderr))
    } else {
        Err(fail(out.status.to_string(), stderr))
    }
}

fn humanize(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Makes a filesystem (`ext4` or `xfs`) on `device`.
pub(crate) fn mkfs(fs: &str, device: &Path) -> Result<()> {
    let dev = device.to_string_lossy();
    match fs {
        "xfs" => run("mkfs.xfs", &["-q", "-f", &dev]),
        _ => run("mkfs.ext4", &["-q", "-F", &dev]),
    }
}

/// Mounts `device` at `at` (creating the directory).
pub(crate) fn mount(device: &Path, at: &Path) -> Result<()> {
    std::fs::create_dir_all(at).map_err(|e| Error::io("create mount point", at, e))?;
    run_mounts("mount", &[&device.to_string_lossy(), &at.to_string_lossy()])
}

/// Unmounts `at`.
pub(crate) fn umount(at: &Path) -> Result<()> {
    run_mounts("umount", &[&at.to_string_lossy()])
}

/// Unmounts `at`; when `lazy`, detaches it now even while files on it are open
/// (`umount -l`).
pub(crate) fn umount_with(at: &Path, lazy: bool) -> Result<()> {
    let at = at.to_string_lossy();
    if lazy {
        run_mounts("umount", &["-l", &at])
    } else {
        run_mounts("umount", &[&at])
    }
}

/// Mounts `device` at `at` with mount options `options` (creating the directory).
pub(crate) fn mount_with(device: &Path, at: &Path, options: &str) -> Result<()> {
    std::fs::create_dir_all(at).map_err(|e| Error::io("create mount point", at, e))?;
    run_mounts(
        "mount",
        &[
            "-o",
            options,
            &device.to_string_lossy(),
            &at.to_string_lossy(),
        ],
    )
}

/// The filesystem type on `device` (`blkid`), `None` when it holds none it knows.
pub(crate) fn filesystem_of(device: &Path) -> Result<Option<String>> {
    let dev = device.to_string_lossy();
    match run_with(
        &crate::external::current(),
        false,
        "blkid",
        &["-p", "-o", "value", "-s", "TYPE", &dev],
    ) {
        Ok(out) => Ok(Some(out.trim().to_owned()).filter(|t| !t.is_empty())),
        // blkid exits 2 when it finds nothing.
        Err(Error::Command { status, .. }) if status.contains("exit status: 2") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The filesystem UUID on `device` (`blkid`), empty when it has none.
pub(crate) fn uuid_of(device: &Path) -> Result<String> {
    let dev = device.to_string_lossy();
    run_with(
        &crate::external::current(),
        false,
        "blkid",
        &["-p", "-o", "value", "-s", "UUID", &dev],
    )
    .map(|s| s.trim().to_owned())
}

/// Grows the filesystem `fs` on `device`, mounted at `at`, to fill the device (online).
pub(crate) fn grow_mounted(fs: &str, device: &Path, at: &Path) -> Result<()> {
    match fs {
        "xfs" => run_mounts("xfs_growfs", &[&at.to_string_lossy()]),
        _ => run("resize2fs", &[&device.to_string_lossy()]),
    }
}

/// Gives the (unmounted) xfs filesystem on `device` a new UUID.
pub(crate) fn xfs_new_uuid(device: &Path) -> Result<()> {
    run("xfs_admin", &["-U", "generate", &device.to_string_lossy()])
}

/// Thaws a frozen filesystem.
pub(crate) fn thaw(at: &Path) -> Result<()> {
    run_mounts("fsfreeze", &["-u", &at.to_string_lossy()])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 253:3 / /var/lib/convoy/mounts/vol1 rw - ext4 /dev/mapper/vol1 rw
37 22 253:4 / /var/lib/convoy/mounts/vol10 rw - ext4 /dev/mapper/vol10 rw
38 22 253:5 / /mnt/with\\040space rw - xfs /dev/mapper/x rw
garbage
";

    #[test]
    fn mountinfo_paths_match_exactly() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 4);
        let at = |p: &str| {
            m.iter()
                .filter(|e| e.mount_point == Path::new(p))
                .map(|e| (e.major, e.minor))
                .collect::<Vec<_>>()
        };
        assert_eq!(at("/var/lib/convoy/mounts/vol1"), [(253, 3)]);
        assert_eq!(at("/var/lib/convoy/mounts/vol10"), [(253, 4)]);
        assert!(at("/var/lib/convoy/mounts/vol").is_empty());
        assert_eq!(at("/mnt/with space"), [(253, 5)]);
    }

    #[test]
    fn failing_tools_report_their_stderr() {
        let e = run("ls", &["/definitely/not/here"]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("ls /definitely/not/here"), "{text}");
        assert!(text.contains("No such file"), "{text}");
        let e = run("no-such-tool-convoy", &[]).unwrap_err();
        assert!(e.to_string().contains("not started"), "{e}");
    }

    #[test]
    fn a_tool_dies_with_the_thread_that_started_it() {
        use std::os::unix::process::ExitStatusExt;
        // The thread that starts the child ends at once; the child must be killed then, not
        // sleep on (without the parent-death signal `wait` would return after 60 s, exit 0).
        // It ends once `setpriv` has set the signal and become `sleep`.
        let mut child = std::thread::spawn(|| {
            let child = command("sleep").arg("60").spawn().unwrap();
            let comm = format!("/proc/{}/comm", child.id());
            while std::fs::read_to_string(&comm).unwrap().trim() != "sleep" {
                std::thread::yield_now();
            }
            child
        })
        .join()
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    #[test]
    fn cmd_timeout_kills_a_tool_that_hangs() {
        use crate::external::ExternalCommands;
        let settings = ExternalCommands {
            mount_namespace: None,
            timeout: Some(std::time::Duration::from_millis(300)),
        };
        let e = run_with(&settings, false, "sleep", &["600"]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("sleep 600"), "{text}");
        assert!(text.contains("killed after --cmd-timeout 300ms"), "{text}");
        // A tool that finishes in time is unaffected, its output kept.
        assert_eq!(
            run_with(&settings, false, "echo", &["done"]).unwrap(),
            "done\n"
        );
    }

    /// `--mnt-ns` on the host's real kernel: a mount made through it lands in the given
    /// namespace (a process started with `unshare --mount`) and not in the daemon's; the mount
    /// table read back is that namespace's. Needs root (unshare, mount).
    #[test]
    fn mnt_ns_mounts_in_the_given_namespace() {
        use crate::external::ExternalCommands;
        let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                == Some("0")
        });
        assert!(
            is_root,
            "this test creates a mount namespace: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("mnt");
        std::fs::create_dir(&at).unwrap();
        // A namespace held open by a sleeping process, private so nothing propagates back.
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "600"])
            .spawn()
            .unwrap();
        struct Kill<'a>(&'a mut std::process::Child);
        impl Drop for Kill<'_> {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let pid = holder.id();
        let _guard = Kill(&mut holder);
        let ns = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
        // Wait until the child has entered its own namespace (unshare execs sleep after).
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        while std::fs::read_link(&ns).map_or(true, |l| l == own) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let settings = ExternalCommands {
            mount_namespace: Some(ns.clone()),
            timeout: None,
        };
        let at_s = at.to_string_lossy().into_owned();
        run_with(
            &settings,
            true,
            "mount",
            &["-t", "tmpfs", "convoy-mnt-ns-test", &at_s],
        )
        .unwrap();
        let theirs = run_with(&settings, true, "cat", &["/proc/self/mountinfo"]).unwrap();
        let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let here = |text: &str| parse_mountinfo(text).iter().any(|m| m.mount_point == at);
        assert!(here(&theirs), "not mounted in the namespace: {theirs}");
        assert!(!here(&ours), "mounted in the daemon's own namespace");
        run_with(&settings, true, "umount", &[&at_s]).unwrap();
        let theirs = run_with(&settings, true, "cat", &["/proc/self/mountinfo"]).unwrap();
        assert!(!here(&theirs));
    }
}
