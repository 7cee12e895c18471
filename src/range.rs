//! `Range: bytes=...` for blobs: one range is honoured; multi-range and
//! malformed headers are ignored (the whole blob is sent), as RFC 9110 allows.

/// A range that starts at or past the end of the blob.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parses a `Range` header against a blob of `size` bytes into
/// `start..end` (end exclusive); `Ok(None)` means "send everything".
pub fn parse(header: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (first.trim().is_empty(), number(first), number(last)) {
        (true, _, Some(0)) => return Err(Unsatisfiable),
        (true, _, Some(suffix)) => (size.saturating_sub(suffix), size),
        (false, Some(start), None) if last.trim().is_empty() => (start, size),
        (false, Some(start), Some(last)) if last >= start => {
            (start, size.min(last.saturating_add(1)))
        }
        _ => return Ok(None),
    };
    if start >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-", 10), Ok(Some((0, 10))));
        assert_eq!(parse("bytes=4-", 10), Ok(Some((4, 10))));
        assert_eq!(parse("bytes=2-5", 10), Ok(Some((2, 6))));
        assert_eq!(parse("bytes=2-500", 10), Ok(Some((2, 10))));
        assert_eq!(parse("bytes=-3", 10), Ok(Some((7, 10))));
        assert_eq!(parse("bytes=-30", 10), Ok(Some((0, 10))));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse("bytes=10-", 10), Err(Unsatisfiable));
        assert_eq!(parse("bytes=0-", 0), Err(Unsatisfiable));
        assert_eq!(parse("bytes=-0", 10), Err(Unsatisfiable));
        assert_eq!(parse("bytes=5-2", 10), Ok(None));
        assert_eq!(parse("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(parse("items=0-1", 10), Ok(None));
        assert_eq!(parse("bytes=x-", 10), Ok(None));
        assert_eq!(
            parse("bytes=18446744073709551615-18446744073709551615", 10),
            Err(Unsatisfiable)
        );
    }
}
