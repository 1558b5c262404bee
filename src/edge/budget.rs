//! One budget for the request bytes the server holds, over every call and
//! stream together, charged before a message is buffered: a tower layer reads
//! the gRPC framing of each request body as it arrives (a 5-byte prefix: a
//! compression flag and the message length), and before the message's bytes
//! are taken in, claims its declared length from the budget. A message that
//! would go over it is refused with `RESOURCE_EXHAUSTED`, so a peer that
//! announces large messages and never finishes them holds at most the budget
//! between all of them, and each such message at most `message_read_timeout`.
//! The claim is released when the next message starts or the body ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::ops::metrics;

/// Budget units are KiB, so a semaphore's `u32` permits cover any budget.
const UNIT: usize = 1024;
const PREFIX: usize = 5;

/// The shared budget and the per-message read timeout.
#[derive(Debug)]
pub struct RequestBudget {
    permits: Arc<Semaphore>,
    total_units: usize,
    read_timeout: Duration,
    /// Messages declared larger are left to the decoder, which refuses them
    /// (`OUT_OF_RANGE`) without buffering them.
    max_message: usize,
}

impl RequestBudget {
    /// A budget of `bytes` (at least one unit) for messages of at most
    /// `max_message` bytes, each of which must arrive within `read_timeout`.
    pub fn new(bytes: usize, read_timeout: Duration, max_message: usize) -> Arc<Self> {
        let total_units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(total_units)),
            total_units,
            read_timeout,
            max_message,
        })
    }

    /// Bytes claimed right now (for tests and metrics).
    pub fn held(&self) -> usize {
        (self.total_units - self.permits.available_permits()) * UNIT
    }

    fn claim(self: &Arc<Self>, message_len: usize) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from((message_len + PREFIX).div_ceil(UNIT)).ok()?;
        self.permits.clone().try_acquire_many_owned(units).ok()
    }
}

/// The tower layer that puts every request body under the budget.
#[derive(Debug, Clone)]
pub struct BudgetLayer(pub Arc<RequestBudget>);

impl<S> tower::Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BudgetService {
            inner,
            budget: self.0.clone(),
        }
    }
}

/// See [`BudgetLayer`].
#[derive(Debug, Clone)]
pub struct BudgetService<S> {
    inner: S,
    budget: Arc<RequestBudget>,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for BudgetService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let body = Budgeted {
            inner: body,
            budget: self.budget.clone(),
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            claim: None,
            deadline: None,
            failed: false,
        };
        self.inner.call(http::Request::from_parts(
            parts,
            tonic::body::Body::new(body),
        ))
    }
}

/// A request body whose messages are claimed from the budget as they start.
struct Budgeted {
    inner: tonic::body::Body,
    budget: Arc<RequestBudget>,
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    claim: Option<OwnedSemaphorePermit>,
    /// When the current message must have arrived whole.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl Budgeted {
    /// Follows the framing through `data`; refuses a message the budget
    /// cannot hold. The claim for a finished message is kept until the next
    /// one starts, so the decoder's copy is covered too.
    fn account(&mut self, data: &Bytes) -> Result<(), Status> {
        let mut chunk = data.clone();
        while chunk.has_remaining() {
            if self.remaining > 0 {
                let n = self.remaining.min(chunk.remaining());
                chunk.advance(n);
                self.remaining -= n;
                if self.remaining == 0 {
                    self.deadline = None;
                }
                continue;
            }
            let want = PREFIX - self.prefix_len;
            let n = want.min(chunk.remaining());
            let Some(room) = self.prefix.get_mut(self.prefix_len..self.prefix_len + n) else {
                return Err(Status::internal("gRPC framing"));
            };
            chunk.copy_to_slice(room);
            self.prefix_len += n;
            if self.prefix_len < PREFIX {
                break;
            }
            self.prefix_len = 0;
            let [_, a, b, c, d] = self.prefix;
            let len = u32::from_be_bytes([a, b, c, d]) as usize;
            // Release the previous message first: a stream never holds two.
            self.claim = None;
            if len > self.budget.max_message {
                // The decoder refuses it from this prefix; nothing to hold.
                self.remaining = len;
                continue;
            }
            match self.budget.claim(len) {
                Some(permit) => self.claim = Some(permit),
                None => {
                    metrics::get().refused(crate::ops::metrics::Refusal::RequestBytesBudget);
                    return Err(Status::resource_exhausted(
                        "the server is holding as many request bytes as it allows; retry later",
                    ));
                }
            }
            self.remaining = len;
            if len > 0 {
                self.deadline = Some(Box::pin(tokio::time::sleep(self.budget.read_timeout)));
            }
        }
        Ok(())
    }
}

impl Body for Budgeted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let frame = match polled {
            Poll::Pending => {
                // Waiting for the rest of a message: not past its deadline.
                if let Some(deadline) = self.deadline.as_mut() {
                    ready!(deadline.as_mut().poll(cx));
                    self.failed = true;
                    self.claim = None;
                    metrics::get().refused(crate::ops::metrics::Refusal::MessageReadTimeout);
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(
                        "a request message did not arrive in time",
                    ))));
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => {
                self.claim = None;
                self.deadline = None;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref()
            && let Err(status) = self.account(data)
        {
            self.failed = true;
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(budget: &Arc<RequestBudget>) -> Budgeted {
        Budgeted {
            inner: tonic::body::Body::empty(),
            budget: budget.clone(),
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            claim: None,
            deadline: None,
            failed: false,
        }
    }

    fn frame(len: u32, body: &[u8]) -> Bytes {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(body);
        Bytes::from(v)
    }

    #[tokio::test]
    async fn messages_are_claimed_as_they_start_and_released_when_the_next_does() {
        let budget = RequestBudget::new(64 * 1024, Duration::from_secs(10), 1 << 20);
        let mut a = body(&budget);
        // 40 KiB announced, 3 bytes of it sent: all 40 KiB (+ prefix) held.
        a.account(&frame(40 * 1024, b"abc")).unwrap();
        assert_eq!(budget.held(), 41 * 1024);
        // A second body cannot announce 30 KiB more: refused before buffering.
        let mut b = body(&budget);
        let refused = b.account(&frame(30 * 1024, b"")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // The prefix split over two chunks is still read right.
        let mut c = body(&budget);
        c.account(&Bytes::from_static(&[0, 0, 0])).unwrap();
        assert_eq!(budget.held(), 41 * 1024);
        c.account(&Bytes::from_static(&[0, 10, 1, 2])).unwrap();
        assert_eq!(budget.held(), 42 * 1024);
        drop(a);
        assert_eq!(budget.held(), 1024, "a dropped body releases its claim");
        // The rest of c's message, then a new message: one claim at a time.
        c.account(&Bytes::from_static(&[3, 4, 5, 6, 7, 8, 9, 10]))
            .unwrap();
        c.account(&frame(2048, b"")).unwrap();
        assert_eq!(budget.held(), 3 * 1024);
        drop(c);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
