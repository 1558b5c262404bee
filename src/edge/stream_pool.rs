//! The streams (EncryptStream, DecryptStream) open at once: a pool of their
//! own, so long-lived streams cannot take the room unary calls need, capped
//! per caller (the certificate identity, or the remote address without one)
//! so one caller cannot take the whole pool. A stream over either bound is
//! refused at once with `RESOURCE_EXHAUSTED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::tls::PeerInfo;
use crate::ops::metrics;

/// The pool.
#[derive(Debug)]
pub struct StreamPool {
    max: usize,
    per_caller: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One open stream's place in the pool, given back on drop.
#[derive(Debug)]
pub struct Slot {
    pool: Arc<StreamPool>,
    caller: String,
}

impl StreamPool {
    /// A pool of `max` streams, at most `per_caller` for one caller.
    pub fn new(max: usize, per_caller: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_caller,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a stream of `peer`, or `None` when the pool or the
    /// caller's share is full.
    pub fn enter(self: &Arc<Self>, peer: &PeerInfo) -> Option<Slot> {
        let caller = match (&peer.identity, peer.remote) {
            (Some(id), _) => id.clone(),
            (None, Some(addr)) => addr.ip().to_string(),
            (None, None) => String::new(),
        };
        let mut open = self.open.lock().ok()?;
        let (total, callers) = &mut *open;
        let mine = callers.get(&caller).copied().unwrap_or(0);
        if *total >= self.max || mine >= self.per_caller {
            let reason = if *total >= self.max {
                metrics::Refusal::MaxStreams
            } else {
                metrics::Refusal::MaxStreamsPerCaller
            };
            metrics::get().refused(reason);
            return None;
        }
        *total += 1;
        callers.insert(caller.clone(), mine + 1);
        Some(Slot {
            pool: self.clone(),
            caller,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.lock().map_or(0, |o| o.0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.pool.open.lock() {
            let (total, callers) = &mut *open;
            *total = total.saturating_sub(1);
            if let Some(n) = callers.get_mut(&self.caller) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    callers.remove(&self.caller);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peer(id: &str) -> PeerInfo {
        PeerInfo {
            identity: Some(id.to_owned()),
            tls: true,
            remote: None,
        }
    }

    #[test]
    fn bounded_in_total_and_per_caller() {
        let pool = StreamPool::new(3, 2);
        let a1 = pool.enter(&peer("a")).unwrap();
        let _a2 = pool.enter(&peer("a")).unwrap();
        assert!(pool.enter(&peer("a")).is_none(), "a's share is 2");
        let _b1 = pool.enter(&peer("b")).unwrap();
        assert!(pool.enter(&peer("c")).is_none(), "the pool is 3");
        drop(a1);
        assert_eq!(pool.open(), 2);
        let _c1 = pool.enter(&peer("c")).unwrap();
        assert_eq!(pool.open(), 3);
    }
}
