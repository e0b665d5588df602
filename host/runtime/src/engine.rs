//! The wasmtime engine every policy component runs on, its epoch ticker,
//! and the [`Limits`] every call runs under.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use wasmtime::{Config, Engine, ResourceLimiter, StoreLimits};

use crate::error::{Error, Result};

/// How often the epoch ticker advances; deadlines are multiples of this.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bounds on every call into a policy instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock bound on one `evaluate` or `evaluate-batch` call.
    pub evaluate_timeout: Duration,
    /// Wall-clock bound on one `load-snapshot` call.
    pub load_timeout: Duration,
    /// Cap on the instance's linear memory, in bytes.
    pub max_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            evaluate_timeout: Duration::from_millis(100),
            load_timeout: Duration::from_secs(10),
            max_memory: 256 << 20,
        }
    }
}

impl Limits {
    pub(crate) fn ticks(timeout: Duration) -> u64 {
        let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// A wasmtime engine configured for policies, with a thread that advances
/// its epoch so that every call can be given a deadline. Cheap to clone; the
/// ticker stops when the last clone (and every component made from it) is
/// dropped.
#[derive(Clone)]
pub struct PolicyEngine {
    engine: Engine,
    _ticker: Arc<EpochTicker>,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine").finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Creates the engine and starts its epoch ticker.
    pub fn new() -> Result<Self> {
        Self::with_config(Config::new())
    }

    /// An engine with wasmtime's pooling allocator, for `slots` live instances
    /// at once of at most `max_memory` bytes each: instantiation then takes
    /// pre-reserved memory instead of mapping it.
    pub fn pooling(slots: u32, max_memory: usize) -> Result<Self> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memory_size(max_memory)
            // Reset a slot by zeroing what the last instance touched rather
            // than returning it to the kernel: no page faults or TLB
            // shootdowns on the next instantiation.
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        Self::with_config(config)
    }

    fn with_config(mut config: Config) -> Result<Self> {
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| Error::wasm(Error::Engine, &e))?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Self {
            engine,
            _ticker: Arc::new(ticker),
        })
    }

    /// The underlying wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("keyscope-epoch".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The ticker only sleeps and increments; it cannot panic.
            let _ = thread.join();
        }
    }
}

/// Per-store host state: only the resource limits. The policy imports
/// nothing, so there is nothing else for it to reach.
pub(crate) struct HostState {
    limits: StoreLimits,
    /// The largest linear memory granted, in bytes.
    pub(crate) peak_memory: usize,
}

impl HostState {
    pub(crate) fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            peak_memory: 0,
        }
    }
}

/// The caps of [`StoreLimits`], plus a record of the peak memory granted.
impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum)?;
        if granted {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(granted)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
