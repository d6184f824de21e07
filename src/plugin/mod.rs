//! Tenant WASM plugins: load (validate, compile, cache) and call under hard limits.
//!
//! The ABI is `plugins/ABI.md`. Design:
//! - One [`PluginHost`] owns one wasmtime [`Engine`] (cranelift, pooling allocator, epoch
//!   interruption, fuel) and one epoch ticker thread.
//! - [`PluginHost::load`] validates a module before anything runs it (size cap, only the
//!   `portcullis.set_reason` import, required exports with their exact types, declared memory
//!   within the cap), compiles it once, instantiates it under the call limits and checks
//!   `portcullis_abi_version() == 1`. Compiled plugins are cached per (tenant, plugin name,
//!   SHA-256 of the bytes): re-uploading the same version costs nothing.
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

mod context;
mod input;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
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
    #[error("plugin '{name}' imports '{module}.{field}'; only 'portcullis.set_reason' (i32, i32) -> () is allowed")]
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
    /// The reason was longer than the limit.
    ReasonTooLong,
    /// The input was larger than the limit.
    InputTooLarge,
    /// No instance could be created (pool exhausted or start trapped).
    NoInstance,
}

impl Outcome {
    pub const ALL: [Outcome; 13] = [
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
        }
    }
}

/// Per-store state: the memory limiter and the reason buffer.
struct HostState {
    limits: Limiter,
    reason: Vec<u8>,
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
}

impl Stats {
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

/// A loaded plugin: one tenant's one module version.
pub struct Plugin {
    tenant: String,
    name: String,
    hash: [u8; 32],
    pre: InstancePre<HostState>,
    engine: Engine,
    limits: Limits,
    idle: Mutex<Vec<Live>>,
    stats: Stats,
    compile_time: Duration,
    /// Unix second of the last failure logged (failures are logged at most once a second).
    last_warn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// How long compiling the module took at load.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
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

    /// Arms the per-call limits: deadline, its grace, fuel.
    fn arm(&self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        store.set_epoch_deadline(self.limits.deadline_ticks);
        {
            let st = store.data_mut();
            st.fuel_budget = self.limits.fuel;
            st.grace_left = self.limits.deadline_ticks * (GRACE_FACTOR - 1);
        }
        store.set_fuel(self.limits.fuel)
    }

    /// Instantiate under the call limits (a start function is bounded too).
    fn instantiate(&self) -> Result<Live, (Outcome, String)> {
        let mut store = self.new_store();
        self.arm(&mut store)
            .map_err(|e| (Outcome::NoInstance, e.to_string()))?;
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let instance = match self.pre.instantiate(&mut store) {
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

    fn invoke(&self, live: &mut Live, input: &[u8]) -> Outcome {
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
            Err(e) => return classify(store, &e),
        };
        if ptr == 0 {
            return Outcome::BadAlloc;
        }
        let start = ptr as u32 as usize;
        let mem = live.memory.data_mut(&mut *store);
        match mem.get_mut(start..start + input.len()) {
            Some(dst) => dst.copy_from_slice(input),
            None => return Outcome::BadAlloc,
        }
        match live.evaluate.call(&mut *store, (ptr, len)) {
            Ok(0) => Outcome::Abstain,
            Ok(1) => Outcome::Allow,
            Ok(2) => Outcome::Deny,
            Ok(_) => Outcome::BadResult,
            Err(e) => classify(store, &e),
        }
    }

    /// Evaluate an encoded input (see [`PluginInput::encode`]). Never fails: failures deny.
    pub fn call(&self, input: &[u8]) -> Outcome {
        self.call_inner(input, None)
    }

    /// As [`Plugin::call`], also copying the plugin's reason (empty when none) into `reason`.
    pub fn call_with_reason(&self, input: &[u8], reason: &mut String) -> Outcome {
        self.call_inner(input, Some(reason))
    }

    fn call_inner(&self, input: &[u8], reason: Option<&mut String>) -> Outcome {
        let outcome = self.run(input, reason);
        self.stats.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if outcome.is_failure() {
            self.warn(outcome);
        }
        outcome
    }

    /// Logs a failure, at most once a second per plugin (a hostile plugin must not flood logs;
    /// the counters see every failure).
    fn warn(&self, outcome: Outcome) {
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
                outcome = outcome.code(),
                failures = self.stats.failures(),
                "plugin call failed; the grant denies"
            );
        }
    }

    fn run(&self, input: &[u8], reason: Option<&mut String>) -> Outcome {
        if input.len() > self.limits.max_input_bytes {
            return Outcome::InputTooLarge;
        }
        let pooled = lock(&self.idle).pop();
        let mut live = match pooled {
            Some(l) => l,
            None => match self.instantiate() {
                Ok(l) => l,
                Err((o, _)) => return o,
            },
        };
        let outcome = self.invoke(&mut live, input);
        if let Some(r) = reason {
            r.clear();
            r.push_str(&String::from_utf8_lossy(&live.store.data().reason));
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

/// Loads, caches and runs tenant plugins.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    /// tenant → plugin name → compiled versions.
    cache: Mutex<HashMap<String, HashMap<String, Versions>>>,
    _ticker: Ticker,
}

impl PluginHost {
    pub fn new(limits: Limits) -> Result<PluginHost, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
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
                    let max = caller.data().max_reason;
                    if len < 0 || len as usize > max {
                        caller.data_mut().reason_too_long = true;
                        wasmtime::bail!("plugin reason is longer than {max} bytes");
                    }
                    let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
                        wasmtime::bail!("plugin has no memory");
                    };
                    let (data, state) = mem.data_and_store_mut(&mut caller);
                    let start = ptr as u32 as usize;
                    let Some(bytes) = data.get(start..start + len as usize) else {
                        wasmtime::bail!("plugin reason is out of bounds");
                    };
                    state.reason.clear();
                    state.reason.extend_from_slice(bytes);
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
                .map_err(|e| LoadError::Engine(format!("epoch ticker: {e}")))?
        };
        Ok(PluginHost {
            engine,
            linker,
            limits,
            cache: Mutex::new(HashMap::new()),
            _ticker: Ticker {
                stop,
                handle: Some(handle),
            },
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validate, compile and start a tenant's plugin; the same bytes load from the cache.
    pub fn load(&self, tenant: &str, name: &str, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(p) = lock(&self.cache)
            .get(tenant)
            .and_then(|t| t.get(name))
            .and_then(|v| v.get(&hash))
        {
            return Ok(p.clone());
        }
        let plugin = Arc::new(self.compile(tenant, name, bytes, hash)?);
        // Keep only the newest version of each plugin; older `Arc`s live on while in use.
        let mut cache = lock(&self.cache);
        let versions = cache
            .entry(tenant.to_owned())
            .or_default()
            .entry(name.to_owned())
            .or_default();
        versions.clear();
        versions.insert(hash, plugin.clone());
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
        let mut cache = lock(&self.cache);
        match name {
            Some(n) => {
                if let Some(t) = cache.get_mut(tenant) {
                    t.remove(n);
                }
            }
            None => {
                cache.remove(tenant);
            }
        }
    }

    fn compile(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
        hash: [u8; 32],
    ) -> Result<Plugin, LoadError> {
        let n = || name.to_owned();
        if bytes.len() > self.limits.max_module_bytes {
            return Err(LoadError::TooLarge {
                name: n(),
                size: bytes.len(),
                max: self.limits.max_module_bytes,
            });
        }
        let t0 = Instant::now();
        let module = Module::from_binary(&self.engine, bytes).map_err(|e| LoadError::Invalid {
            name: n(),
            msg: format!("{e:#}"),
        })?;
        let compile_time = t0.elapsed();
        for imp in module.imports() {
            let ok = imp.module() == "portcullis"
                && imp.name() == "set_reason"
                && matches!(imp.ty(), ExternType::Func(ref f)
                    if f.params().len() == 2
                        && f.params().all(|p| p.is_i32())
                        && f.results().next().is_none());
            if !ok {
                return Err(LoadError::ForbiddenImport {
                    name: n(),
                    module: imp.module().to_owned(),
                    field: imp.name().to_owned(),
                });
            }
        }
        let missing = |export: &'static str, ty: &'static str| LoadError::MissingExport {
            name: n(),
            export,
            ty,
        };
        match module.get_export("memory") {
            Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {
                let bytes = m.minimum().saturating_mul(m.page_size());
                if bytes > self.limits.max_memory_bytes as u64 {
                    return Err(LoadError::MemoryTooLarge {
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
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid {
                name: n(),
                msg: format!("{e:#}"),
            })?;
        let plugin = Plugin {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            hash,
            pre,
            engine: self.engine.clone(),
            limits: self.limits,
            idle: Mutex::new(Vec::new()),
            stats: Stats::default(),
            compile_time,
            last_warn: AtomicU64::new(0),
        };
        // Start one instance: runs the start function under the limits and checks the version.
        let mut live = plugin
            .instantiate()
            .map_err(|(o, msg)| LoadError::Instantiate {
                name: n(),
                msg: format!("{}: {msg}", o.code()),
            })?;
        let instance_version =
            abi_version(&mut live).map_err(|msg| LoadError::Instantiate { name: n(), msg })?;
        if instance_version != ABI_VERSION {
            return Err(LoadError::AbiVersion {
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
