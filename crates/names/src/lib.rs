//! # convoy-names
//!
//! The rules every convoy crate applies to what users type, in one place: no I/O, no
//! dependencies on other convoy crates, so the CLI side (`convoy-api`), the backup store
//! (`convoy-backupstore`) and the volume manager (`convoy-core`) all use the same ones.
//!
//! * Names of volumes, snapshots and backups: [`validate_name`] (names convoy gives, at most
//!   [`MAX_NAME_LEN`] characters) and [`validate_stored_name`] (names read from a backup store,
//!   which the original Convoy may have made longer, at most [`MAX_STORED_NAME_LEN`]). Both
//!   apply the one character rule `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`.
//! * Sizes: [`parse_size`] reads an integer with an optional `k`, `m`, `g` or `t` suffix (powers
//!   of 1024, case-insensitive) and an optional trailing `b`/`B` (`512b`, `10GB`).
//!
//! ```
//! assert_eq!(convoy_names::parse_size("10G").unwrap(), 10 << 30);
//! assert_eq!(convoy_names::parse_size("512b").unwrap(), 512);
//! assert!(convoy_names::validate_name("vol1").is_ok());
//! assert!(convoy_names::validate_name("-vol1").is_err());
//! ```

mod name;
mod size;

pub use name::{validate_name, validate_stored_name, NameError, MAX_NAME_LEN, MAX_STORED_NAME_LEN};
pub use size::{parse_size, SizeError};
