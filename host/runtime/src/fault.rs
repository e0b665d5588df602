//! Fault points of the runtime, for the fault-injection tests (the store
//! has its own, in `keyscope_store::fault`).
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
}

impl Fault {
    /// Every fault point.
    pub const ALL: [Fault; 4] = [
        Self::Compile,
        Self::Instantiate,
        Self::LoadSnapshot,
        Self::EvaluateTrap,
    ];

    /// Its name, as in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compile => "compile",
            Self::Instantiate => "instantiate",
            Self::LoadSnapshot => "load-snapshot",
            Self::EvaluateTrap => "evaluate-trap",
        }
    }
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::cell::Cell;

    use super::Fault;

    thread_local! {
        /// How many more hits of each fault fail on this thread.
        static ARMED: Cell<[u32; 4]> = const { Cell::new([0; 4]) };
        /// How many hits failed, per fault, on this thread.
        static INJECTED: Cell<[u64; 4]> = const { Cell::new([0; 4]) };
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
        ARMED.with(|armed| armed.set([0; 4]));
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
