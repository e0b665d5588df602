//! Fault points, for the fault-injection tests.
//!
//! Each step a decision or a swap depends on calls [`hit`] with its
//! [`Fault`]; with the `fault-injection` feature a test can arm a fault so
//! that the step fails as if the real thing had failed. Faults are armed per
//! thread, so tests running side by side do not see each other's. Without
//! the feature, [`hit`] is a constant `false` and compiles away.

/// A step that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Compiling a component.
    Compile,
    /// Instantiating a component.
    Instantiate,
    /// Loading a snapshot into an instance.
    LoadSnapshot,
    /// A call into the policy traps.
    EvaluateTrap,
    /// Reading the store to build a snapshot.
    StoreRead,
}

impl Fault {
    /// Every fault point.
    pub const ALL: [Fault; 5] = [
        Self::Compile,
        Self::Instantiate,
        Self::LoadSnapshot,
        Self::EvaluateTrap,
        Self::StoreRead,
    ];

    /// Its name, as in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compile => "compile",
            Self::Instantiate => "instantiate",
            Self::LoadSnapshot => "load-snapshot",
            Self::EvaluateTrap => "evaluate-trap",
            Self::StoreRead => "store-read",
        }
    }
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::cell::Cell;

    use super::Fault;

    thread_local! {
        /// How many more hits of each fault fail on this thread.
        static ARMED: Cell<[u32; 5]> = const { Cell::new([0; 5]) };
        /// How many hits failed, per fault, on this thread.
        static INJECTED: Cell<[u64; 5]> = const { Cell::new([0; 5]) };
    }

    /// Makes the next `times` hits of `fault` on this thread fail.
    pub fn arm(fault: Fault, times: u32) {
        ARMED.with(|armed| {
            let mut counts = armed.get();
            counts[fault as usize] = times;
            armed.set(counts);
        });
    }

    /// Disarms every fault on this thread.
    pub fn disarm() {
        ARMED.with(|armed| armed.set([0; 5]));
    }

    /// How many times `fault` was injected on this thread.
    pub fn injected(fault: Fault) -> u64 {
        INJECTED.with(|injected| injected.get()[fault as usize])
    }

    pub(crate) fn hit(fault: Fault) -> bool {
        ARMED.with(|armed| {
            let mut counts = armed.get();
            let left = &mut counts[fault as usize];
            if *left == 0 {
                return false;
            }
            *left -= 1;
            armed.set(counts);
            INJECTED.with(|injected| {
                let mut counts = injected.get();
                counts[fault as usize] += 1;
                injected.set(counts);
            });
            true
        })
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::{arm, disarm, injected};

/// Whether this step should fail now.
#[cfg(feature = "fault-injection")]
pub(crate) fn hit(fault: Fault) -> bool {
    armed::hit(fault)
}

/// Whether this step should fail now: never, in a build without the
/// `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn hit(_fault: Fault) -> bool {
    false
}

/// A named place in a store write where a test can hold the process, to
/// kill it there (tests/crash.rs): the crash points are deterministic, not
/// timed.
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

/// With the `fault-injection` feature, and `$KEYSCOPE_PAUSE_AT` naming this
/// point, says `keyscope: paused at POINT` on stderr and waits to be killed.
/// Otherwise, and in every build without the feature, returns at once.
#[cfg(feature = "fault-injection")]
pub(crate) fn pause(point: Pause) {
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

/// Returns at once: a build without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn pause(_point: Pause) {}
