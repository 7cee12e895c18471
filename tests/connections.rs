//! Connections toward clients: every request head must arrive within
//! `headerTimeout`, one client address holds at most
//! `maxConnectionsPerClient` connections, and idle keep-alive connections
//! are closed first when connections near `maxConnections`.
//!
//! Other clients are other loopback addresses (127.0.0.2...).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{free_port, wait_until, RawConn, Server};

/// How long any single read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// `headerTimeout` of these servers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after `headerTimeout` the server may take to close.
const CLOSE_SLACK: Duration = Duration::from_secs(3);

/// The address of client number `n` (1: 127.0.0.1, the usual one).
fn client(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A connection from client `n`.
fn connect(n: u8, server: &Server) -> RawConn {
    RawConn::connect_from(client(n), &server.host_port(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect from {}: {e}", client(n)))
}

/// The status of `GET /v2/` on `conn`, or why there is none.
fn get_base(conn: &mut RawConn) -> Result<u16, String> {
    conn.get("/v2/", &[]).map(|(head, _)| head.status)
}

/// The value of the series `name` (no labels) on the metrics port.
fn metric(metrics_port: u16, name: &str) -> f64 {
    let mut conn = RawConn::connect(&format!("127.0.0.1:{metrics_port}"), IO_TIMEOUT)
        .expect("connect to the metrics port");
    let (head, body) = conn.get("/metrics", &[]).expect("GET /metrics");
    assert_eq!(head.status, 200, "GET /metrics");
    let text = String::from_utf8(body).expect("a UTF-8 exposition");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[test]
fn every_request_head_must_arrive_within_header_timeout() {
    let server = Server::start("headerTimeout: 1s\nkeepAlive: 60s\n", &[]);
    let partial_head = "GET /v2/ HTTP/1.1\r\nHost: x\r\n";

    // The first request of a connection.
    let mut first = connect(1, &server);
    first.write(partial_head).unwrap();
    let closed = first.closed_within(HEADER_TIMEOUT + CLOSE_SLACK);
    assert!(
        closed.is_some(),
        "a connection whose first request head stops half-way is closed after headerTimeout"
    );

    // A later request of a keep-alive connection.
    let mut conn = connect(1, &server);
    assert_eq!(get_base(&mut conn), Ok(200), "first request");
    assert_eq!(
        conn.closed_within(2 * HEADER_TIMEOUT + HEADER_TIMEOUT / 2),
        None,
        "an idle keep-alive connection outlives headerTimeout (keepAlive bounds it)"
    );
    assert_eq!(get_base(&mut conn), Ok(200), "second request, after idling");
    conn.write(partial_head).unwrap();
    let closed = conn.closed_within(HEADER_TIMEOUT + CLOSE_SLACK);
    assert!(
        closed.is_some(),
        "a keep-alive connection whose third request head stops half-way is closed after \
         headerTimeout ({HEADER_TIMEOUT:?}): still open {:?} later",
        HEADER_TIMEOUT + CLOSE_SLACK
    );
    let answered = connect(1, &server).get("/v2/", &[]).map(|(h, _)| h.status);
    assert_eq!(answered, Ok(200), "the server still answers");
}

#[test]
fn one_client_address_holds_at_most_max_connections_per_client() {
    const CAP: usize = 3;
    let metrics_port = free_port();
    let server = Server::start(
        &format!("maxConnectionsPerClient: {CAP}\nmetrics: {metrics_port}\n"),
        &[],
    );
    let mut held: Vec<RawConn> = (0..CAP).map(|_| connect(1, &server)).collect();
    for (i, conn) in held.iter_mut().enumerate() {
        assert_eq!(get_base(conn), Ok(200), "connection {i} of 127.0.0.1");
    }

    let over = get_base(&mut connect(1, &server));
    assert!(
        over.is_err(),
        "connection {} of one address is closed unanswered (maxConnectionsPerClient: {CAP}), \
         got {over:?}",
        CAP + 1
    );
    assert_eq!(
        get_base(&mut connect(2, &server)),
        Ok(200),
        "another address is served"
    );
    assert!(
        metric(metrics_port, "ociregistry_client_connections_refused_total") >= 1.0,
        "the refusal is counted"
    );

    // Once one of its connections closes, the address gets another.
    held.pop();
    let mut last = Err(String::new());
    let served = wait_until(Duration::from_secs(10), || {
        last = get_base(&mut connect(1, &server));
        last == Ok(200)
    });
    assert!(
        served,
        "127.0.0.1 is served again after closing one: {last:?}"
    );
}

#[test]
fn idle_keep_alive_connections_make_room_for_new_clients() {
    const MAX: usize = 40;
    // One client opens half again as many connections as the server takes,
    // each asking once and then idling on keep-alive (60 s).
    const HOGGED: usize = MAX + MAX / 2;
    let metrics_port = free_port();
    let server = Server::start(
        &format!(
            "maxConnections: {MAX}\nmaxConnectionsPerClient: 1000\nkeepAlive: 60s\n\
             metrics: {metrics_port}\n"
        ),
        &[],
    );
    let mut hog: Vec<RawConn> = (0..HOGGED)
        .map(|_| {
            let mut conn = connect(1, &server);
            conn.write_request("GET", "/v2/", &[]).unwrap();
            conn
        })
        .collect();

    let newcomer = get_base(&mut connect(2, &server));
    assert_eq!(
        newcomer,
        Ok(200),
        "another client is served while one holds {HOGGED} keep-alive connections \
         (maxConnections: {MAX})"
    );
    let answered = hog
        .iter_mut()
        .map(|c| c.read_response(false))
        .filter(|r| r.as_ref().is_ok_and(|(h, _)| h.status == 200))
        .count();
    assert_eq!(
        answered, HOGGED,
        "every request of the first client is answered"
    );
    let closed = metric(
        metrics_port,
        "ociregistry_client_idle_connections_closed_total",
    );
    assert!(
        closed >= (HOGGED - MAX) as f64,
        "idle connections were closed to make room: {closed}"
    );
    let open = metric(metrics_port, "ociregistry_client_connections");
    assert!(
        open <= MAX as f64,
        "at most maxConnections stay open: {open}"
    );
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once() {
    // Without a shutdown delay (its default, 5 s, is as long as this test
    // waits): the stop begins at once.
    let config = "keepAlive: 60s\ndrainTimeout: 30s\nshutdownDelay: 0s\n";
    let mut server = Server::start(config, &[]);
    let mut idle = connect(1, &server);
    assert_eq!(get_base(&mut idle), Ok(200), "first request");
    server.terminate();
    let closed = idle.closed_within(Duration::from_secs(5));
    assert!(
        closed.is_some(),
        "on SIGTERM an idle keep-alive connection is closed without waiting for keepAlive \
         or drainTimeout"
    );
    server.wait_clean_exit("after SIGTERM with an idle keep-alive connection");
}
