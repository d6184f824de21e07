//! Tenant WASM plugins: load (validate, compile, cache) and call under hard limits.
//!
//! The ABI is `plugins/ABI.md`. Design:
//! - One [`PluginHost`] owns one wasmtime [`Engine`] (cranelift, pooling allocator, epoch
//!   interruption, fuel) and one epoch ticker thread.
//! - [`PluginHost::load`] validates a module before anything runs it (size cap, only the
//!   `portcullis.set_reason` and `portcullis.debug_log` imports, required exports with their
//!   exact types, declared memory within the cap), compiles it once, instantiates it under the call limits and checks
//!   `portcullis_abi_version() == 1`. Compiled plugins are cached per (tenant, plugin name,
//!   SHA-256 of the bytes): re-uploading the same version costs nothing. One version of each
//!   plugin stays loaded, two while a canary runs ([`PluginHost::load_keeping`]).
//! - Instances: each [`Plugin`] keeps a small pool of idle live instances (own `Store` each).
//!   A call pops one (or instantiates a fresh one from the `InstancePre` when the pool is empty),
//!   runs, and pushes it back — unless the call trapped or failed, in which case the instance is
//!   dropped and its pooling slot recycled. A `Plugin` belongs to one tenant and one module
//!   version, so instance state is never shared across tenants or versions; within one plugin,
//!   state may survive between calls but plugins must not rely on it (ABI.md). The pool costs one
//!   uncontended mutex pop/push per call, and calls never run concurrently in one instance.
//! - Limits per call: epoch deadline (ticker every [`Limits::tick`]), fuel, `StoreLimits` memory
//!   cap (growth beyond it traps), wasm stack cap, input and reason size caps. Every failure is a
//!   deny (fail closed) and is counted per plugin by [`Outcome`].
//! - Calls are synchronous. On an async runtime worker a call blocks that worker for at most the
//!   epoch deadline (plus one tick) while it runs; a call that the OS descheduled (it has burnt
//!   under 1/8 of its fuel when the deadline passes) is granted more ticks up to
//!   [`GRACE_FACTOR`] × the deadline, so a loaded machine does not turn well-behaved plugins into
//!   timeouts. A busy hostile plugin is interrupted at the deadline or runs out of fuel first.

mod budget;
mod context;
mod input;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Engine, Extern, ExternType, Instance, InstanceAllocationStrategy, InstancePre,
    Linker, Memory, Module, PoolingAllocationConfig, ResourceLimiter, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc,
};

pub use context::{check_context, ContextError, MAX_CONTEXT_DEPTH};
pub use input::{PluginInput, HEADER_LEN};

/// The ABI versions this host implements.
pub const ABI_VERSION: i32 = 1;

/// Resource limits for plugins (see `plugins/ABI.md`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest module accepted at load.
    pub max_module_bytes: usize,
    /// Linear memory cap per instance.
    pub max_memory_bytes: usize,
    /// Largest input handed to a plugin.
    pub max_input_bytes: usize,
    /// Epoch ticker period.
    pub tick: Duration,
    /// Deadline per call (and per instantiation) in ticks.
    pub deadline_ticks: u64,
    /// Fuel per call (and per instantiation).
    pub fuel: u64,
    /// Wasm stack cap.
    pub max_stack_bytes: usize,
    /// Longest reason a plugin may set.
    pub max_reason_bytes: usize,
    /// Idle instances kept per plugin.
    pub idle_per_plugin: usize,
    /// Live instances in the whole host (pooling allocator slots).
    pub max_instances: u32,
    /// Plugin time one data-plane request may spend in total (all its items, all its calls).
    /// Once spent, further plugin conditions of the request deny with `plugin_budget_exhausted`
    /// without running, and a call started near the end gets only what is left.
    pub request_budget: Duration,
    /// Requests of one tenant running plugin work at the same time (default: half the cores,
    /// at least 1, so one tenant's plugins never hold every core). Excess requests wait up to
    /// their request budget for a slot, then `503 plugin_busy`.
    pub max_concurrent_per_tenant: usize,
    /// Requests running plugin work at the same time in the whole process (each holds a thread).
    pub max_concurrent: usize,
    /// Consecutive limit hits (timeout, fuel, memory, stack, trap) of one plugin version within
    /// [`Limits::breaker_window`] that open its circuit breaker (0: never).
    pub breaker_failures: u32,
    /// The window the consecutive limit hits must fall in.
    pub breaker_window: Duration,
    /// How long an open breaker refuses calls (`plugin_unavailable`) before one probe call.
    pub breaker_cooldown: Duration,
    /// Plugins one tenant may hold (checked at upload: [`check_plugin_count`]).
    pub max_per_tenant: usize,
    /// Compile budget: largest code section (sum of function bodies) accepted, bytes.
    pub max_code_bytes: usize,
    /// Compile budget: largest single function body accepted, bytes.
    pub max_function_bytes: usize,
    /// Compile budget: most functions defined by one module.
    pub max_functions: usize,
    /// Compiled modules kept by content hash (SHA-256 of the bytes), shared by every tenant and
    /// name; the least recently used one no live plugin holds is evicted beyond this.
    pub module_cache: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 4 << 20,
            max_memory_bytes: 16 << 20,
            max_input_bytes: 64 << 10,
            tick: Duration::from_millis(1),
            deadline_ticks: 10,
            fuel: 10_000_000,
            max_stack_bytes: 256 << 10,
            max_reason_bytes: 256,
            idle_per_plugin: 4,
            max_instances: 128,
            request_budget: Duration::from_millis(50),
            max_concurrent_per_tenant: std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1),
            max_concurrent: 16,
            breaker_failures: 5,
            breaker_window: Duration::from_secs(10),
            breaker_cooldown: Duration::from_secs(5),
            max_per_tenant: 16,
            max_code_bytes: 1 << 20,
            max_function_bytes: 256 << 10,
            max_functions: 10_000,
            module_cache: 64,
        }
    }
}

impl Limits {
    /// The wall-clock deadline of one call.
    pub fn deadline(&self) -> Duration {
        self.tick * self.deadline_ticks as u32
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModuleError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin '{name}' is {size} bytes; the limit is {max}")]
    TooLarge {
        name: String,
        size: usize,
        max: usize,
    },
    #[error("plugin '{name}' is not a valid wasm module: {msg}")]
    Invalid { name: String, msg: String },
    #[error("plugin '{name}' imports '{module}.{field}'; only 'portcullis.set_reason' and 'portcullis.debug_log', both (i32, i32) -> (), are allowed")]
    ForbiddenImport {
        name: String,
        module: String,
        field: String,
    },
    #[error("plugin '{name}' lacks the export '{export}' ({ty})")]
    MissingExport {
        name: String,
        export: &'static str,
        ty: &'static str,
    },
    #[error("plugin '{name}' declares {bytes} bytes of initial memory; the limit is {max}")]
    MemoryTooLarge {
        name: String,
        bytes: u64,
        max: usize,
    },
    #[error("plugin '{name}' reports ABI version {got}; this host implements ABI version 1")]
    AbiVersion { name: String, got: i32 },
    #[error("plugin '{name}' failed to start: {msg}")]
    Instantiate { name: String, msg: String },
    #[error("plugin '{name}' exceeds the compile budget: {what} is {got}; the limit is {max}")]
    TooComplex {
        name: String,
        what: &'static str,
        got: usize,
        max: usize,
    },
    #[error("a tenant holds at most {max} plugins")]
    TooMany { max: usize },
}

/// What happened in one call. Every failure counts as a veto (`crate::engine::conditions`
/// maps outcomes to decision verdicts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Abstain = 0,
    Allow,
    Deny,
    /// The epoch deadline passed.
    Timeout,
    OutOfFuel,
    /// Memory growth beyond the cap.
    MemoryLimit,
    StackOverflow,
    /// Any other trap (unreachable, out-of-bounds access, …).
    Trap,
    /// `portcullis_evaluate` returned something other than 0, 1, 2.
    BadResult,
    /// `portcullis_alloc` returned 0 or a range outside memory.
    BadAlloc,
    /// `set_reason` was called with a negative length. (A reason longer than the limit is
    /// cut with a marker, [`REASON_TRUNCATED`], not a failure.)
    ReasonTooLong,
    /// The input was larger than the limit.
    InputTooLarge,
    /// No instance could be created (pool exhausted or start trapped).
    NoInstance,
    /// Not called: the request's plugin time budget was spent.
    BudgetExhausted,
    /// Not called: the plugin's circuit breaker is open.
    CircuitOpen,
}

impl Outcome {
    pub const ALL: [Outcome; 15] = [
        Outcome::Abstain,
        Outcome::Allow,
        Outcome::Deny,
        Outcome::Timeout,
        Outcome::OutOfFuel,
        Outcome::MemoryLimit,
        Outcome::StackOverflow,
        Outcome::Trap,
        Outcome::BadResult,
        Outcome::BadAlloc,
        Outcome::ReasonTooLong,
        Outcome::InputTooLarge,
        Outcome::NoInstance,
        Outcome::BudgetExhausted,
        Outcome::CircuitOpen,
    ];

    /// Whether the plugin failed (as opposed to answering).
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Abstain | Outcome::Allow | Outcome::Deny)
    }

    pub fn code(self) -> &'static str {
        match self {
            Outcome::Abstain => "abstain",
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Timeout => "timeout",
            Outcome::OutOfFuel => "out_of_fuel",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::StackOverflow => "stack_overflow",
            Outcome::Trap => "trap",
            Outcome::BadResult => "bad_result",
            Outcome::BadAlloc => "bad_alloc",
            Outcome::ReasonTooLong => "reason_too_long",
            Outcome::InputTooLarge => "input_too_large",
            Outcome::NoInstance => "no_instance",
            Outcome::BudgetExhausted => "budget_exhausted",
            Outcome::CircuitOpen => "circuit_open",
        }
    }

    /// Whether this outcome is a limit hit that counts towards opening the circuit breaker.
    pub fn trips_breaker(self) -> bool {
        matches!(
            self,
            Outcome::Timeout
                | Outcome::OutOfFuel
                | Outcome::MemoryLimit
                | Outcome::StackOverflow
                | Outcome::Trap
        )
    }
}

/// Per-store state: the memory limiter and the reason buffer.
struct HostState {
    limits: Limiter,
    reason: Vec<u8>,
    /// Where `portcullis.debug_log` lines go (see [`DebugLog`]).
    debug: Arc<DebugLog>,
    /// Lines of `debug_log` kept for the caller of a detailed call (`plugin eval`), when asked.
    capture: Option<Vec<String>>,
    max_reason: usize,
    reason_too_long: bool,
    /// Fuel given to the current call.
    fuel_budget: u64,
    /// Ticks the current call may still be granted past its deadline (see `on_deadline`).
    grace_left: u64,
}

/// Called when a call's epoch deadline passes. A call that burnt little of its fuel by then was
/// mostly descheduled by the OS (a loaded machine), not busy: it gets one more tick at a time,
/// up to [`GRACE_FACTOR`] × its deadline of wall time. A busy call is interrupted.
fn on_deadline(
    mut ctx: wasmtime::StoreContextMut<'_, HostState>,
) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let remaining = ctx.get_fuel().unwrap_or(0);
    let st = ctx.data_mut();
    let used = st.fuel_budget.saturating_sub(remaining);
    if st.grace_left > 0 && used < st.fuel_budget / 8 {
        st.grace_left -= 1;
        Ok(wasmtime::UpdateDeadline::Continue(1))
    } else {
        Ok(wasmtime::UpdateDeadline::Interrupt)
    }
}

/// Most `portcullis.debug_log` lines one plugin version writes to the log per second; the
/// rest are dropped (and counted in the next line written).
pub const DEBUG_LINES_PER_SECOND: u32 = 10;

/// The `portcullis.debug_log` sink of one plugin version: off unless its tenant is in the
/// host's debug set ([`PluginHost::set_debug_tenants`]); then lines go to the log at INFO
/// (target `portcullis::plugin::debug`), rate-limited.
struct DebugLog {
    tenant: String,
    plugin: String,
    version: String,
    tenants: Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
    /// (unix second, lines written in it, lines dropped since the last written).
    window: Mutex<(u64, u32, u64)>,
}

impl DebugLog {
    fn enabled(&self) -> bool {
        self.tenants
            .read()
            .map(|t| t.contains(&self.tenant))
            .unwrap_or(false)
    }

    fn write(&self, line: &str) {
        let now = crate::clock::unix_now().max(0) as u64;
        let dropped = {
            let mut w = lock(&self.window);
            if w.0 != now {
                w.0 = now;
                w.1 = 0;
            }
            if w.1 >= DEBUG_LINES_PER_SECOND {
                w.2 += 1;
                return;
            }
            w.1 += 1;
            std::mem::take(&mut w.2)
        };
        tracing::info!(
            target: "portcullis::plugin::debug",
            tenant = %self.tenant,
            plugin = %self.plugin,
            version = %self.version,
            dropped,
            line = ?line,
            "plugin debug_log"
        );
    }
}

/// What ends a reason the host cut to its limit.
pub const REASON_TRUNCATED: &str = "…";

/// Keeps `bytes` as the reason, or, when longer than `max`, its first bytes up to a UTF-8
/// character boundary followed by [`REASON_TRUNCATED`], `max` bytes at most in all.
fn set_reason_cut(reason: &mut Vec<u8>, bytes: &[u8], max: usize) {
    reason.clear();
    if bytes.len() <= max {
        reason.extend_from_slice(bytes);
        return;
    }
    let mut end = max.saturating_sub(REASON_TRUNCATED.len());
    // Back off continuation bytes (10xxxxxx) so a character is never split.
    while end > 0 && bytes.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
        end -= 1;
    }
    reason.extend_from_slice(&bytes[..end]);
    reason.extend_from_slice(REASON_TRUNCATED.as_bytes());
}

/// Wall-clock cap of a call that is descheduled rather than busy, in multiples of the deadline.
pub const GRACE_FACTOR: u64 = 5;

/// `StoreLimits` plus a note that a growth was refused (to classify the trap).
struct Limiter {
    inner: StoreLimits,
    refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let r = self.inner.memory_growing(current, desired, maximum);
        if !matches!(r, Ok(true)) {
            self.refused = true;
        }
        r
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let r = self.inner.table_growing(current, desired, maximum);
        if !matches!(r, Ok(true)) {
            self.refused = true;
        }
        r
    }
    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// One live instance with its store.
struct Live {
    store: Store<HostState>,
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    evaluate: TypedFunc<(i32, i32), i32>,
}

/// Counters of one plugin's outcomes.
#[derive(Default)]
pub struct Stats {
    counts: [AtomicU64; Outcome::ALL.len()],
    instantiations: AtomicU64,
    breaker_opens: AtomicU64,
}

impl Stats {
    /// How many times the circuit breaker opened.
    pub fn breaker_opens(&self) -> u64 {
        self.breaker_opens.load(Ordering::Relaxed)
    }
    pub fn count(&self, o: Outcome) -> u64 {
        self.counts[o as usize].load(Ordering::Relaxed)
    }
    pub fn instantiations(&self) -> u64 {
        self.instantiations.load(Ordering::Relaxed)
    }
    /// Calls that failed (trap, timeout, limit, bad result, …).
    pub fn failures(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| o.is_failure())
            .map(|&o| self.count(o))
            .sum()
    }
}

// The end of the request plugin budget in force on this thread (see `BudgetScope`).
thread_local! {
    static BUDGET_END: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// A request's plugin time budget, in force on the current thread while the scope lives: every
/// plugin call on this thread until then shares it ([`budget_left`]). Scopes nest (the inner
/// one is in force until dropped).
pub struct BudgetScope {
    prev: Option<Instant>,
}

impl BudgetScope {
    pub fn enter(budget: Duration) -> BudgetScope {
        let end = Instant::now().checked_add(budget);
        BudgetScope {
            prev: BUDGET_END.with(|b| b.replace(end)),
        }
    }
}

impl Drop for BudgetScope {
    fn drop(&mut self) {
        BUDGET_END.with(|b| b.set(self.prev));
    }
}

/// What is left of the request budget in force on this thread (None: no budget in force).
#[inline]
pub fn budget_left() -> Option<Duration> {
    BUDGET_END.with(|b| {
        b.get()
            .map(|end| end.saturating_duration_since(Instant::now()))
    })
}

/// A circuit breaker of one plugin version: closed → open after `breaker_failures`
/// consecutive limit hits within `breaker_window`; open → refuses for `breaker_cooldown`; then
/// half-open: one probe call at a time; a probe that answers closes it, a probe that hits a
/// limit opens it again. The closed, healthy path costs two relaxed atomic loads.
#[derive(Default)]
struct Breaker {
    /// Open or half-open (the lock must be taken to decide).
    tripped: AtomicBool,
    /// Consecutive limit hits so far (mirror of `state.streak` for the lock-free path).
    streak: std::sync::atomic::AtomicU32,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    streak: u32,
    first_hit: Option<Instant>,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    /// Whether a call may run now.
    fn admit(&self) -> bool {
        if !self.tripped.load(Ordering::Acquire) {
            return true;
        }
        let mut st = lock(&self.state);
        match st.open_until {
            None => true,
            Some(until) if Instant::now() < until || st.probing => false,
            Some(_) => {
                st.probing = true;
                true
            }
        }
    }

    /// Records a call's outcome; true when this opened the breaker.
    fn record(&self, outcome: Outcome, limits: &Limits) -> bool {
        if limits.breaker_failures == 0 {
            return false;
        }
        let hit = outcome.trips_breaker();
        if !hit && self.streak.load(Ordering::Relaxed) == 0 && !self.tripped.load(Ordering::Acquire)
        {
            return false;
        }
        let now = Instant::now();
        let mut st = lock(&self.state);
        let opened = if !hit {
            *st = BreakerState::default();
            false
        } else if st.open_until.is_some() {
            // A failed probe opens it again; a call admitted before it opened changes nothing.
            let probe = std::mem::take(&mut st.probing);
            if probe {
                st.open_until = now.checked_add(limits.breaker_cooldown);
            }
            probe
        } else {
            if st
                .first_hit
                .is_none_or(|t| now.duration_since(t) > limits.breaker_window)
            {
                st.streak = 0;
                st.first_hit = Some(now);
            }
            st.streak += 1;
            if st.streak >= limits.breaker_failures {
                st.streak = 0;
                st.first_hit = None;
                st.open_until = now.checked_add(limits.breaker_cooldown);
                st.open_until.is_some()
            } else {
                false
            }
        };
        self.streak.store(st.streak, Ordering::Relaxed);
        self.tripped
            .store(st.open_until.is_some(), Ordering::Release);
        opened
    }
}

/// A compiled and checked module, shared by every plugin with the same bytes.
struct Compiled {
    pre: InstancePre<HostState>,
    compile_time: Duration,
}

/// A loaded plugin: one tenant's one module version.
pub struct Plugin {
    tenant: String,
    name: String,
    hash: [u8; 32],
    compiled: Arc<Compiled>,
    breaker: Breaker,
    engine: Engine,
    limits: Limits,
    idle: Mutex<Vec<Live>>,
    stats: Stats,
    compile_time: Duration,
    /// Unix second of the last failure logged (failures are logged at most once a second).
    last_warn: AtomicU64,
    debug: Arc<DebugLog>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything known about one call (see [`Plugin::call_detailed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallDetail {
    /// The reason the plugin set (empty when none). After a trap: what it set before trapping
    /// (the SDK's panic handler puts the panic's location, or its text, there).
    pub reason: String,
    /// What stopped the call, when it trapped or failed to start: wasmtime's description and
    /// the innermost wasm frame (`wasm trap: wasm `unreachable` instruction executed in
    /// func[3] at 0x1a2`). Empty for an answer.
    pub trap: String,
    /// Fuel the call burnt (`portcullis_alloc` and `portcullis_evaluate`), about one unit per
    /// wasm instruction; the limit is [`Limits::fuel`].
    pub fuel_used: u64,
    /// The lines the call wrote with `portcullis.debug_log` (each cut to 256 bytes), whatever
    /// the debug setting of its tenant.
    pub debug: Vec<String>,
    /// How a running canary split this call, if one runs (set by the caller choosing the
    /// version, not by the call).
    pub canary: Option<CanarySplit>,
}

/// Where a call fell in its plugin's canary split (see [`canary_bucket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CanarySplit {
    /// The canary's share, in percent of the calls.
    pub share: u8,
    /// The call's bucket, 0 to 99.
    pub bucket: u8,
    /// Whether the candidate ran (`bucket < share`) rather than the current version.
    pub candidate: bool,
}

/// A trap or host error, in one line: the trap's description (or the error's root cause) and
/// the innermost wasm frame, when a backtrace was captured.
fn describe(e: &wasmtime::Error) -> String {
    use std::fmt::Write;
    let mut s = match e.downcast_ref::<Trap>() {
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    if let Some(f) = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().first())
    {
        s.push_str(" in ");
        match f.func_name() {
            Some(n) => s.push_str(n),
            None => {
                let _ = write!(s, "func[{}]", f.func_index());
            }
        }
        if let Some(o) = f.module_offset() {
            let _ = write!(s, " at 0x{o:x}");
        }
    }
    s
}

/// Map a wasmtime error to an outcome.
fn classify(store: &Store<HostState>, e: &wasmtime::Error) -> Outcome {
    let st = store.data();
    if st.reason_too_long {
        return Outcome::ReasonTooLong;
    }
    if st.limits.refused {
        return Outcome::MemoryLimit;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Outcome::Timeout,
        Some(Trap::OutOfFuel) => Outcome::OutOfFuel,
        Some(Trap::StackOverflow) => Outcome::StackOverflow,
        _ => Outcome::Trap,
    }
}

impl Plugin {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Hex SHA-256 of the module bytes (the version).
    pub fn version(&self) -> String {
        crate::model::hex(&self.hash)
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// How long this load spent compiling (zero when the module came from the content-hash
    /// cache: the same bytes were compiled before, under any tenant or name).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// How long compiling the module took when it was compiled.
    pub fn module_compile_time(&self) -> Duration {
        self.compiled.compile_time
    }

    fn new_store(&self) -> Store<HostState> {
        let mut store = Store::new(
            &self.engine,
            HostState {
                limits: Limiter {
                    inner: StoreLimitsBuilder::new()
                        .memory_size(self.limits.max_memory_bytes)
                        .instances(1)
                        .memories(1)
                        .tables(1)
                        .table_elements(10_000)
                        .trap_on_grow_failure(true)
                        .build(),
                    refused: false,
                },
                reason: Vec::with_capacity(self.limits.max_reason_bytes),
                debug: self.debug.clone(),
                capture: None,
                max_reason: self.limits.max_reason_bytes,
                reason_too_long: false,
                fuel_budget: self.limits.fuel,
                grace_left: 0,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(on_deadline);
        store
    }

    /// Arms the per-call limits: deadline, its grace, fuel. Under a request budget
    /// ([`BudgetScope`]) the deadline and its grace together never pass the end of the budget.
    fn arm(&self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        let mut ticks = self.limits.deadline_ticks;
        let mut grace = ticks * (GRACE_FACTOR - 1);
        if let Some(left) = budget_left() {
            let tick = self.limits.tick.as_nanos().max(1);
            let left = (left.as_nanos() / tick).max(1) as u64;
            ticks = ticks.min(left);
            grace = grace.min(left - ticks);
        }
        store.set_epoch_deadline(ticks);
        {
            let st = store.data_mut();
            st.fuel_budget = self.limits.fuel;
            st.grace_left = grace;
        }
        store.set_fuel(self.limits.fuel)
    }

    /// Instantiate under the call limits (a start function is bounded too).
    fn instantiate(&self) -> Result<Live, (Outcome, String)> {
        let mut store = self.new_store();
        self.arm(&mut store)
            .map_err(|e| (Outcome::NoInstance, e.to_string()))?;
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let instance = match self.compiled.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => {
                let o = classify(&store, &e);
                let o = if o == Outcome::Trap && e.downcast_ref::<Trap>().is_none() {
                    Outcome::NoInstance
                } else {
                    o
                };
                return Err((o, format!("{e:#}")));
            }
        };
        let missing = |what: &str| (Outcome::NoInstance, format!("export '{what}' is missing"));
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| missing("memory"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "portcullis_alloc")
            .map_err(|_| missing("portcullis_alloc"))?;
        let evaluate = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "portcullis_evaluate")
            .map_err(|_| missing("portcullis_evaluate"))?;
        Ok(Live {
            store,
            instance,
            memory,
            alloc,
            evaluate,
        })
    }

    fn invoke_inner(
        &self,
        live: &mut Live,
        input: &[u8],
        failed: &mut Option<wasmtime::Error>,
    ) -> Outcome {
        let store = &mut live.store;
        {
            let st = store.data_mut();
            st.reason.clear();
            st.reason_too_long = false;
            st.limits.refused = false;
        }
        if self.arm(store).is_err() {
            return Outcome::Trap;
        }
        let len = input.len() as i32;
        let ptr = match live.alloc.call(&mut *store, len) {
            Ok(p) => p,
            Err(e) => {
                let o = classify(store, &e);
                *failed = Some(e);
                return o;
            }
        };
        if ptr == 0 {
            *failed = Some(wasmtime::Error::msg(format!(
                "portcullis_alloc({len}) returned 0 (no buffer)"
            )));
            return Outcome::BadAlloc;
        }
        let start = ptr as u32 as usize;
        let mem = live.memory.data_mut(&mut *store);
        let size = mem.len();
        match mem.get_mut(start..start + input.len()) {
            Some(dst) => dst.copy_from_slice(input),
            None => {
                *failed = Some(wasmtime::Error::msg(format!(
                    "portcullis_alloc({len}) returned {start:#x}: the buffer ends past the \
                     memory's {size} bytes"
                )));
                return Outcome::BadAlloc;
            }
        }
        match live.evaluate.call(&mut *store, (ptr, len)) {
            Ok(0) => Outcome::Abstain,
            Ok(1) => Outcome::Allow,
            Ok(2) => Outcome::Deny,
            Ok(v) => {
                *failed = Some(wasmtime::Error::msg(format!(
                    "portcullis_evaluate returned {v}; verdicts are 0 (abstain), 1 (allow), 2 (deny)"
                )));
                Outcome::BadResult
            }
            Err(e) => {
                let o = classify(store, &e);
                *failed = Some(e);
                o
            }
        }
    }

    /// Evaluate an encoded input (see [`PluginInput::encode`]). Never fails: failures deny.
    pub fn call(&self, input: &[u8]) -> Outcome {
        self.call_inner(input, None)
    }

    /// As [`Plugin::call`], also copying the plugin's reason (empty when none) into `reason`.
    pub fn call_with_reason(&self, input: &[u8], reason: &mut String) -> Outcome {
        let mut detail = CallDetail::default();
        let o = self.call_inner(input, Some(&mut detail));
        *reason = detail.reason;
        o
    }

    /// As [`Plugin::call`], with everything known about the call in `detail`: the reason, a
    /// trap's message, the fuel used. For `plugin eval`, explanations and tests; not for the
    /// per-check path (it formats).
    pub fn call_detailed(&self, input: &[u8], detail: &mut CallDetail) -> Outcome {
        self.call_inner(input, Some(detail))
    }

    fn call_inner(&self, input: &[u8], detail: Option<&mut CallDetail>) -> Outcome {
        let outcome = self.run(input, detail);
        self.stats.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if self.breaker.record(outcome, &self.limits) {
            self.stats.breaker_opens.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                tenant = %self.tenant,
                plugin = %self.name,
                outcome = outcome.code(),
                cooldown_ms = self.limits.breaker_cooldown.as_millis() as u64,
                "plugin keeps hitting its limits; circuit breaker open, its conditions deny (plugin_unavailable)"
            );
        }
        outcome
    }

    /// Whether a call may run now: false while the circuit breaker is open (the caller then
    /// denies without calling, see [`Plugin::refused`]). [`Plugin::call`] itself does not ask.
    pub fn admit(&self) -> bool {
        self.breaker.admit()
    }

    /// Counts a call that did not run (`BudgetExhausted`, `CircuitOpen`) and returns it.
    pub fn refused(&self, outcome: Outcome) -> Outcome {
        self.stats.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// Logs a failure, at most once a second per plugin (a hostile plugin must not flood logs;
    /// the counters see every failure).
    /// `trap` describes what stopped the call and `reason` is what the plugin set (the SDK's
    /// panic handler sets one before trapping); both are formatted only when a line is written.
    fn warn(&self, outcome: Outcome, trap: impl FnOnce() -> String, reason: &[u8]) {
        let now = crate::clock::unix_now().max(0) as u64;
        let last = self.last_warn.load(Ordering::Relaxed);
        if now > last
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                tenant = %self.tenant,
                plugin = %self.name,
                version = %self.version(),
                outcome = outcome.code(),
                trap = ?trap(),
                reason = ?String::from_utf8_lossy(reason),
                failures = self.stats.failures(),
                "plugin call failed; the grant denies"
            );
        }
    }

    fn run(&self, input: &[u8], detail: Option<&mut CallDetail>) -> Outcome {
        let mut detail = detail;
        if let Some(d) = detail.as_deref_mut() {
            *d = CallDetail::default();
        }
        if input.len() > self.limits.max_input_bytes {
            let o = Outcome::InputTooLarge;
            let why = || {
                format!(
                    "input of {} bytes is over the limit of {}",
                    input.len(),
                    self.limits.max_input_bytes
                )
            };
            self.warn(o, why, b"");
            if let Some(d) = detail {
                d.trap = why();
            }
            return o;
        }
        let pooled = lock(&self.idle).pop();
        let mut live = match pooled {
            Some(l) => l,
            None => match self.instantiate() {
                Ok(l) => l,
                Err((o, msg)) => {
                    self.warn(o, || msg.clone(), b"");
                    if let Some(d) = detail {
                        d.trap = msg;
                    }
                    return o;
                }
            },
        };
        let mut failed = None;
        if detail.is_some() {
            live.store.data_mut().capture = Some(Vec::new());
        }
        let outcome = self.invoke_inner(&mut live, input, &mut failed);
        let debug = live.store.data_mut().capture.take();
        let st = live.store.data();
        if outcome.is_failure() {
            let trap = || failed.as_ref().map(describe).unwrap_or_default();
            self.warn(outcome, trap, &st.reason);
        }
        if let Some(d) = detail {
            d.trap = failed.as_ref().map(describe).unwrap_or_default();
            d.reason = String::from_utf8_lossy(&st.reason).into_owned();
            d.fuel_used = st
                .fuel_budget
                .saturating_sub(live.store.get_fuel().unwrap_or(0));
            d.debug = debug.unwrap_or_default();
        }
        if !outcome.is_failure() {
            let mut idle = lock(&self.idle);
            if idle.len() < self.limits.idle_per_plugin {
                idle.push(live);
            }
        }
        outcome
    }
}

/// Stops the epoch ticker when the host goes away.
struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

type Versions = HashMap<[u8; 32], Arc<Plugin>>;

/// One entry of the compiled-module cache: the first loader compiles, concurrent loaders of the
/// same bytes wait for it; failures are not kept.
struct ModuleSlot {
    cell: Arc<OnceLock<Result<Arc<Compiled>, ModuleError>>>,
    last_use: u64,
}

/// Why a request cannot run plugin work now (the answer is `503 plugin_busy`).
#[derive(Debug, thiserror::Error)]
pub enum Busy {
    #[error("tenant '{tenant}' already runs {max} requests with plugin conditions; try again")]
    Tenant { tenant: String, max: usize },
    #[error("{max} requests with plugin conditions are running; try again")]
    Host { max: usize },
}

/// A slot of plugin work held by one request (see [`PluginHost::enter`]); released on drop.
pub struct WorkPermit<'a> {
    host: &'a PluginHost,
    tenant: Box<str>,
}

impl Drop for WorkPermit<'_> {
    fn drop(&mut self) {
        let mut busy = lock(&self.host.busy);
        if let Some(n) = busy.per_tenant.get_mut(&self.tenant) {
            n.running = n.running.saturating_sub(1);
            if n.running == 0 && n.waiting == 0 {
                busy.per_tenant.remove(&self.tenant);
            }
        }
        busy.running = busy.running.saturating_sub(1);
        drop(busy);
        self.host.freed.notify_all();
    }
}

/// Requests running (and waiting for) plugin work.
#[derive(Default)]
struct BusyState {
    per_tenant: HashMap<Box<str>, TenantBusy>,
    running: usize,
    waiting: usize,
}

#[derive(Default, Clone, Copy)]
struct TenantBusy {
    running: usize,
    waiting: usize,
}

/// Requests that may wait for a slot, per slot.
pub const WAITERS_PER_SLOT: usize = 4;

/// Loads, caches and runs tenant plugins.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    /// tenant → plugin name → loaded versions (each with its own instances).
    cache: Mutex<HashMap<String, HashMap<String, Versions>>>,
    /// SHA-256 of the bytes → compiled module, whatever tenant or name loaded it.
    modules: Mutex<HashMap<[u8; 32], ModuleSlot>>,
    /// Logical clock of module cache uses (for eviction).
    uses: AtomicU64,
    /// tenant → requests running plugin work.
    busy: Mutex<BusyState>,
    /// Signalled when a slot is released.
    freed: Condvar,
    /// Directory of compiled modules kept across restarts ([`PluginHost::use_disk_cache`]).
    disk: OnceLock<std::path::PathBuf>,
    /// Tenants whose plugins' `debug_log` lines are written to the log.
    debug_tenants: Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
    _ticker: Ticker,
}

/// Refuses a new plugin beyond `max` per tenant (`current`: the tenant's plugins now;
/// `replacing`: the upload replaces one of them, which is always allowed).
pub fn check_plugin_count(max: usize, current: usize, replacing: bool) -> Result<(), ModuleError> {
    if replacing || current < max {
        Ok(())
    } else {
        Err(ModuleError::TooMany { max })
    }
}

/// The bucket (0 to 99) of a call in a plugin's canary split: the candidate runs the call when
/// its bucket is below the canary's share. A pure function of the request's subject (user id)
/// and resource (node id), so the same request always runs the same version, on every process
/// holding the same snapshot, and raising the share only moves calls to the candidate:
///
/// `h = FNV-1a-64(subject ‖ 0x00 ‖ resource)`, then `h ^= h >> 33; h *= 0xff51afd7ed558ccd;
/// h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33` (wrapping), and `bucket = h % 100`.
///
/// No allocation, no lock: one pass over the two ids and a compare (42–59 ns for 17 + 16 bytes,
/// release build on a loaded 2-core machine).
#[inline]
pub fn canary_bucket(subject: &str, resource: &str) -> u8 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in subject.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    // The 0x00 separator: `h ^ 0` is `h`.
    h = h.wrapping_mul(PRIME);
    for &b in resource.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    // The finalizer of MurmurHash3: spreads FNV's weak low bits before the modulo.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % 100) as u8
}

impl PluginHost {
    pub fn new(limits: Limits) -> Result<PluginHost, ModuleError> {
        let engine_err = |e: wasmtime::Error| ModuleError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(limits.max_instances)
            .total_memories(limits.max_instances)
            .total_tables(limits.max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(limits.max_memory_bytes);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .consume_fuel(true)
            .max_wasm_stack(limits.max_stack_bytes)
            // Small reservations keep the pool's virtual footprint modest (explicit bounds checks).
            .memory_reservation(limits.max_memory_bytes as u64)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0);
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap(
                "portcullis",
                "set_reason",
                |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                    if len < 0 {
                        caller.data_mut().reason_too_long = true;
                        wasmtime::bail!("plugin reason has a negative length ({len})");
                    }
                    let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
                        wasmtime::bail!("plugin has no memory");
                    };
                    let (data, state) = mem.data_and_store_mut(&mut caller);
                    let start = ptr as u32 as usize;
                    let Some(bytes) = data.get(start..start + len as usize) else {
                        wasmtime::bail!("plugin reason is out of bounds");
                    };
                    set_reason_cut(&mut state.reason, bytes, state.max_reason);
                    Ok(())
                },
            )
            .map_err(engine_err)?;
        linker
            .func_wrap(
                "portcullis",
                "debug_log",
                |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                    // Off (the default) and not captured: one read lock, nothing read.
                    let capture = caller.data().capture.is_some();
                    let sink = caller.data().debug.clone();
                    let enabled = sink.enabled();
                    if !capture && !enabled {
                        return Ok(());
                    }
                    if len < 0 {
                        wasmtime::bail!("debug_log with a negative length ({len})");
                    }
                    let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
                        wasmtime::bail!("plugin has no memory");
                    };
                    let (data, state) = mem.data_and_store_mut(&mut caller);
                    let start = ptr as u32 as usize;
                    let Some(bytes) = data.get(start..start + len as usize) else {
                        wasmtime::bail!("debug_log line is out of bounds");
                    };
                    let mut cut = Vec::new();
                    set_reason_cut(&mut cut, bytes, state.max_reason);
                    let line = String::from_utf8_lossy(&cut).into_owned();
                    if enabled {
                        sink.write(&line);
                    }
                    if let Some(c) = state.capture.as_mut() {
                        if c.len() < 1000 {
                            c.push(line);
                        }
                    }
                    Ok(())
                },
            )
            .map_err(engine_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (engine, stop, tick) = (engine.clone(), stop.clone(), limits.tick);
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| ModuleError::Engine(format!("epoch ticker: {e}")))?
        };
        Ok(PluginHost {
            engine,
            linker,
            limits,
            cache: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            uses: AtomicU64::new(0),
            busy: Mutex::new(BusyState::default()),
            freed: Condvar::new(),
            disk: OnceLock::new(),
            debug_tenants: Arc::default(),
            _ticker: Ticker {
                stop,
                handle: Some(handle),
            },
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The tenants whose plugins' `portcullis.debug_log` lines go to the log (none by default;
    /// `plugins.debug_log_tenants`). Takes effect at once for loaded plugins too.
    pub fn set_debug_tenants<S: AsRef<str>>(&self, tenants: &[S]) {
        if let Ok(mut t) = self.debug_tenants.write() {
            *t = tenants.iter().map(|s| s.as_ref().to_owned()).collect();
        }
    }

    /// Keeps compiled modules in `dir` (created with mode 0700), so a restart loads them instead
    /// of compiling again. Each file is `SHA-256(artifact) || artifact`, named by the SHA-256 of
    /// the module's bytes; a file that fails its digest (or that this wasmtime or engine
    /// configuration cannot load) is ignored and rewritten.
    pub fn use_disk_cache(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)?;
        let _ = self.disk.set(dir.to_path_buf());
        Ok(())
    }

    /// The compiled module of `bytes` from the disk cache, if it holds a good one.
    fn module_from_disk(&self, hash: &[u8; 32]) -> Option<Module> {
        let path = self
            .disk
            .get()?
            .join(format!("{}.cwasm", crate::model::hex(hash)));
        let file = std::fs::read(&path).ok()?;
        let (digest, artifact) = file.split_at_checked(32)?;
        if Sha256::digest(artifact).as_slice() != digest {
            tracing::warn!(path = %path.display(), "compiled plugin cache file fails its digest; compiling again");
            return None;
        }
        // SAFETY: `deserialize` trusts that the bytes are a module this wasmtime serialized.
        // They are: the file was written by `module_to_disk` of this service into its own 0700
        // directory (only the service's user can write it, the same user that owns the store
        // the modules come from), and the digest above proves it is the file as written, not a
        // truncated or damaged one. wasmtime itself refuses artifacts of another version or
        // engine configuration (an error, then we compile).
        match unsafe { Module::deserialize(&self.engine, artifact) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::info!(path = %path.display(), error = %e, "compiled plugin cache file not usable; compiling again");
                None
            }
        }
    }

    /// Writes a compiled module to the disk cache (best effort: a failure only costs a compile
    /// at the next start).
    fn module_to_disk(&self, hash: &[u8; 32], module: &Module) {
        let Some(dir) = self.disk.get() else {
            return;
        };
        let Ok(artifact) = module.serialize() else {
            return;
        };
        let name = crate::model::hex(hash);
        let (tmp, path) = (
            dir.join(format!("{name}.cwasm.tmp")),
            dir.join(format!("{name}.cwasm")),
        );
        let mut file = Vec::with_capacity(32 + artifact.len());
        file.extend_from_slice(&Sha256::digest(&artifact));
        file.extend_from_slice(&artifact);
        if let Err(e) = std::fs::write(&tmp, &file).and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "cannot keep a compiled plugin on disk");
        }
    }

    /// [`check_plugin_count`] with this host's `max_per_tenant`.
    pub fn check_plugin_count(&self, current: usize, replacing: bool) -> Result<(), ModuleError> {
        check_plugin_count(self.limits.max_per_tenant, current, replacing)
    }

    /// Takes a slot of plugin work for one request of `tenant`, or says why not (the tenant
    /// already runs `max_concurrent_per_tenant` such requests, or the process
    /// `max_concurrent`). Never waits.
    pub fn enter(&self, tenant: &str) -> Result<WorkPermit<'_>, Busy> {
        self.enter_within(tenant, Duration::ZERO)
    }

    /// [`PluginHost::enter`], waiting up to `wait` for a slot (blocking the thread). At most
    /// [`WAITERS_PER_SLOT`] requests per slot wait (per tenant and process-wide); beyond, or
    /// after `wait`, the answer is [`Busy`].
    pub fn enter_within(&self, tenant: &str, wait: Duration) -> Result<WorkPermit<'_>, Busy> {
        let (per, all) = (
            self.limits.max_concurrent_per_tenant,
            self.limits.max_concurrent,
        );
        let busy_err = |tenant_full: bool| {
            if tenant_full {
                Busy::Tenant {
                    tenant: tenant.to_owned(),
                    max: per,
                }
            } else {
                Busy::Host { max: all }
            }
        };
        let deadline = Instant::now().checked_add(wait);
        let mut busy = lock(&self.busy);
        let mut waiting = false;
        let result = loop {
            let t = busy.per_tenant.get(tenant).copied().unwrap_or_default();
            let tenant_full = t.running >= per;
            if !tenant_full && busy.running < all {
                let e = busy.per_tenant.entry(tenant.into()).or_default();
                e.running += 1;
                busy.running += 1;
                break Ok(());
            }
            let now = Instant::now();
            let left = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                break Err(busy_err(tenant_full));
            }
            if !waiting {
                if t.waiting >= per * WAITERS_PER_SLOT || busy.waiting >= all * WAITERS_PER_SLOT {
                    break Err(busy_err(tenant_full));
                }
                busy.per_tenant.entry(tenant.into()).or_default().waiting += 1;
                busy.waiting += 1;
                waiting = true;
            }
            busy = self
                .freed
                .wait_timeout(busy, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        };
        if waiting {
            if let Some(t) = busy.per_tenant.get_mut(tenant) {
                t.waiting -= 1;
            }
            busy.waiting -= 1;
        }
        if result.is_err()
            && busy
                .per_tenant
                .get(tenant)
                .is_some_and(|t| t.running == 0 && t.waiting == 0)
        {
            busy.per_tenant.remove(tenant);
        }
        result.map(|()| WorkPermit {
            host: self,
            tenant: tenant.into(),
        })
    }

    /// Validate, compile and start a tenant's plugin. The same bytes load from the caches: the
    /// same (tenant, name) gets the same plugin; another tenant or name gets its own plugin
    /// (own instances, own breaker) over the already compiled module. Other versions of the
    /// plugin leave the cache (see [`PluginHost::load_keeping`]).
    pub fn load(&self, tenant: &str, name: &str, bytes: &[u8]) -> Result<Arc<Plugin>, ModuleError> {
        self.load_keeping(tenant, name, bytes, None)
    }

    /// [`PluginHost::load`], keeping the plugin's version `keep` (SHA-256 of its bytes) in the
    /// cache beside this one when it is there: while a canary runs, the current version and
    /// the candidate stay loaded (their instances, breakers and counters survive snapshot
    /// rebuilds). Every other version of the plugin leaves the cache; `Arc`s in use live on.
    pub fn load_keeping(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
        keep: Option<[u8; 32]>,
    ) -> Result<Arc<Plugin>, ModuleError> {
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        let prune = |versions: &mut Versions| -> Vec<Arc<Plugin>> {
            let gone: Vec<[u8; 32]> = versions
                .keys()
                .filter(|h| **h != hash && Some(**h) != keep)
                .copied()
                .collect();
            gone.iter().filter_map(|h| versions.remove(h)).collect()
        };
        let hit = {
            let mut cache = lock(&self.cache);
            cache
                .get_mut(tenant)
                .and_then(|t| t.get_mut(name))
                .and_then(|v| Some((v.get(&hash)?.clone(), prune(v))))
        };
        if let Some((p, gone)) = hit {
            if !gone.is_empty() {
                drop(gone);
                self.evict(&mut lock(&self.modules));
            }
            return Ok(p);
        }
        let plugin = Arc::new(self.start(tenant, name, bytes, hash)?);
        let old = {
            let mut cache = lock(&self.cache);
            let versions = cache
                .entry(tenant.to_owned())
                .or_default()
                .entry(name.to_owned())
                .or_default();
            let gone = prune(versions);
            versions.insert(hash, plugin.clone());
            gone
        };
        // The replaced versions' modules may now be unused.
        drop(old);
        self.evict(&mut lock(&self.modules));
        Ok(plugin)
    }

    /// The loaded version of a tenant's plugin.
    pub fn get(&self, tenant: &str, name: &str) -> Option<Arc<Plugin>> {
        lock(&self.cache)
            .get(tenant)
            .and_then(|t| t.get(name))
            .and_then(|v| v.values().next().cloned())
    }

    /// Forget a tenant's plugin (or all of the tenant's plugins with `None`).
    pub fn unload(&self, tenant: &str, name: Option<&str>) {
        let gone = {
            let mut cache = lock(&self.cache);
            match name {
                Some(n) => cache
                    .get_mut(tenant)
                    .and_then(|t| t.remove(n))
                    .map(|v| vec![v])
                    .unwrap_or_default(),
                None => cache
                    .remove(tenant)
                    .map(|t| t.into_values().collect())
                    .unwrap_or_default(),
            }
        };
        drop(gone);
        self.evict(&mut lock(&self.modules));
    }

    /// Whether the module with this version (hex SHA-256 of its bytes) is compiled already: a
    /// load of those bytes will not compile.
    pub fn is_compiled(&self, version: &str) -> bool {
        let mut hash = [0u8; 32];
        if version.len() != 64
            || !hash.iter_mut().enumerate().all(|(i, b)| {
                version
                    .get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|v| *b = v)
                    .is_some()
            })
        {
            return false;
        }
        lock(&self.modules)
            .get(&hash)
            .is_some_and(|s| matches!(s.cell.get(), Some(Ok(_))))
    }

    /// Compiled modules in the content-hash cache.
    pub fn cached_modules(&self) -> usize {
        lock(&self.modules).len()
    }

    /// The compiled module of `bytes`: from the content-hash cache, or compiled now (concurrent
    /// loads of the same bytes wait for one compile). Returns the time spent compiling here.
    fn module(
        &self,
        name: &str,
        bytes: &[u8],
        hash: [u8; 32],
    ) -> Result<(Arc<Compiled>, Duration), ModuleError> {
        let cell = {
            let mut modules = lock(&self.modules);
            let tick = self.uses.fetch_add(1, Ordering::Relaxed);
            let slot = modules.entry(hash).or_insert_with(|| ModuleSlot {
                cell: Arc::new(OnceLock::new()),
                last_use: tick,
            });
            slot.last_use = tick;
            slot.cell.clone()
        };
        let mut spent = Duration::ZERO;
        let result = cell.get_or_init(|| {
            let t0 = Instant::now();
            let r = self.compile(name, bytes).map(Arc::new);
            spent = t0.elapsed();
            r
        });
        let mut modules = lock(&self.modules);
        match result {
            Ok(c) => {
                self.evict(&mut modules);
                Ok((c.clone(), spent))
            }
            Err(e) => {
                // Not kept: the next load of these bytes tries (and fails) again.
                if modules
                    .get(&hash)
                    .is_some_and(|s| Arc::ptr_eq(&s.cell, &cell))
                {
                    modules.remove(&hash);
                }
                Err(e.clone())
            }
        }
    }

    /// Drops least recently used modules no plugin holds while the cache is over its bound.
    fn evict(&self, modules: &mut HashMap<[u8; 32], ModuleSlot>) {
        while modules.len() > self.limits.module_cache {
            let victim = modules
                .iter()
                .filter(|(_, s)| {
                    Arc::strong_count(&s.cell) == 1
                        && matches!(s.cell.get(), Some(Ok(c)) if Arc::strong_count(c) == 1)
                })
                .min_by_key(|(_, s)| s.last_use)
                .map(|(h, _)| *h);
            match victim {
                Some(h) => {
                    modules.remove(&h);
                }
                None => break,
            }
        }
    }

    /// Checks the module against the compile budget, compiles it and checks its interface.
    fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled, ModuleError> {
        let n = || name.to_owned();
        if bytes.len() > self.limits.max_module_bytes {
            return Err(ModuleError::TooLarge {
                name: n(),
                size: bytes.len(),
                max: self.limits.max_module_bytes,
            });
        }
        // Before compiling: what compiling costs grows with the code (and more than linearly
        // with the largest function), so bound both from the code section's framing.
        if let Some(code) = budget::code_stats(bytes) {
            for (what, got, max) in [
                ("the code section", code.total, self.limits.max_code_bytes),
                (
                    "the largest function body",
                    code.largest,
                    self.limits.max_function_bytes,
                ),
                (
                    "the function count",
                    code.functions,
                    self.limits.max_functions,
                ),
            ] {
                if got > max {
                    return Err(ModuleError::TooComplex {
                        name: n(),
                        what,
                        got,
                        max,
                    });
                }
            }
        }
        let t0 = Instant::now();
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        let (module, from_disk) = match self.module_from_disk(&hash) {
            Some(m) => (m, true),
            None => {
                let m =
                    Module::from_binary(&self.engine, bytes).map_err(|e| ModuleError::Invalid {
                        name: n(),
                        msg: format!("{e:#}"),
                    })?;
                (m, false)
            }
        };
        let compile_time = t0.elapsed();
        for imp in module.imports() {
            let ok = imp.module() == "portcullis"
                && matches!(imp.name(), "set_reason" | "debug_log")
                && matches!(imp.ty(), ExternType::Func(ref f)
                    if f.params().len() == 2
                        && f.params().all(|p| p.is_i32())
                        && f.results().next().is_none());
            if !ok {
                return Err(ModuleError::ForbiddenImport {
                    name: n(),
                    module: imp.module().to_owned(),
                    field: imp.name().to_owned(),
                });
            }
        }
        let missing = |export: &'static str, ty: &'static str| ModuleError::MissingExport {
            name: n(),
            export,
            ty,
        };
        match module.get_export("memory") {
            Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {
                let bytes = m.minimum().saturating_mul(m.page_size());
                if bytes > self.limits.max_memory_bytes as u64 {
                    return Err(ModuleError::MemoryTooLarge {
                        name: n(),
                        bytes,
                        max: self.limits.max_memory_bytes,
                    });
                }
            }
            _ => return Err(missing("memory", "a 32-bit unshared memory")),
        }
        let func = |export: &'static str, params: usize, ty: &'static str| match module
            .get_export(export)
        {
            Some(ExternType::Func(f))
                if f.params().len() == params
                    && f.params().all(|p| p.is_i32())
                    && f.results().len() == 1
                    && f.results().all(|r| r.is_i32()) =>
            {
                Ok(())
            }
            _ => Err(missing(export, ty)),
        };
        func("portcullis_abi_version", 0, "func () -> i32")?;
        func("portcullis_alloc", 1, "func (i32) -> i32")?;
        func("portcullis_evaluate", 2, "func (i32, i32) -> i32")?;
        if !from_disk {
            // Only modules that passed every check are kept.
            self.module_to_disk(&hash, &module);
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| ModuleError::Invalid {
                name: n(),
                msg: format!("{e:#}"),
            })?;
        Ok(Compiled { pre, compile_time })
    }

    /// A new plugin of `tenant` over the (cached) compiled module, with one started instance.
    fn start(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
        hash: [u8; 32],
    ) -> Result<Plugin, ModuleError> {
        let n = || name.to_owned();
        let (compiled, spent) = self.module(name, bytes, hash)?;
        let plugin = Plugin {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            hash,
            compiled,
            breaker: Breaker::default(),
            engine: self.engine.clone(),
            limits: self.limits,
            idle: Mutex::new(Vec::new()),
            stats: Stats::default(),
            compile_time: spent,
            last_warn: AtomicU64::new(0),
            debug: Arc::new(DebugLog {
                tenant: tenant.to_owned(),
                plugin: name.to_owned(),
                version: crate::model::hex(&hash),
                tenants: self.debug_tenants.clone(),
                window: Mutex::new((0, 0, 0)),
            }),
        };
        // Start one instance: runs the start function under the limits and checks the version.
        let mut live = plugin
            .instantiate()
            .map_err(|(o, msg)| ModuleError::Instantiate {
                name: n(),
                msg: format!("{}: {msg}", o.code()),
            })?;
        let instance_version =
            abi_version(&mut live).map_err(|msg| ModuleError::Instantiate { name: n(), msg })?;
        if instance_version != ABI_VERSION {
            return Err(ModuleError::AbiVersion {
                name: n(),
                got: instance_version,
            });
        }
        lock(&plugin.idle).push(live);
        Ok(plugin)
    }
}

/// Call `portcullis_abi_version` in a fresh live instance, under the call limits.
fn abi_version(live: &mut Live) -> Result<i32, String> {
    let store = &mut live.store;
    let f = live
        .instance
        .get_typed_func::<(), i32>(&mut *store, "portcullis_abi_version")
        .map_err(|e| format!("{e:#}"))?;
    f.call(&mut *store, ())
        .map_err(|e| format!("{}: {e:#}", classify(store, &e).code()))
}
