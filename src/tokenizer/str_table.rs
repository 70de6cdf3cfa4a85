//! A table of strings numbered in insertion order, with a text -> number index: what a
//! `Vec<String>` plus a `HashMap<String, u32>` give, at a fraction of the memory. A 150k-token
//! vocabulary is mostly strings of a few bytes, for which a `String` (24 bytes plus an
//! allocation) and a hash-map entry holding a second copy cost ten times the text itself, and
//! the tokenizer keeps its tables for the life of a model.
//!
//! Texts live end to end in one buffer; the index is open addressing (linear probing) over a
//! power-of-two array of string numbers, at most half full.

/// Marks an empty index slot.
const EMPTY: u32 = u32::MAX;

#[derive(Default)]
pub(crate) struct StrTable {
    text: String,
    /// `ends[i]` is where string `i` ends in `text` (it starts where string `i - 1` ends).
    ends: Vec<u32>,
    /// String numbers by hash; `EMPTY` where free. Its length is a power of two (or zero).
    slots: Vec<u32>,
}

impl StrTable {
    pub fn with_capacity(n: usize) -> StrTable {
        let mut t = StrTable { text: String::new(), ends: Vec::with_capacity(n), slots: Vec::new() };
        t.grow_index((2 * n).next_power_of_two().max(16));
        t
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// String `i`; panics if `i >= len()`.
    pub fn get(&self, i: u32) -> &str {
        let end = self.ends[i as usize] as usize;
        let start = if i == 0 { 0 } else { self.ends[i as usize - 1] as usize };
        &self.text[start..end]
    }

    /// The number of the first string equal to `s`, if any.
    pub fn find(&self, s: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = hash(s) as usize & mask;
        loop {
            match self.slots[at] {
                EMPTY => return None,
                i if self.get(i) == s => return Some(i),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Appends `s` as string number `len()` and returns that number, or, if an equal string is
    /// already present, returns Err with the existing number and appends nothing.
    pub fn push_unique(&mut self, s: &str) -> Result<u32, u32> {
        if let Some(i) = self.find(s) {
            return Err(i);
        }
        let i = self.ends.len() as u32;
        assert!(self.text.len() + s.len() <= u32::MAX as usize, "string table over 4 GiB");
        self.text.push_str(s);
        self.ends.push(self.text.len() as u32);
        if 2 * self.ends.len() > self.slots.len() {
            self.grow_index((2 * self.slots.len()).max(16));
        } else {
            self.index(i);
        }
        Ok(i)
    }

    /// The number of `s`, appending it first if it is new.
    pub fn intern(&mut self, s: &str) -> u32 {
        self.push_unique(s).unwrap_or_else(|existing| existing)
    }

    /// Every string in number order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len() as u32).map(|i| self.get(i))
    }

    /// Frees spare capacity once the table is complete.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    fn grow_index(&mut self, slots: usize) {
        self.slots = vec![EMPTY; slots];
        for i in 0..self.ends.len() as u32 {
            self.index(i);
        }
    }

    fn index(&mut self, i: u32) {
        let mask = self.slots.len() - 1;
        let mut at = hash(self.get(i)) as usize & mask;
        while self.slots[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.slots[at] = i;
    }
}

/// FxHash over 8-byte words: fast on short strings and good enough for a table whose keys come
/// from a model file, not from an adversary choosing collisions at run time.
fn hash(s: &str) -> u64 {
    const K: u64 = 0x517C_C1B7_2722_0A95;
    let mut h = s.len() as u64;
    let (words, tail) = s.as_bytes().as_chunks::<8>();
    for w in words {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(*w)).wrapping_mul(K);
    }
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    // The index uses the low bits; fold the well-mixed high bits into them.
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_texts_and_lookups_survive_growth() {
        let mut t = StrTable::with_capacity(2);
        let words: Vec<String> = (0..5000).map(|i| format!("w{i}")).chain(["".to_string(), "é€𝄞".into()]).collect();
        for (i, w) in words.iter().enumerate() {
            assert_eq!(t.push_unique(w), Ok(i as u32));
        }
        assert_eq!(t.len(), words.len());
        for (i, w) in words.iter().enumerate() {
            assert_eq!(t.get(i as u32), w);
            assert_eq!(t.find(w), Some(i as u32));
        }
        assert_eq!(t.find("w5000"), None);
        assert_eq!(t.push_unique("w17"), Err(17));
        assert_eq!(t.intern("w17"), 17);
        assert_eq!(t.intern("new"), words.len() as u32);
        assert!(t.iter().take(3).eq(["w0", "w1", "w2"]));
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        let t = StrTable::default();
        assert_eq!(t.find(""), None);
        assert_eq!(t.len(), 0);
    }
}
