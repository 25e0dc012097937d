//! Device-mapper names: validation, and the `/dev/mapper` path each name gets.
//!
//! Device-mapper names are global to the host: a thin device named like another dm device (the
//! pool itself, an LVM volume) cannot be activated. The kernel's limit is 127 bytes (128 with the
//! terminating NUL) and no `/`. This crate also refuses whitespace, control characters, non-ASCII
//! and the names `.`/`..`, because each name becomes a node under `/dev/mapper`.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Longest device-mapper name the kernel accepts, in bytes.
pub const MAX_NAME_LEN: usize = 127;

/// Directory of the stable device nodes.
pub const DEV_MAPPER_DIR: &str = "/dev/mapper";

/// Default name of a convoy pool.
pub const DEFAULT_POOL_NAME: &str = "convoy-pool";

/// Check that `name` is usable as a device-mapper name (and as a file name under `/dev/mapper`).
///
/// # Errors
/// [`Error::InvalidName`] naming the value and the rule it breaks.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 127 bytes")
    } else if name == "." || name == ".." {
        Some("it is a directory name")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        Some("it contains whitespace, control or non-ASCII characters")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
    }
}

/// The stable node path of a device-mapper device: `/dev/mapper/<name>`.
pub fn mapper_path(name: &str) -> PathBuf {
    PathBuf::from(DEV_MAPPER_DIR).join(name)
}

pub(crate) fn dm_name(name: &str) -> Result<&devicemapper::DmName> {
    validate_name(name)?;
    devicemapper::DmName::new(name).map_err(|_| Error::InvalidName {
        name: name.to_owned(),
        reason: "device-mapper refuses it",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for n in [
            "convoy-pool",
            "vol1",
            "volume-0123456789abcdef",
            "a.b_c-d",
            &"x".repeat(127),
        ] {
            validate_name(n).unwrap();
            dm_name(n).unwrap();
        }
    }

    #[test]
    fn bad_names_say_why() {
        for (n, why) in [
            ("", "empty"),
            (&*"x".repeat(128), "127"),
            (".", "directory"),
            ("..", "directory"),
            ("a/b", "'/'"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("vol\u{e9}", "non-ASCII"),
        ] {
            let err = validate_name(n).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(why), "{n:?}: {msg}");
            assert!(matches!(err, Error::InvalidName { ref name, .. } if name == n));
        }
    }

    #[test]
    fn mapper_path_is_under_dev_mapper() {
        assert_eq!(mapper_path("vol1"), PathBuf::from("/dev/mapper/vol1"));
    }
}
