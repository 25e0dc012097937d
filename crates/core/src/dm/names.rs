//! convoy's device-mapper names: the one place that decides what a thin device is called.
//!
//! Device-mapper names are global to the host, so a thin device named after the user's volume
//! (`vol1`, `data`) collides with any other device of that name — an LVM volume, another pool,
//! a Docker thin pool. convoy therefore names every thin device it activates
//! `convoy-<pool>-thin-<id>`: scoped to convoy and to its pool (a dm name, unique on the
//! host), and to the thin id (unique in the pool). The user's names live only in the records.
//! Clean-up touches only devices of this form, or (migration) devices whose table points into
//! convoy's own pool.
//!
//! The kernel's limit is 127 bytes: with the longest thin id (8 digits) the pool name may take
//! at most [`MAX_POOL_NAME_LEN`] of them; a longer one is refused when the pool is opened.
//!
//! Versions before this scheme activated a volume as its own name and a snapshot (during a
//! backup) as the snapshot's name; start-up renames such devices (see `migrate_names` in
//! `reconcile.rs`).

use convoy_thinpool::{ThinId, MAX_NAME_LEN};

use crate::error::{Error, Result};

/// First word of every device name convoy makes.
const PREFIX: &str = "convoy";

/// The longest pool name whose thin devices' names fit device-mapper's limit.
pub(crate) const MAX_POOL_NAME_LEN: usize = MAX_NAME_LEN - "convoy--thin-16777215".len();

/// The device-mapper name of thin id `id` of pool `pool`.
pub(crate) fn thin_device_name(pool: &str, id: ThinId) -> String {
    format!("{PREFIX}-{pool}-thin-{}", id.get())
}

/// The hidden name of thin id `id` while an instant restore fills it (the volume's device,
/// [`thin_device_name`], then maps the daemon's NBD device).
pub(crate) fn fill_device_name(pool: &str, id: ThinId) -> String {
    format!("{PREFIX}-{pool}-fill-{}", id.get())
}

/// Refuses a pool name too long for its devices' names.
pub(crate) fn check_pool_name(pool: &str) -> Result<()> {
    if pool.len() > MAX_POOL_NAME_LEN {
        return Err(Error::invalid(
            "dm.thinpoolname",
            format!(
                "{pool:?} is {} bytes; convoy names the pool's thin devices \
                 convoy-<pool>-thin-<id>, which must fit device-mapper's {MAX_NAME_LEN} bytes, \
                 so a pool name may have at most {MAX_POOL_NAME_LEN}",
                pool.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_to_convoy_the_pool_and_the_id() {
        let id = ThinId::new(7).unwrap();
        assert_eq!(
            thin_device_name("convoy-pool", id),
            "convoy-convoy-pool-thin-7"
        );
        assert_ne!(
            thin_device_name("a", id),
            thin_device_name("b", id),
            "two pools never share a device name"
        );
    }

    #[test]
    fn the_longest_pool_name_still_fits() {
        let pool = "p".repeat(MAX_POOL_NAME_LEN);
        check_pool_name(&pool).unwrap();
        let name = thin_device_name(&pool, ThinId::MAX);
        assert_eq!(name.len(), MAX_NAME_LEN);
        convoy_thinpool::validate_name(&name).unwrap();
        let e = check_pool_name(&format!("{pool}p")).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }
}
