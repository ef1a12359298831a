//! Bytes handed to subscribers' connections that their clients have not read yet.
//!
//! A grid stream is pulled: the connection asks for its next message only once it has sent the
//! last one. A message asked for and not yet followed by the next ask sits in the connection's
//! buffers, and a client that stops reading pins it there. Each caller may have so many bytes
//! waiting like that, and all callers together so many; a stream whose next message would pass
//! either ends with RESOURCE_EXHAUSTED. (A caller's first message always goes: a single large
//! snapshot is not refused for being large.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The bounds, and what is waiting now.
pub(crate) struct UnreadBudget {
    per_caller: usize,
    in_all: usize,
    waiting: Mutex<Waiting>,
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
        Arc::new(Self { per_caller, in_all, waiting: Mutex::default() })
    }

    /// Counts `bytes` for `caller` until the returned guard is dropped.
    pub(crate) fn take(
        self: &Arc<Self>,
        caller: &Arc<str>,
        bytes: usize,
    ) -> Result<Unread, Exhausted> {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let of_caller = waiting.by_caller.get(caller).copied().unwrap_or(0);
        if of_caller > 0 && of_caller + bytes > self.per_caller {
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
        let mut waiting =
            self.budget.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.total -= self.bytes;
        if let Some(of_caller) = waiting.by_caller.get_mut(&self.caller) {
            *of_caller -= self.bytes;
            if *of_caller == 0 {
                waiting.by_caller.remove(&self.caller);
            }
        }
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
    }
}
