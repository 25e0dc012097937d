//! Destination and backup URLs.
//!
//! * destinations: `vfs:///absolute/path`, `s3://bucket@region/path`, `s3://bucket/path`;
//! * a backup: `<destination>?backup=<name>&volume=<name>` (as the original Convoy printed it).

use std::fmt;
use std::path::PathBuf;

use crate::error::{BackupError, Result};

/// Where a destination URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A local or NFS-mounted directory (`vfs:///path`).
    Vfs {
        /// The absolute directory path.
        path: PathBuf,
    },
    /// An S3 bucket, optionally with a key prefix.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Region from `bucket@region`, if given.
        region: Option<String>,
        /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
        prefix: String,
    },
}

/// One backup: its volume and name. Together with a destination it forms a backup URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupRef {
    /// The volume the backup belongs to.
    pub volume: String,
    /// The backup's name (unique within the volume).
    pub backup: String,
}

impl BackupRef {
    /// A reference after checking both names.
    pub fn new(volume: &str, backup: &str) -> Result<Self> {
        check_name("volume", volume)?;
        check_name("backup", backup)?;
        Ok(BackupRef {
            volume: volume.to_string(),
            backup: backup.to_string(),
        })
    }
}

impl fmt::Display for BackupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.volume, self.backup)
    }
}

fn invalid(url: &str, reason: impl Into<String>) -> BackupError {
    BackupError::InvalidUrl {
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// Checks a volume or backup name: `convoy-names`' rule (`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`) with
/// the limit of names read from a store, [`convoy_names::MAX_STORED_NAME_LEN`] (the original
/// Convoy's names may be longer than those convoy gives).
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    convoy_names::validate_stored_name(name).map_err(|_| BackupError::InvalidName {
        what,
        name: name.to_string(),
    })
}

/// Parses a destination URL (no query part).
pub fn parse_destination(url: &str) -> Result<Destination> {
    if url.contains('?') {
        return Err(invalid(
            url,
            "a destination takes no query; ?backup=...&volume=... belongs to a backup URL",
        ));
    }
    if let Some(rest) = url.strip_prefix("vfs://") {
        if !rest.starts_with('/') {
            return Err(invalid(url, "the vfs path must be absolute (vfs:///path)"));
        }
        let trimmed = rest.trim_end_matches('/');
        let path = if trimmed.is_empty() { "/" } else { trimmed };
        if path.split('/').any(|seg| seg == "..") {
            return Err(invalid(url, "the vfs path must not contain '..'"));
        }
        return Ok(Destination::Vfs {
            path: PathBuf::from(path),
        });
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if authority.contains(':') {
            // `s3://KEY:SECRET@bucket`: never echo it (errors are printed and logged).
            return Err(invalid(
                &format!("s3://<redacted>/{path}"),
                "credentials do not belong in the URL (give them in AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY); bucket names and regions have no ':'",
            ));
        }
        let (bucket, region) = match authority.split_once('@') {
            Some((b, r)) => {
                if r.is_empty() {
                    return Err(invalid(url, "empty region after '@'"));
                }
                (b, Some(r.to_string()))
            }
            None => (authority, None),
        };
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(invalid(
                url,
                format!("bucket name {bucket:?} is not a valid S3 bucket name"),
            ));
        }
        let prefix = path.trim_matches('/').to_string();
        if prefix.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(invalid(
                url,
                "the S3 path must not contain '.' or '..' segments",
            ));
        }
        return Ok(Destination::S3 {
            bucket: bucket.to_string(),
            region,
            prefix,
        });
    }
    Err(invalid(url, "unknown scheme"))
}

/// Splits a backup URL into its destination URL and backup reference.
pub fn parse_backup_url(url: &str) -> Result<(String, BackupRef)> {
    // The destination is checked first so that its errors (which never echo credentials)
    // come before any that quote the whole URL.
    let (dest, query) = url.split_once('?').unwrap_or((url, ""));
    parse_destination(dest)?;
    if !url.contains('?') {
        return Err(invalid(url, "missing ?backup=<name>&volume=<name>"));
    }
    let mut backup = None;
    let mut volume = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("backup", v)) => backup = Some(v),
            Some(("volume", v)) => volume = Some(v),
            _ => return Err(invalid(url, format!("unexpected query item {pair:?}"))),
        }
    }
    let (Some(backup), Some(volume)) = (backup, volume) else {
        return Err(invalid(
            url,
            "both backup=<name> and volume=<name> are required",
        ));
    };
    Ok((dest.to_string(), BackupRef::new(volume, backup)?))
}

/// Formats the URL of a backup: `<dest>?backup=<name>&volume=<name>`.
pub fn backup_url(dest: &str, backup: &BackupRef) -> String {
    format!("{dest}?backup={}&volume={}", backup.backup, backup.volume)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            parse_destination("vfs:///var/backups/").unwrap(),
            Destination::Vfs {
                path: "/var/backups".into()
            }
        );
        assert_eq!(
            parse_destination("s3://my-bucket@us-west-2/some/path/").unwrap(),
            Destination::S3 {
                bucket: "my-bucket".into(),
                region: Some("us-west-2".into()),
                prefix: "some/path".into()
            }
        );
        assert_eq!(
            parse_destination("s3://my-bucket").unwrap(),
            Destination::S3 {
                bucket: "my-bucket".into(),
                region: None,
                prefix: String::new()
            }
        );
    }

    #[test]
    fn bad_destinations_name_the_form() {
        for bad in [
            "vfs://relative/path",
            "file:///x",
            "s3://",
            "s3://Bad_Bucket/x",
            "s3://bucket@/x",
            "vfs:///a/../b",
            "",
            "vfs:///x?backup=a&volume=b",
        ] {
            let err = parse_destination(bad).unwrap_err().to_string();
            assert!(err.contains("expected vfs:///path"), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_echo() {
        for bad in [
            "s3://AKIAX:s3cr3t-value@bucket/p",
            "s3://AKIAX:s3cr3t-value@bucket@us-east-1/p",
            "s3://bucket:s3cr3t-value/p",
        ] {
            let err = parse_destination(bad).unwrap_err().to_string();
            assert!(!err.contains("s3cr3t-value"), "{bad}: {err}");
            assert!(err.contains("credentials"), "{bad}: {err}");
            for url in [format!("{bad}?backup=b1&volume=v1"), bad.to_string()] {
                let err = parse_backup_url(&url).unwrap_err().to_string();
                assert!(!err.contains("s3cr3t-value"), "{url}: {err}");
            }
        }
    }

    #[test]
    fn backup_urls() {
        let (dest, r) =
            parse_backup_url("s3://b-1@eu-west-1/p?backup=backup-0123&volume=vol1").unwrap();
        assert_eq!(dest, "s3://b-1@eu-west-1/p");
        assert_eq!(r, BackupRef::new("vol1", "backup-0123").unwrap());
        assert_eq!(
            backup_url(&dest, &r),
            "s3://b-1@eu-west-1/p?backup=backup-0123&volume=vol1"
        );
        let (_, r) = parse_backup_url("vfs:///x?volume=v1&backup=b1").unwrap();
        assert_eq!(r.volume, "v1");
        for bad in [
            "vfs:///x",
            "vfs:///x?backup=b1",
            "vfs:///x?backup=b1&volume=v1&x=y",
            "vfs:///x?backup=../e&volume=v1",
            "vfs:///x?backup=b1&volume=-v",
        ] {
            assert!(parse_backup_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_names_follow_the_one_rule_with_the_stores_limit() {
        // The original Convoy's volume names may be longer than the 64 characters convoy gives.
        let long = "v".repeat(convoy_names::MAX_NAME_LEN + 1);
        assert_eq!(BackupRef::new(&long, "b1").unwrap().volume, long);
        let too_long = "v".repeat(convoy_names::MAX_STORED_NAME_LEN + 1);
        let err = BackupRef::new(&too_long, "b1").unwrap_err();
        assert!(
            matches!(&err, BackupError::InvalidName { what: "volume", .. }),
            "{err}"
        );
        for bad in ["", "v", "-v", "a b", "ä1"] {
            assert!(check_name("backup", bad).is_err(), "{bad:?}");
        }
    }
}
