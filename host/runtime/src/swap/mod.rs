//! The live policy: the current generation (a component and a snapshot),
//! replaced atomically, and only after the new one proved itself.
//!
//! A swap runs these steps in order ([`pipeline`]), and publishes only if
//! all pass:
//!
//! 1. **compile** the component (or take it from the cache, by digest);
//! 2. **validate** it: a component of the `keyscope:policy/decide@0.4.0`
//!    interface that imports nothing;
//! 3. **instantiate** it, with the limits every call runs under;
//! 4. **load-snapshot** into that instance;
//! 5. **self-test**: the golden cases that ship with keyscope (for a new
//!    module) and the user's cases, each through a fresh instance.
//!
//! A failure at any step leaves the current generation serving and returns
//! [`SwapError::Refused`] naming the step. The published state is in
//! [`live`]. [`Worker`]s ([`worker`]) each hold an instance of a
//! generation; they notice a new one at the start of their next request, so
//! a request runs entirely on the generation it started with.

mod live;
mod pipeline;
mod worker;

pub use live::{Generation, LiveOptions, LivePolicy, Stats, SwapRecord};
pub use pipeline::{CheckReport, SelfTest, SwapError, SwapStep, check};
pub use worker::{BatchOutcome, Outcome, Worker};
