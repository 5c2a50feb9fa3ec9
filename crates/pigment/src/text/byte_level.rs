//! GPT-2's reversible byte-to-unicode map, used by CLIP's BPE.
//!
//! BPE works on printable characters, so each UTF-8 byte of the text is first replaced by one
//! printable unicode character: the printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) map to
//! themselves, the other 68 bytes to U+0100 onwards, in byte order. Source: OpenAI CLIP
//! `simple_tokenizer.py::bytes_to_unicode` (identical to GPT-2's `encoder.py`), also
//! `tokenizers/src/pre_tokenizers/byte_level.rs`.

use std::sync::OnceLock;

/// The printable unicode character that stands for each byte value.
pub(crate) fn byte_to_unicode() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u32| {
            (u32::from(b'!')..=u32::from(b'~')).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b)
        };
        let mut table = ['\0'; 256];
        let mut next_free = 256u32;
        for (byte, slot) in table.iter_mut().enumerate() {
            let byte = byte as u32;
            let code = if printable(byte) {
                byte
            } else {
                next_free += 1;
                next_free - 1
            };
            // All codes are below U+0144: valid scalar values.
            *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
        }
        table
    })
}

/// `piece` with every UTF-8 byte replaced by its printable stand-in.
pub(crate) fn bytes_as_unicode(piece: &str) -> String {
    let table = byte_to_unicode();
    piece.bytes().map(|b| table[usize::from(b)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_bytes_map_to_themselves_and_others_follow_u0100() {
        let t = byte_to_unicode();
        assert_eq!(t[usize::from(b'a')], 'a');
        assert_eq!(t[0xA1], '¡');
        assert_eq!(t[0], '\u{100}');
        assert_eq!(t[usize::from(b' ')], 'Ġ'); // GPT-2's familiar space marker, U+0120.
        let mut all: Vec<char> = t.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 256, "the map must be a bijection");
    }

    #[test]
    fn multibyte_characters_become_one_symbol_per_byte() {
        assert_eq!(bytes_as_unicode("é"), "Ã©");
        assert_eq!(bytes_as_unicode("a b"), "aĠb");
    }
}
