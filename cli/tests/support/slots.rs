//! How many `aerogrid dev` stacks a test binary runs at once. The test harness starts every
//! test of a binary together; on a 2-core machine, a dozen stacks (each a PostgreSQL, a broker,
//! a server, a node and connectors) starting at once mostly measure each other's contention, and
//! their readiness deadlines fail for it. A test waits for a slot before its first stack; a test
//! that already holds one (a second stack, a restart) takes another without waiting, so no test
//! waits on itself.

use std::{
    cell::Cell,
    sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError},
};

static FREE: LazyLock<Mutex<usize>> = LazyLock::new(|| Mutex::new(limit()));
static FREED: Condvar = Condvar::new();

fn free() -> MutexGuard<'static, usize> {
    FREE.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// `AEROGRID_TEST_STACKS`, else one per core (at least two).
fn limit() -> usize {
    std::env::var("AEROGRID_TEST_STACKS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from).max(2))
}

/// A place for one stack, given back when dropped.
pub(crate) struct StackSlot {
    counted: bool,
}

impl StackSlot {
    pub(crate) fn take() -> Self {
        if HELD.get() > 0 {
            HELD.set(HELD.get() + 1);
            return Self { counted: false };
        }
        let mut free = free();
        while *free == 0 {
            free = FREED.wait(free).unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        HELD.set(1);
        Self { counted: true }
    }
}

impl Drop for StackSlot {
    fn drop(&mut self) {
        // A stack may be dropped on another thread than the one that started it: the count of
        // this thread's slots is a best effort, the shared count is exact.
        HELD.set(HELD.get().saturating_sub(1));
        if self.counted {
            *free() += 1;
            FREED.notify_one();
        }
    }
}
