//! Lingering close for client connections. When the server answers before it has read a
//! request's body (413 for a body too large, 401, 429) and closes, data the client is still
//! sending would arrive at a closed socket, and the kernel would answer it with a reset that
//! can destroy the answer before the client reads it. So a connection's close first ends
//! the server's side (the client sees the end of the answer), then reads and discards what
//! still arrives, up to a bound of bytes and time, and only then closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// What is read and thrown away at most before closing.
const DRAIN_BYTES: u64 = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Lingering {
    stream: TcpStream,
    closing: Option<Closing>,
}

#[derive(Debug)]
struct Closing {
    wrote_fin: bool,
    drained: u64,
    deadline: Pin<Box<Sleep>>,
}

impl Lingering {
    pub fn new(stream: TcpStream) -> Lingering {
        Lingering { stream, closing: None }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let closing = this.closing.get_or_insert_with(|| Closing {
            wrote_fin: false,
            drained: 0,
            deadline: Box::pin(tokio::time::sleep(DRAIN_TIME)),
        });
        if !closing.wrote_fin {
            match Pin::new(&mut this.stream).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => closing.wrote_fin = true,
                // Already gone: nothing to linger for.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if closing.drained >= DRAIN_BYTES || closing.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => closing.drained += buf.filled().len() as u64,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
