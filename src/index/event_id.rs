//! Membership event IDs as the index keeps them: most are `$` and 43
//! URL-safe base64 characters (room versions 4 and later, the reference
//! hash), which the index stores as the 32 bytes they encode, inline in the
//! snapshot record, instead of a heap string; any other form is kept as
//! given. At ten million snapshots this is ~55 bytes per snapshot less.
//!
//! Owns: the encoding and its exact round trip. May not touch: anything else.

use crate::model::EventId;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Characters after the `$` of a hash event ID.
const HASH_CHARACTERS: usize = 43;

/// A stored membership event ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StoredEventId {
    /// `$` and the unpadded URL-safe base64 of these 32 bytes.
    Hash([u8; 32]),
    /// Any other event ID, as given.
    Other(EventId),
}

/// Each byte's value in the alphabet, or `INVALID`.
const SEXTETS: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const INVALID: u8 = 0xFF;

/// The 32 bytes of a hash event ID, when `value` is exactly one in the
/// canonical form (so that encoding them gives `value` back).
fn decode_hash(value: &str) -> Option<[u8; 32]> {
    let text = value.strip_prefix('$')?.as_bytes();
    if text.len() != HASH_CHARACTERS {
        return None;
    }
    let mut bytes = [0u8; 32];
    let mut out = 0;
    // Ten groups of four characters (three bytes each), then three characters (two bytes).
    for group in text.chunks(4) {
        let mut bits = 0u32;
        let mut invalid = 0u8;
        for (i, character) in group.iter().enumerate() {
            let value = SEXTETS[*character as usize];
            invalid |= value & 0xC0;
            bits |= u32::from(value & 63) << (18 - 6 * i);
        }
        if invalid != 0 {
            return None;
        }
        let produced = group.len() - 1;
        for i in 0..produced {
            bytes[out] = (bits >> (16 - 8 * i)) as u8;
            out += 1;
        }
        if produced == 2 && bits & 0xFF != 0 {
            // Non-zero padding bits: not the canonical encoding.
            return None;
        }
    }
    Some(bytes)
}

fn encode_hash(bytes: &[u8; 32]) -> String {
    let mut text = String::with_capacity(1 + HASH_CHARACTERS);
    text.push('$');
    for group in bytes.chunks(3) {
        let mut bits = 0u32;
        for (i, byte) in group.iter().enumerate() {
            bits |= u32::from(*byte) << (16 - 8 * i);
        }
        for i in 0..=group.len() {
            text.push(ALPHABET[(bits >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    text
}

impl StoredEventId {
    /// `value` must be a valid event ID (the caller holds one or checked it).
    pub(super) fn new(value: &str) -> Self {
        match decode_hash(value) {
            Some(bytes) => StoredEventId::Hash(bytes),
            None => StoredEventId::Other(EventId::from_checked(value)),
        }
    }

    pub(super) fn event_id(&self) -> EventId {
        match self {
            StoredEventId::Hash(bytes) => EventId::from_checked(&encode_hash(bytes)),
            StoredEventId::Other(id) => id.clone(),
        }
    }

    /// Heap bytes beside the value itself (an ID kept as text: its bytes
    /// and the shared string's counts).
    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            StoredEventId::Hash(_) => 0,
            StoredEventId::Other(id) => id.as_str().len() + 16,
        }
    }

    #[cfg(test)]
    fn is(&self, value: &str) -> bool {
        match self {
            StoredEventId::Hash(bytes) => decode_hash(value).is_some_and(|b| b == *bytes),
            StoredEventId::Other(id) => id.as_str() == value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(value: &str) -> StoredEventId {
        assert!(EventId::check(value).is_ok());
        StoredEventId::new(value)
    }

    #[test]
    fn hash_event_ids_round_trip_through_32_bytes() {
        for value in [
            "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg",
            "$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$__________________________________________8",
            "$0000000000000000000000000000000000000000a8w",
        ] {
            let id = stored(value);
            assert!(matches!(id, StoredEventId::Hash(_)), "{value}");
            assert_eq!(id.event_id().as_str(), value);
            assert!(id.is(value));
        }
    }

    #[test]
    fn other_forms_are_kept_as_given() {
        for value in [
            // Room versions 1 and 2: '$opaque:server'.
            "$1234567890abcdef:example.org",
            // Standard (not URL-safe) base64 of a version 3 room.
            "$Rqnc+F+dvnEYJTyHq/iKxU2bZ1CI92+kuZq3a5lr5Zg",
            // Right length, non-zero padding bits (not canonical).
            "$__________________________________________9",
            // One character short and one too many.
            "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Z",
            "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5ZgA",
        ] {
            let id = stored(value);
            assert!(matches!(id, StoredEventId::Other(_)), "{value}");
            assert_eq!(id.event_id().as_str(), value);
            assert!(id.is(value));
        }
        assert!(!stored("$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .is("$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"));
    }
}
