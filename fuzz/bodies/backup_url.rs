//! libFuzzer target: the backup destination and backup URL parsers. They must refuse with an
//! error, never panic; whatever they accept must not carry a `..` path segment, and a parsed
//! backup URL must format back to a URL that parses to the same thing.
//!
//! Shared by the libFuzzer target (`fuzz_targets/backup_url.rs`) and the workspace's seed replay
//! test (`tests/tests/fuzz_seeds.rs`), which runs every committed seed through it.

use convoy_backupstore::{backup_url, parse_backup_url, parse_destination, Destination};

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(dest) = parse_destination(text) {
        match dest {
            Destination::Vfs { path } => {
                assert!(
                    path.is_absolute(),
                    "relative vfs path {path:?} from {text:?}"
                );
                assert!(
                    !path
                        .components()
                        .any(|c| c == std::path::Component::ParentDir),
                    "vfs path {path:?} from {text:?} escapes with .."
                );
            }
            Destination::S3 { prefix, .. } => {
                assert!(
                    !prefix.split('/').any(|s| s == ".."),
                    "S3 prefix {prefix:?} from {text:?} escapes with .."
                );
            }
        }
    }
    if let Ok((dest, backup)) = parse_backup_url(text) {
        let again = backup_url(&dest, &backup);
        let (dest2, backup2) = parse_backup_url(&again)
            .unwrap_or_else(|e| panic!("{again:?} (formatted from {text:?}) does not parse: {e}"));
        assert_eq!(dest, dest2);
        assert_eq!(backup, backup2);
    }
}
