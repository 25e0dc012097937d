//! The naming rule of volumes, snapshots and backups.

/// Longest volume or snapshot name convoy accepts: every name fits a file name and, inside
/// convoy's device names, device-mapper's 127 bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Longest volume or backup name accepted when read from a backup store (a file name's limit).
/// The original Convoy had no length limit, so a store it wrote may hold names longer than
/// [`MAX_NAME_LEN`]; they are read and restored (under a name convoy accepts), never made.
pub const MAX_STORED_NAME_LEN: usize = 255;

/// A name that breaks the naming rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    /// The name given.
    pub name: String,
    /// Which part of the rule it breaks.
    pub reason: String,
}

/// Checks a volume or snapshot name: `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`, at most
/// [`MAX_NAME_LEN`] characters.
///
/// # Errors
/// [`NameError`] saying which part of the rule is broken.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    check(name, MAX_NAME_LEN)
}

/// Checks a name read from a backup store: the rule of [`validate_name`] with the longer limit
/// [`MAX_STORED_NAME_LEN`].
///
/// # Errors
/// [`NameError`] saying which part of the rule is broken.
pub fn validate_stored_name(name: &str) -> Result<(), NameError> {
    check(name, MAX_STORED_NAME_LEN)
}

fn check(name: &str, max_len: usize) -> Result<(), NameError> {
    let bad = |reason: String| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return bad("it is empty".into()),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return bad("it must start with a letter or digit".into())
        }
        Some(_) => {}
    }
    if name.len() < 2 {
        return bad("it must be at least 2 characters long".into());
    }
    if name.len() > max_len {
        return bad(format!("it is longer than {max_len} characters"));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return bad(format!(
            "character {c:?} is not allowed (only letters, digits, '_', '.', '-')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_character_rule() {
        for ok in ["vol1", "a.b-c_d", "0x", "Volume-ABC.1", "v-"] {
            validate_name(ok).unwrap();
            validate_stored_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("a", "at least 2"),
            ("-ab", "start with"),
            (".ab", "start with"),
            ("_ab", "start with"),
            ("a b", "' '"),
            ("a/b", "'/'"),
            ("..", "start with"),
            ("ä123", "start with"),
            ("aä", "'ä'"),
            ("vol1\n", "'\\n'"),
        ] {
            for e in [
                validate_name(bad).unwrap_err(),
                validate_stored_name(bad).unwrap_err(),
            ] {
                assert_eq!(e.name, bad);
                assert!(e.reason.contains(why), "{bad:?}: {e}");
                assert!(e.to_string().starts_with("invalid name"), "{e}");
            }
        }
    }

    #[test]
    fn the_limits_are_64_for_names_convoy_gives_and_255_for_stored_names() {
        validate_name(&"a".repeat(MAX_NAME_LEN)).unwrap();
        let e = validate_name(&"a".repeat(MAX_NAME_LEN + 1)).unwrap_err();
        assert!(e.reason.contains("longer than 64"), "{e}");
        validate_stored_name(&"a".repeat(MAX_NAME_LEN + 1)).unwrap();
        validate_stored_name(&"a".repeat(MAX_STORED_NAME_LEN)).unwrap();
        let e = validate_stored_name(&"a".repeat(MAX_STORED_NAME_LEN + 1)).unwrap_err();
        assert!(e.reason.contains("longer than 255"), "{e}");
    }
}
