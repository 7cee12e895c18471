//! Crash safety: the server is SIGKILLed again and again while 20 clients
//! pull large images through it from a real upstream, at points chosen by a
//! seeded generator from the clients' observed progress (bytes received or
//! responses completed). After every kill the cache holds only verified
//! content under final names, and every restart deletes what was
//! half-written, loads the index and serves what was complete from disk.
//!
//! Each round pulls an image of its own (so every round can die in the
//! middle of upstream downloads) and the previous round's image (whose
//! downloads the last kill cut short).
//!
//! `OCIREGISTRY_TEST_LARGE=1` uses much larger layers; `OCIREGISTRY_TEST_SEED`
//! replays another sequence of sizes, orders and kill points.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::image::ACCEPT_ALL_MANIFESTS;
use common::{
    docker_io_config, push_image, sha256_hex, wait_until, RawConn, Rng, Server, TestImage, Upstream,
};
use sha2::{Digest as _, Sha256};

/// Repository of the images under test (on docker.io, via `?ns=`); round
/// `r` pulls the tag `r<r>`.
const REPO: &str = "library/crash";
/// Kill / restart rounds.
const ROUNDS: usize = 10;
/// Concurrent clients per round.
const CLIENTS: usize = 20;
/// Seed of sizes, orders and kill points unless `OCIREGISTRY_TEST_SEED`
/// says otherwise.
const DEFAULT_SEED: u64 = 0x0C1_2E61_57E7;
/// How long one request may wait for bytes before the client gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The headers of every request: all manifest media types accepted.
const ACCEPT: [(&str, &str); 1] = [("Accept", ACCEPT_ALL_MANIFESTS)];
/// How long a round may take to reach its kill point.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
const MIB: u64 = 1024 * 1024;

fn large() -> bool {
    std::env::var_os("OCIREGISTRY_TEST_LARGE").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Layer file sizes of one image: three layers of 8-16 MiB, or four of
/// 24-64 MiB with `OCIREGISTRY_TEST_LARGE=1`.
fn layer_sizes(rng: &mut Rng) -> Vec<usize> {
    let (layers, low, high) = if large() { (4, 24, 64) } else { (3, 8, 16) };
    (0..layers)
        .map(|_| (low * MIB + rng.next_u64() % ((high - low) * MIB + 1)) as usize)
        .collect()
}

fn seed() -> u64 {
    std::env::var("OCIREGISTRY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// An image pushed as `REPO:tag`.
struct Pushed {
    tag: String,
    img: TestImage,
}

/// What a request asks for and what its body must hash to.
#[derive(Clone)]
struct Item {
    path: String,
    digest: String,
    len: u64,
}

fn manifest_path(reference: &str) -> String {
    format!("/v2/{REPO}/manifests/{reference}?ns=docker.io")
}

fn blob_path(digest: &str) -> String {
    format!("/v2/{REPO}/blobs/{digest}?ns=docker.io")
}

/// A round's requests: the manifests (by tag) of `images` first, as a
/// client resolves before it fetches, then all their blobs in an order of
/// the client's own.
fn requests(images: &[&Pushed], rng: &mut Rng) -> Vec<Item> {
    let mut manifests: Vec<Item> = images
        .iter()
        .map(|p| Item {
            path: manifest_path(&p.tag),
            digest: p.img.manifest_digest.clone(),
            len: p.img.manifest.len() as u64,
        })
        .collect();
    let mut blobs: Vec<Item> = images
        .iter()
        .flat_map(|p| p.img.blobs())
        .map(|b| Item {
            path: blob_path(&b.digest),
            digest: b.digest.clone(),
            len: b.bytes.len() as u64,
        })
        .collect();
    rng.shuffle(&mut manifests);
    rng.shuffle(&mut blobs);
    manifests.extend(blobs);
    manifests
}

/// Where a round's clients stand, and when the round's kill fires.
struct Progress {
    bytes: AtomicU64,
    responses: AtomicU64,
    /// Set just before the server is killed: errors after it are expected.
    stop: AtomicBool,
    kill_at: KillPoint,
    /// Taken by the first client that reaches the kill point.
    fire: Mutex<Option<mpsc::Sender<()>>>,
    /// Errors seen before the kill, and complete bodies with a wrong digest.
    failures: Mutex<Vec<String>>,
}

#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// After this many body bytes reached the clients in total.
    Bytes(u64),
    /// After this many complete, verified responses in total.
    Responses(u64),
    /// Once the server has written this many bytes of the round's
    /// downloads to its cache (watched by the test, not the clients).
    Downloaded(u64),
}

impl Progress {
    fn check(&self) {
        let reached = match self.kill_at {
            KillPoint::Bytes(n) => self.bytes.load(Ordering::SeqCst) >= n,
            KillPoint::Responses(n) => self.responses.load(Ordering::SeqCst) >= n,
            KillPoint::Downloaded(_) => false,
        };
        if reached {
            if let Some(fire) = self.fire.lock().unwrap().take() {
                let _ = fire.send(());
            }
        }
    }

    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
        // End the round early: it already failed.
        if let Some(fire) = self.fire.lock().unwrap().take() {
            let _ = fire.send(());
        }
    }
}

/// One client: a keep-alive connection pulling `order` again and again
/// until the round stops, verifying every complete body.
fn client(host_port: String, order: Vec<Item>, progress: Arc<Progress>) {
    let mut conn: Option<RawConn> = None;
    for item in order.iter().cycle() {
        if progress.stop.load(Ordering::SeqCst) {
            return;
        }
        let result = (|| -> Result<(), String> {
            if conn.is_none() {
                conn = Some(
                    RawConn::connect(&host_port, IO_TIMEOUT)
                        .map_err(|e| format!("connect: {e}"))?,
                );
            }
            let c = conn.as_mut().expect("connected");
            let head = c.send("GET", &item.path, &ACCEPT)?;
            if head.status != 200 {
                return Err(format!("status {}", head.status));
            }
            let len = head.content_length()?;
            if len != item.len {
                return Err(format!("Content-Length {len}, expected {}", item.len));
            }
            let mut hasher = Sha256::new();
            c.read_body(len, |piece| {
                hasher.update(piece);
                progress
                    .bytes
                    .fetch_add(piece.len() as u64, Ordering::SeqCst);
                progress.check();
            })?;
            let got = format!("sha256:{}", hex(&hasher.finalize()));
            if got != item.digest {
                // Never acceptable, killed or not.
                progress.fail(format!(
                    "{}: complete body hashes to {got}, expected {}",
                    item.path, item.digest
                ));
                return Ok(());
            }
            progress.responses.fetch_add(1, Ordering::SeqCst);
            progress.check();
            Ok(())
        })();
        if let Err(e) = result {
            if progress.stop.load(Ordering::SeqCst) {
                return; // the server was killed under this request
            }
            progress.fail(format!("{} before the kill: {e}", item.path));
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out
}

/// Bytes of `blobs` (digest, size) the server has on disk: the whole size
/// of a complete one, what its partial file holds for one downloading.
fn downloaded(cache: &Path, blobs: &[(String, u64)]) -> u64 {
    let dir = cache.join("blobs/sha256");
    blobs
        .iter()
        .map(|(digest, len)| {
            let hex = digest.trim_start_matches("sha256:");
            if dir.join(hex).exists() {
                *len
            } else {
                partials(&dir)
                    .into_iter()
                    .filter(|(p, _)| p.file_name().unwrap().to_string_lossy().starts_with(hex))
                    .map(|(_, len)| len)
                    .max()
                    .unwrap_or(0)
            }
        })
        .sum()
}

/// `*.partial` files anywhere in the cache, with their sizes.
fn partials(cache: &Path) -> Vec<(PathBuf, u64)> {
    files_under(cache)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .map(|p| {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len());
            (p, len)
        })
        .collect()
}

/// Checks that every complete file of the content-addressed stores hashes
/// to its name. A file already checked and unchanged since (same inode,
/// size and modification time) is not hashed again.
#[derive(Default)]
struct StoreCheck {
    checked: HashMap<PathBuf, (u64, u64, i64, i64)>,
}

impl StoreCheck {
    /// Digests of the complete blobs, after checking blobs and manifests.
    /// Panics on a file whose content is not its name's digest.
    fn complete_blobs(&mut self, cache: &Path, what: &str) -> BTreeSet<String> {
        self.check_dir(&cache.join("manifests"), what);
        self.check_dir(&cache.join("blobs"), what)
    }

    fn check_dir(&mut self, dir: &Path, what: &str) -> BTreeSet<String> {
        let mut digests = BTreeSet::new();
        for path in files_under(dir) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".partial") {
                continue;
            }
            let meta = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{what}: stat {}: {e}", path.display()));
            let id = (meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec());
            if self.checked.get(&path) != Some(&id) {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{what}: read {}: {e}", path.display()));
                assert_eq!(
                    sha256_hex(&bytes),
                    name,
                    "{what}: {} holds content that is not its digest",
                    path.display()
                );
                self.checked.insert(path, id);
            }
            digests.insert(format!("sha256:{name}"));
        }
        digests
    }
}

/// Pulls every image's manifest by tag and by digest and every blob over
/// one connection; asserts each is exactly the pushed bytes and, with
/// `expect_hit`, served from the cache.
fn pull_all_exact(server: &Server, images: &[Pushed], expect_hit: bool, what: &str) {
    let mut conn = RawConn::connect(&server.host_port(), IO_TIMEOUT).expect("connect");
    for Pushed { tag, img } in images {
        let mut expected: Vec<(String, &[u8])> = vec![
            (manifest_path(tag), &img.manifest),
            (manifest_path(&img.manifest_digest), &img.manifest),
        ];
        expected.extend(
            img.blobs()
                .map(|b| (blob_path(&b.digest), b.bytes.as_slice())),
        );
        for (path, bytes) in expected {
            let (head, body) = conn
                .get(&path, &ACCEPT)
                .unwrap_or_else(|e| panic!("{what}: GET {path}: {e}"));
            assert_eq!(head.status, 200, "{what}: GET {path}");
            assert!(body == bytes, "{what}: GET {path}: not the pushed bytes");
            if expect_hit {
                assert_eq!(
                    head.header("x-cache").unwrap_or(""),
                    "HIT",
                    "{what}: GET {path} is served from the cache"
                );
            }
        }
    }
}

/// What one round observed, for the report.
struct RoundReport {
    kill_at: KillPoint,
    bytes: u64,
    responses: u64,
    complete_blobs: usize,
    partials: usize,
    partial_bytes: u64,
    elapsed: Duration,
}

#[test]
fn sigkill_at_random_points_under_load_always_restarts_clean() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let started = Instant::now();
    let seed = seed();
    let mut rng = Rng::new(seed);
    let images: Vec<Pushed> = (0..ROUNDS)
        .map(|r| Pushed {
            tag: format!("r{r}"),
            img: TestImage::oci(1000 + r as u64, &layer_sizes(&mut rng)),
        })
        .collect();
    let blob_count: usize = images.iter().map(|p| p.img.blobs().count()).sum();
    let image_bytes: u64 = images
        .iter()
        .flat_map(|p| p.img.blobs())
        .map(|b| b.bytes.len() as u64)
        .sum();

    let mut upstream = Upstream::start();
    actix_web::rt::System::new().block_on(async {
        let client = common::client();
        for p in &images {
            push_image(&client, &upstream.url(), REPO, &p.tag, &p.img).await;
        }
    });
    let prepared = started.elapsed();
    let mut server = Server::start(&docker_io_config(&upstream.url(), ""), &[]);
    let cache = server.cache_dir();
    let context = |server: &Server, round: usize| {
        format!(
            "seed {seed}, round {round}; server log tail:\n{}",
            common::log_tail(&server.log_path(), 15)
        )
    };

    let mut store = StoreCheck::default();
    // Blobs whose bodies were already checked after an earlier restart:
    // from then on a HEAD shows they are still indexed.
    let mut served = BTreeSet::new();
    let mut reports = Vec::new();
    for round in 0..ROUNDS {
        let round_started = Instant::now();
        let wanted: Vec<&Pushed> = images[round.saturating_sub(1)..=round].iter().collect();
        let orders: Vec<Vec<Item>> = (0..CLIENTS).map(|_| requests(&wanted, &mut rng)).collect();
        let pass_bytes: u64 = orders[0].iter().map(|i| i.len).sum();
        let pass_responses = orders[0].len() as u64;
        // Blobs this round must download, and their total size.
        let fresh: Vec<(String, u64)> = wanted
            .iter()
            .flat_map(|p| p.img.blobs())
            .filter(|b| !served.contains(&b.digest))
            .map(|b| (b.digest.clone(), b.bytes.len() as u64))
            .collect();
        let fresh_bytes: u64 = fresh.iter().map(|(_, len)| len).sum();
        // Half the rounds die at a point of the upstream downloads (as the
        // cache directory shows them), a quarter after some bytes reached
        // the clients, a quarter after some complete responses, anywhere
        // within one pass of every client.
        let kill_at = match rng.next_u64() % 4 {
            0 | 1 if fresh_bytes > 0 => KillPoint::Downloaded(rng.one_to(fresh_bytes)),
            0..=2 => KillPoint::Bytes(rng.one_to(CLIENTS as u64 * pass_bytes)),
            _ => KillPoint::Responses(rng.one_to(CLIENTS as u64 * pass_responses)),
        };
        let (fire, fired) = mpsc::channel();
        let progress = Arc::new(Progress {
            bytes: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            kill_at,
            fire: Mutex::new(Some(fire)),
            failures: Mutex::new(Vec::new()),
        });
        let clients: Vec<_> = orders
            .into_iter()
            .map(|order| {
                let (host_port, progress) = (server.host_port(), Arc::clone(&progress));
                std::thread::spawn(move || client(host_port, order, progress))
            })
            .collect();

        let reached = match kill_at {
            KillPoint::Downloaded(n) => wait_until(ROUND_DEADLINE, || {
                fired.try_recv().is_ok() || downloaded(&cache, &fresh) >= n
            }),
            _ => fired.recv_timeout(ROUND_DEADLINE).is_ok(),
        };
        progress.stop.store(true, Ordering::SeqCst);
        server.kill(); // SIGKILL
        for c in clients {
            c.join().expect("client thread");
        }
        assert!(
            reached,
            "round {round}: the kill point {kill_at:?} was not reached within {ROUND_DEADLINE:?} \
             ({} bytes, {} responses); {}",
            progress.bytes.load(Ordering::SeqCst),
            progress.responses.load(Ordering::SeqCst),
            context(&server, round)
        );
        let failures = progress.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "round {round}: {failures:#?}\n{}",
            context(&server, round)
        );

        // What the crash left: final names hold verified content only.
        let what = format!("round {round}, after SIGKILL");
        let complete = store.complete_blobs(&cache, &what);
        let left = partials(&cache);

        server.restart();
        let what = format!("round {round}, after restart");
        assert!(
            wait_until(Duration::from_secs(10), || {
                common::http_get_status(&server.host_port(), "/v2/") == Some(200)
            }),
            "{what}: GET /v2/ does not answer 200; {}",
            context(&server, round)
        );
        let survivors = partials(&cache);
        assert!(
            survivors.is_empty(),
            "{what}: start-up left partial files: {survivors:?}"
        );
        assert_eq!(
            store.complete_blobs(&cache, &what),
            complete,
            "{what}: start-up keeps exactly the complete blobs"
        );
        // The index loaded: every complete blob is served from disk.
        let mut conn =
            RawConn::connect(&server.host_port(), IO_TIMEOUT).expect("connect after restart");
        for digest in &complete {
            let path = blob_path(digest);
            let expected_len = std::fs::metadata(
                cache
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .expect("complete blob")
            .len();
            let (status, cache_outcome, body_digest) = if served.contains(digest) {
                let head = conn
                    .send("HEAD", &path, &ACCEPT)
                    .unwrap_or_else(|e| panic!("{what}: HEAD {digest}: {e}"));
                let len = head.content_length().unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(len, expected_len, "{what}: HEAD {digest}: Content-Length");
                let hit = head.header("x-cache").unwrap_or("").to_owned();
                (head.status, hit, digest.clone())
            } else {
                let (head, body) = conn
                    .get(&path, &ACCEPT)
                    .unwrap_or_else(|e| panic!("{what}: GET {digest}: {e}"));
                let hit = head.header("x-cache").unwrap_or("").to_owned();
                (head.status, hit, common::digest_of(&body))
            };
            assert_eq!(status, 200, "{what}: {digest}");
            assert_eq!(
                cache_outcome, "HIT",
                "{what}: {digest} was complete before the crash and is served from disk"
            );
            assert_eq!(body_digest, *digest, "{what}: body of {digest}");
            served.insert(digest.clone());
        }
        drop(conn);

        reports.push(RoundReport {
            kill_at,
            bytes: progress.bytes.load(Ordering::SeqCst),
            responses: progress.responses.load(Ordering::SeqCst),
            complete_blobs: complete.len(),
            partials: left.len(),
            partial_bytes: left.iter().map(|(_, len)| len).sum(),
            elapsed: round_started.elapsed(),
        });
    }
    let rounds_done = started.elapsed();

    // Everything once more with the upstream up: exactly the pushed bytes.
    pull_all_exact(&server, &images, false, "final pull, upstream up");
    // Then from the cache alone, also across a restart.
    upstream.stop();
    pull_all_exact(&server, &images, true, "upstream stopped");
    server.shut_down();
    assert_eq!(
        store.complete_blobs(&cache, "after the final pull").len(),
        blob_count,
        "every blob is cached after the final pull"
    );
    server.restart();
    pull_all_exact(&server, &images, true, "upstream stopped, after a restart");

    println!(
        "crash safety: seed {seed}, {ROUNDS} images, {} MiB of blobs; images pushed after \
         {prepared:.1?}, rounds done after {rounds_done:.1?}, all checks done after {:.1?}",
        image_bytes / MIB,
        started.elapsed()
    );
    for (round, r) in reports.iter().enumerate() {
        println!(
            "  round {round}: kill at {:?}: clients had {} bytes and {} responses; on disk: \
             {} complete blobs, {} partial files ({} bytes); round took {:.1?}",
            r.kill_at,
            r.bytes,
            r.responses,
            r.complete_blobs,
            r.partials,
            r.partial_bytes,
            r.elapsed
        );
    }
    let cut_downloads = reports.iter().filter(|r| r.partials > 0).count();
    println!("  {cut_downloads} of {ROUNDS} kills cut upstream downloads short");
}
