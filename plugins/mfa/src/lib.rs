//! Step-up MFA: reads apply as granted; anything else needs `context.mfa_age` (seconds since the
//! subject's last MFA, a number set by the gateway) of at most 300, else the whole check is vetoed.
//! Guests are vetoed for non-reads outright.
#![cfg_attr(target_arch = "wasm32", no_std)]

use portcullis_plugin_sdk::{export_plugin, parse_u64, set_reason, Input, Verdict};

const MAX_AGE: u64 = 300;

fn evaluate(input: &Input) -> Verdict {
    if input.verb() == "read" {
        return Verdict::Allow;
    }
    if input.attrs().find("kind") == Some("guest") {
        set_reason("guests cannot step up");
        return Verdict::Deny;
    }
    match input.context().find("mfa_age").and_then(parse_u64) {
        Some(age) if age <= MAX_AGE => Verdict::Allow,
        Some(_) => {
            set_reason("mfa is older than 300 s");
            Verdict::Deny
        }
        None => {
            set_reason("no mfa_age in context");
            Verdict::Deny
        }
    }
}

export_plugin!(evaluate);
