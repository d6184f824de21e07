//! Portcullis plugin SDK: a `no_std`, allocation-free reader of the ABI v1 input layout
//! (`plugins/ABI.md`), the verdict values and the `set_reason` import; typed context access
//! ([`Input::get_str`], [`Input::get_i64`], [`Input::get_bool`], nested paths — module
//! [`json`]); UTC time helpers (module [`time`]); and, off wasm, the test-input builder
//! ([`InputBuilder`]) that writes exactly the host's bytes so plugin unit tests run natively.
//!
//! A plugin crate depends on this one and calls [`export_plugin!`] with its
//! `fn(&Input) -> Verdict`. On wasm32 the SDK provides the `#[panic_handler]` (feature
//! `panic-handler`, on by default): a panic sets the reason to `panic` (features
//! `panic-location`: `panic at FILE:LINE`; `panic-message`: the panic's text) and traps, so
//! `explain`, `plugin eval` and the warning log show it. Builds with Debian's rustc 1.63 (no
//! let-else).
#![no_std]

pub mod json;
pub mod time;

#[cfg(not(target_arch = "wasm32"))]
mod builder;
#[cfg(not(target_arch = "wasm32"))]
pub use builder::InputBuilder;

pub use json::Json;
pub use time::Weekday;

/// The ABI version this SDK implements.
pub const ABI_VERSION: i32 = 1;

/// Header size of the v1 input layout.
pub const HEADER_LEN: usize = 112;

/// What the plugin says about the matched grant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(i32)]
pub enum Verdict {
    /// The grant does not apply; other grants may still allow.
    Abstain = 0,
    /// The grant applies.
    Allow = 1,
    /// Veto the whole check.
    Deny = 2,
}

/// A read-only view of the input the host wrote.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    b: &'a [u8],
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn str_at(b: &[u8], off: usize) -> &str {
    let o = u32_at(b, off) as usize;
    let l = u32_at(b, off + 4) as usize;
    match b.get(o..o.saturating_add(l)) {
        Some(s) => core::str::from_utf8(s).unwrap_or(""),
        None => "",
    }
}

/// Key/value entries (subject attributes, context members) or path entries.
#[derive(Clone, Copy)]
pub struct Entries<'a> {
    b: &'a [u8],
    off: usize,
    count: usize,
}

impl<'a> Entries<'a> {
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Entry `i` as (first, second): (key, value) or (kind, id).
    pub fn get(&self, i: usize) -> Option<(&'a str, &'a str)> {
        if i >= self.count {
            return None;
        }
        let e = self.off + i * 16;
        Some((str_at(self.b, e), str_at(self.b, e + 8)))
    }
    /// Value of the first entry whose key is `key`.
    pub fn find(&self, key: &str) -> Option<&'a str> {
        let mut i = 0;
        while i < self.count {
            if let Some((k, v)) = self.get(i) {
                if k == key {
                    return Some(v);
                }
            }
            i += 1;
        }
        None
    }
}

impl<'a> Input<'a> {
    /// Wrap the input bytes; `None` when they are not a v1 layout.
    pub fn new(b: &'a [u8]) -> Option<Input<'a>> {
        if b.len() < HEADER_LEN || u32_at(b, 0) != ABI_VERSION as u32 {
            return None;
        }
        Some(Input { b })
    }
    /// Unix seconds of the check.
    pub fn now(&self) -> i64 {
        let lo = u32_at(self.b, 8) as u64;
        let hi = u32_at(self.b, 12) as u64;
        (lo | (hi << 32)) as i64
    }
    pub fn tenant(&self) -> &'a str {
        str_at(self.b, 16)
    }
    pub fn subject(&self) -> &'a str {
        str_at(self.b, 24)
    }
    /// `asset` in `asset:read`.
    pub fn action_resource(&self) -> &'a str {
        str_at(self.b, 32)
    }
    /// `read` in `asset:read`.
    pub fn verb(&self) -> &'a str {
        str_at(self.b, 40)
    }
    pub fn resource(&self) -> &'a str {
        str_at(self.b, 48)
    }
    pub fn role(&self) -> &'a str {
        str_at(self.b, 56)
    }
    pub fn scope(&self) -> &'a str {
        str_at(self.b, 64)
    }
    /// The request `context` as raw JSON (empty when absent).
    pub fn context_json(&self) -> &'a str {
        str_at(self.b, 72)
    }
    fn entries(&self, off: usize) -> Entries<'a> {
        let o = u32_at(self.b, off) as usize;
        let c = u32_at(self.b, off + 4) as usize;
        let ok = c
            .checked_mul(16)
            .and_then(|n| n.checked_add(o))
            .map_or(false, |end| end <= self.b.len());
        Entries {
            b: self.b,
            off: o,
            count: if ok { c } else { 0 },
        }
    }
    /// Node path root → resource as (kind, id).
    pub fn path(&self) -> Entries<'a> {
        self.entries(80)
    }
    /// Subject attributes (`kind`, `email`).
    pub fn attrs(&self) -> Entries<'a> {
        self.entries(88)
    }
    /// Top-level string/number members of `context`.
    pub fn context(&self) -> Entries<'a> {
        self.entries(96)
    }
    /// Whether the request carried a `context`.
    pub fn has_context(&self) -> bool {
        u32_at(self.b, 104) & 1 == 1
    }
    /// The request context as JSON, for typed lookups; `None` without a context (or one that
    /// is not valid JSON — the host never sends such a one).
    pub fn ctx(&self) -> Option<Json<'a>> {
        if !self.has_context() {
            return None;
        }
        json::parse_checked_input(self.context_json())
    }
    /// The context value at `path` (`.`-separated keys, e.g. `device.class`). A key present
    /// twice in an object is not found (the host refuses such contexts anyway; see [`json`]).
    pub fn get(&self, path: &str) -> Option<Json<'a>> {
        self.ctx()?.path(path)
    }
    /// A string at `path`, borrowed from the input. `None` when absent, not a string, or
    /// containing escape sequences (then use `get(path)?.str_into(&mut buf)` or
    /// [`Input::str_eq`]).
    pub fn get_str(&self, path: &str) -> Option<&'a str> {
        self.get(path)?.as_str()
    }
    /// Whether the string at `path` equals `want` (escapes resolved).
    pub fn str_eq(&self, path: &str, want: &str) -> bool {
        self.get(path).map_or(false, |v| v.str_eq(want))
    }
    /// An integer at `path` (a JSON number without fraction or exponent, within `i64`).
    pub fn get_i64(&self, path: &str) -> Option<i64> {
        self.get(path)?.as_i64()
    }
    /// A boolean at `path`.
    pub fn get_bool(&self, path: &str) -> Option<bool> {
        self.get(path)?.as_bool()
    }
    /// The subject's `kind` attribute (`owner`, `admin`, `member`, `guest`).
    pub fn subject_kind(&self) -> &'a str {
        self.attrs().find("kind").unwrap_or("")
    }
    /// The UTC calendar date and time of `now`.
    pub fn utc(&self) -> time::DateTime {
        time::utc(self.now())
    }
}

/// Parse a non-negative decimal integer (context numbers arrive as JSON text).
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for c in s.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(n)
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "portcullis")]
extern "C" {
    #[link_name = "set_reason"]
    fn host_set_reason(ptr: i32, len: i32);
    #[link_name = "debug_log"]
    fn host_debug_log(ptr: i32, len: i32);
}

/// Print-style debugging: one line to the host. Free unless enabled: the server logs it only
/// for tenants in `plugins.debug_log_tenants` (rate-limited); `portcullis plugin eval` always
/// prints it. Lines over 256 bytes are cut. Off wasm (native tests) lines are kept for
/// [`take_debug_log`]. The import appears in a module only if the plugin calls this.
pub fn debug_log(line: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host only reads `len` bytes at `ptr` from this module's memory.
    unsafe {
        host_debug_log(line.as_ptr() as i32, line.len() as i32)
    }
    #[cfg(not(target_arch = "wasm32"))]
    DEBUG_LINES.with(|d| d.borrow_mut().push(line.into()));
}

#[cfg(not(target_arch = "wasm32"))]
std::thread_local! {
    static DEBUG_LINES: core::cell::RefCell<std::vec::Vec<std::string::String>> =
        core::cell::RefCell::new(std::vec::Vec::new());
}

/// Off wasm: the lines [`debug_log`] wrote on this thread since the last call.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_debug_log() -> std::vec::Vec<std::string::String> {
    DEBUG_LINES.with(|d| core::mem::take(&mut *d.borrow_mut()))
}

/// Longest reason the host keeps whole (bytes); longer ones are cut at a character boundary
/// by [`set_reason`] and end with [`TRUNCATED`].
pub const MAX_REASON: usize = 256;

/// What ends a reason [`set_reason`] had to cut.
pub const TRUNCATED: &str = "…";

/// The length of the longest prefix of the UTF-8 bytes `b` of at most `max` bytes that ends on
/// a character boundary. (On bytes, not `str` slicing: that would pull `core::fmt`'s slice
/// error message — ~3 KB — into every module.)
pub fn cut(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut end = max;
    while end > 0 && b[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    end
}

/// Tell the host why. A reason longer than [`MAX_REASON`] bytes is cut (at a character
/// boundary) and ends with [`TRUNCATED`]. Off wasm (native tests) the reason is kept for
/// [`last_reason`].
pub fn set_reason(reason: &str) {
    if reason.len() > MAX_REASON {
        let mut buf = [0u8; MAX_REASON];
        let r = reason.as_bytes();
        let head = cut(r, MAX_REASON - TRUNCATED.len());
        buf[..head].copy_from_slice(&r[..head]);
        buf[head..head + TRUNCATED.len()].copy_from_slice(TRUNCATED.as_bytes());
        let n = head + TRUNCATED.len();
        // Both parts are UTF-8, cut at a character boundary.
        raw_set_reason(&buf[..n]);
        return;
    }
    raw_set_reason(reason.as_bytes());
}

/// Hands UTF-8 bytes to the host (no validation here: it would cost the module ~1 KB; every
/// caller passes whole characters).
#[cfg(target_arch = "wasm32")]
fn raw_set_reason(reason: &[u8]) {
    // SAFETY: the host only reads `len` bytes at `ptr` from this module's memory.
    unsafe { host_set_reason(reason.as_ptr() as i32, reason.len() as i32) }
}

#[cfg(not(target_arch = "wasm32"))]
extern crate std;

#[cfg(not(target_arch = "wasm32"))]
std::thread_local! {
    static LAST_REASON: core::cell::RefCell<std::string::String> =
        core::cell::RefCell::new(std::string::String::new());
}

#[cfg(not(target_arch = "wasm32"))]
fn raw_set_reason(reason: &[u8]) {
    LAST_REASON.with(|r| {
        let mut r = r.borrow_mut();
        r.clear();
        r.push_str(&std::string::String::from_utf8_lossy(reason));
    });
}

/// Off wasm: the reason last set on this thread (then cleared), for native unit tests.
#[cfg(not(target_arch = "wasm32"))]
pub fn last_reason() -> std::string::String {
    LAST_REASON.with(|r| core::mem::take(&mut *r.borrow_mut()))
}

/// The SDK's panic handler on wasm32 (feature `panic-handler`, default): the reason becomes
/// `panic`, then the call traps; the host reports the trap (`explain`, `plugin eval`, the
/// warning log) with that reason. Feature `panic-location`: `panic at FILE:LINE`; feature
/// `panic-message`: the panic's whole text. Either keeps the panic's formatting data in the
/// module (the `plugin new` template: 8.4 KB, 19.9 KB, 21.8 KB), so they are opt-in.
#[cfg(all(target_arch = "wasm32", feature = "panic-handler"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    #[cfg(feature = "panic-message")]
    {
        struct Buf {
            b: [u8; MAX_REASON],
            n: usize,
        }
        impl core::fmt::Write for Buf {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                let n = cut(s.as_bytes(), MAX_REASON - self.n);
                self.b[self.n..self.n + n].copy_from_slice(&s.as_bytes()[..n]);
                self.n += n;
                Ok(())
            }
        }
        let mut buf = Buf {
            b: [0; MAX_REASON],
            n: 0,
        };
        let _ = core::fmt::write(&mut buf, format_args!("{}", info));
        raw_set_reason(&buf.b[..buf.n]);
    }
    #[cfg(all(feature = "panic-location", not(feature = "panic-message")))]
    {
        let mut buf = [0u8; MAX_REASON];
        let mut n = 0;
        let mut put = |s: &[u8]| {
            let s = &s[..s.len().min(MAX_REASON - n)];
            buf[n..n + s.len()].copy_from_slice(s);
            n += s.len();
        };
        put(b"panic");
        if let Some(l) = info.location() {
            put(b" at ");
            // A file name cut at 256 bytes may end mid-character: the host shows the reason
            // with a replacement character then.
            put(l.file().as_bytes());
            put(b":");
            let mut digits = [0u8; 10];
            let mut i = digits.len();
            let mut line = l.line();
            loop {
                i -= 1;
                digits[i] = b'0' + (line % 10) as u8;
                line /= 10;
                if line == 0 {
                    break;
                }
            }
            put(&digits[i..]);
        }
        raw_set_reason(&buf[..n]);
    }
    #[cfg(not(any(feature = "panic-location", feature = "panic-message")))]
    {
        let _ = info;
        raw_set_reason(b"panic");
    }
    core::arch::wasm32::unreachable()
}

/// Input buffer handed to the host by `portcullis_alloc` (inputs above it are refused).
pub const BUF_LEN: usize = 64 * 1024;

/// Export the ABI around `fn(&Input) -> Verdict`. Uses one static buffer: the host never calls
/// an instance concurrently.
#[macro_export]
macro_rules! export_plugin {
    ($f:path) => {
        static mut PORTCULLIS_BUF: [u8; $crate::BUF_LEN] = [0; $crate::BUF_LEN];

        #[no_mangle]
        pub extern "C" fn portcullis_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[no_mangle]
        pub extern "C" fn portcullis_alloc(len: i32) -> i32 {
            if len < 0 || len as usize > $crate::BUF_LEN {
                return 0;
            }
            // SAFETY: single-threaded wasm; only the address is taken.
            unsafe { core::ptr::addr_of_mut!(PORTCULLIS_BUF) as i32 }
        }

        #[no_mangle]
        pub extern "C" fn portcullis_evaluate(ptr: i32, len: i32) -> i32 {
            let base = unsafe { core::ptr::addr_of!(PORTCULLIS_BUF) as i32 };
            if ptr != base || len < 0 || len as usize > $crate::BUF_LEN {
                return $crate::Verdict::Deny as i32;
            }
            // SAFETY: the host wrote `len` bytes into the static buffer and is not running.
            let bytes = unsafe { core::slice::from_raw_parts(ptr as *const u8, len as usize) };
            match $crate::Input::new(bytes) {
                Some(input) => $f(&input) as i32,
                None => $crate::Verdict::Deny as i32,
            }
        }
    };
}
