//! Byte sizes ("64MiB") and durations ("5s") as they appear in the configuration file
//! and on the command line, parsed by `bytesize` and `humantime`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A number of bytes written as `"64MiB"`, `"1 GB"` or a bare integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    pub const fn mib(n: u64) -> Self {
        Size(n * 1024 * 1024)
    }

    pub const fn kib(n: u64) -> Self {
        Size(n * 1024)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || !t.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("invalid size {s:?}: expected a number and a unit such as \"64MiB\""));
        }
        let parsed: bytesize::ByteSize = t.parse().map_err(|e: String| format!("invalid size {s:?}: {e}"))?;
        // bytesize saturates on overflow; anything near u64::MAX is a typo, not a size.
        if parsed.as_u64() >= u64::MAX / 2 {
            return Err(format!("invalid size {s:?}: too large"));
        }
        Ok(Size(parsed.as_u64()))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];
        for (unit, factor) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl fmt::Debug for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom(format!("invalid size {v}: negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration written as `"5s"`, `"250ms"` or `"8h"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl Span {
    pub const fn secs(n: u64) -> Self {
        Span(Duration::from_secs(n))
    }

    pub const fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Span)
            .map_err(|e| format!("invalid duration {s:?}: {e} (expected e.g. \"5s\" or \"250ms\")"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in [
            ("64MiB", Some(64 << 20)),
            ("1 GiB", Some(1 << 30)),
            ("512KiB", Some(512 << 10)),
            ("1000", Some(1000)),
            ("1kB", Some(1000)),
            ("", None),
            ("MiB", None),
            ("-5MiB", None),
            ("12 parsecs", None),
            ("99999999999999999999TiB", None),
        ] {
            assert_eq!(text.parse::<Size>().ok().map(Size::bytes), want, "{text:?}");
        }
        assert_eq!(Size::mib(256).to_string(), "256MiB");
        assert_eq!(Size(1500).to_string(), "1500B");
    }

    #[test]
    fn spans() {
        assert_eq!("5s".parse::<Span>().unwrap().get(), Duration::from_secs(5));
        assert_eq!("250ms".parse::<Span>().unwrap().get(), Duration::from_millis(250));
        assert_eq!("8h".parse::<Span>().unwrap().get(), Duration::from_secs(8 * 3600));
        assert!("5 parsecs".parse::<Span>().is_err());
        assert!("".parse::<Span>().is_err());
    }
}
