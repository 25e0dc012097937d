//! Thin device ids (24-bit, the kernel's limit) and an allocator over the ids a caller has
//! recorded as used.
//!
//! The pool's metadata is the truth about which ids exist, but this crate does not read it;
//! the volume manager persists the ids it hands out and gives them back to [`IdAllocator::new`]
//! at start-up. The kernel refuses a `create_thin`/`create_snap` on an id that exists
//! ([`crate::Error::AlreadyExists`]), so a stale record cannot overwrite a device.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A thin device id inside a pool: `0..=ThinId::MAX` (24 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThinId(u32);

impl ThinId {
    /// Largest id the kernel accepts: 2^24 - 1.
    pub const MAX: ThinId = ThinId((1 << 24) - 1);

    /// Make an id, refusing values above [`ThinId::MAX`].
    ///
    /// # Errors
    /// [`Error::InvalidThinId`] naming the value.
    pub fn new(id: u64) -> Result<ThinId> {
        if id <= u64::from(Self::MAX.0) {
            Ok(ThinId(id as u32))
        } else {
            Err(Error::InvalidThinId {
                value: id.to_string(),
            })
        }
    }

    /// The id as a number.
    pub fn get(self) -> u32 {
        self.0
    }

    pub(crate) fn to_dm(self) -> devicemapper::ThinDevId {
        devicemapper::ThinDevId::new_u64(u64::from(self.0)).expect("ThinId is below 2^24")
    }

    pub(crate) fn from_dm(id: devicemapper::ThinDevId) -> ThinId {
        ThinId(u32::from(id))
    }
}

impl fmt::Display for ThinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for ThinId {
    type Err = Error;

    fn from_str(s: &str) -> Result<ThinId> {
        let id = s.trim().parse::<u64>().map_err(|_| Error::InvalidThinId {
            value: s.to_owned(),
        })?;
        ThinId::new(id)
    }
}

impl TryFrom<u64> for ThinId {
    type Error = Error;

    fn try_from(id: u64) -> Result<ThinId> {
        ThinId::new(id)
    }
}

impl From<ThinId> for u32 {
    fn from(id: ThinId) -> u32 {
        id.0
    }
}

/// Hands out thin device ids that are not in a given used set, never above [`ThinId::MAX`].
///
/// Allocation is next-fit: it continues after the last id handed out (so a just-deleted id is not
/// immediately reused, which keeps logs unambiguous), wrapping around to 0 and skipping used ids.
/// The caller persists what it allocates; the allocator only remembers it for its own lifetime.
#[derive(Clone, Debug, Default)]
pub struct IdAllocator {
    used: BTreeSet<u32>,
    next: u32,
}

impl IdAllocator {
    /// An allocator that avoids every id in `used`; the first id tried is one past the highest
    /// used id (or 0).
    pub fn new(used: impl IntoIterator<Item = ThinId>) -> IdAllocator {
        let used: BTreeSet<u32> = used.into_iter().map(ThinId::get).collect();
        let next = match used.last() {
            Some(&max) if max < ThinId::MAX.0 => max + 1,
            _ => 0,
        };
        IdAllocator { used, next }
    }

    /// Allocate a free id and mark it used.
    ///
    /// # Errors
    /// [`Error::IdsExhausted`] when all 2^24 ids are used.
    pub fn allocate(&mut self) -> Result<ThinId> {
        let id = self.find_free_from(self.next).ok_or(Error::IdsExhausted)?;
        self.used.insert(id);
        self.next = if id == ThinId::MAX.0 { 0 } else { id + 1 };
        Ok(ThinId(id))
    }

    /// Mark an id used (for example one created by another path). Returns false if it was
    /// already marked.
    pub fn mark_used(&mut self, id: ThinId) -> bool {
        self.used.insert(id.0)
    }

    /// Forget an id (after its device was deleted). Returns false if it was not marked used.
    pub fn release(&mut self, id: ThinId) -> bool {
        self.used.remove(&id.0)
    }

    /// Whether `id` is marked used.
    pub fn is_used(&self, id: ThinId) -> bool {
        self.used.contains(&id.0)
    }

    /// Number of ids marked used.
    pub fn used_count(&self) -> usize {
        self.used.len()
    }

    /// First id at or after `start` (wrapping) that is not used.
    fn find_free_from(&self, start: u32) -> Option<u32> {
        if self.used.len() > ThinId::MAX.0 as usize {
            return None;
        }
        first_gap(&self.used, start, ThinId::MAX.0).or_else(|| first_gap(&self.used, 0, start))
    }
}

/// Smallest value in `from..=to` not in `used`, walking the used ids in order (cost follows the
/// length of the run of used ids at `from`, not the id space).
fn first_gap(used: &BTreeSet<u32>, from: u32, to: u32) -> Option<u32> {
    let mut candidate = from;
    for &u in used.range(from..=to) {
        if u != candidate {
            break;
        }
        if candidate == to {
            return None;
        }
        candidate += 1;
    }
    (candidate <= to).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<ThinId> {
        v.iter()
            .map(|&i| ThinId::new(u64::from(i)).unwrap())
            .collect()
    }

    #[test]
    fn id_limit_is_24_bits() {
        assert_eq!(ThinId::new(16_777_215).unwrap().get(), 16_777_215);
        assert!(matches!(
            ThinId::new(16_777_216),
            Err(Error::InvalidThinId { ref value }) if value == "16777216"
        ));
        assert!("12".parse::<ThinId>().is_ok());
        let err = "x".parse::<ThinId>().unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
        assert!("16777216".parse::<ThinId>().is_err());
    }

    #[test]
    fn empty_allocator_starts_at_zero_and_counts_up() {
        let mut a = IdAllocator::new([]);
        let got: Vec<u32> = (0..5).map(|_| a.allocate().unwrap().get()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn continues_after_highest_used_and_never_collides() {
        let used = ids(&[0, 1, 5, 7]);
        let mut a = IdAllocator::new(used.clone());
        let got: Vec<ThinId> = (0..10).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(got[0].get(), 8);
        for id in &got {
            assert!(!used.contains(id), "{id} collides");
        }
        let unique: BTreeSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len());
    }

    #[test]
    fn wraps_around_at_the_limit_and_fills_gaps() {
        let mut a = IdAllocator::new(ids(&[16_777_214, 0, 2]));
        assert_eq!(a.allocate().unwrap(), ThinId::MAX);
        assert_eq!(a.allocate().unwrap().get(), 1);
        assert_eq!(a.allocate().unwrap().get(), 3);
    }

    #[test]
    fn highest_possible_id_used_starts_at_zero() {
        let mut a = IdAllocator::new([ThinId::MAX]);
        assert_eq!(a.allocate().unwrap().get(), 0);
    }

    #[test]
    fn release_makes_an_id_available_again_after_a_wrap() {
        let mut a = IdAllocator::new([]);
        let first = a.allocate().unwrap();
        assert!(a.release(first));
        assert!(!a.release(first));
        // Next-fit: the released id is not reused right away.
        assert_eq!(a.allocate().unwrap().get(), 1);
        assert!(a.mark_used(ThinId::new(2).unwrap()));
        assert!(!a.mark_used(ThinId::new(2).unwrap()));
        assert_eq!(a.allocate().unwrap().get(), 3);
        assert!(a.is_used(ThinId::new(3).unwrap()));
        assert!(!a.is_used(first));
    }

    #[test]
    fn exhaustion_is_an_error() {
        // A full id space: every id used.
        let mut a = IdAllocator::new((0..=ThinId::MAX.get()).map(ThinId));
        assert_eq!(a.used_count(), 1 << 24);
        assert!(matches!(a.allocate(), Err(Error::IdsExhausted)));
        // Free one in the middle: it is found.
        a.release(ThinId(12_345));
        assert_eq!(a.allocate().unwrap().get(), 12_345);
        assert!(matches!(a.allocate(), Err(Error::IdsExhausted)));
    }
}
