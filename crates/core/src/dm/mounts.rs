//! Mount state from `/proc/self/mountinfo` (exact paths, by device number), and the external
//! tools the driver runs: `mkfs.*`, `mount`, `umount`, `fsfreeze`.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The current mounts.
pub(crate) fn mounts() -> Result<Vec<MountEntry>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
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

/// Runs a tool, mapping a failure to [`Error::Command`] with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<()> {
    let line = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            command: line.clone(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
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
    run("mount", &[&device.to_string_lossy(), &at.to_string_lossy()])
}

/// Unmounts `at`.
pub(crate) fn umount(at: &Path) -> Result<()> {
    run("umount", &[&at.to_string_lossy()])
}

/// Flushes the filesystem mounted at `at` (syncfs through `sync -f`).
pub(crate) fn flush(at: &Path) -> Result<()> {
    run("sync", &["-f", &at.to_string_lossy()])
}

/// Thaws a frozen filesystem.
pub(crate) fn thaw(at: &Path) -> Result<()> {
    run("fsfreeze", &["-u", &at.to_string_lossy()])
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
}
