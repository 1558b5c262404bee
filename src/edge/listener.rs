//! The accept loop: every connection takes a slot from a fixed number
//! (`max_connections`; a connection over it is closed at once, never queued),
//! TLS handshakes run a bounded number at a time with a timeout, every peer
//! must then send the HTTP/2 preface within that timeout too, and each
//! connection carries its [`PeerInfo`] into request extensions. When the
//! drain begins the listening socket is closed, so new connections are
//! refused and clients go to another replica at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::limits::TransportLimits;
use super::tls::{PeerInfo, ReloadingConfig, identity_of};
use crate::ops::metrics;

/// Most TLS handshakes in flight at once; more connections wait, accepted
/// and holding their connection slots, for one to end.
const MAX_HANDSHAKES: usize = 256;

/// A served connection: plaintext TCP or TLS over TCP, holding its slot.
pub struct Conn {
    io: Io,
    /// When the connection is closed whatever it is doing: its maximum age
    /// (when tonic sends GOAWAY) plus the grace. tonic's own
    /// `max_connection_age_grace` replaces the GOAWAY with a bare close at
    /// the end of the grace (tonic 0.14), so the grace is kept here.
    ends: Pin<Box<tokio::time::Sleep>>,
    /// The HTTP/2 preface read from a TLS peer before the connection was
    /// handed over, given back to the first reads.
    head: Head,
    info: PeerInfo,
    _slot: OwnedSemaphorePermit,
}

/// Bytes read ahead of hyper, replayed before the stream's own.
#[derive(Default)]
struct Head {
    buf: [u8; PREFACE_LEN],
    pos: usize,
    len: usize,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ends.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection's maximum age and grace have passed",
            )));
        }
        let head = &mut this.head;
        if let Some(rest) = head.buf.get(head.pos..head.len)
            && !rest.is_empty()
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            head.pos += n;
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The length of the HTTP/2 client preface (RFC 9113, 3.4).
const PREFACE_LEN: usize = 24;

/// Waits until a plaintext peer has sent as many bytes as the HTTP/2 preface
/// (or closed), without taking them from the socket.
async fn preface(tcp: &TcpStream) {
    let mut buf = [0u8; PREFACE_LEN];
    loop {
        match tcp.peek(&mut buf).await {
            Ok(n) if n >= PREFACE_LEN => return,
            // Closed or broken: hyper will see it at once.
            Ok(0) | Err(_) => return,
            // Part of it: look again shortly.
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
}

/// Accepts connections on `listener`: TLS when `tls` is given, plaintext
/// otherwise. Yields established connections; a connection over
/// `max_connections` is closed at once, and failed handshakes are logged
/// and dropped. Once `stop` turns true the listener is closed, and a
/// connection whose handshake ends later is closed rather than queued for a
/// server that no longer takes any (it would be held until the exit).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadingConfig>>,
    limits: TransportLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let tx = Handover {
        tx,
        stop: stop.clone(),
    };
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let lifetime = limits.max_connection_age + limits.max_connection_age_grace;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics::get().refused(crate::ops::metrics::Refusal::MaxConnections);
                tracing::debug!(%remote, "connection refused: max_connections reached");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &tls else {
                // A plaintext peer must send the HTTP/2 preface within the
                // handshake timeout, or it would hold its slot for nothing.
                // Waiting costs no CPU, so only the slot bounds it.
                let tx = tx.clone();
                let timeout = limits.handshake_timeout;
                tokio::spawn(async move {
                    if tokio::time::timeout(timeout, preface(&tcp)).await.is_err() {
                        metrics::get().refused(crate::ops::metrics::Refusal::PrefaceTimeout);
                        tracing::debug!(%remote, "no HTTP/2 preface in time; connection closed");
                        return;
                    }
                    let info = PeerInfo {
                        identity: None,
                        tls: false,
                        remote: Some(remote),
                    };
                    let conn = Conn {
                        ends: Box::pin(tokio::time::sleep(lifetime)),
                        io: Io::Plain(tcp),
                        head: Head::default(),
                        info,
                        _slot: slot,
                    };
                    tx.send(conn).await;
                });
                continue;
            };
            let acceptor = TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            let timeout = limits.handshake_timeout;
            // Taken here when free, so handshakes start in connection order.
            let free = handshakes.clone().try_acquire_owned().ok();
            let (handshakes, mut stop) = (handshakes.clone(), stop.clone());
            tokio::spawn(async move {
                // Waiting for a handshake slot holds a connection slot, so
                // the accept loop never blocks: max_connections and the
                // drain still apply while every handshake slot is taken.
                // The wait has the handshake's own bound.
                let permit = match free {
                    Some(p) => p,
                    None => tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => return,
                        () = tokio::time::sleep(timeout) => {
                            metrics::get().refused(crate::ops::metrics::Refusal::TlsHandshakeTimeout);
                            tracing::debug!(%remote, "no TLS handshake slot in time; connection closed");
                            return;
                        }
                        p = handshakes.acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    },
                };
                let accepted = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                // The permit bounds handshakes (CPU), not waiting peers.
                drop(permit);
                match accepted {
                    Ok(Ok(mut stream)) => {
                        // A peer through the handshake must still send the
                        // HTTP/2 preface in time, or it would hold its slot
                        // for nothing. TLS records cannot be peeked at, so
                        // the preface is read here and replayed to hyper.
                        let mut head = Head::default();
                        let read = tokio::io::AsyncReadExt::read_exact(&mut stream, &mut head.buf);
                        match tokio::time::timeout(timeout, read).await {
                            Ok(Ok(n)) => head.len = n,
                            // Closed or broken before a preface: nothing to serve.
                            Ok(Err(_)) => return,
                            Err(_) => {
                                metrics::get()
                                    .refused(crate::ops::metrics::Refusal::PrefaceTimeout);
                                tracing::debug!(%remote, "no HTTP/2 preface in time after the TLS handshake; connection closed");
                                return;
                            }
                        }
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| identity_of(c.as_ref()));
                        let info = PeerInfo {
                            identity,
                            tls: true,
                            remote: Some(remote),
                        };
                        let conn = Conn {
                            ends: Box::pin(tokio::time::sleep(lifetime)),
                            io: Io::Tls(Box::new(stream)),
                            head,
                            info,
                            _slot: slot,
                        };
                        tx.send(conn).await;
                    }
                    Ok(Err(e)) => {
                        metrics::get().refused(crate::ops::metrics::Refusal::TlsHandshake);
                        tracing::debug!(%remote, error = %e, "TLS handshake failed")
                    }
                    Err(_) => {
                        metrics::get().refused(crate::ops::metrics::Refusal::TlsHandshakeTimeout);
                        tracing::debug!(%remote, "TLS handshake timed out")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The queue of established connections, closed to new ones once the drain
/// has begun.
#[derive(Clone)]
struct Handover {
    tx: tokio::sync::mpsc::Sender<Result<Conn, io::Error>>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Handover {
    /// Queues `conn` for the server, or drops (closes) it once stopping.
    async fn send(&self, conn: Conn) {
        if !*self.stop.borrow() {
            let _ = self.tx.send(Ok(conn)).await;
        }
    }
}
