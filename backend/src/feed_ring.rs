//! What a grid feed has broadcast lately, bounded in bytes as well as in events: the oldest
//! events go once either bound is passed, whoever has not read them yet. A reader keeps its own
//! position; one whose next event is gone has fallen behind (it starts over from a snapshot),
//! so a reader that stops reading pins nothing.

use crate::LockExt as _;
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

/// A ring of events, each with the bytes it is counted as.
pub(crate) struct Ring<T> {
    inner: Mutex<Inner<T>>,
    arrived: tokio::sync::Notify,
    max_events: usize,
    max_bytes: usize,
}

struct Inner<T> {
    events: VecDeque<(Arc<T>, usize)>,
    /// The position of `events[0]`.
    first: u64,
    bytes: usize,
}

/// A reader's place in a [`Ring`]: the position of the next event it reads.
#[derive(Debug)]
pub(crate) struct Position(u64);

/// What a reader gets next.
pub(crate) enum Next<T> {
    Event(Arc<T>),
    /// Nothing new yet.
    Empty,
    /// Events it had not read are gone.
    Lagged,
}

impl<T> Ring<T> {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner { events: VecDeque::new(), first: 0, bytes: 0 }),
            arrived: tokio::sync::Notify::new(),
            max_events: max_events.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.locked()
    }

    /// Adds an event counted as `bytes`, drops the oldest beyond the bounds (the newest always
    /// stays), and wakes the readers.
    pub(crate) fn send(&self, event: Arc<T>, bytes: usize) {
        let mut inner = self.lock();
        inner.events.push_back((event, bytes));
        inner.bytes += bytes;
        while inner.events.len() > 1
            && (inner.events.len() > self.max_events || inner.bytes > self.max_bytes)
        {
            if let Some((_, dropped)) = inner.events.pop_front() {
                inner.bytes -= dropped;
                inner.first += 1;
            }
        }
        drop(inner);
        self.arrived.notify_waiters();
    }

    /// The position after everything sent so far.
    pub(crate) fn end(&self) -> Position {
        let inner = self.lock();
        Position(inner.first + inner.events.len() as u64)
    }

    pub(crate) fn try_next(&self, position: &mut Position) -> Next<T> {
        let inner = self.lock();
        if position.0 < inner.first {
            return Next::Lagged;
        }
        let index = usize::try_from(position.0 - inner.first).unwrap_or(usize::MAX);
        match inner.events.get(index) {
            Some((event, _)) => {
                position.0 += 1;
                Next::Event(event.clone())
            }
            None => Next::Empty,
        }
    }

    /// The next event, once there is one (cancel-safe).
    pub(crate) async fn next(&self, position: &mut Position) -> Next<T> {
        loop {
            let arrived = self.arrived.notified();
            let mut arrived = std::pin::pin!(arrived);
            // Registered before looking: a send between the look and the wait is not missed.
            arrived.as_mut().enable();
            match self.try_next(position) {
                Next::Empty => arrived.await,
                next => return next,
            }
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ring: &Ring<u32>, position: &mut Position) -> Option<u32> {
        match ring.try_next(position) {
            Next::Event(event) => Some(*event),
            Next::Empty => None,
            Next::Lagged => Some(u32::MAX),
        }
    }

    #[test]
    fn the_oldest_events_go_beyond_the_bytes_and_a_reader_behind_them_lagged() {
        let ring = Ring::new(100, 1000);
        let mut slow = ring.end();
        let mut fast = ring.end();
        for index in 0..10 {
            ring.send(Arc::new(index), 300);
            assert_eq!(event(&ring, &mut fast), Some(index));
        }
        // Three events of 300 bytes fit in 1,000: the rest went, unread or not.
        assert_eq!(ring.bytes(), 900);
        assert_eq!(event(&ring, &mut slow), Some(u32::MAX), "lagged");
        let mut again = ring.end();
        assert_eq!(event(&ring, &mut again), None);
        // One event larger than the bound is kept alone.
        ring.send(Arc::new(99), 5000);
        assert_eq!(ring.bytes(), 5000);
        assert_eq!(event(&ring, &mut again), Some(99));
        assert_eq!(event(&ring, &mut fast), Some(99), "a reader that kept up loses nothing");
    }

    #[test]
    fn at_most_so_many_events_are_kept() {
        let ring = Ring::new(2, usize::MAX);
        let mut reader = ring.end();
        for index in 0..3 {
            ring.send(Arc::new(index), 1);
        }
        assert_eq!(event(&ring, &mut reader), Some(u32::MAX));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_the_next_event() {
        let ring = Arc::new(Ring::new(10, 1000));
        let mut position = ring.end();
        let sender = ring.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            sender.send(Arc::new(7), 1);
        });
        match ring.next(&mut position).await {
            Next::Event(event) => assert_eq!(*event, 7),
            _ => panic!("an event"),
        }
    }
}
