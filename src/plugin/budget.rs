//! The compile budget's measure of a module: read from the binary's section framing before
//! anything compiles it (the validator and compiler run only on modules within the budget).

/// Sizes of a module's code section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeStats {
    /// Functions defined (code section entries).
    pub functions: usize,
    /// Sum of the function body sizes, bytes.
    pub total: usize,
    /// The largest function body, bytes.
    pub largest: usize,
}

/// An unsigned LEB128 of at most 32 bits at `b[*i]`.
fn leb_u32(b: &[u8], i: &mut usize) -> Option<u32> {
    let mut v: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(v).ok();
        }
    }
    None
}

/// The code section's sizes, or None when the framing cannot be read (the validator then
/// refuses the module, so nothing is compiled either way). A module without code has zeros.
pub fn code_stats(b: &[u8]) -> Option<CodeStats> {
    if b.get(..4)? != b"\0asm" {
        return None;
    }
    let mut i = 8;
    let mut stats = CodeStats::default();
    while i < b.len() {
        let id = b[i];
        i += 1;
        let size = leb_u32(b, &mut i)? as usize;
        let end = i.checked_add(size).filter(|&e| e <= b.len())?;
        if id == 10 {
            let mut j = i;
            let count = leb_u32(b, &mut j)? as usize;
            for _ in 0..count {
                let body = leb_u32(b, &mut j)? as usize;
                j = j.checked_add(body).filter(|&e| e <= end)?;
                stats.functions += 1;
                stats.total += body;
                stats.largest = stats.largest.max(body);
            }
        }
        i = end;
    }
    Some(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_code_section() {
        let wasm = wat::parse_str(
            r#"(module
                (func (result i32) i32.const 1)
                (func (result i32) i32.const 1 i32.const 2 i32.add))"#,
        )
        .unwrap();
        let s = code_stats(&wasm).unwrap();
        assert_eq!(s.functions, 2);
        // Body: locals count (1) + code + end.
        assert_eq!(s.largest, 1 + 2 + 2 + 1 + 1);
        assert_eq!(s.total, (1 + 2 + 1) + s.largest);
        assert_eq!(
            code_stats(&wat::parse_str("(module)").unwrap()),
            Some(CodeStats::default())
        );
    }

    #[test]
    fn unreadable_framing_is_none() {
        let wasm = wat::parse_str("(module (func))").unwrap();
        assert_eq!(code_stats(b"garbage"), None);
        assert_eq!(code_stats(&wasm[..wasm.len() - 1]), None);
        let mut lying = wasm.clone();
        // The code section's size byte claims more than the module holds.
        let n = lying.len();
        lying[n - 4] = 0x7f;
        assert_eq!(code_stats(&lying), None);
    }
}
