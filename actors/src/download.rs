//! One blob fetch as its followers see it, and the reader that streams a
//! blob to a client from the cache file — also while it is still growing.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::watch;

use crate::error::FetchError;
use crate::metrics::METRICS;

/// Largest read handed to a client at once. actix-http copies each chunk
/// into the connection's write buffer, keeps that buffer while the
/// connection lives and drops buffers that grew past 128 KiB: 64 KiB
/// chunks keep it reused and the memory per client small (warm 1 MiB
/// blobs, 64 clients: 2,545 req/s and 28.6 MiB peak RSS, against 2,292
/// req/s and 42.0 MiB with 128 KiB chunks).
const MAX_CHUNK: u64 = 64 * 1024;

/// Smallest read handed to a client, however many bodies stream.
const MIN_CHUNK: u64 = 16 * 1024;

/// Chunk bytes all client connections together aim at. Every connection
/// keeps a write buffer as large as the largest chunk it sent, so chunks
/// shrink as connections grow in number: 64 KiB up to 512 connections,
/// 32 KiB at 1,000, 16 KiB from 2,048 (1,000 clients on one image: 131
/// MiB peak RSS with 64 KiB chunks, 84 MiB with 32 KiB; 32 KiB chunks
/// made a herd of 200 on a 100 MiB blob 1.4 times slower, hence not
/// always).
const CHUNK_BUDGET: u64 = 32 * 1024 * 1024;

/// Bytes one body sends before it lets the other tasks of its worker
/// thread run. Without it a body whose bytes are all readable sends until
/// its connection's socket is full, and a new request on the same worker
/// waits for every such body at each step of its handling (200 clients on
/// a 100 MiB blob: time to first byte at most 7.2 s, 1.0 s with turns).
const TURN: u64 = 512 * 1024;

/// The chunk size while `connections` client connections are open:
/// [`CHUNK_BUDGET`] shared out, within [`MIN_CHUNK`]..=[`MAX_CHUNK`], in
/// whole pages.
fn chunk_size(connections: i64) -> u64 {
    (CHUNK_BUDGET / connections.max(1) as u64).clamp(MIN_CHUNK, MAX_CHUNK) & !4095
}

/// The state of one blob fetch, published by the fetch and read by every
/// client following it. Publishing never blocks the fetch.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Waiting for the upstream's response headers.
    Connecting,
    /// Bytes are landing in `file`; the first `written` are readable.
    Receiving {
        /// The size the upstream announced, if it did.
        size: Option<u64>,
        /// Bytes readable from `file`.
        written: u64,
        /// The partial file, readable with `pread` even after its rename.
        file: Arc<File>,
    },
    /// Every byte verified and readable from `file`; not yet durable, so
    /// not yet in the cache's index. Followers may finish their transfers.
    Verified {
        /// Final size.
        size: u64,
        /// The partial file, readable with `pread` even after its rename.
        file: Arc<File>,
        /// Why the blob could not be made durable, if it could not: its
        /// followers still finish, the cache does not keep it.
        unstored: Option<FetchError>,
    },
    /// Verified, durable and in the cache.
    Complete {
        /// Final size.
        size: u64,
        /// The file (renamed into place).
        file: Arc<File>,
    },
    /// The fetch failed; followers abort their transfers.
    Failed(FetchError),
}

/// A handle on one blob fetch, shared by every client asking for that digest.
#[derive(Debug, Clone)]
pub struct BlobDownload {
    /// Progress published by the fetch.
    rx: watch::Receiver<Progress>,
}

impl BlobDownload {
    /// A new fetch in the `Connecting` state and the sender that drives it.
    pub(crate) fn new() -> (watch::Sender<Progress>, Self) {
        let (tx, rx) = watch::channel(Progress::Connecting);
        (tx, Self { rx })
    }

    /// A fetch that failed before it began (it was refused).
    pub(crate) fn failed(error: FetchError) -> Self {
        let (tx, download) = Self::new();
        tx.send_replace(Progress::Failed(error));
        download
    }

    /// Waits until the fetch ends, the blob durable in the cache: its size,
    /// or why it failed.
    pub async fn finished(mut self) -> Result<u64, FetchError> {
        loop {
            match &*self.rx.borrow_and_update() {
                Progress::Complete { size, .. } => return Ok(*size),
                Progress::Failed(e)
                | Progress::Verified {
                    unstored: Some(e), ..
                } => return Err(e.clone()),
                _ => {}
            }
            if self.rx.changed().await.is_err() {
                return match &*self.rx.borrow() {
                    Progress::Complete { size, .. } => Ok(*size),
                    _ => Err(abandoned()),
                };
            }
        }
    }

    /// Waits until the upstream has answered, then returns a reader over the
    /// (possibly still growing) blob.
    pub async fn ready(mut self) -> Result<BlobSource, FetchError> {
        loop {
            let state = self.rx.borrow_and_update().clone();
            match state {
                Progress::Connecting => {}
                Progress::Receiving { size, file, .. } => {
                    return Ok(BlobSource {
                        file,
                        size,
                        progress: Some(self.rx),
                    })
                }
                Progress::Verified { size, file, .. } | Progress::Complete { size, file } => {
                    return Ok(BlobSource::complete(file, size))
                }
                Progress::Failed(e) => return Err(e),
            }
            if self.rx.changed().await.is_err() {
                return Err(abandoned());
            }
        }
    }
}

/// The error followers see when a fetch ended without a final state.
fn abandoned() -> FetchError {
    FetchError::Internal("blob fetch ended unexpectedly".into())
}

/// A blob to stream: a complete cache file, or a download in progress.
#[derive(Debug)]
pub struct BlobSource {
    /// The file to `pread` from.
    file: Arc<File>,
    /// Total size, when known.
    size: Option<u64>,
    /// Present while the blob is still downloading.
    progress: Option<watch::Receiver<Progress>>,
}

impl BlobSource {
    /// A complete, verified blob file of `size` bytes.
    pub fn complete(file: Arc<File>, size: u64) -> Self {
        Self {
            file,
            size: Some(size),
            progress: None,
        }
    }

    /// The blob's size, when known (upstreams that send no length leave it open).
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// True when this source follows a download that was still receiving
    /// when the source was made; false when every byte was verified then.
    pub fn downloading(&self) -> bool {
        self.progress.is_some()
    }

    /// Streams bytes `start..end` (`end` = `None`: to the end), following
    /// the download when there is one. The stream fails, and the client's
    /// connection is cut, if the download fails.
    pub fn stream(
        self,
        start: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = std::io::Result<Bytes>> {
        let reader = Reader {
            source: self,
            pos: start,
            end: end.unwrap_or(u64::MAX),
            turn: 0,
        };
        futures::stream::unfold(reader, |mut r| async move {
            r.next_chunk().await.map(|c| (c, r))
        })
    }
}

/// Position of one client in a blob.
struct Reader {
    /// What is read.
    source: BlobSource,
    /// Next byte to send.
    pos: u64,
    /// One past the last byte to send.
    end: u64,
    /// Bytes read since this reader last yielded its turn.
    turn: u64,
}

impl Reader {
    /// The next chunk, `None` at the end, an error if the download failed.
    async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            let readable = match self.readable() {
                Ok(r) => r,
                Err(e) => return Some(Err(std::io::Error::other(e))),
            };
            if self.pos >= self.end {
                return None;
            }
            if self.pos < readable {
                if self.turn >= TURN {
                    self.turn = 0;
                    tokio::task::yield_now().await;
                }
                return Some(self.read(readable.min(self.end)));
            }
            // No reset of `turn` here: a wait on a watch that already
            // changed returns at once, without letting other tasks run.
            let rx = self.source.progress.as_mut()?;
            if rx.changed().await.is_err()
                && !matches!(
                    *rx.borrow(),
                    Progress::Verified { .. } | Progress::Complete { .. }
                )
            {
                return Some(Err(std::io::Error::other(abandoned())));
            }
        }
    }

    /// Bytes readable now. Once every byte is verified, the reader stops
    /// following the fetch (what happens to the cache file after no longer
    /// concerns it) and trims `end` to the real size.
    fn readable(&mut self) -> Result<u64, FetchError> {
        let Some(rx) = self.source.progress.as_mut() else {
            return Ok(self.source.size.unwrap_or(0));
        };
        let size = match &*rx.borrow_and_update() {
            Progress::Connecting => return Ok(0),
            Progress::Receiving { written, .. } => return Ok(*written),
            Progress::Failed(e) => return Err(e.clone()),
            Progress::Verified { size, .. } | Progress::Complete { size, .. } => *size,
        };
        self.source.progress = None;
        self.source.size = Some(size);
        self.end = self.end.min(size);
        Ok(size)
    }

    /// Reads up to one chunk ([`chunk_size`]) before `limit`, in place (as
    /// nginx does without aio): blobs are read right after they were
    /// written or last served, so they come from the page cache, and a hop
    /// to the blocking pool per chunk would cost more than the read itself.
    fn read(&mut self, limit: u64) -> std::io::Result<Bytes> {
        let chunk = chunk_size(METRICS.client_connections.get());
        let len = (limit - self.pos).min(chunk) as usize;
        let mut buf = vec![0; len];
        self.source.file.read_exact_at(&mut buf, self.pos)?;
        self.pos += len as u64;
        self.turn += len as u64;
        Ok(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn temp_file(bytes: &[u8]) -> Arc<File> {
        let path = std::env::temp_dir().join(format!(
            "download-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(path).unwrap();
        Arc::new(f)
    }

    async fn collect(s: impl Stream<Item = std::io::Result<Bytes>>) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[test]
    fn chunks_shrink_as_connections_grow_in_number() {
        let kib = |n: u64| n * 1024;
        assert_eq!(chunk_size(0), kib(64));
        assert_eq!(chunk_size(512), kib(64));
        assert_eq!(chunk_size(1000), kib(32));
        assert_eq!(chunk_size(2048), kib(16));
        assert_eq!(chunk_size(1_000_000), kib(16));
    }

    /// A body whose bytes are all readable still lets the other tasks of
    /// its thread run (here: a current-thread runtime, as each worker is).
    #[tokio::test]
    async fn a_long_body_takes_turns_with_other_tasks() {
        let size = 4 * TURN as usize;
        let src = BlobSource::complete(temp_file(&vec![7; size]), size as u64);
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&other_ran);
        tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        let mut s = std::pin::pin!(src.stream(0, None));
        let mut sent_before_other_ran = 0;
        while let Some(chunk) = s.next().await {
            if !other_ran.load(Ordering::SeqCst) {
                sent_before_other_ran += chunk.unwrap().len();
            }
        }
        assert!(
            sent_before_other_ran <= TURN as usize + MAX_CHUNK as usize,
            "{sent_before_other_ran} bytes sent before the other task ran"
        );
    }

    #[tokio::test]
    async fn complete_source_serves_ranges() {
        let src = BlobSource::complete(temp_file(b"0123456789"), 10);
        assert_eq!(collect(src.stream(2, Some(5))).await.unwrap(), b"234");
        let src = BlobSource::complete(temp_file(b"0123456789"), 10);
        assert_eq!(collect(src.stream(0, None)).await.unwrap(), b"0123456789");
    }

    #[tokio::test]
    async fn followers_read_while_bytes_land_and_abort_on_failure() {
        let file = temp_file(b"abcdef");
        let (tx, dl) = BlobDownload::new();
        tx.send_replace(Progress::Receiving {
            size: Some(6),
            written: 3,
            file: Arc::clone(&file),
        });
        let src = dl.clone().ready().await.unwrap();
        assert_eq!(src.size(), Some(6));
        let mut s = Box::pin(src.stream(1, None));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"bc");
        tx.send_replace(Progress::Complete {
            size: 6,
            file: Arc::clone(&file),
        });
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"def");
        assert!(s.next().await.is_none());

        let (tx, dl) = BlobDownload::new();
        tx.send_replace(Progress::Receiving {
            size: Some(6),
            written: 2,
            file,
        });
        let mut s = Box::pin(dl.ready().await.unwrap().stream(0, None));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"ab");
        tx.send_replace(Progress::Failed(FetchError::NotFound));
        assert!(s.next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn verified_bytes_finish_even_if_persisting_fails() {
        let file = temp_file(b"abcdef");
        let (tx, dl) = BlobDownload::new();
        tx.send_replace(Progress::Receiving {
            size: None,
            written: 2,
            file: Arc::clone(&file),
        });
        let mut s = Box::pin(dl.clone().ready().await.unwrap().stream(0, None));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"ab");
        tx.send_replace(Progress::Verified {
            size: 6,
            file,
            unstored: Some(FetchError::Storage("disk full".into())),
        });
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"cdef");
        assert!(s.next().await.is_none());
        assert!(dl.finished().await.is_err(), "not durable, not finished");
    }

    #[tokio::test]
    async fn dropped_fetch_is_an_error_not_a_short_success() {
        let (tx, dl) = BlobDownload::new();
        tx.send_replace(Progress::Receiving {
            size: Some(6),
            written: 0,
            file: temp_file(b""),
        });
        let src = dl.ready().await.unwrap();
        drop(tx);
        assert!(collect(src.stream(0, None)).await.is_err());
    }
}
