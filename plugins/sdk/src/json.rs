//! A small, allocation-free reader of the request `context` JSON (the raw slot of the input).
//!
//! **Duplicate keys.** The host refuses a request whose context has an object with the same key
//! twice (HTTP 400 `malformed_json`, before any plugin runs), so a plugin never sees one. The
//! SDK follows the same single rule everywhere — for the member table ([`crate::Input::context`])
//! and for lookups in the raw JSON ([`Json::get`], [`crate::Input::get_str`], …): a key that
//! appears twice in an object is **not found** (`None`); the SDK never picks one of them. The
//! test-input builder refuses such a context outright, as the host does.
//!
//! Paths are keys separated by `.` (`device.class`); a key that itself contains a `.` is reached
//! with [`Json::get`] step by step.

/// One JSON value: its text exactly as it appears in the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Json<'a> {
    text: &'a str,
}

/// What kind of JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// Deepest nesting [`parse`] accepts (the host accepts at most 32 levels).
pub const MAX_DEPTH: usize = 32;

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let s = b.get(i..i + 4)?;
    let mut v = 0u32;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = v * 16 + d as u32;
    }
    Some(v)
}

/// End (one past the closing quote) of the string starting at `i` (a `"`).
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => {
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' => {
                        // Surrogates must pair, as the host's JSON reader requires.
                        match hex4(b, j + 2)? {
                            0xD800..=0xDBFF => {
                                if b.get(j + 6) != Some(&b'\\') || b.get(j + 7) != Some(&b'u') {
                                    return None;
                                }
                                if !(0xDC00..0xE000).contains(&hex4(b, j + 8)?) {
                                    return None;
                                }
                                j += 12;
                            }
                            0xDC00..=0xDFFF => return None,
                            _ => j += 6,
                        }
                    }
                    _ => return None,
                }
            }
            c if c < 0x20 => return None,
            _ => j += 1,
        }
    }
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// End of the number starting at `i` (JSON grammar).
fn number_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    match b.get(j) {
        Some(b'0') => j += 1,
        Some(c) if c.is_ascii_digit() => j = digits(b, j),
        _ => return None,
    }
    if b.get(j) == Some(&b'.') {
        let k = digits(b, j + 1);
        if k == j + 1 {
            return None;
        }
        j = k;
    }
    if matches!(b.get(j), Some(b'e') | Some(b'E')) {
        j += 1;
        if matches!(b.get(j), Some(b'+') | Some(b'-')) {
            j += 1;
        }
        let k = digits(b, j);
        if k == j {
            return None;
        }
        j = k;
    }
    Some(j)
}

/// End of the value starting at `i` (no leading whitespace), checking its syntax and depth;
/// with `STRICT` also what the host checks before a plugin runs — no duplicate keys (a
/// quadratic check per object) and finite numbers (float parsing costs a wasm module ~20 KB).
/// The plugin-side reader, whose input the host has checked already, is not strict: linear, and
/// small.
fn value_end<const STRICT: bool>(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b't' => b.get(i..i + 4).filter(|s| *s == b"true").map(|_| i + 4),
        b'f' => b.get(i..i + 5).filter(|s| *s == b"false").map(|_| i + 5),
        b'n' => b.get(i..i + 4).filter(|s| *s == b"null").map(|_| i + 4),
        b'[' | b'{' if depth >= MAX_DEPTH => None,
        b'[' => {
            let mut j = ws(b, i + 1);
            if b.get(j) == Some(&b']') {
                return Some(j + 1);
            }
            loop {
                j = value_end::<STRICT>(b, j, depth + 1)?;
                j = ws(b, j);
                match *b.get(j)? {
                    b',' => j = ws(b, j + 1),
                    b']' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b'{' => {
            let mut j = ws(b, i + 1);
            if b.get(j) == Some(&b'}') {
                return Some(j + 1);
            }
            loop {
                if b.get(j) != Some(&b'"') {
                    return None;
                }
                let key_end = string_end(b, j)?;
                // A key seen before in this object: refused.
                let mut k = ws(b, i + 1);
                while STRICT && k < j {
                    let ke = string_end(b, k)?;
                    if keys_equal(&b[k..ke], &b[j..key_end]) {
                        return None;
                    }
                    k = ws(b, ke);
                    k = ws(b, k + 1); // ':'
                    k = value_end::<STRICT>(b, k, depth + 1)?;
                    k = ws(b, k);
                    k = ws(b, k + 1); // ','
                }
                j = ws(b, key_end);
                if b.get(j) != Some(&b':') {
                    return None;
                }
                j = ws(b, j + 1);
                j = value_end::<STRICT>(b, j, depth + 1)?;
                j = ws(b, j);
                match *b.get(j)? {
                    b',' => j = ws(b, j + 1),
                    b'}' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        _ => {
            let e = number_end(b, i)?;
            if !STRICT {
                return Some(e);
            }
            // Numbers must be finite f64s, as the host requires.
            let text = core::str::from_utf8(&b[i..e]).ok()?;
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Some(e),
                _ => None,
            }
        }
    }
}

/// The characters of a JSON string's contents (between the quotes), escapes resolved. Stops
/// early and sets `bad` on a malformed escape.
struct Unescaped<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
    bad: bool,
}

impl<'a> Unescaped<'a> {
    /// Over the raw string `raw` (quotes included); `None` if it is not one well-formed string.
    fn of(raw: &'a str) -> Option<Unescaped<'a>> {
        let b = raw.as_bytes();
        if b.first() != Some(&b'"') || string_end(b, 0) != Some(b.len()) {
            return None;
        }
        Some(Unescaped {
            b: &b[..b.len() - 1],
            s: &raw[..raw.len() - 1],
            i: 1,
            bad: false,
        })
    }
}

impl Iterator for Unescaped<'_> {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        if self.bad || self.i >= self.b.len() {
            return None;
        }
        if self.b[self.i] != b'\\' {
            let c = self.s[self.i..].chars().next()?;
            self.i += c.len_utf8();
            return Some(c);
        }
        let e = *self.b.get(self.i + 1)?;
        self.i += 2;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode().unwrap_or_else(|| {
                self.bad = true;
                '\0'
            }),
            _ => {
                self.bad = true;
                '\0'
            }
        };
        if self.bad {
            None
        } else {
            Some(c)
        }
    }
}

impl Unescaped<'_> {
    /// After `\u`: the escaped character (a surrogate pair takes the next `\uXXXX` too).
    fn unicode(&mut self) -> Option<char> {
        {
                let hi = hex4(self.b, self.i);
                self.i += 4;
                match hi {
                    Some(hi) if (0xD800..0xDC00).contains(&hi) => {
                        // A surrogate pair: `\uD83D\uDE00`.
                        let lo = if self.b.get(self.i) == Some(&b'\\')
                            && self.b.get(self.i + 1) == Some(&b'u')
                        {
                            hex4(self.b, self.i + 2)
                        } else {
                            None
                        };
                        self.i += 6;
                        match lo {
                            Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            }
                            _ => None,
                        }
                    }
                    Some(hi) => char::from_u32(hi),
                    None => None,
                }
        }
    }
}

/// Calls `f` with each character of the JSON string `raw` (quotes included), unescaped.
/// `None` if it is not a well-formed string.
pub fn unescape(raw: &str, mut f: impl FnMut(char)) -> Option<()> {
    let mut it = Unescaped::of(raw)?;
    for c in &mut it {
        f(c);
    }
    if it.bad {
        None
    } else {
        Some(())
    }
}

/// Whether two raw JSON strings (quotes included) are the same string once unescaped.
fn keys_equal(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    if !a.contains(&b'\\') && !b.contains(&b'\\') {
        return false;
    }
    match (core::str::from_utf8(a), core::str::from_utf8(b)) {
        (Ok(a), Ok(b)) => match (Unescaped::of(a), Unescaped::of(b)) {
            (Some(x), Some(y)) => x.eq(y),
            _ => false,
        },
        _ => false,
    }
}

/// Whether the raw JSON string `raw` (quotes included) unescapes to `want`.
pub fn str_equals(raw: &str, want: &str) -> bool {
    if !raw.contains('\\') {
        return raw.len() == want.len() + 2 && &raw[1..raw.len() - 1] == want;
    }
    match Unescaped::of(raw) {
        Some(mut it) => (&mut it).eq(want.chars()) && !it.bad,
        None => false,
    }
}

/// Parses `text` as one JSON value (surrounding whitespace allowed): `None` unless it is
/// well-formed, at most [`MAX_DEPTH`] deep, without duplicate keys and with finite numbers —
/// what the host accepts as a context.
pub fn parse(text: &str) -> Option<Json<'_>> {
    parse_with::<true>(text)
}

/// [`parse`] without the checks the host made already (duplicate keys, finite numbers): for
/// [`crate::Input::ctx`]. Linear in the context's size, and keeps float parsing out of the
/// module. A lookup ([`Json::get`]) still treats a key present twice as not found.
pub fn parse_checked_input(text: &str) -> Option<Json<'_>> {
    parse_with::<false>(text)
}

fn parse_with<const STRICT: bool>(text: &str) -> Option<Json<'_>> {
    let b = text.as_bytes();
    let i = ws(b, 0);
    let e = value_end::<STRICT>(b, i, 1)?;
    if ws(b, e) != b.len() {
        return None;
    }
    Some(Json { text: &text[i..e] })
}

/// The members of an object, in order: (raw key with quotes, value).
pub struct Members<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, Json<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.text.as_bytes();
        let mut j = ws(b, self.pos);
        if matches!(b.get(j), Some(b'{') | Some(b',')) {
            j = ws(b, j + 1);
        }
        if b.get(j) != Some(&b'"') {
            return None;
        }
        let ke = string_end(b, j)?;
        let key = &self.text[j..ke];
        let mut v = ws(b, ke);
        if b.get(v) != Some(&b':') {
            return None;
        }
        v = ws(b, v + 1);
        let ve = value_end::<false>(b, v, 1)?;
        self.pos = ws(b, ve);
        Some((key, Json { text: &self.text[v..ve] }))
    }
}

impl<'a> Json<'a> {
    /// The value's JSON text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    pub fn kind(&self) -> Kind {
        match self.text.as_bytes().first() {
            Some(b'n') => Kind::Null,
            Some(b't') | Some(b'f') => Kind::Bool,
            Some(b'"') => Kind::String,
            Some(b'[') => Kind::Array,
            Some(b'{') => Kind::Object,
            _ => Kind::Number,
        }
    }

    /// An object's members in order (empty for other values).
    pub fn members(&self) -> Members<'a> {
        Members {
            text: if self.kind() == Kind::Object {
                self.text
            } else {
                ""
            },
            pos: 0,
        }
    }

    /// Member `key` of an object. `None` when absent, when this is not an object, or when the
    /// key appears more than once (see the module docs).
    pub fn get(&self, key: &str) -> Option<Json<'a>> {
        let mut found = None;
        for (k, v) in self.members() {
            if str_equals(k, key) {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
        found
    }

    /// The value at a `.`-separated path of keys (`""` is this value).
    pub fn path(&self, path: &str) -> Option<Json<'a>> {
        if path.is_empty() {
            return Some(*self);
        }
        let mut cur = *self;
        for key in path.split('.') {
            cur = cur.get(key)?;
        }
        Some(cur)
    }

    /// A string without escape sequences, borrowed; `None` for other values and for strings
    /// with escapes (use [`Json::str_into`] or [`Json::str_eq`] for those).
    pub fn as_str(&self) -> Option<&'a str> {
        let t = self.text;
        if self.kind() == Kind::String && !t.contains('\\') {
            Some(&t[1..t.len() - 1])
        } else {
            None
        }
    }

    /// A string, unescaped into `buf`; `None` for other values or when `buf` is too small.
    pub fn str_into<'b>(&self, buf: &'b mut [u8]) -> Option<&'b str> {
        if self.kind() != Kind::String {
            return None;
        }
        let mut n = 0usize;
        let mut fits = true;
        unescape(self.text, |c| {
            let mut tmp = [0u8; 4];
            let s = c.encode_utf8(&mut tmp);
            match buf.get_mut(n..n + s.len()) {
                Some(d) if fits => {
                    d.copy_from_slice(s.as_bytes());
                    n += s.len();
                }
                _ => fits = false,
            }
        })?;
        if !fits {
            return None;
        }
        core::str::from_utf8(&buf[..n]).ok()
    }

    /// Whether this is a string equal to `want` (escapes resolved).
    pub fn str_eq(&self, want: &str) -> bool {
        self.kind() == Kind::String && str_equals(self.text, want)
    }

    /// An integer number (no fraction or exponent) that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        let t = self.text.as_bytes();
        let (neg, digits) = match t.first() {
            Some(b'-') => (true, &t[1..]),
            _ => (false, t),
        };
        if digits.is_empty() || !digits.iter().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut n: i64 = 0;
        for &c in digits {
            let d = (c - b'0') as i64;
            n = n.checked_mul(10)?;
            n = if neg {
                n.checked_sub(d)?
            } else {
                n.checked_add(d)?
            };
        }
        Some(n)
    }

    /// Any number, as an `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        if self.kind() != Kind::Number {
            return None;
        }
        self.text.parse().ok()
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.text {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.text == "null"
    }
}
