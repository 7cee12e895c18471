//! The parallel part of a blob fetch: the bytes after the first answer of
//! a large blob, asked with `Range` requests over several connections at
//! once and written at their offsets into the blob's one partial file.
//!
//! Each segment is written as it arrives; the fetch hashes and publishes
//! the file in order as each segment's bytes become contiguous with what
//! came before (`BlobWriter::absorb`), so followers still read in order and
//! only verified-ready bytes. The last segment keeps its final batch in
//! memory and hands it to the writer, which writes it only once the digest
//! matched: as on one connection, no reader can assemble a whole body that
//! fails verification. An upstream that answers a range with the whole
//! blob (200) is read up to the segment's end and cut there.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use actix::Addr;
use bytes::Bytes;
use tokio::sync::watch;

use crate::error::FetchError;
use crate::names::{Digest, RepoName};
use crate::upstream::{OpenBlob, ParallelFetch, UpstreamRegistry};

/// How far one segment got.
#[derive(Debug, Clone, Default)]
pub struct SegmentState {
    /// Bytes of the segment written to the file, from its start.
    pub landed: u64,
    /// Set when the segment ended: the batch held back (the last
    /// segment's final bytes; empty for the others), or why it failed.
    pub done: Option<Result<Vec<Bytes>, FetchError>>,
}

/// One segment in flight; dropping it stops its transfer.
#[derive(Debug)]
pub struct Segment {
    /// Its progress.
    pub state: watch::Receiver<SegmentState>,
}

/// The segments of a blob of `total` bytes after a first answer of
/// `first` bytes: the rest split evenly over the other connections.
pub fn plan(parallel: ParallelFetch, first: u64, total: u64) -> Vec<Range<u64>> {
    let rest = total.saturating_sub(first);
    let parts = (parallel.connections as u64 - 1).clamp(1, rest.max(1));
    let each = rest.div_ceil(parts);
    (0..parts)
        .map(|i| first + i * each..(first + (i + 1) * each).min(total))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Starts fetching `range` of `digest` into `file`; `last`: the segment
/// that ends the blob (its final batch is held back).
pub fn start(
    upstream: Addr<UpstreamRegistry>,
    repo: RepoName,
    digest: Digest,
    range: Range<u64>,
    file: Arc<File>,
    last: bool,
) -> Segment {
    let (tx, state) = watch::channel(SegmentState::default());
    actix::spawn(async move {
        let result = fetch(&upstream, repo, digest, range, &file, last, &tx).await;
        tx.send_modify(|s| s.done = Some(result));
    });
    Segment { state }
}

/// Streams one segment into the file; returns the held-back batch.
async fn fetch(
    upstream: &Addr<UpstreamRegistry>,
    repo: RepoName,
    digest: Digest,
    range: Range<u64>,
    file: &File,
    last: bool,
    tx: &watch::Sender<SegmentState>,
) -> Result<Vec<Bytes>, FetchError> {
    let open = OpenBlob {
        repo,
        digest,
        range: Some(range.clone()),
    };
    let mut body = upstream.send(open).await??;
    // The blob offset of the next byte received (0 when the upstream
    // ignored the range and sends the whole blob).
    let mut at = body.start;
    let mut landed = 0;
    let mut held: Vec<Bytes> = Vec::new();
    loop {
        // The fetch that started the segment may end first (it failed):
        // the transfer stops with it.
        let batch = tokio::select! {
            batch = body.chunks.recv() => batch,
            () = tx.closed() => return Err(FetchError::Stopping),
        };
        let Some(batch) = batch else {
            break;
        };
        let mut kept = Vec::new();
        for chunk in batch? {
            let (from, to) = (at, at + chunk.len() as u64);
            at = to;
            let (a, b) = (from.max(range.start), to.min(range.end));
            if a < b {
                kept.push(chunk.slice((a - from) as usize..(b - from) as usize));
            }
        }
        let write = match last {
            true => std::mem::replace(&mut held, kept),
            false => kept,
        };
        for chunk in write {
            file.write_all_at(&chunk, range.start + landed)?;
            landed += chunk.len() as u64;
        }
        tx.send_modify(|s| s.landed = landed);
        if at >= range.end {
            break;
        }
    }
    if at < range.end {
        return Err(FetchError::BadResponse(format!(
            "a ranged answer ended at byte {at} of {}..{}",
            range.start, range.end
        )));
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_rest_without_overlap() {
        let p = ParallelFetch {
            min_size: 10,
            connections: 4,
        };
        assert_eq!(plan(p, 10, 100), vec![10..40, 40..70, 70..100]);
        assert_eq!(plan(p, 10, 12), vec![10..11, 11..12]);
        assert_eq!(plan(p, 10, 11), vec![10..11]);
        let two = ParallelFetch {
            min_size: 10,
            connections: 2,
        };
        assert_eq!(plan(two, 10, 1000), vec![10..1000]);
    }
}
