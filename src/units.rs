//! Human units in the configuration: durations (`10m`, `30s`, `never`) and
//! sizes (`50Gi`, `500M`).

use std::time::Duration;

/// Parses `never` (→ `None`), or a number with an optional unit `ms`, `s`
/// (default), `m`, `h`, `d` (→ `Some`).
pub fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 10m, 2h, 1d or never"))?;
    let seconds = |factor: u64| Duration::from_secs(n.saturating_mul(factor));
    Ok(Some(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    }))
}

/// Parses a byte size: a number with an optional unit `K`, `M`, `G`, `T`
/// (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 50Gi or 500M"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (K, M, G, T, Ki, Mi, Gi, Ti)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A configuration value as written: text (`10m`, `50Gi`) or a bare number.
enum Written {
    /// A number without a unit.
    Number(u64),
    /// Text, parsed by the unit's rules.
    Text(String),
}

impl<'de> serde::Deserialize<'de> for Written {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Takes a non-negative integer or a string.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Written;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or text with a unit such as 30s or 50Gi")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Written, E> {
                Ok(Written::Number(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Written, E> {
                u64::try_from(n)
                    .map(Written::Number)
                    .map_err(|_| E::custom(format!("{n} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Written, E> {
                Ok(Written::Text(t.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A byte size from the configuration: `50Gi`, `500M`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(Self(n)),
            Written::Text(t) => parse_size(&t).map(Self).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration from the configuration: `30s`, `10m`, `500ms`, a number of
/// seconds, or `never` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Option<Duration>);

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(Self(Some(Duration::from_secs(n)))),
            Written::Text(t) => parse_duration(&t)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for Span {
    type Err = String;

    /// Parses what the configuration accepts as text (command-line flags).
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(Self)
    }
}

impl serde::Serialize for Span {
    /// As text the deserializer reads back: `<n>ms`, or `never`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_str("never"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50Gi"), Ok(50 << 30));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        for bad in ["", "Gi", "1.5Gi", "10X", "99999999999999Ti"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Some(Duration::from_secs(600))));
        assert_eq!(parse_duration("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(parse_duration("45"), Ok(Some(Duration::from_secs(45))));
        assert_eq!(
            parse_duration("250ms"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(parse_duration("2d"), Ok(Some(Duration::from_secs(172_800))));
        assert_eq!(parse_duration("Never"), Ok(None));
        for bad in ["", "m", "10x", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for span in [Span(None), Span(Some(Duration::from_millis(1500)))] {
            let text = serde_json::to_value(span).unwrap();
            assert_eq!(serde_json::from_value::<Span>(text).unwrap(), span);
        }
    }
}
