//! Human units in the configuration: durations (`10m`, `30s`, `never`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
