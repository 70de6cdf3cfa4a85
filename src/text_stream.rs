//! Turns a stream of token bytes into text a caller can print: bytes that end inside a UTF-8
//! character are held until the character is complete, and text that might be the start of a
//! stop string is held until it is known not to be.

#[derive(Default)]
pub struct TextStream {
    /// Bytes of an incomplete UTF-8 character.
    pending: Vec<u8>,
    /// Decoded text not yet released because it could begin a stop string.
    held: String,
    stops: Vec<String>,
    stopped: bool,
}

/// What one push releases.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    /// A stop string was completed; nothing after it will be released.
    pub stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        TextStream { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), ..Default::default() }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Released {
        if self.stopped {
            return Released { text: String::new(), stopped: true };
        }
        self.pending.extend_from_slice(bytes);
        self.decode_pending();
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.stopped = true;
            self.held.truncate(at);
            return Released { text: std::mem::take(&mut self.held), stopped: true };
        }
        let keep = self.longest_stop_prefix_suffix();
        let release_to = self.held.len() - keep;
        let rest = self.held.split_off(release_to);
        Released { text: std::mem::replace(&mut self.held, rest), stopped: false }
    }

    /// Releases everything held; an incomplete character at the very end becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
        text
    }

    fn decode_pending(&mut self) {
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    self.held.push_str(s);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    self.held.push_str(std::str::from_utf8(&self.pending[..valid]).expect("prefix checked valid"));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                        // Invalid bytes can never become valid: replace them and go on.
                        Some(bad) => {
                            self.held.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            for (i, _) in self.held.char_indices() {
                let suffix = &self.held[i..];
                if suffix.len() > best && suffix.len() < stop.len() && stop.starts_with(suffix) {
                    best = suffix.len();
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_split_utf8_characters() {
        let mut s = TextStream::new(vec![]);
        let bytes = "é😀".as_bytes();
        assert_eq!(s.push(&bytes[..1]).text, "");
        assert_eq!(s.push(&bytes[1..3]).text, "é");
        assert_eq!(s.push(&bytes[3..5]).text, "");
        assert_eq!(s.push(&bytes[5..]).text, "😀");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.push(&[b'a', 0xff, b'b']).text, "a\u{fffd}b");
        assert_eq!(s.push(&[0xe2, 0x82]).text, "");
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn stops_at_a_stop_string_across_pushes() {
        let mut s = TextStream::new(vec!["\nUser:".into()]);
        assert_eq!(s.push(b"Hello"), Released { text: "Hello".into(), stopped: false });
        assert_eq!(s.push(b" there\nUs"), Released { text: " there".into(), stopped: false });
        assert_eq!(s.push(b"er: hi"), Released { text: "".into(), stopped: true });
        assert_eq!(s.push(b"more"), Released { text: "".into(), stopped: true });
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn releases_held_text_when_it_stops_looking_like_a_stop() {
        let mut s = TextStream::new(vec!["###".into()]);
        assert_eq!(s.push(b"a#").text, "a");
        assert_eq!(s.push(b"#").text, "");
        assert_eq!(s.push(b"b").text, "##b");
        assert_eq!(s.push(b"##").text, "");
        assert_eq!(s.finish(), "##");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut s = TextStream::new(vec!["bc".into(), "ab".into()]);
        assert_eq!(s.push(b"xabc"), Released { text: "x".into(), stopped: true });
    }
}
