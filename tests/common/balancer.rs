//! A round-robin TCP load balancer on 127.0.0.1 (haproxy), standing in for
//! a Kubernetes Service in front of replicas: each connection goes to the
//! next backend that answers its health check; a connection refused is
//! tried on another backend.

use std::process::{Child, Command, Stdio};

use super::{free_port, kill_child, wait_until, STARTUP_DEADLINE};

/// A running haproxy. Dropping it stops it.
pub struct Balancer {
    _dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Balancer {
    /// Balances a port of its own over `backends` (ports on 127.0.0.1).
    pub fn start(backends: &[u16]) -> Balancer {
        let dir = tempfile::tempdir().expect("balancer dir");
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(n, p)| format!("  server r{n} 127.0.0.1:{p} check inter 100ms fall 1 rise 1\n"))
            .collect();
        let config = format!(
            "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch\nlisten registry\n  bind 127.0.0.1:{port}\n  balance roundrobin\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy");
        let mut balancer = Balancer {
            _dir: dir,
            port,
            child: Some(child),
        };
        let addr = format!("127.0.0.1:{port}");
        if !wait_until(STARTUP_DEADLINE, || {
            std::net::TcpStream::connect(&addr).is_ok()
        }) {
            kill_child(&mut balancer.child);
            panic!("haproxy did not listen on {addr}");
        }
        balancer
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
