//! Fault points of the store, for tests (feature `fault-injection`, which
//! only test builds turn on; without it every function here is a constant
//! and compiles away).
//!
//! - The store read of a snapshot rebuild can be made to fail, armed per
//!   thread (`tests/faults.rs`).
//! - A write can be held at a named point, to be killed there
//!   (`$KEYSCOPE_PAUSE_AT`, `tests/crash.rs`): crash points that do not
//!   depend on timing.

/// A named place in a store write where a test can hold the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Before the write transaction begins.
    BeforeTransaction,
    /// Inside the transaction, the change made, not committed, nothing shown.
    InTransaction,
    /// A new key's secret delivered to its user, the key not yet committed.
    Delivered,
    /// Committed.
    Committed,
}

impl Pause {
    /// Its name, as `$KEYSCOPE_PAUSE_AT` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeforeTransaction => "before-transaction",
            Self::InTransaction => "in-transaction",
            Self::Delivered => "delivered",
            Self::Committed => "committed",
        }
    }
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::cell::Cell;

    thread_local! {
        /// How many more store reads fail on this thread.
        static STORE_READ: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes the next `times` store reads of a snapshot rebuild on this
    /// thread fail.
    pub fn arm_store_read(times: u32) {
        STORE_READ.with(|left| left.set(times));
    }

    pub(crate) fn store_read_fails() -> bool {
        STORE_READ.with(|left| {
            let fails = left.get() > 0;
            left.set(left.get().saturating_sub(1));
            fails
        })
    }

    /// With `$KEYSCOPE_PAUSE_AT` naming `point`, says `keyscope: paused at
    /// POINT` on stderr and waits to be killed.
    pub(crate) fn pause(point: super::Pause) {
        use std::io::Write as _;
        if std::env::var("KEYSCOPE_PAUSE_AT").is_ok_and(|at| at == point.as_str()) {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "keyscope: paused at {}", point.as_str());
            let _ = stderr.flush();
            loop {
                std::thread::park();
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::arm_store_read;
#[cfg(feature = "fault-injection")]
pub(crate) use armed::{pause, store_read_fails};

/// Never fails: a build without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn store_read_fails() -> bool {
    false
}

/// Returns at once: a build without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn pause(_point: Pause) {}
