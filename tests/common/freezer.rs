//! A TCP proxy on 127.0.0.1 that the test can freeze: from then on no byte
//! passes in either direction and new connections wait, as when a store
//! stops answering in the middle of a transfer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a frozen pump looks whether it may go on.
const THAW_POLL: Duration = Duration::from_millis(10);

/// A running proxy to one target.
pub struct Freezer {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Freezer {
    /// Proxies a port of its own to `target` (`host:port`).
    pub fn start(target: &str) -> Freezer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind freezer");
        let port = listener.local_addr().expect("freezer address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let (target, gate) = (target.to_owned(), Arc::clone(&frozen));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to) = (from.try_clone(), to.try_clone());
                    let gate = Arc::clone(&gate);
                    if let (Ok(from), Ok(to)) = (from, to) {
                        std::thread::spawn(move || pump(from, to, &gate));
                    }
                }
            }
        });
        Freezer { port, frozen }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops every byte from now on.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes, holding bytes while frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            std::thread::sleep(THAW_POLL);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
