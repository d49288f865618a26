//! Byte sizes as operators write them: `"96MiB"`, `"64GiB"`, `"500MB"`.
//!
//! Binary prefixes (KiB, MiB, GiB, TiB) are powers of 1024, SI ones (kB,
//! MB, GB, TB) powers of 1000; a bare number is bytes.

use std::fmt;
use std::str::FromStr;

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a size does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("size {0:?} is not a number with a unit such as 96MiB, 64GiB or 500MB")]
pub struct SizeError(pub String);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size in bytes as a `usize` (saturating).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, unit) = crate::rate::number_and_unit(s).ok_or_else(|| SizeError(s.to_owned()))?;
        let mult: f64 = match unit.as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(SizeError(s.to_owned())),
        };
        let bytes = (n * mult).round();
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(SizeError(s.to_owned()));
        }
        Ok(Self(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_si_units() {
        let p = |s: &str| s.parse::<ByteSize>().map(ByteSize::bytes);
        assert_eq!(p("96MiB"), Ok(96 << 20));
        assert_eq!(p("64 GiB"), Ok(64 << 30));
        assert_eq!(p("500MB"), Ok(500_000_000));
        assert_eq!(p("1.5KiB"), Ok(1536));
        assert_eq!(p("4096"), Ok(4096));
        assert!(p("lots").is_err());
        assert!(p("12 parsecs").is_err());
        assert!(p("").is_err());
        assert_eq!(ByteSize(96 << 20).to_string(), "96MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }
}
