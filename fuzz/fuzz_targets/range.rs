//! `ociregistry::range::parse`. Input: a blob size in decimal, a line feed,
//! then the `Range` header value.
//!
//! Invariants: a satisfiable range lies inside the blob and is not empty
//! (`start < end <= size`, `end` exclusive); `Unsatisfiable` only ever
//! answers a `bytes=` header; and the plain single-range forms
//! (`bytes=a-b`, `bytes=a-`, `bytes=-n`) mean what RFC 9110 says.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry::range::{parse, Unsatisfiable};

/// What RFC 9110 asks of `spec` (the part after `bytes=`) when it is one
/// range written plainly (digits and one `-`, no spaces); `None` otherwise.
fn expected(spec: &str, size: u64) -> Option<Result<Option<(u64, u64)>, Unsatisfiable>> {
    let (first, last) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(first.is_empty() || digits(first)) || !(last.is_empty() || digits(last)) {
        return None;
    }
    // An empty position is `None`; a number beyond u64 is not modelled.
    let number = |s: &str| match s {
        "" => Some(None),
        s => s.parse::<u64>().ok().map(Some),
    };
    let (first, last) = (number(first)?, number(last)?);
    Some(match (first, last) {
        // `bytes=-`: no range at all.
        (None, None) => Ok(None),
        // `bytes=-n`: the last n bytes; none of them is unsatisfiable.
        (None, Some(0)) => Err(Unsatisfiable),
        (None, Some(_)) if size == 0 => Err(Unsatisfiable),
        (None, Some(n)) => Ok(Some((size - n.min(size), size))),
        // `bytes=a-`.
        (Some(a), None) if a < size => Ok(Some((a, size))),
        // `bytes=a-b`; b before a is invalid and ignored.
        (Some(a), Some(b)) if b < a => Ok(None),
        (Some(a), Some(b)) if a < size => Ok(Some((a, size.min(b.saturating_add(1))))),
        // Starts at or past the end.
        (Some(_), _) => Err(Unsatisfiable),
    })
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let Some((size, header)) = input.split_once('\n') else {
        return;
    };
    let Ok(size) = size.parse::<u64>() else {
        return;
    };
    let got = parse(header, size);
    match got {
        Ok(Some((start, end))) => {
            assert!(
                start < end && end <= size,
                "{header:?} size {size}: {start}..{end}"
            );
        }
        Ok(None) => {}
        Err(Unsatisfiable) => assert!(header.trim().starts_with("bytes=")),
    }
    if let Some(spec) = header.strip_prefix("bytes=") {
        if let Some(want) = expected(spec, size) {
            assert_eq!(got, want, "{header:?} size {size}");
        }
    }
});
