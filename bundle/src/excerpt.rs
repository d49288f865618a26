//! Bounded strings: what an attacker wrote, cut to a size a log line or a
//! reason file can hold.
//!
//! Every string in a [`Reason`](crate::Reason) that came from the bundle
//! (an entry name, a parser's complaint quoting the manifest, a trusted
//! comment) is an [`Excerpt`]: at most [`MAX_EXCERPT`] bytes, control
//! characters escaped, and the original length noted when it was cut. A
//! 20 MB entry name becomes a line like
//!
//! ```text
//! payload/aaaaaaaa…aaaa… (20000000 bytes)
//! ```
//!
//! so that nothing an attacker sizes reaches a log, a reason file or
//! `--json` output uncut.

use std::fmt;

/// Most bytes of escaped text an excerpt keeps.
pub const MAX_EXCERPT: usize = 256;

/// A string from outside, escaped and cut to [`MAX_EXCERPT`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// The escaped text kept, at most [`MAX_EXCERPT`] bytes.
    text: String,
    /// Length of the original in bytes.
    len: usize,
    /// Whether `text` is all of it.
    whole: bool,
}

impl Excerpt {
    /// An excerpt of raw bytes (invalid UTF-8 is shown as `\xNN`).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut text = String::new();
        let mut whole = true;
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if !push_escaped(&mut text, c) {
                    whole = false;
                    break;
                }
            }
            if !whole {
                break;
            }
            for b in chunk.invalid() {
                if !push_bounded(&mut text, &format!("\\x{b:02x}")) {
                    whole = false;
                    break;
                }
            }
            if !whole {
                break;
            }
        }
        Self {
            text,
            len: bytes.len(),
            whole,
        }
    }

    /// An excerpt of a string.
    pub fn of(s: &str) -> Self {
        Self::of_bytes(s.as_bytes())
    }

    /// The kept text, escaped (without the length note).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Length of the original, in bytes.
    pub fn original_len(&self) -> usize {
        self.len
    }

    /// Whether the whole original is kept.
    pub fn is_whole(&self) -> bool {
        self.whole
    }
}

/// Appends `c`, escaped if it is a control character; false (and nothing
/// appended) if that would pass [`MAX_EXCERPT`].
fn push_escaped(text: &mut String, c: char) -> bool {
    match c {
        '\\' => push_bounded(text, "\\\\"),
        '\n' => push_bounded(text, "\\n"),
        '\t' => push_bounded(text, "\\t"),
        '\r' => push_bounded(text, "\\r"),
        c if c.is_control() || is_invisible_format(c) => {
            push_bounded(text, &c.escape_unicode().to_string())
        }
        c => {
            let mut b = [0u8; 4];
            push_bounded(text, c.encode_utf8(&mut b))
        }
    }
}

/// Format characters that change how a line reads without showing:
/// bidirectional overrides and isolates, zero-width characters, the BOM.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

fn push_bounded(text: &mut String, piece: &str) -> bool {
    if text.len() + piece.len() > MAX_EXCERPT {
        return false;
    }
    text.push_str(piece);
    true
}

impl From<&str> for Excerpt {
    fn from(s: &str) -> Self {
        Self::of(s)
    }
}

impl From<String> for Excerpt {
    fn from(s: String) -> Self {
        Self::of(&s)
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.whole {
            f.write_str(&self.text)
        } else {
            write!(f, "{}… ({} bytes)", self.text, self.len)
        }
    }
}

impl fmt::Debug for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl serde::Serialize for Excerpt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PartialEq<str> for Excerpt {
    fn eq(&self, other: &str) -> bool {
        self.whole && self.text == other
    }
}

impl PartialEq<&str> for Excerpt {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_kept_whole() {
        let e = Excerpt::of("payload/app.bin");
        assert!(e.is_whole());
        assert_eq!(e.to_string(), "payload/app.bin");
        assert_eq!(e, "payload/app.bin");
    }

    #[test]
    fn long_strings_are_cut_with_their_length_noted() {
        let long = "a".repeat(20_000_000);
        let e = Excerpt::of(&long);
        assert!(!e.is_whole());
        assert_eq!(e.text().len(), MAX_EXCERPT);
        assert_eq!(e.original_len(), 20_000_000);
        let shown = e.to_string();
        assert!(shown.ends_with("… (20000000 bytes)"), "{shown}");
        assert!(shown.len() < MAX_EXCERPT + 32);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.len() < MAX_EXCERPT + 40, "{json}");
    }

    #[test]
    fn control_characters_and_bad_utf8_are_escaped() {
        let e = Excerpt::of_bytes(b"a\nb\x1b[31m\xff\\");
        assert_eq!(e.to_string(), "a\\nb\\u{1b}[31m\\xff\\\\");
        assert!(!e.to_string().chars().any(char::is_control));
        // A right-to-left override cannot turn "exe.txt" around in a log.
        assert_eq!(
            Excerpt::of("a\u{202e}txt.exe").to_string(),
            "a\\u{202e}txt.exe"
        );
        // A multi-byte character is never split by the cut.
        let e = Excerpt::of(&"é".repeat(200));
        assert!(e.text().len() <= MAX_EXCERPT);
        assert!(e.text().chars().all(|c| c == 'é'));
    }
}
