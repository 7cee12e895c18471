//! A raw HTTP/1.1 client over a std `TcpStream`: requests are written as
//! text, answers read as they come (status line, headers, a
//! `Content-Length` body, or everything until the server closes), so that
//! no client library pools, retries or normalises anything.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The text of a body-less HTTP/1.1 request: the request line, `Host: host`,
/// then `headers` in order.
pub fn request(method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text
}

/// A response head: status and headers (names lowercased).
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The value of the first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Length` value.
    pub fn content_length(&self) -> Result<u64, String> {
        self.header("content-length")
            .ok_or("no Content-Length")?
            .parse()
            .map_err(|e| format!("bad Content-Length: {e}"))
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct RawConn {
    reader: BufReader<TcpStream>,
    host: String,
}

impl RawConn {
    /// Connects to `host_port` with `io_timeout` on every read and write and
    /// Nagle's algorithm off; requests name `host_port` as their `Host`.
    pub fn connect(host_port: &str, io_timeout: Duration) -> io::Result<RawConn> {
        let stream = TcpStream::connect(host_port)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        stream.set_nodelay(true)?;
        Ok(RawConn::new(stream, host_port))
    }

    /// Like [`RawConn::connect`], from the local address `local` (any
    /// 127.0.0.0/8 address is a distinct client of a loopback server).
    pub fn connect_from(
        local: IpAddr,
        host_port: &str,
        io_timeout: Duration,
    ) -> io::Result<RawConn> {
        let server: SocketAddr = host_port
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let stream = runtime.block_on(async {
            let socket = match local {
                IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(local, 0))?;
            socket.connect(server).await?.into_std()
        })?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        stream.set_nodelay(true)?;
        Ok(RawConn::new(stream, host_port))
    }

    /// Wraps a connected `stream` as it is (timeouts are the caller's);
    /// requests name `host` as their `Host`.
    pub fn new(stream: TcpStream, host: &str) -> RawConn {
        RawConn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            host: host.to_owned(),
        }
    }

    /// Writes `text` (one or more requests) as it is.
    pub fn write(&mut self, text: &str) -> io::Result<()> {
        self.reader.get_mut().write_all(text.as_bytes())
    }

    /// Writes a body-less `method path` request with `headers`.
    pub fn write_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<()> {
        let text = request(method, path, &self.host, headers);
        self.write(&text)
    }

    /// Sends `method path` with `headers` and reads the response head (the
    /// body, if any, is the caller's to read).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Head, String> {
        self.write_request(method, path, headers)
            .map_err(|e| format!("write: {e}"))?;
        self.read_head()
    }

    /// GETs `path` with `headers`: the response head and its
    /// `Content-Length` body.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<(Head, Vec<u8>), String> {
        self.write_request("GET", path, headers)
            .map_err(|e| format!("write: {e}"))?;
        self.read_response(false)
    }

    /// Reads a status line and headers, up to the empty line.
    pub fn read_head(&mut self) -> Result<Head, String> {
        let mut line = String::new();
        let mut read_line = |line: &mut String| -> Result<(), String> {
            line.clear();
            match self.reader.read_line(line) {
                Ok(0) => Err("connection closed before the response head".into()),
                Ok(_) => Ok(()),
                Err(e) => Err(format!("read head: {e}")),
            }
        };
        read_line(&mut line)?;
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        loop {
            read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                return Ok(Head { status, headers });
            }
            let (name, value) = trimmed
                .split_once(':')
                .ok_or_else(|| format!("bad header line {trimmed:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    /// Reads `len` body bytes, calling `each` with every piece as it comes.
    pub fn read_body(&mut self, len: u64, mut each: impl FnMut(&[u8])) -> Result<(), String> {
        let mut left = len;
        while left > 0 {
            let buf = self
                .reader
                .fill_buf()
                .map_err(|e| format!("read body: {e}"))?;
            if buf.is_empty() {
                return Err(format!("cut after {} of {len} bytes", len - left));
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            each(&buf[..n]);
            self.reader.consume(n);
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads one response that must have a `Content-Length`: its head and,
    /// unless it answers a HEAD (`head_only`), its body.
    pub fn read_response(&mut self, head_only: bool) -> Result<(Head, Vec<u8>), String> {
        let head = self.read_head()?;
        let len = head.content_length()?;
        let mut body = Vec::new();
        if !head_only {
            body.reserve(usize::try_from(len).unwrap_or(0));
            self.read_body(len, |piece| body.extend_from_slice(piece))?;
        }
        Ok((head, body))
    }

    /// How long after this call the server closed the connection (end of
    /// stream or reset), reading past anything it sends first; `None` if
    /// it was still open `within` later. The read timeout is restored.
    pub fn closed_within(&mut self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        let before = self.reader.get_ref().read_timeout().expect("read timeout");
        let mut scratch = [0u8; 4096];
        let closed = loop {
            let Some(left) = within.checked_sub(start.elapsed()) else {
                break None;
            };
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set the read timeout");
            match self.reader.read(&mut scratch) {
                Ok(0) => break Some(start.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break None
                }
                Err(_) => break Some(start.elapsed()),
            }
        };
        self.reader
            .get_ref()
            .set_read_timeout(before)
            .expect("restore the read timeout");
        closed
    }

    /// Everything the server sends until it closes the connection (or a
    /// read fails: what came before is kept).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let _ = self.reader.read_to_end(&mut all);
        all
    }
}
