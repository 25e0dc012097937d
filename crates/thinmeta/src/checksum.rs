//! Block checksums: crc32c over bytes `4..4096`, seeded with all ones, not inverted at the end,
//! XORed with a per-block-type salt.

/// Size of a metadata block in bytes.
pub const BLOCK_SIZE: usize = 4096;

/// Salt of the superblock checksum.
pub const SUPERBLOCK_SALT: u32 = 160774;
/// Salt of a btree node checksum.
pub const BTREE_NODE_SALT: u32 = 121107;
/// Salt of a space-map bitmap block checksum.
pub const BITMAP_SALT: u32 = 240779;
/// Salt of the metadata space-map index block checksum.
pub const INDEX_SALT: u32 = 160478;

/// The checksum a block of the given type must carry in its first four bytes.
pub fn block_checksum(block: &[u8; BLOCK_SIZE], salt: u32) -> u32 {
    // crc32c() is the standard (inverted in and out) crc; the on-disk one is not inverted at
    // the end, which is the same as XOR with all ones.
    crc32c::crc32c(&block[4..]) ^ 0xffff_ffff ^ salt
}

/// Checks the stored checksum; returns `(stored, computed)` on mismatch.
pub fn verify(block: &[u8; BLOCK_SIZE], salt: u32) -> Result<(), (u32, u32)> {
    let stored = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
    let computed = block_checksum(block, salt);
    if stored == computed {
        Ok(())
    } else {
        Err((stored, computed))
    }
}

/// Writes the checksum into the first four bytes.
pub fn seal(block: &mut [u8; BLOCK_SIZE], salt: u32) {
    let c = block_checksum(block, salt);
    block[..4].copy_from_slice(&c.to_le_bytes());
}

/// Little-endian u64 at `off`.
#[inline]
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Little-endian u32 at `off`.
#[inline]
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
