//! Shift hours: the grant applies only within the shift the role is named for.
//!
//! The schedule is the role id's last two `-`-separated parts, as UTC hours: role
//! `night-shift-22-06` applies from 22:00 to 05:59 UTC, `day-shift-06-14` from 06:00 to 13:59.
//! A role without such a suffix takes the hours from the context members `shift_start` and
//! `shift_end` (numbers), for roles that delegate the schedule to a trusted caller. Outside the
//! shift the plugin abstains (other grants may still allow); no schedule at all denies.
#![cfg_attr(target_arch = "wasm32", no_std)]

use portcullis_plugin_sdk::{export_plugin, parse_u64, set_reason, Input, Verdict};

fn hour(s: &str) -> Option<u64> {
    if s.len() != 2 {
        return None;
    }
    parse_u64(s).filter(|h| *h <= 24)
}

/// (start, end) hours from a role id suffix `-HH-HH`.
fn from_role(role: &str) -> Option<(u64, u64)> {
    let mut parts = role.rsplit('-');
    let end = hour(parts.next()?)?;
    let start = hour(parts.next()?)?;
    Some((start, end))
}

fn from_context(input: &Input) -> Option<(u64, u64)> {
    let c = input.context();
    Some((
        parse_u64(c.find("shift_start")?)?,
        parse_u64(c.find("shift_end")?)?,
    ))
}

/// Whether `h` lies in `[start, end)`, wrapping over midnight when `end < start`.
pub fn in_shift(h: u64, start: u64, end: u64) -> bool {
    if start <= end {
        start <= h && h < end
    } else {
        h >= start || h < end
    }
}

fn evaluate(input: &Input) -> Verdict {
    let sched = match from_role(input.role()) {
        Some(s) => Some(s),
        None => from_context(input),
    };
    let (start, end) = match sched {
        Some(s) => s,
        None => {
            set_reason("no shift schedule for this role");
            return Verdict::Deny;
        }
    };
    let h = (input.now().rem_euclid(86_400) / 3_600) as u64;
    if in_shift(h, start, end) {
        Verdict::Allow
    } else {
        set_reason("outside the role's shift hours");
        Verdict::Abstain
    }
}

export_plugin!(evaluate);
