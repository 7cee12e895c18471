//! Hostile input: a generated corpus of malformed requests (path traversal,
//! encoded slashes and NUL bytes, over-long names and tags, bad digests,
//! huge headers, bad ranges, bad `?ns=` values, every method, random bytes)
//! sent over raw TCP, so that no client library normalises anything, to an
//! air-gapped server that serves the embedded hello-world image. No request
//! needs an upstream, so any 5xx is a bug.
//!
//! Checked afterwards: no 5xx; every well-formed request got an answer; no
//! write was accepted; everything served with a 2xx is hello-world content
//! (ranges byte-exact); the server still answers and still serves
//! hello-world; nothing appeared outside the cache directory; the cache holds
//! no file named after the input; the air-gapped server connected nowhere;
//! its log shows no panic.
//!
//! A second test checks that registry names which are not `host[:port]`
//! are refused with 400.
//!
//! The corpus is deterministic; `OCIREGISTRY_HOSTILE_SEED=<u64>` picks
//! another one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{digest_of, http_get_status, Rng, Server};

/// The default seed of the generated part of the corpus.
const SEED: u64 = 0x000c_10c1_5eed;

/// Client threads sending the corpus (each with its own keep-alive connection).
const THREADS: usize = 4;

/// Randomly combined requests, on top of the systematic catalogues.
const RANDOM_REQUESTS: usize = 8000;

/// Requests with raw random bytes in the path (each on its own connection).
const RAW_BYTE_REQUESTS: usize = 300;

/// How long one answer may take before the request counts as hung.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The embedded image.
const HELLO: &str = "/v2/docker.io/library/hello-world/manifests/latest";

/// Every method the corpus uses on well-formed requests.
const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"];

// ---------------------------------------------------------------------------
// Deterministic randomness.

/// `len` random characters of `[a-z0-9]`.
fn alnum(rng: &mut Rng, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len).map(|_| *rng.pick(CHARS) as char).collect()
}

/// `len` random bytes, percent-encoded (unreserved ones sometimes raw).
fn pct(rng: &mut Rng, len: usize) -> String {
    let mut s = String::new();
    for b in rng.bytes(len) {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Requests and raw HTTP/1.1.

/// One request of the corpus, as bytes on the wire.
#[derive(Clone)]
struct Request {
    /// Which catalogue it comes from.
    group: &'static str,
    /// The method, for the checks (`GET`, `HEAD`, ... or garbage).
    method: String,
    /// The whole request as sent.
    raw: Vec<u8>,
    /// Sent on a connection of its own, closed after the first answer
    /// (raw bytes that could split into several requests).
    fresh: bool,
    /// Being refused (connection closed without an answer) is acceptable:
    /// huge heads and bytes that are not HTTP.
    may_close: bool,
}

impl Request {
    /// A request with `target` and `headers`; `Host` first, then the given
    /// headers, `Content-Length` for a body, `Connection: close` when fresh.
    fn new(
        group: &'static str,
        method: &str,
        target: &[u8],
        headers: &[(String, Vec<u8>)],
        body: &[u8],
        fresh: bool,
    ) -> Self {
        let mut raw = Vec::with_capacity(target.len() + body.len() + 128);
        raw.extend_from_slice(method.as_bytes());
        raw.push(b' ');
        raw.extend_from_slice(target);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(value);
            raw.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() {
            raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        if fresh {
            raw.extend_from_slice(b"Connection: close\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
        let head_bytes = raw.len() - body.len();
        Self {
            group,
            method: method.to_string(),
            raw,
            fresh,
            // actix-http refuses heads past 128 KiB by closing.
            may_close: head_bytes > 100 * 1024,
        }
    }

    /// Bytes sent as they are, on a connection of their own.
    fn raw(group: &'static str, raw: Vec<u8>) -> Self {
        // Servers skip empty lines before a request line.
        let start = raw.iter().position(|b| !b"\r\n".contains(b));
        let method = raw[start.unwrap_or(raw.len())..]
            .split(|&b| b == b' ')
            .next()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .unwrap_or_default();
        Self {
            group,
            method,
            raw,
            fresh: true,
            may_close: true,
        }
    }

    fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

impl fmt::Display for Request {
    /// The first 400 bytes, escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.raw[..self.raw.len().min(400)];
        write!(f, "[{}] \"{}\"", self.group, shown.escape_ascii())?;
        if self.raw.len() > shown.len() {
            write!(f, "... ({} bytes)", self.raw.len())?;
        }
        Ok(())
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body arrived whole (as announced).
    complete: bool,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        !self.complete
            || self
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// What came back for one request.
#[derive(Debug)]
enum Outcome {
    Answered(Response),
    /// The connection closed or reset before a status line.
    Closed(String),
    /// Nothing within [`IO_TIMEOUT`].
    TimedOut,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answered(r) => {
                let body = &r.body[..r.body.len().min(300)];
                write!(f, "{} {:?} {}", r.status, r.headers, body.escape_ascii())
            }
            Outcome::Closed(why) => write!(f, "closed without an answer ({why})"),
            Outcome::TimedOut => write!(f, "no answer within {IO_TIMEOUT:?}"),
        }
    }
}

/// Why reading a response head failed.
enum ReadError {
    Closed(String),
    TimedOut,
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ReadError::TimedOut,
            _ => ReadError::Closed(e.to_string()),
        }
    }
}

/// One line (with its `\n`), at most 64 KiB; `Closed` at end of stream.
fn read_line(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    reader.take(64 * 1024).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(ReadError::Closed("end of stream".into()));
    }
    Ok(line)
}

/// Reads one final response (skipping `100 Continue`); a `HEAD` response
/// has no body.
fn read_response(reader: &mut impl BufRead, head: bool) -> Result<Response, ReadError> {
    loop {
        let line = read_line(reader)?;
        let text = String::from_utf8_lossy(&line);
        let status = text
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| ReadError::Closed(format!("not a status line: {text:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(reader)?;
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        if status == 100 {
            continue;
        }
        let mut res = Response {
            status,
            headers,
            body: Vec::new(),
            complete: true,
        };
        if head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(res);
        }
        let chunked = res
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = res.header("content-length").map(|v| v.parse::<usize>());
        res.complete = match (chunked, length) {
            (true, _) => read_chunked(reader, &mut res.body).is_ok(),
            (false, Some(Ok(n))) => {
                res.body.resize(n, 0);
                reader.read_exact(&mut res.body).is_ok()
            }
            (false, Some(Err(_))) => false,
            (false, None) => reader.read_to_end(&mut res.body).is_ok(),
        };
        return Ok(res);
    }
}

/// A chunked body.
fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> Result<(), ReadError> {
    loop {
        let line = read_line(reader)?;
        let line = String::from_utf8_lossy(&line);
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| ReadError::Closed(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while read_line(reader)?.trim_ascii() != b"" {}
            return Ok(());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        read_line(reader)?;
    }
}

/// A client connection, kept alive between requests.
struct Connection {
    addr: String,
    open: Option<(TcpStream, BufReader<TcpStream>)>,
    /// Requests answered on the open connection.
    used: usize,
}

impl Connection {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            open: None,
            used: 0,
        }
    }

    fn connect(addr: &str) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok((stream, reader))
    }

    /// Sends `req` and reads its answer. A keep-alive connection the server
    /// already closed (it may after an error) is reopened once.
    fn send(&mut self, req: &Request) -> Outcome {
        if req.fresh {
            return match Self::connect(&self.addr) {
                Ok((mut stream, mut reader)) => exchange(&mut stream, &mut reader, req),
                Err(e) => Outcome::Closed(format!("connect: {e}")),
            };
        }
        for attempt in 0..2 {
            if self.open.is_none() {
                match Self::connect(&self.addr) {
                    Ok(c) => self.open = Some(c),
                    Err(e) => return Outcome::Closed(format!("connect: {e}")),
                }
                self.used = 0;
            }
            let (stream, reader) = self.open.as_mut().expect("connected");
            let outcome = exchange(stream, reader, req);
            match &outcome {
                Outcome::Closed(_) if self.used > 0 && attempt == 0 => {
                    self.open = None;
                    continue;
                }
                Outcome::Answered(res) if !res.closes() => self.used += 1,
                _ => self.open = None,
            }
            return outcome;
        }
        unreachable!("the second attempt returns")
    }
}

/// Writes `req` and reads one response. A failed write still reads: the
/// server may have answered (e.g. 431) before it stopped reading.
fn exchange(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, req: &Request) -> Outcome {
    let written = stream.write_all(&req.raw).and_then(|()| stream.flush());
    match read_response(reader, req.is_head()) {
        Ok(res) => Outcome::Answered(res),
        Err(ReadError::TimedOut) => Outcome::TimedOut,
        Err(ReadError::Closed(why)) => match written {
            Err(e) => Outcome::Closed(format!("write: {e}; read: {why}")),
            Ok(()) => Outcome::Closed(why),
        },
    }
}

/// Sends every request, spread over [`THREADS`] keep-alive connections;
/// outcomes come back in the corpus order.
fn send_all(addr: &str, corpus: &[Request]) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = (0..corpus.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut conn = Connection::new(addr);
                    (t..corpus.len())
                        .step_by(THREADS)
                        .map(|i| (i, conn.send(&corpus[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (i, outcome) in worker.join().expect("client thread") {
                outcomes[i] = Some(outcome);
            }
        }
    });
    outcomes
        .into_iter()
        .map(|o| o.expect("every request sent"))
        .collect()
}

/// `GET target` on a connection of its own.
fn get(addr: &str, target: &str) -> Response {
    let req = Request::new("setup", "GET", target.as_bytes(), &[], &[], true);
    match Connection::new(addr).send(&req) {
        Outcome::Answered(res) => res,
        other => panic!("GET {target}: {other}"),
    }
}

// ---------------------------------------------------------------------------
// The image the server holds.

/// Every manifest and blob of hello-world, by digest.
struct Known {
    content: BTreeMap<String, Vec<u8>>,
    /// Digests of the blobs (configs and layers).
    blobs: Vec<String>,
    /// The index's digest.
    index: String,
}

/// Pulls hello-world whole through the server.
fn discover(addr: &str) -> Known {
    let mut content = BTreeMap::new();
    let index = get(addr, HELLO);
    assert_eq!(index.status, 200, "hello-world index: {index:?}");
    let index_digest = digest_of(&index.body);
    let json: serde_json::Value = serde_json::from_slice(&index.body).expect("index JSON");
    content.insert(index_digest.clone(), index.body);
    let digests = |v: &serde_json::Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["digest"].as_str().map(str::to_string))
            .collect()
    };
    let mut blobs = Vec::new();
    for manifest in digests(&json, "manifests") {
        let res = get(
            addr,
            &format!("/v2/docker.io/library/hello-world/manifests/{manifest}"),
        );
        assert_eq!(res.status, 200, "manifest {manifest}");
        let json: serde_json::Value = serde_json::from_slice(&res.body).expect("manifest JSON");
        content.insert(manifest, res.body);
        let config = json["config"]["digest"].as_str().expect("config digest");
        for blob in std::iter::once(config.to_string()).chain(digests(&json, "layers")) {
            let res = get(
                addr,
                &format!("/v2/docker.io/library/hello-world/blobs/{blob}"),
            );
            assert_eq!(res.status, 200, "blob {blob}");
            assert_eq!(digest_of(&res.body), blob);
            content.insert(blob.clone(), res.body);
            blobs.push(blob);
        }
    }
    assert!(blobs.len() >= 2, "hello-world has blobs: {blobs:?}");
    Known {
        content,
        blobs,
        index: index_digest,
    }
}

// ---------------------------------------------------------------------------
// The corpus.

/// What the generators need to know.
struct Ctx {
    /// A string that appears in names the input tries to create files with.
    marker: String,
    /// A port on 127.0.0.1 nothing may connect to (`?ns=` points there).
    canary: u16,
    /// A real blob's hex digest.
    hex: String,
    known: Known,
}

/// Repository names: valid ones, traversal, encoded slashes, NUL bytes,
/// bad hosts, over-long ones.
fn names(ctx: &Ctx) -> Vec<String> {
    let m = &ctx.marker;
    let mut names: Vec<String> = [
        "docker.io/library/hello-world",
        "library/hello-world",
        "hello-world",
        "index.docker.io/library/hello-world",
        "quay.io/org/app",
        "localhost/a/b",
        "..",
        "../..",
        "../../..",
        ".",
        "./hello-world",
        "library/./hello-world",
        "library/../library/hello-world",
        "docker.io/..",
        "docker.io/../../../../etc",
        "%2e%2e",
        "%2E%2E",
        "%2e%2e/%2e%2e",
        "%2E%2E/%2E%2E/etc",
        "..%2f..%2f..%2fetc",
        "..%2F..%2F",
        ".%2e/.%2E",
        "library%2fhello-world",
        "docker.io%2flibrary%2fhello-world",
        "docker.io/library%2Fhello-world",
        "%2f",
        "%2F%2F",
        "hello%00world",
        "%00",
        "docker.io/library/hello-world%00",
        "%00/../..",
        "..%00",
        "%252e%252e%252f",
        "%c0%ae%c0%ae",
        "%e2%80%ae",
        "..;",
        "..%5c..%5c",
        "..\\..\\",
        "~root",
        "a//b",
        "/",
        "//",
        "library/hello-world/",
        "/library/hello-world",
        "Library/Hello-World",
        "DOCKER.IO/library/hello-world",
        "docker.io:99999/x",
        "docker.io:/x",
        ":/x",
        "[::1]/x",
        "169.254.169.254/latest/meta-data",
        "user@evil.example/x",
        "evil.example%40docker.io/x",
        "a%20b",
        "a+b",
        "a%0d%0aX-Injected:%201",
        "-a",
        "a-",
        "a___b",
        "a..b",
        "_",
        "*",
        "%ff%fe",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    names.extend([
        format!("..%2f..%2f..%2f..%2ftmp%2f{m}"),
        format!("docker.io/../../../../tmp/{m}"),
        format!("%2e%2e/%2e%2e/%2e%2e/{m}"),
        format!("127.0.0.1:{}/x", ctx.canary),
        "a".repeat(255),
        "a".repeat(256),
        "a".repeat(4097),
        format!("docker.io/{}", "b".repeat(300)),
        format!("{}a", "a/".repeat(2100)),
        format!("{}.io/x", "h".repeat(64)),
        format!("{}/x", ["h"; 130].join(".")),
        format!("docker.io/{}", "../".repeat(1500)),
        "%2e".repeat(3000),
    ]);
    names
}

/// Tags and digests: valid, malformed, other algorithms, traversal, long.
fn references(ctx: &Ctx) -> Vec<String> {
    let (hex, m) = (&ctx.hex, &ctx.marker);
    let mut refs: Vec<String> = [
        "latest",
        "LATEST",
        "latest%00",
        "%00",
        "",
        ".",
        "..",
        "%2e%2e",
        "..%2f..%2fetc%2fpasswd",
        ".latest",
        "-latest",
        "_latest",
        "lat%2fest",
        "a:b",
        ":",
        "sha256",
        "sha256:",
        "sha256::",
        "%ff%fe",
        "tag%20x",
        "*",
        "latest;x",
        "latest%3bx",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    refs.extend([
        format!("sha256:{hex}"),
        ctx.known.index.clone(),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{hex}0"),
        format!("sha256:{}", hex.to_uppercase()),
        format!("SHA256:{hex}"),
        format!("sha256:{}g", &hex[..63]),
        format!("sha256:{}", "0".repeat(64)),
        format!("sha256:{}", "%30".repeat(64)),
        format!("sha256:{}", "f".repeat(4096)),
        format!("sha512:{}", "a".repeat(128)),
        format!("sha512:{hex}"),
        format!("md5:{}", "0".repeat(32)),
        format!("sha256{hex}"),
        format!("sha256-{hex}"),
        format!("sha256:{hex}%00"),
        format!("sha256:{hex}%2f.."),
        format!("sha256:%2e%2e%2f%2e%2e%2f{m}"),
        format!("sha256:..%2f..%2f..%2f..%2ftmp%2f{m}"),
        format!("{m}%2f..%2f..%2f"),
        "a".repeat(128),
        "a".repeat(129),
        "a".repeat(5000),
        format!("{}:{}", "x".repeat(2000), "y".repeat(2000)),
    ]);
    refs
}

/// Registry names that are not `host[:port]` (as sent in a URL; each has a
/// `.` or `:`, so that in a path it is taken for a host). A port is digits
/// only: `u16::from_str` also takes a leading `+`.
const INVALID_REGISTRIES: &[&str] = &[
    "docker.io:+443",
    "docker.io:%2B443",
    "localhost:+80",
    "localhost:%2B80",
    "docker.io:-1",
    "docker.io:",
    "docker.io:99999",
    "docker.io:0x1bb",
    "docker.io:%20443",
    "docker.io:443%00",
    "-docker.io",
    "docker..io",
    "docker.io.",
    "user@docker.io",
    "[::1]:5000",
    "docker_io.com",
];

/// `?ns=` and other query strings.
fn queries(ctx: &Ctx) -> Vec<String> {
    let c = ctx.canary;
    let mut queries: Vec<String> = [
        "",
        "?ns=docker.io",
        "?ns=..",
        "?ns=%2e%2e",
        "?ns=169.254.169.254",
        "?ns=169.254.169.254:80",
        "?ns=a/b",
        "?ns=a%2fb",
        "?ns=%00",
        "?ns=docker.io%00",
        "?ns=",
        "?ns",
        "?ns=&ns=docker.io",
        "?ns=docker.io&ns=quay.io",
        "?ns=localhost",
        "?ns=[::1]",
        "?ns=%5B%3A%3A1%5D",
        "?ns=%ff%fe",
        "?ns=DOCKER.IO",
        "?ns=docker.io:0",
        "?ns=docker.io:99999",
        "?ns=-a.com",
        "?ns=%",
        "?ns=%zz",
        "?%00=%00",
        "?&&&=&",
        "?ns[]=x",
        "?ns=docker.io;evil.example",
        "?ns=docker.io%0d%0aX-Injected:%201",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    queries.extend([
        format!("?ns=127.0.0.1:{c}"),
        format!("?ns=localhost:{c}"),
        format!("?ns=http://127.0.0.1:{c}/"),
        format!("?ns=user@127.0.0.1:{c}"),
        format!("?ns={}", "a".repeat(300)),
        format!("?ns={}a", "a.".repeat(3000)),
        format!("?{}", "x=1&".repeat(2000)),
    ]);
    queries
}

/// `Range` values: the malformed, the huge, the multiple, the valid.
fn ranges(rng: &mut Rng, size: u64) -> Vec<String> {
    let mut ranges: Vec<String> = [
        "bytes=0-",
        "bytes=-",
        "bytes=5-1",
        "bytes=99999999999999999999-",
        "bytes=0-99999999999999999999",
        "bytes=-99999999999999999999",
        "bytes=0-0",
        "bytes=-0",
        "bytes=-1",
        "bytes=0-1,2-3",
        "bytes=0-1, 5-",
        "bytes=,",
        "bytes=",
        "bytes",
        "bytes=--1",
        "bytes=1--2",
        "bytes= 1 - 2 ",
        "bytes=18446744073709551615-",
        "bytes=18446744073709551614-18446744073709551615",
        "bytes=0-18446744073709551615",
        "bytes=-18446744073709551615",
        "bytes=-18446744073709551616",
        "items=0-1",
        "BYTES=0-1",
        "bytes=0x10-",
        "bytes=1e3-",
        "bytes=+1-2",
        "bytes=1-+2",
        "bytes=0-1;x",
        "bytes=\t0-1",
        "bytes=0-1 ",
        "=",
        "-",
        "",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    ranges.extend([
        format!("bytes={}-", "9".repeat(1000)),
        format!("bytes=0-{}", "9".repeat(1000)),
        "bytes=0-1,".repeat(1000),
        format!("bytes={}-{}", size, size),
        format!("bytes={}-", size - 1),
        format!("bytes=-{size}"),
        format!("bytes=-{}", size + 1),
        format!("bytes=0-{}", size - 1),
    ]);
    let interesting = [
        0,
        1,
        2,
        size / 2,
        size.saturating_sub(2),
        size - 1,
        size,
        size + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    for _ in 0..40 {
        let (a, b) = (*rng.pick(&interesting), *rng.pick(&interesting));
        ranges.push(match rng.below(4) {
            0 => format!("bytes={a}-{b}"),
            1 => format!("bytes={a}-"),
            2 => format!("bytes=-{b}"),
            _ => format!("bytes={a}-{b},{b}-{a}"),
        });
    }
    for _ in 0..10 {
        let len = rng.below(40);
        let junk: String = rng
            .bytes(len)
            .into_iter()
            .map(|b| (b' ' + b % 95) as char)
            .collect();
        ranges.push(format!("bytes={junk}"));
    }
    ranges
}

/// A header a client could send, hostile or not.
fn random_header(rng: &mut Rng, ctx: &Ctx) -> (String, Vec<u8>) {
    let (name, value): (&str, Vec<u8>) = match rng.below(12) {
        0 | 1 => {
            let ranges = ranges(rng, 100);
            ("Range", rng.pick(&ranges).clone().into_bytes())
        }
        2 => (
            "Accept",
            rng.pick(&[
                "*/*",
                "application/vnd.oci.image.index.v1+json",
                "",
                ",,,,",
                "text/html;q=0.1, */*;q=0",
            ])
            .as_bytes()
            .to_vec(),
        ),
        3 => ("Accept", "a/b, ".repeat(2000).into_bytes()),
        4 => (
            "Authorization",
            rng.pick(&["Bearer x", "Basic %%%", "Basic", "Bearer ", "Digest a=b"])
                .as_bytes()
                .to_vec(),
        ),
        5 => ("X-Forwarded-For", b"169.254.169.254".to_vec()),
        6 => ("Host", format!("127.0.0.1:{}", ctx.canary).into_bytes()),
        7 => (
            "If-None-Match",
            format!("\"sha256:{}\"", ctx.hex).into_bytes(),
        ),
        8 => ("Accept-Encoding", b"gzip, br, zstd, *".to_vec()),
        9 => (
            "X-Junk",
            rng.bytes(16)
                .into_iter()
                .filter(|&b| b >= 0x20 && b != 0x7f)
                .collect(),
        ),
        10 => ("Content-Type", b"application/json".to_vec()),
        _ => ("Docker-Content-Digest", b"sha256:../../x".to_vec()),
    };
    (name.to_string(), value)
}

/// A repository name put together from hostile pieces.
fn random_name(rng: &mut Rng, ctx: &Ctx) -> String {
    const PIECES: &[&str] = &[
        "a",
        "library",
        "hello-world",
        "docker.io",
        "localhost",
        "169.254.169.254",
        "..",
        ".",
        "...",
        "%2e%2e",
        "%2E%2E",
        "..%2f",
        "%2f",
        "%00",
        "%2e",
        "%252e%252e",
        "A",
        "~",
        "%5c..%5c",
        "..;",
        "%ff",
        "a__b",
        "a--b",
        "_",
        "-",
    ];
    let segments = 1 + rng.below(6);
    let mut name = String::new();
    for i in 0..segments {
        if i > 0 {
            name.push_str(if rng.chance(80) { "/" } else { "%2f" });
        }
        match rng.below(10) {
            0 => name.push_str(&ctx.marker),
            1 => {
                let len = 1 + rng.below(300);
                name.push_str(&alnum(rng, len))
            }
            2 => {
                let len = 1 + rng.below(12);
                name.push_str(&pct(rng, len))
            }
            _ => {
                let piece = *rng.pick::<&str>(PIECES);
                name.push_str(piece)
            }
        }
    }
    name
}

/// A reference put together from hostile pieces.
fn random_reference(rng: &mut Rng, ctx: &Ctx) -> String {
    let mut reference = String::new();
    for _ in 0..1 + rng.below(3) {
        match rng.below(12) {
            0 => reference.push_str("sha256:"),
            1 => reference.push_str("sha512:"),
            2 => reference.push_str("md5:"),
            3 => reference.push_str("latest"),
            4 => reference.push_str(".."),
            5 => reference.push_str("%2e"),
            6 => reference.push_str("%00"),
            7 => reference.push_str(&ctx.hex[..rng.below(65)]),
            8 => reference.push_str(&ctx.marker),
            9 => {
                let len = rng.below(16);
                reference.push_str(&pct(rng, len))
            }
            _ => {
                let len = rng.below(300);
                reference.push_str(&alnum(rng, len))
            }
        }
    }
    reference
}

/// A body for a write.
fn random_body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => Vec::new(),
        1 => br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
            .to_vec(),
        2 => {
            let len = 1 + rng.below(1024);
            rng.bytes(len)
        }
        _ => rng.bytes(64 * 1024),
    }
}

/// Path prefixes before the repository name.
fn prefixes(ctx: &Ctx) -> Vec<String> {
    let mut prefixes: Vec<String> = [
        "/v2/",
        "/v2//",
        "//v2/",
        "/v2/../v2/",
        "/V2/",
        "/v2/%2e%2e/",
        "/%76%32/",
        "/v2/./",
        "/v2%2f",
        "http://evil.example/v2/",
        "/health/../v2/",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    prefixes.push(format!("http://127.0.0.1:{}/v2/", ctx.canary));
    prefixes
}

/// Endpoints other than `manifests/<ref>` and `blobs/<digest>`.
const OTHER_ENDPOINTS: &[&str] = &[
    "tags/list",
    "blobs/uploads/",
    "blobs/uploads/x",
    "referrers",
    "Manifests",
    "BLOBS",
    "manifests%2f..",
    "%6danifests",
    "manifests/..",
    "blobs/..%2f",
];

/// Paths outside `/v2/<name>/...`.
fn other_targets(ctx: &Ctx) -> Vec<String> {
    let mut targets: Vec<String> = [
        "/",
        "/v2",
        "/v2/",
        "/v2//",
        "/v2/_catalog",
        "/v2/_catalog?n=99999999999999999999",
        "/health",
        "/ready",
        "/health/../ready",
        "/../../etc/passwd",
        "/v2/../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v2/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/admin/prune",
        "/v2/hello-world/tags/list",
        "/v2/hello-world/tags/list?n=-1&last=%00",
        "*",
        "/v2/%00",
        "/%00",
        "/v2/manifests/latest",
        "/v2/blobs/sha256:",
        "http://evil.example/",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    targets.push(format!("/v2/{}", "/".repeat(5000)));
    targets.push(format!("/v2/{}/", ctx.marker));
    targets
}

/// Requests that are not HTTP/1.1 as a well-behaved client sends it.
fn raw_requests(rng: &mut Rng) -> Vec<Request> {
    let hello = HELLO.as_bytes();
    let mut raws: Vec<Vec<u8>> = vec![
        b"GET /v2/ HTTP/1.1\nHost: x\n\n".to_vec(),
        b"GET  /v2/  HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.0\r\n\r\n".to_vec(),
        b"GET /v2/\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nBad Name: x\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n folded: continuation\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nx".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"
            .to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
        b"PUT /v2/a/manifests/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            .to_vec(),
        b"PUT /v2/a/manifests/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"
            .to_vec(),
        b"PUT /v2/a/manifests/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
            .to_vec(),
        b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"
            .to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"
            .to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
            .to_vec(),
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n".to_vec(),
        b"CONNECT /v2/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"TRACE /v2/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"get /v2/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"G\x00T /v2/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"\x00\x00\x00\x00\x00\x00\x00\x00\r\n\r\n".to_vec(),
    ];
    let huge = |name: &str, value_len: usize, target: &[u8]| {
        let mut raw = b"GET ".to_vec();
        raw.extend_from_slice(target);
        raw.extend_from_slice(format!(" HTTP/1.1\r\nHost: x\r\n{name}: ").as_bytes());
        raw.extend(std::iter::repeat_n(b'9', value_len));
        raw.extend_from_slice(b"\r\n\r\n");
        raw
    };
    raws.push(huge("X-Junk", 200 * 1024, b"/v2/"));
    raws.push(huge("Range", 200 * 1024, hello));
    raws.push(huge("Authorization", 1024 * 1024, hello));
    let many = |count: usize| {
        let mut raw = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..count {
            raw.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw
    };
    raws.push(many(95));
    raws.push(many(120));
    raws.push(many(5000));
    let mut target = b"/v2/".to_vec();
    target.extend(std::iter::repeat_n(b'a', 200 * 1024));
    raws.push([b"GET ".as_slice(), &target, b" HTTP/1.1\r\nHost: x\r\n\r\n"].concat());
    let mut requests: Vec<Request> = raws
        .into_iter()
        .map(|raw| Request::raw("raw", raw))
        .collect();
    // Random bytes (every value, CR, LF and spaces included) in a path
    // segment, in a header name and value, in the method.
    for i in 0..RAW_BYTE_REQUESTS {
        let len = 1 + rng.below(64);
        let junk = rng.bytes(len);
        let raw = match i % 4 {
            0 | 1 => [
                b"GET /v2/".as_slice(),
                &junk,
                b"/manifests/latest HTTP/1.1\r\nHost: x\r\n\r\n",
            ]
            .concat(),
            2 => [
                b"GET /v2/docker.io/library/hello-world/manifests/".as_slice(),
                &junk,
                b" HTTP/1.1\r\nHost: x\r\nRange: ",
                &junk,
                b"\r\n\r\n",
            ]
            .concat(),
            _ => [
                &junk,
                b" /v2/ HTTP/1.1\r\nHost: x\r\n".as_slice(),
                &junk,
                b": x\r\n\r\n",
            ]
            .concat(),
        };
        requests.push(Request::raw("raw-bytes", raw));
    }
    requests
}

/// The whole corpus: systematic catalogues, then random combinations.
fn corpus(ctx: &Ctx, rng: &mut Rng) -> Vec<Request> {
    let names = names(ctx);
    let refs = references(ctx);
    let queries = queries(ctx);
    let prefixes = prefixes(ctx);
    let mut corpus = Vec::new();
    let push = |corpus: &mut Vec<Request>, r: Request| corpus.push(r);

    // Every name with every reference, as a manifest and as a blob.
    for name in &names {
        for reference in &refs {
            for endpoint in ["manifests", "blobs"] {
                let target = format!("/v2/{name}/{endpoint}/{reference}");
                let method = if rng.chance(80) { "GET" } else { "HEAD" };
                push(
                    &mut corpus,
                    Request::new("names", method, target.as_bytes(), &[], &[], false),
                );
            }
        }
    }

    // Every `?ns=` with valid and hostile names.
    let ns_names = [
        "library/hello-world",
        "hello-world",
        "docker.io/library/hello-world",
        "..",
        "%2e%2e/x",
        "a%2fb",
    ];
    for query in &queries {
        for name in ns_names {
            for (endpoint, reference) in [
                ("manifests", "latest".to_string()),
                ("blobs", format!("sha256:{}", ctx.hex)),
            ] {
                for method in ["GET", "HEAD"] {
                    let target = format!("/v2/{name}/{endpoint}/{reference}{query}");
                    push(
                        &mut corpus,
                        Request::new("ns", method, target.as_bytes(), &[], &[], false),
                    );
                }
            }
        }
    }

    // Every method on paths that exist, do not exist and are hostile.
    let mut targets = other_targets(ctx);
    targets.extend([
        HELLO.to_string(),
        format!("/v2/docker.io/library/hello-world/blobs/sha256:{}", ctx.hex),
        "/v2/a/blobs/uploads/".to_string(),
        "/v2/a/blobs/uploads/uuid?digest=sha256:00".to_string(),
        "/v2/a/manifests/../../../etc/passwd".to_string(),
        format!("/v2/{}/manifests/latest", ctx.marker),
    ]);
    for target in &targets {
        for method in METHODS {
            let body = if matches!(method, "PUT" | "POST" | "PATCH") {
                random_body(rng)
            } else {
                Vec::new()
            };
            push(
                &mut corpus,
                Request::new("methods", method, target.as_bytes(), &[], &body, false),
            );
        }
    }

    // Every range on every blob, a manifest digest, an uncached and a bad digest.
    let mut range_targets: Vec<(String, u64)> = ctx
        .known
        .blobs
        .iter()
        .map(|d| (d.clone(), ctx.known.content[d].len() as u64))
        .collect();
    range_targets.push((ctx.known.index.clone(), 100));
    range_targets.push((format!("sha256:{}", "0".repeat(64)), 100));
    range_targets.push(("sha256:..%2f..%2fetc%2fpasswd".to_string(), 100));
    for (digest, size) in &range_targets {
        for range in ranges(rng, *size) {
            for method in ["GET", "HEAD"] {
                let target = format!("/v2/docker.io/library/hello-world/blobs/{digest}");
                let headers = [("Range".to_string(), range.clone().into_bytes())];
                push(
                    &mut corpus,
                    Request::new("ranges", method, target.as_bytes(), &headers, &[], false),
                );
            }
        }
    }

    // Huge (but not oversized) headers on real endpoints.
    for (name, target) in [
        ("Range", HELLO.to_string()),
        (
            "Range",
            format!("/v2/docker.io/library/hello-world/blobs/sha256:{}", ctx.hex),
        ),
        ("Accept", HELLO.to_string()),
        ("Authorization", HELLO.to_string()),
        ("X-Junk", "/v2/".to_string()),
        ("Cookie", "/v2/hello-world/manifests/latest".to_string()),
    ] {
        for value in [
            "a".repeat(64 * 1024),
            format!("bytes={}", "0-1,".repeat(16 * 1024)),
            pct(rng, 20 * 1024),
        ] {
            let headers = [(name.to_string(), value.into_bytes())];
            push(
                &mut corpus,
                Request::new(
                    "huge-headers",
                    "GET",
                    target.as_bytes(),
                    &headers,
                    &[],
                    true,
                ),
            );
        }
    }

    for request in raw_requests(rng) {
        push(&mut corpus, request);
    }

    // Random combinations of all of the above.
    for _ in 0..RANDOM_REQUESTS {
        let method = if rng.chance(75) {
            *rng.pick(&["GET", "HEAD"])
        } else {
            *rng.pick(&METHODS)
        };
        let prefix = if rng.chance(85) {
            "/v2/".to_string()
        } else {
            rng.pick(&prefixes).clone()
        };
        let name = match rng.below(10) {
            0..=4 => rng.pick(&names).clone(),
            5..=7 => random_name(rng, ctx),
            _ => {
                let len = 1 + rng.below(32);
                pct(rng, len)
            }
        };
        let reference = match rng.below(4) {
            0 | 1 => rng.pick(&refs).clone(),
            2 => random_reference(rng, ctx),
            _ => {
                let len = rng.below(32);
                pct(rng, len)
            }
        };
        let endpoint = match rng.below(20) {
            0..=8 => "manifests/".to_string() + &reference,
            9..=16 => "blobs/".to_string() + &reference,
            _ => rng.pick(OTHER_ENDPOINTS).to_string(),
        };
        let query = if rng.chance(60) {
            String::new()
        } else {
            rng.pick(&queries).clone()
        };
        let headers: Vec<_> = (0..rng.below(4)).map(|_| random_header(rng, ctx)).collect();
        let body = if !matches!(method, "GET" | "HEAD") && rng.chance(50) {
            random_body(rng)
        } else {
            Vec::new()
        };
        let target = format!("{prefix}{name}/{endpoint}{query}");
        push(
            &mut corpus,
            Request::new("random", method, target.as_bytes(), &headers, &body, false),
        );
    }
    corpus
}

// ---------------------------------------------------------------------------
// Checks.

/// What is wrong with `outcome` as the answer to `req`, if anything.
fn problem(req: &Request, outcome: &Outcome, known: &Known) -> Option<String> {
    let res = match outcome {
        Outcome::Answered(res) => res,
        Outcome::Closed(_) if req.may_close => return None,
        Outcome::Closed(_) => return Some("well-formed request got no answer".into()),
        Outcome::TimedOut => return Some("hung".into()),
    };
    if res.status >= 500 {
        return Some(format!("server error {}", res.status));
    }
    if !res.complete && !req.may_close {
        return Some("truncated body".into());
    }
    if !(200..300).contains(&res.status) {
        return None;
    }
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return Some(format!("{} accepted by a pull-only mirror", req.method));
    }
    let Some(digest) = res.header("docker-content-digest") else {
        // Only `/v2/`, `/health` and `/ready` answer 2xx without content.
        let json = serde_json::from_slice::<serde_json::Value>(&res.body);
        let base = req.is_head() || json.is_ok_and(|v| v.is_object());
        return (!base).then(|| "2xx without Docker-Content-Digest that is not JSON".into());
    };
    let Some(content) = known.content.get(digest) else {
        return Some(format!("served {digest}, which is not hello-world content"));
    };
    if req.is_head() {
        return None;
    }
    match res.status {
        200 if res.body != *content => Some(format!("200 body is not {digest}")),
        206 => {
            let range = res
                .header("content-range")
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split_once('/'))
                .and_then(|(span, size)| {
                    let (s, e) = span.split_once('-')?;
                    Some((s.parse::<usize>().ok()?, e.parse::<usize>().ok()?, size))
                });
            match range {
                Some((s, e, size))
                    if s <= e
                        && e < content.len()
                        && size == content.len().to_string()
                        && res.body == content[s..=e] =>
                {
                    None
                }
                _ => Some("206 whose Content-Range and body do not match the blob".into()),
            }
        }
        200 => None,
        other => Some(format!("unexpected success status {other}")),
    }
}

/// Every file and directory under `root` (relative), with file sizes,
/// leaving out `skip`.
fn tree(root: &Path, skip: Option<&Path>) -> BTreeSet<(PathBuf, Option<u64>)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if Some(path.as_path()) == skip {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if meta.is_dir() {
                stack.push(path);
                out.insert((rel, None));
            } else {
                out.insert((rel, Some(meta.len())));
            }
        }
    }
    out
}

/// Entries directly in `dir` whose name contains `marker`.
fn named_after(dir: &Path, marker: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(marker))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn malformed_requests_never_cause_server_errors_or_escape_the_cache() {
    let started = Instant::now();
    let seed = std::env::var("OCIREGISTRY_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let root = tempfile::Builder::new()
        .prefix("ociregistry-hostile-")
        .tempdir()
        .expect("temp dir");
    let cache = root.path().join("cache");
    let sentinel = root.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep.txt"), b"untouched").unwrap();
    // `?ns=` and absolute-form requests point here; an air-gapped server
    // must never connect.
    let canary = TcpListener::bind("127.0.0.1:0").expect("bind canary");
    canary.set_nonblocking(true).unwrap();
    let canary_port = canary.local_addr().unwrap().port();

    let server = Server::start_with_cache(
        "defaultNs: docker.io\n",
        &cache,
        &["--air-gapped", "--hello-world"],
    );
    let addr = server.host_port();
    let known = discover(&addr);
    let ctx = Ctx {
        marker: format!("hostile-{:x}", seed),
        canary: canary_port,
        hex: known.blobs[0]
            .strip_prefix("sha256:")
            .expect("sha256 digest")
            .to_string(),
        known,
    };
    let outside_before = tree(root.path(), Some(&cache));
    let cache_before = tree(&cache, None);
    let server_dir = server.config_path().parent().unwrap().to_path_buf();
    let server_dir_before: BTreeSet<PathBuf> = tree(&server_dir, None)
        .into_iter()
        .map(|(p, _)| p)
        .collect();

    let corpus = corpus(&ctx, &mut Rng::new(seed));
    let sent = corpus.len();
    let sending = Instant::now();
    let outcomes = send_all(&addr, &corpus);
    let send_time = sending.elapsed();

    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut by_group: BTreeMap<(&str, String, bool), usize> = BTreeMap::new();
    for (req, outcome) in corpus.iter().zip(&outcomes) {
        let key = match outcome {
            Outcome::Answered(r) => r.status.to_string(),
            Outcome::Closed(_) => "closed".into(),
            Outcome::TimedOut => "timeout".into(),
        };
        *statuses.entry(key.clone()).or_default() += 1;
        let handled = matches!(outcome, Outcome::Answered(r) if r.body.starts_with(b"{"));
        *by_group.entry((req.group, key, handled)).or_default() += 1;
        if let Some(why) = problem(req, outcome, &ctx.known) {
            problems.push(format!("{why}: {req}\n    -> {outcome}"));
        }
    }
    let summary = format!(
        "{sent} hostile requests (seed {seed:#x}) in {send_time:.1?}, statuses {statuses:?}"
    );
    eprintln!("{summary}");
    for ((group, status, handled), n) in &by_group {
        eprintln!("  {group:>13} {status:>7} handled={handled:<5} {n}");
    }

    // The server still answers, and still serves the image byte-exact.
    assert_eq!(
        http_get_status(&addr, "/v2/"),
        Some(200),
        "GET /v2/ after {summary}\n{}",
        common::log_tail(&server.log_path(), 20)
    );
    let index = get(&addr, HELLO);
    assert_eq!(index.status, 200, "hello-world after {summary}");
    assert_eq!(digest_of(&index.body), ctx.known.index);
    for blob in &ctx.known.blobs {
        let res = get(
            &addr,
            &format!("/v2/library/hello-world/blobs/{blob}?ns=docker.io"),
        );
        assert_eq!(res.status, 200, "{blob} after {summary}");
        assert_eq!(digest_of(&res.body), *blob);
    }

    assert!(
        problems.is_empty(),
        "{} of {summary} were answered wrongly; the first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(25)].join("\n")
    );

    // Nothing left the cache, and nothing in it was named after the input.
    assert_eq!(
        tree(root.path(), Some(&cache)),
        outside_before,
        "files appeared beside the cache after {summary}"
    );
    let server_dir_after: BTreeSet<PathBuf> = tree(&server_dir, None)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(server_dir_after, server_dir_before, "after {summary}");
    let bookkeeping = ["index.jsonl", "pulled.json"];
    let before: BTreeSet<&PathBuf> = cache_before.iter().map(|(p, _)| p).collect();
    for (path, _) in tree(&cache, None) {
        let text = path.to_string_lossy();
        assert!(
            !text.contains("..")
                && !text.contains('%')
                && !text.contains('\0')
                && !text.contains(&ctx.marker),
            "cache file named after the input: {text} ({summary})"
        );
        let name = path.file_name().unwrap().to_string_lossy();
        let name = name.strip_suffix(".partial").unwrap_or(&name);
        assert!(
            before.contains(&path) || bookkeeping.contains(&name),
            "the air-gapped cache gained {text} ({summary})"
        );
    }
    let mut places = vec![
        root.path().to_path_buf(),
        std::env::temp_dir(),
        PathBuf::from("/tmp"),
        PathBuf::from("/"),
        std::env::current_dir().unwrap(),
    ];
    places.extend(root.path().parent().map(Path::to_path_buf));
    for place in places {
        let found = named_after(&place, &ctx.marker);
        assert!(
            found.is_empty(),
            "created from the input: {found:?} ({summary})"
        );
    }

    match canary.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the air-gapped server connected to 127.0.0.1:{canary_port}: {other:?}"),
    }
    let log = server.log_contents();
    assert!(
        !log.contains("panicked"),
        "the server panicked during {summary}:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(sent >= 10_000, "only {summary}");
    eprintln!("hostile input test took {:.1?}", started.elapsed());
}

/// A registry named in `?ns=` or as the first path segment must be
/// `host[:port]` with a port of digits; anything else is NAME_INVALID, so
/// that one upstream cannot appear under several names (`host:+443` and
/// `host:443`) and slip past configuration and `upstreams.deny` globs
/// written for one of them.
#[test]
fn registry_names_that_are_not_host_and_port_are_refused() {
    let server = Server::start("", &["--air-gapped", "--hello-world"]);
    let addr = server.host_port();
    let hex = "0".repeat(64);
    let mut wrong = Vec::new();
    let mut sent = 0;
    for registry in INVALID_REGISTRIES {
        for target in [
            format!("/v2/library/hello-world/manifests/latest?ns={registry}"),
            format!("/v2/{registry}/library/hello-world/manifests/latest"),
            format!("/v2/{registry}/library/hello-world/blobs/sha256:{hex}"),
        ] {
            sent += 1;
            let res = get(&addr, &target);
            if res.status != 400 {
                let body = String::from_utf8_lossy(&res.body);
                wrong.push(format!("GET {target} -> {} {body}", res.status));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {sent} requests naming an invalid registry were not refused with 400:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
