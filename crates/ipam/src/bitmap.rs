//! A fixed-size bitmap of slots with a round-robin next-free cursor.

/// Slot `i` is taken when its bit is set. `allocate` searches from the cursor
/// and moves it past the slot it returns, so a run of allocations is O(1)
/// amortized (whole words of taken slots are skipped at once), and a slot that
/// was just released is not handed out again until the cursor wraps around,
/// which keeps stale ARP/conntrack entries of a deleted pod away from the next.
#[derive(Debug, Clone)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    len: u64,
    used: u64,
    cursor: u64,
}

impl Bitmap {
    pub(crate) fn new(len: u64) -> Self {
        let words = len.div_ceil(64) as usize;
        Bitmap {
            words: vec![0; words],
            len,
            used: 0,
            cursor: 0,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn is_set(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1u64 << (i % 64)) != 0
    }

    /// Sets slot `i`; false when it was already set (or out of range).
    pub(crate) fn set(&mut self, i: u64) -> bool {
        if i >= self.len || self.is_set(i) {
            return false;
        }
        self.words[(i / 64) as usize] |= 1u64 << (i % 64);
        self.used += 1;
        true
    }

    /// Clears slot `i`; false when it was not set.
    pub(crate) fn clear(&mut self, i: u64) -> bool {
        if !self.is_set(i) {
            return false;
        }
        self.words[(i / 64) as usize] &= !(1u64 << (i % 64));
        self.used -= 1;
        true
    }

    /// Takes the first free slot at or after the cursor (wrapping), if any.
    pub(crate) fn allocate(&mut self) -> Option<u64> {
        if self.used >= self.len {
            return None;
        }
        let found = self
            .find_free(self.cursor, self.len)
            .or_else(|| self.find_free(0, self.cursor))?;
        self.set(found);
        self.cursor = if found + 1 >= self.len { 0 } else { found + 1 };
        Some(found)
    }

    /// First clear bit in `[from, to)`.
    fn find_free(&self, from: u64, to: u64) -> Option<u64> {
        let mut i = from;
        while i < to {
            let w = (i / 64) as usize;
            let bit = i % 64;
            // Treat bits below `bit` as taken so the search starts at `i`.
            let word = self.words[w] | ((1u64 << bit) - 1);
            if word != u64::MAX {
                let candidate = (w as u64) * 64 + u64::from(word.trailing_ones());
                return (candidate < to).then_some(candidate);
            }
            i = (w as u64 + 1) * 64;
        }
        None
    }

    /// Indices of set slots, ascending.
    pub(crate) fn iter_set(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                Some(w as u64 * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_then_wraps_past_released() {
        let mut b = Bitmap::new(130);
        for i in 0..130 {
            assert_eq!(b.allocate(), Some(i));
        }
        assert_eq!(b.allocate(), None);
        assert!(b.clear(5));
        assert!(b.clear(129));
        assert!(!b.clear(129));
        // Cursor wrapped to 0; first free at or after it is 5.
        assert_eq!(b.allocate(), Some(5));
        assert_eq!(b.allocate(), Some(129));
        assert_eq!(b.allocate(), None);
        assert_eq!(b.used(), 130);
    }

    #[test]
    fn cursor_skips_recently_released() {
        let mut b = Bitmap::new(10);
        assert_eq!(b.allocate(), Some(0));
        assert_eq!(b.allocate(), Some(1));
        b.clear(0);
        assert_eq!(b.allocate(), Some(2));
    }

    #[test]
    fn iter_set_lists_taken() {
        let mut b = Bitmap::new(200);
        for i in [0, 63, 64, 199] {
            assert!(b.set(i));
        }
        assert!(!b.set(200));
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![0, 63, 64, 199]);
    }
}
