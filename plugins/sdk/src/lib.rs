//! Portcullis plugin SDK: a `no_std`, allocation-free reader of the ABI v1 input layout
//! (`plugins/ABI.md`), plus the verdict values and the `set_reason` import.
//!
//! A plugin crate depends on this one, calls [`export_plugin!`] with its `fn(&Input) -> Verdict`
//! and defines its own `#[panic_handler]`. Builds with Debian's rustc 1.63 (no let-else).
#![no_std]

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
}

/// Tell the host why (at most 256 bytes).
pub fn set_reason(reason: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host only reads `len` bytes at `ptr` from this module's memory.
    unsafe {
        host_set_reason(reason.as_ptr() as i32, reason.len() as i32)
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = reason;
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
