//! Accepted TCP connections: no Nagle delay, and writes coalesced per scheduler turn.
//!
//! A grid change goes to every subscriber at once: hundreds of HTTP/2 streams, often on a few
//! connections, each writing one small DATA frame. Without Nagle's algorithm (which would hold a
//! frame for the client's delayed acknowledgement: tens of milliseconds on real networks), every
//! frame would be a syscall and a packet of its own, and the client would wake for each.
//! [`CoalescedWrites`] buffers what a connection writes and, on the first flush, yields once to
//! the scheduler, so the other streams of the same fan-out add their frames first; the next
//! flush sends them together. This is Netty's flush consolidation, bounded by one scheduler
//! turn instead of a timer.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this, writes go to the socket without waiting for a flush.
const MOST_BUFFERED: usize = 256 * 1024;
/// The buffer a connection keeps between flushes; a larger one (after a big snapshot) is freed,
/// so 10,000 quiet connections do not each hold what their largest write needed.
const KEPT_CAPACITY: usize = 16 * 1024;

/// Accepts connections with `TCP_NODELAY` set and their writes coalesced.
pub(crate) struct Listener(pub(crate) tokio::net::TcpListener);

impl axum::serve::Listener for Listener {
    type Io = CoalescedWrites<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, peer)) => return (CoalescedWrites::new(stream), peer),
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "Accepting a connection failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose writes wait for a flush, and whose flush first lets other ready tasks run
/// once (see the module's documentation).
pub(crate) struct CoalescedWrites<T> {
    inner: T,
    buffer: Vec<u8>,
    /// How much of `buffer` has reached `inner` (the socket may take part of it at a time).
    sent: usize,
    /// This flush has already let the others go first.
    yielded: bool,
}

impl CoalescedWrites<tokio::net::TcpStream> {
    pub(crate) fn new(stream: tokio::net::TcpStream) -> Self {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "Cannot set TCP_NODELAY.");
        }
        Self::wrap(stream)
    }
}

impl<T: AsyncWrite + Unpin> CoalescedWrites<T> {
    fn wrap(inner: T) -> Self {
        Self { inner, buffer: Vec::new(), sent: 0, yielded: false }
    }

    /// Writes everything buffered to `inner`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buffer.len() {
            let written =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.buffer.clear();
        if self.buffer.capacity() > KEPT_CAPACITY {
            self.buffer = Vec::new();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn room(&self) -> usize {
        MOST_BUFFERED.saturating_sub(self.buffer.len())
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.room() == 0 {
            ready!(self.poll_send(cx))?;
        }
        let taken = data.len().min(self.room());
        self.buffer.extend_from_slice(&data[..taken]);
        Poll::Ready(Ok(taken))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.room() == 0 {
            ready!(self.poll_send(cx))?;
        }
        let mut taken = 0;
        for slice in data {
            let part = slice.len().min(self.room());
            self.buffer.extend_from_slice(&slice[..part]);
            taken += part;
            if part < slice.len() {
                break;
            }
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buffer.is_empty() && !self.yielded {
            // Woken while running, a tokio task goes to the back of its worker's queue: every
            // task already woken (the other streams of this fan-out) writes before this flush.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(self.poll_send(cx))?;
        self.yielded = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Counts the writes that reach it.
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            // A socket that takes at most 5 bytes a call, to exercise partial writes.
            let taken = data.len().min(5);
            self.writes.push(data[..taken].to_vec());
            Poll::Ready(Ok(taken))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_reach_the_socket_together_at_a_flush_after_one_yield() {
        let mut connection = CoalescedWrites::wrap(Socket::default());
        connection.write_all(b"frame-1").await.unwrap();
        let slices = [io::IoSlice::new(b"frame-2"), io::IoSlice::new(b"frame-3")];
        assert_eq!(connection.write_vectored(&slices).await.unwrap(), 14);
        assert!(connection.inner.writes.is_empty(), "nothing is sent before a flush");

        // The first poll of a flush yields (and wakes itself); the next sends.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        {
            let mut flush = std::pin::pin!(connection.flush());
            assert!(flush.as_mut().poll(&mut cx).is_pending());
            assert!(flush.as_mut().poll(&mut cx).is_ready());
        }
        let sent: Vec<u8> = connection.inner.writes.concat();
        assert_eq!(sent, b"frame-1frame-2frame-3");
        assert_eq!(connection.inner.writes.len(), 5, "5-byte writes: the socket's limit");

        // An empty flush does not yield; the next flush yields again.
        connection.flush().await.unwrap();
        connection.write_all(b"frame-4").await.unwrap();
        {
            let mut flush = std::pin::pin!(connection.flush());
            assert!(flush.as_mut().poll(&mut cx).is_pending());
            assert!(flush.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(connection.inner.writes.concat(), b"frame-1frame-2frame-3frame-4");
    }

    #[tokio::test]
    async fn a_full_buffer_is_sent_without_waiting_for_a_flush() {
        let mut connection = CoalescedWrites::wrap(tokio::io::sink());
        let big = vec![7u8; MOST_BUFFERED];
        connection.write_all(&big).await.unwrap();
        assert_eq!(connection.buffer.len(), MOST_BUFFERED);
        connection.write_all(b"more").await.unwrap();
        assert_eq!(connection.buffer, b"more", "the full buffer went out first");
        assert!(connection.buffer.capacity() <= KEPT_CAPACITY, "the big buffer was freed");
        connection.shutdown().await.unwrap();
        assert!(connection.buffer.is_empty(), "shutdown sends what is left");
    }

    #[tokio::test]
    async fn a_tcp_connection_carries_the_bytes_and_has_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut listener = Listener(listener);
        let client = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).await.unwrap();
            received
        });
        let (mut connection, _) = axum::serve::Listener::accept(&mut listener).await;
        assert!(connection.inner.nodelay().unwrap());
        connection.write_all(b"hello, ").await.unwrap();
        connection.write_all(b"grid").await.unwrap();
        connection.flush().await.unwrap();
        connection.shutdown().await.unwrap();
        drop(connection);
        assert_eq!(client.await.unwrap(), b"hello, grid");
    }
}
