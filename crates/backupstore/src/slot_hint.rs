//! The names of an encrypted store's key slots as this host last found them, kept in the
//! store's cache directory (file `key-slots.<16 hex of BLAKE3(destination)>`, one name per
//! line: a cache directory given for several stores keeps each one's apart).
//!
//! Opening an encrypted store reads its key slots: a listing of `keys/`, then each slot object.
//! Those are two round trips one after the other, on top of the store marker's read. With the
//! names known from an earlier open, the slot objects are read beside the listing (and the
//! marker): one round trip, when the slots did not change since. The listing still decides
//! which slots there are: a name it does not show is not used, and a slot it shows that was not
//! known is read after it. A stale or damaged file costs a wasted `GET`, never a wrong answer,
//! and the names are not secret (they are the store's object names).

use std::path::PathBuf;

use crate::store::Store;

const FILE: &str = "key-slots";

/// Most names kept (a store has a handful of slots).
const MAX: usize = 16;

fn file(store: &Store) -> Option<PathBuf> {
    let tag = blake3::hash(store.dest.as_bytes()).to_hex();
    let name = format!("{FILE}.{}", &tag.as_str()[..16]);
    store.cache_dir.as_ref().map(|d| d.join(name))
}

/// Whether `name` can be a slot object's name (what the file holds is not trusted).
fn plausible(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The names remembered for `store` (none: no cache directory, no file, or nothing usable).
pub(crate) fn read(store: &Store) -> Vec<String> {
    let Some(text) = file(store).and_then(|f| std::fs::read_to_string(f).ok()) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|n| plausible(n))
        .take(MAX)
        .map(str::to_string)
        .collect()
}

/// The form `names` are kept in: plausible ones only, at most [`MAX`], sorted, once each.
fn normal(names: &[String]) -> Vec<&str> {
    let mut names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| plausible(n))
        .take(MAX)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Remembers `found` for `store` in place of `remembered` (what [`read`] answered before),
/// unless they are the same names: an open whose slots did not change writes nothing. The
/// file is written whole, then renamed over; failures are ignored (the next open then reads
/// the slots in two round trips, as without this file).
pub(crate) fn update(store: &Store, remembered: &[String], found: &[String]) {
    let names = normal(found);
    if names == normal(remembered) {
        return;
    }
    let Some(path) = file(store) else { return };
    let Some(dir) = path.parent() else { return };
    let mut text = String::new();
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    let mut tmp = path.clone().into_os_string();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, text))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Adds `name` to what is remembered (a slot this host just wrote).
pub(crate) fn add(store: &Store, name: &str) {
    let remembered = read(store);
    let mut names = remembered.clone();
    names.push(name.to_string());
    update(store, &remembered, &names);
}

/// Drops `name` from what is remembered (a slot this host just removed).
pub(crate) fn remove(store: &Store, name: &str) {
    let remembered = read(store);
    let names: Vec<String> = remembered.iter().filter(|n| *n != name).cloned().collect();
    update(store, &remembered, &names);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KdfParams, SecretSource};
    use crate::keys;

    fn pass(p: &str) -> SecretSource {
        SecretSource::Passphrase(zeroize::Zeroizing::new(p.to_owned()))
    }

    fn count(s: &Store) -> u64 {
        s.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn host(root: &std::path::Path, cache: &str) -> Store {
        let opts = crate::options::TargetOptions {
            kdf: KdfParams::insecure_fast(),
            cache_dir: Some(root.join(cache)),
            ..Default::default()
        };
        Store::open(&format!("vfs://{}", root.join("store").display()), &opts).unwrap()
    }

    /// Host A remembers slot "one"; host B then adds "two" and removes "one". A's stale
    /// names cost a read that finds nothing; the listing decides: "two" opens the store (read
    /// after the listing), "one" does not any more; A remembers the slots as they now are.
    #[tokio::test]
    async fn stale_names_are_corrected_by_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let a = host(dir.path(), "a");
        let b = host(dir.path(), "b");
        let kdf = KdfParams::insecure_fast();
        let (id, k, one) = keys::create(&a, &pass("one"), kdf, crate::Cipher::preferred())
            .await
            .unwrap();
        assert_eq!(read(&a), [one.as_str()]);
        let before = count(&a);
        keys::unlock(&a, id, &pass("one")).await.unwrap();
        assert_eq!(
            count(&a) - before,
            2,
            "a listing and the hinted slot's read"
        );
        let two = keys::add(&b, &k, &pass("two"), kdf).await.unwrap();
        keys::remove(&b, &one).await.unwrap();
        let before = count(&a);
        let opened = keys::unlock(&a, id, &pass("two")).await.unwrap();
        assert_eq!(opened.master(), k.master());
        assert_eq!(
            count(&a) - before,
            3,
            "listing, stale read, new slot's read"
        );
        assert_eq!(read(&a), [two.as_str()]);
        let e = keys::unlock(&a, id, &pass("one")).await.unwrap_err();
        assert!(e.to_string().contains("opens none"), "{e}");
    }

    #[test]
    fn names_round_trip_and_junk_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::options::TargetOptions {
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let store = Store::open(&format!("vfs://{}", dir.path().display()), &opts).unwrap();
        assert!(read(&store).is_empty());
        update(&store, &[], &["b".into(), "a".into()]);
        add(&store, "c");
        assert_eq!(read(&store), ["a", "b", "c"]);
        remove(&store, "b");
        assert_eq!(read(&store), ["a", "c"]);
        std::fs::write(file(&store).unwrap(), "ok\n../../etc\n\nx y\n").unwrap();
        assert_eq!(read(&store), ["ok"]);
    }
}
