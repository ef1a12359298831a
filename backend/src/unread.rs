//! Bytes handed to subscribers' connections that their clients have not read yet (and the
//! views their streams hold, for as long as they are open).
//!
//! A grid stream is pulled: the connection asks for its next message only once it has sent the
//! last one. A message asked for and not yet followed by the next ask sits in the connection's
//! buffers, and a client that stops reading pins it there. Each caller may have so many bytes
//! waiting like that, and all callers together so many. A message that would pass either waits
//! for room (others being read) up to `WAIT`; after that its stream ends with
//! RESOURCE_EXHAUSTED. (A caller holding less than `ALWAYS_ROOM` always gets its next message:
//! a single large snapshot is not refused for being large, nor for the views of its streams.)

use crate::LockExt as _;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// How long a message waits for room before its stream ends: a burst of snapshots (a dashboard
/// opening) is read in far less; a client that stopped reading never frees any.
const WAIT: Duration = Duration::from_secs(10);
/// Below this, a caller's next message goes whatever its size.
const ALWAYS_ROOM: usize = 1 << 20;

/// The bounds, and what is waiting now.
pub(crate) struct UnreadBudget {
    per_caller: usize,
    in_all: usize,
    waiting: Mutex<Waiting>,
    /// Told whenever a message is read.
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct Waiting {
    total: usize,
    by_caller: HashMap<Arc<str>, usize>,
}

/// One message waiting to be read; given back when dropped (the stream asked for the next, or
/// ended).
pub(crate) struct Unread {
    budget: Arc<UnreadBudget>,
    caller: Arc<str>,
    bytes: usize,
}

/// A message that would pass a bound.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Exhausted {
    pub(crate) waiting_mib: usize,
    pub(crate) bound_mib: usize,
}

impl UnreadBudget {
    pub(crate) fn new(per_caller: usize, in_all: usize) -> Arc<Self> {
        Arc::new(Self {
            per_caller,
            in_all,
            waiting: Mutex::default(),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// As [`Self::take`], waiting up to `WAIT` for room.
    pub(crate) async fn take_waiting(
        self: &Arc<Self>,
        caller: &Arc<str>,
        bytes: usize,
    ) -> Result<Unread, Exhausted> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Registered before trying: a release between the try and the wait is not missed.
            freed.as_mut().enable();
            match self.take(caller, bytes) {
                Ok(unread) => return Ok(unread),
                Err(exhausted) => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(exhausted);
                    }
                }
            }
        }
    }

    /// Counts `bytes` for `caller` until the returned guard is dropped.
    pub(crate) fn take(
        self: &Arc<Self>,
        caller: &Arc<str>,
        bytes: usize,
    ) -> Result<Unread, Exhausted> {
        let mut waiting = self.waiting.locked();
        let of_caller = waiting.by_caller.get(caller).copied().unwrap_or(0);
        if of_caller >= ALWAYS_ROOM.min(self.per_caller) && of_caller + bytes > self.per_caller {
            return Err(Exhausted {
                waiting_mib: of_caller >> 20,
                bound_mib: self.per_caller >> 20,
            });
        }
        if waiting.total > 0 && waiting.total + bytes > self.in_all {
            return Err(Exhausted {
                waiting_mib: waiting.total >> 20,
                bound_mib: self.in_all >> 20,
            });
        }
        waiting.total += bytes;
        *waiting.by_caller.entry(caller.clone()).or_insert(0) += bytes;
        Ok(Unread { budget: self.clone(), caller: caller.clone(), bytes })
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        let mut waiting = self.budget.waiting.locked();
        waiting.total -= self.bytes;
        if let Some(of_caller) = waiting.by_caller.get_mut(&self.caller) {
            *of_caller -= self.bytes;
            if *of_caller == 0 {
                waiting.by_caller.remove(&self.caller);
            }
        }
        drop(waiting);
        self.budget.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_that_does_not_read_is_bounded_and_others_are_not_held_up() {
        let budget = UnreadBudget::new(3 << 20, 5 << 20);
        let (mallory, alice): (Arc<str>, Arc<str>) = ("mallory".into(), "alice".into());
        // A first message goes whatever its size; then up to the caller's bound.
        let big = budget.take(&mallory, 2 << 20).unwrap();
        let more = budget.take(&mallory, 1 << 20).unwrap();
        let refused = budget.take(&mallory, 1).map(|_| ()).unwrap_err();
        assert_eq!(refused, Exhausted { waiting_mib: 3, bound_mib: 3 });
        // Another caller has a budget of its own, within the bound of all.
        let alices = budget.take(&alice, 2 << 20).unwrap();
        assert!(budget.take(&alice, 1).is_err(), "5 MiB wait in all");
        drop(alices);
        // Read (the guard dropped): room again.
        drop(big);
        drop(more);
        assert!(budget.take(&mallory, 3 << 20).is_ok());
        assert!(budget.waiting.lock().unwrap().by_caller.is_empty(), "nothing left over");
        // A stream's view held (a few hundred bytes): its snapshot still goes whatever its size.
        let view = budget.take(&alice, 300).unwrap();
        assert!(budget.take(&alice, 4 << 20).is_ok(), "a large snapshot beside a view");
        drop(view);
    }

    #[tokio::test]
    async fn a_message_waits_for_room_while_others_are_read() {
        let budget = UnreadBudget::new(2 << 20, 8 << 20);
        let caller: Arc<str> = "alice".into();
        let first = budget.take(&caller, 2 << 20).unwrap();
        let waiting = {
            let (budget, caller) = (budget.clone(), caller.clone());
            tokio::spawn(async move { budget.take_waiting(&caller, 1 << 20).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room yet");
        drop(first);
        assert!(waiting.await.unwrap(), "room once the first was read");
    }
}
