//! Small wrappers over `devicemapper::DM` calls that turn kernel errnos into this crate's errors
//! by meaning, naming the device.
//!
//! About udev: the `devicemapper` crate waits for a udev cookie only on remove and resume, and
//! only when `/run/udev/control` exists (udev running). Without udev (the test guest, minimal
//! containers) it never waits, so nothing hangs; `devnode` then creates the `/dev/mapper` nodes.

use std::os::unix::net::UnixStream;
use std::path::Path;

use devicemapper::{DevId, DeviceInfo, DmError, DmFlags, DmOptions, DM};
use nix::errno::Errno;

use crate::error::{dm_error, errno_of, Error, Result};
use crate::names::dm_name;

/// Where udev listens; the `devicemapper` crate waits for udev cookies when this exists.
pub(crate) const UDEV_CONTROL: &str = "/run/udev/control";

/// Refuse to go on when `control` exists but nothing listens on it: the `devicemapper` crate
/// would then wait forever for a udev cookie on the first resume or remove.
pub(crate) fn check_udev_socket(control: &Path) -> Result<()> {
    match UnixStream::connect(control) {
        Err(e) if e.raw_os_error() == Some(Errno::ECONNREFUSED as i32) => {
            Err(Error::DeviceMapperUnavailable {
                reason: format!(
                    "{} exists but no udev daemon listens on it; device-mapper calls would \
                     wait forever for udev. Start udev or remove the stale socket",
                    control.display()
                ),
            })
        }
        // Missing (no udev: nothing waits), or a live listener (udev answers cookies).
        _ => Ok(()),
    }
}

/// One line of a raw table or status: start, length, target type, parameters.
pub(crate) type RawLine = (u64, u64, String, String);

/// Whether a device-mapper device of that name exists.
pub(crate) fn exists(dm: &DM, name: &str) -> Result<bool> {
    let name = dm_name(name)?;
    let devices = dm
        .list_devices()
        .map_err(|e| dm_error("list devices", "device-mapper", e))?;
    Ok(devices.iter().any(|(n, _, _)| &**n == name))
}

/// Names of every device-mapper device.
pub(crate) fn list(dm: &DM) -> Result<Vec<String>> {
    let devices = dm
        .list_devices()
        .map_err(|e| dm_error("list devices", "device-mapper", e))?;
    Ok(devices.iter().map(|(n, _, _)| n.to_string()).collect())
}

/// Information about a device (open count, suspended flag, major:minor).
pub(crate) fn info(dm: &DM, name: &str) -> Result<DeviceInfo> {
    let id = DevId::Name(dm_name(name)?);
    dm.device_info(&id)
        .map_err(|e| not_found_or(e, name, "get info"))
}

/// The active table of a device.
pub(crate) fn table(dm: &DM, name: &str) -> Result<Vec<RawLine>> {
    let id = DevId::Name(dm_name(name)?);
    dm.table_status(
        &id,
        DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
    )
    .map(|(_, lines)| lines)
    .map_err(|e| not_found_or(e, name, "read table"))
}

/// The status line of a single-target device.
pub(crate) fn status_line(dm: &DM, name: &str) -> Result<String> {
    let id = DevId::Name(dm_name(name)?);
    let (_, lines) = dm
        .table_status(&id, DmOptions::default())
        .map_err(|e| not_found_or(e, name, "read status"))?;
    match lines.as_slice() {
        [(_, _, _, status)] => Ok(status.clone()),
        _ => Err(Error::StatusParse {
            device: name.to_owned(),
            line: raw_table_text(&lines),
            reason: format!("expected one target, found {}", lines.len()),
        }),
    }
}

/// Remove a device.
pub(crate) fn remove(dm: &DM, name: &str) -> Result<()> {
    let id = DevId::Name(dm_name(name)?);
    match dm.device_remove(&id, DmOptions::default()) {
        Ok(_) => Ok(()),
        Err(e) if errno_of(&e) == Some(Errno::EBUSY) => Err(Error::Busy {
            device: name.to_owned(),
            reason: "the kernel refuses to remove it: it is open (mounted?) or used by \
                     another device"
                .to_owned(),
        }),
        Err(e) => Err(not_found_or(e, name, "remove")),
    }
}

/// Map an error of `DM::device_create`.
pub(crate) fn create_error(name: &str, e: DmError) -> Error {
    match errno_of(&e) {
        Some(Errno::EBUSY) | Some(Errno::EEXIST) => Error::AlreadyExists {
            kind: "device-mapper device",
            name: name.to_owned(),
        },
        _ => dm_error("create device", name, e),
    }
}

/// A raw table as text, for error messages.
pub(crate) fn raw_table_text(lines: &[RawLine]) -> String {
    lines
        .iter()
        .map(|(start, len, target, params)| format!("{start} {len} {target} {params}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn not_found_or(e: DmError, name: &str, operation: &str) -> Error {
    match errno_of(&e) {
        Some(Errno::ENXIO) | Some(Errno::ENODEV) => Error::NotFound {
            kind: "device-mapper device",
            name: name.to_owned(),
        },
        _ => dm_error(operation, name, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_udev_socket_is_refused_live_or_missing_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control");
        check_udev_socket(&control).unwrap(); // missing
        let listener = std::os::unix::net::UnixListener::bind(&control).unwrap();
        check_udev_socket(&control).unwrap(); // live
        drop(listener); // the socket file stays: stale
        let err = check_udev_socket(&control).unwrap_err();
        assert!(
            matches!(err, Error::DeviceMapperUnavailable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no udev daemon"), "{err}");
    }

    #[test]
    fn raw_table_text_joins_lines() {
        let lines = vec![
            (0, 8, "thin".to_owned(), "253:0 1".to_owned()),
            (8, 8, "error".to_owned(), String::new()),
        ];
        assert_eq!(raw_table_text(&lines), "0 8 thin 253:0 1; 8 8 error ");
    }
}
