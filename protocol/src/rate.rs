//! Link rates as operators write them: `"900Mbit"`, `"10Gbit"`, `"500kbit"`.
//!
//! Units are bits per second with SI prefixes (k = 1000); a bare number is
//! bits per second. Accepted range: 1 kbit/s to 100 Gbit/s.

use std::fmt;
use std::str::FromStr;

/// A link rate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

/// Why a rate does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rate {0:?} is not a number with a unit such as 900Mbit, 10Gbit or 500kbit (1kbit..=100Gbit)"
)]
pub struct RateError(pub String);

impl Rate {
    const MIN: u64 = 1_000;
    const MAX: u64 = 100_000_000_000;

    /// A rate of `bps` bits per second, if in range.
    pub fn from_bits_per_sec(bps: u64) -> Result<Self, RateError> {
        if (Self::MIN..=Self::MAX).contains(&bps) {
            Ok(Self(bps))
        } else {
            Err(RateError(format!("{bps}bit")))
        }
    }

    /// Bits per second.
    pub fn bits_per_sec(self) -> u64 {
        self.0
    }

    /// Bytes per second.
    pub fn bytes_per_sec(self) -> f64 {
        self.0 as f64 / 8.0
    }
}

/// Splits `"900 Mbit"` into `900.0` and `"mbit"` (lower case, trimmed).
pub(crate) fn number_and_unit(s: &str) -> Option<(f64, String)> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit.trim().to_ascii_lowercase()))
}

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, unit) = number_and_unit(s).ok_or_else(|| RateError(s.to_owned()))?;
        let mult = match unit.as_str() {
            "" | "bit" | "bps" => 1.0,
            "k" | "kbit" | "kbps" => 1e3,
            "m" | "mbit" | "mbps" => 1e6,
            "g" | "gbit" | "gbps" => 1e9,
            _ => return Err(RateError(s.to_owned())),
        };
        let bps = n * mult;
        if !bps.is_finite() || bps < 0.0 {
            return Err(RateError(s.to_owned()));
        }
        Self::from_bits_per_sec(bps.round() as u64).map_err(|_| RateError(s.to_owned()))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b.is_multiple_of(1_000_000_000) {
            write!(f, "{}Gbit", b / 1_000_000_000)
        } else if b.is_multiple_of(1_000_000) {
            write!(f, "{}Mbit", b / 1_000_000)
        } else if b.is_multiple_of(1_000) {
            write!(f, "{}kbit", b / 1_000)
        } else {
            write!(f, "{b}bit")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_spellings() {
        assert_eq!(
            "900Mbit".parse::<Rate>().unwrap().bits_per_sec(),
            900_000_000
        );
        assert_eq!(
            "10Gbit".parse::<Rate>().unwrap().bits_per_sec(),
            10_000_000_000
        );
        assert_eq!(
            "1.5 Gbit".parse::<Rate>().unwrap().bits_per_sec(),
            1_500_000_000
        );
        assert_eq!("500kbit".parse::<Rate>().unwrap().bits_per_sec(), 500_000);
        assert_eq!("2500".parse::<Rate>().unwrap().bits_per_sec(), 2500);
        assert_eq!("100mbps".parse::<Rate>().unwrap().to_string(), "100Mbit");
        for bad in ["", "fast", "10GB", "-5Mbit", "0", "101Gbit", "1e9"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
    }
}
