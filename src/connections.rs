//! Client connections of the registry port: a cap per client address, idle
//! keep-alive connections closed first when connections near
//! `maxConnections`, and a deadline on every request head.
//!
//! actix-http times out only the first request head of a connection
//! (`client_request_timeout`), and its keep-alive timer stops at the first
//! byte of the next request: nothing else bounds a later head. So every
//! connection's stream is a [`ClientStream`] that ends its reads (end of
//! stream) when a deadline passes:
//! - between requests (idle): `keepAlive` after the last response;
//! - once bytes of the next request arrived: `headerTimeout` later;
//! - while a request is answered, and before the first one (actix-http's
//!   `client_request_timeout` covers that head): none.
//!
//! The [`track`] middleware tells a connection when a request starts and
//! when its response body is done. A head that arrives while the request
//! before it is answered (pipelined) is bounded by `keepAlive` from the end
//! of that answer, then `headerTimeout` from its next byte.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::rt::net::{ActixStream, Ready, TcpStream};
use bytes::Bytes;
use futures::task::AtomicWaker;
use ociregistry_actors::metrics::METRICS;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::ClientLimits;

/// Idle connections are closed, longest idle first, while more than this
/// many tenths of `maxConnections` are open: new clients find room.
const IDLE_CLOSE_TENTHS: usize = 9;

/// Why a connection was not served.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Its client address had `maxConnectionsPerClient` open.
    #[error("{0} has maxConnectionsPerClient connections open")]
    PerClient(IpAddr),
    /// The connection was gone before it could be served.
    #[error("peer address: {0}")]
    Gone(io::Error),
}

/// The open connections of one listener and their limits.
pub struct Connections {
    /// Open connections above which idle ones are closed.
    idle_close_above: usize,
    /// `maxConnectionsPerClient`.
    max_per_client: usize,
    /// `headerTimeout`.
    header_timeout: Duration,
    /// `keepAlive`.
    keep_alive: Duration,
    /// Counts and idle connections.
    table: Mutex<Table>,
}

/// What [`Connections`] keeps under its lock.
#[derive(Default)]
struct Table {
    /// Connections open.
    open: usize,
    /// Connections told to close that have not closed yet.
    closing: usize,
    /// Connections open per client address.
    per_client: HashMap<IpAddr, usize>,
    /// Idle connections, by when they became idle (first: longest idle).
    idle: BTreeMap<u64, Arc<Conn>>,
    /// The key of the next connection to become idle.
    next_idle: u64,
}

/// One connection, as its stream, its requests and the table see it.
struct Conn {
    /// The client's address.
    client: IpAddr,
    /// Where the connection is between requests.
    phase: Mutex<Phase>,
    /// Set when the table closes the connection.
    close: AtomicBool,
    /// The task reading the connection, woken when it is closed.
    reader: AtomicWaker,
}

/// Where a connection is between requests.
#[derive(Debug)]
enum Phase {
    /// No request yet.
    First,
    /// A request is being answered.
    Busy,
    /// Waiting for the next request until `deadline`; `key` in the idle
    /// table.
    Idle { key: u64, deadline: Instant },
    /// Part of the next request arrived; its head is due by `deadline`.
    Head { deadline: Instant },
    /// The connection closed.
    Closed,
}

impl Connections {
    /// No connection open yet.
    pub fn new(limits: &ClientLimits) -> Arc<Self> {
        Arc::new(Self {
            idle_close_above: limits.max_connections * IDLE_CLOSE_TENTHS / 10,
            max_per_client: limits.max_per_client,
            header_timeout: limits.header_timeout,
            keep_alive: limits.keep_alive,
            table: Mutex::default(),
        })
    }

    /// Takes a new connection, or refuses it when its client address is at
    /// its cap.
    pub fn admit(self: &Arc<Self>, io: TcpStream) -> Result<ClientStream, Refused> {
        let peer = io.peer_addr().map_err(Refused::Gone)?;
        let client = peer.ip().to_canonical();
        let mut table = self.table();
        let count = table.per_client.entry(client).or_default();
        if *count >= self.max_per_client {
            METRICS.client_connections_refused.inc();
            return Err(Refused::PerClient(client));
        }
        *count += 1;
        table.open += 1;
        METRICS.client_connections.inc();
        self.make_room(&mut table);
        drop(table);
        let conn = Arc::new(Conn {
            client,
            phase: Mutex::new(Phase::First),
            close: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        });
        Ok(ClientStream {
            io,
            peer,
            connection: Connection {
                connections: Arc::clone(self),
                conn,
            },
            timer: None,
        })
    }

    /// Closes idle connections, longest idle first, while too many are
    /// open.
    fn make_room(&self, table: &mut Table) {
        while table.open - table.closing > self.idle_close_above {
            let Some((_, conn)) = table.idle.pop_first() else {
                return;
            };
            if conn.close.swap(true, Ordering::AcqRel) {
                continue;
            }
            table.closing += 1;
            METRICS.idle_connections_closed.inc();
            conn.reader.wake();
        }
    }

    /// The table (a panic elsewhere leaves it consistent: every update is
    /// a few assignments).
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle on one connection, in its stream and in its requests'
/// connection data.
#[derive(Clone)]
pub struct Connection {
    /// The table it is counted in.
    connections: Arc<Connections>,
    /// The connection.
    conn: Arc<Conn>,
}

impl Connection {
    /// The connection's phase.
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.conn
            .phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the connection out of the idle table if it is there.
    fn leave_idle(&self, phase: &Phase) {
        if let Phase::Idle { key, .. } = phase {
            self.connections.table().idle.remove(key);
        }
    }

    /// Until when the next read may wait, if anything bounds it.
    fn read_deadline(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Idle { deadline, .. } | Phase::Head { deadline } => Some(deadline),
            Phase::First | Phase::Busy | Phase::Closed => None,
        }
    }

    /// Bytes were read: on an idle connection, the next request's head is
    /// due within `headerTimeout`.
    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            self.leave_idle(&phase);
            *phase = Phase::Head {
                deadline: Instant::now() + self.connections.header_timeout,
            };
        }
    }

    /// A request's head was read and its answer starts.
    fn request_started(&self) {
        let mut phase = self.phase();
        if !matches!(*phase, Phase::Closed) {
            self.leave_idle(&phase);
            *phase = Phase::Busy;
        }
    }

    /// The answer to the request has been handed to the connection: it is
    /// idle until the next request, for at most `keepAlive`.
    fn response_finished(&self) {
        let mut phase = self.phase();
        if !matches!(*phase, Phase::Busy) {
            return;
        }
        let connections = &self.connections;
        let mut table = connections.table();
        let key = table.next_idle;
        table.next_idle += 1;
        table.idle.insert(key, Arc::clone(&self.conn));
        *phase = Phase::Idle {
            key,
            deadline: Instant::now() + connections.keep_alive,
        };
        connections.make_room(&mut table);
    }

    /// The connection closed.
    fn closed(&self) {
        let mut phase = self.phase();
        let mut table = self.connections.table();
        if let Phase::Idle { key, .. } = *phase {
            table.idle.remove(&key);
        }
        *phase = Phase::Closed;
        if self.conn.close.load(Ordering::Acquire) {
            table.closing -= 1;
        }
        table.open -= 1;
        let client = self.conn.client;
        if let Some(count) = table.per_client.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                table.per_client.remove(&client);
            }
        }
        METRICS.client_connections.dec();
    }
}

/// A client connection's stream: reads end when the connection is closed
/// to make room or a read deadline passes; writes pass through.
pub struct ClientStream {
    /// The socket.
    io: TcpStream,
    /// The client's address and port.
    peer: SocketAddr,
    /// This connection.
    connection: Connection,
    /// The read deadline's timer, made at the first deadline.
    timer: Option<Pin<Box<Sleep>>>,
}

impl ClientStream {
    /// The client's address and port.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The handle its requests carry (see [`track`]).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Whether the connection is to be closed now: the table closed it or
    /// its read deadline passed (registers `cx` for both).
    fn ending(&mut self, cx: &mut Context<'_>) -> bool {
        let conn = &self.connection.conn;
        conn.reader.register(cx.waker());
        if conn.close.load(Ordering::Acquire) {
            return true;
        }
        let Some(deadline) = self.connection.read_deadline() else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ending(cx) {
            // End of stream: the dispatcher closes the connection.
            return Poll::Ready(Ok(()));
        }
        let filled = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() > filled {
            this.connection.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What the TLS acceptor needs of a stream.
impl ActixStream for ClientStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.io, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.io, cx)
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.connection.closed();
    }
}

/// Middleware: a connection is busy from a request's start until its
/// response body is done (or the request failed), then idle.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + Unpin>,
) -> Result<ServiceResponse<Tracked<impl MessageBody + Unpin>>, actix_web::Error> {
    let answering = req.conn_data::<Connection>().cloned().map(|connection| {
        connection.request_started();
        Answering(connection)
    });
    let res = next.call(req).await?;
    Ok(res.map_body(|_, body| Tracked {
        body,
        _answering: answering,
    }))
}

/// A request being answered on a connection; dropped with its response
/// body (or the failed request).
struct Answering(Connection);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.response_finished();
    }
}

/// A response body that marks its connection idle once dropped.
pub struct Tracked<B> {
    /// The body.
    body: B,
    /// The request it answers.
    _answering: Option<Answering>,
}

impl<B: MessageBody + Unpin> MessageBody for Tracked<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}
