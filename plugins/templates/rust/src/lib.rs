//! __NAME__: a Portcullis tenant plugin (plugin ABI v1).
//!
//! The rule — a starting point, edit it: reads apply as granted; any other action applies only
//! with a maintenance ticket (`context.ticket`, `MW-` and digits) inside the UTC maintenance
//! window 22:00–06:00. Otherwise the grant does not apply: the plugin abstains with a reason
//! (other grants of the subject may still allow). A malformed ticket vetoes the whole check.
//!
//! `./build.sh` builds `__NAME__.wasm`; `cargo test` runs the tests below natively (no wasm).
#![cfg_attr(target_arch = "wasm32", no_std)]

use portcullis_plugin_sdk::{export_plugin, set_reason, time, Input, Verdict};

/// The maintenance window, UTC hours `[start, end)`; wraps midnight.
const WINDOW: (u32, u32) = (22, 6);

/// `MW-` followed by 1 to 8 digits.
fn valid_ticket(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() > 3 && b.len() <= 11 && b.starts_with(b"MW-") && b[3..].iter().all(|c| c.is_ascii_digit())
}

fn evaluate(input: &Input) -> Verdict {
    if input.verb() == "read" {
        return Verdict::Allow;
    }
    match input.get_str("ticket") {
        None => {
            set_reason("no maintenance ticket (context.ticket: MW-nnnn)");
            return Verdict::Abstain;
        }
        Some(t) if !valid_ticket(t) => {
            set_reason("malformed maintenance ticket");
            return Verdict::Deny;
        }
        Some(_) => {}
    }
    if !time::in_hours(input.now(), WINDOW.0, WINDOW.1) {
        set_reason("outside the maintenance window (22:00-06:00 UTC)");
        return Verdict::Abstain;
    }
    Verdict::Allow
}

export_plugin!(evaluate);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin_sdk::{last_reason, InputBuilder};

    /// The verdict and reason for an `asset:operate` at `at` with `context`.
    fn operate(at: &str, context: &str) -> (Verdict, String) {
        let bytes = InputBuilder::new()
            .action("asset:operate")
            .at(at)
            .context(context)
            .build();
        let v = evaluate(&Input::new(&bytes).unwrap());
        (v, last_reason())
    }

    #[test]
    fn reads_apply() {
        let bytes = InputBuilder::new().action("asset:read").build();
        assert_eq!(evaluate(&Input::new(&bytes).unwrap()), Verdict::Allow);
    }

    #[test]
    fn a_ticket_inside_the_window_applies() {
        let ctx = r#"{"ticket": "MW-1234"}"#;
        assert_eq!(operate("2026-01-05T23:00:00Z", ctx).0, Verdict::Allow);
        assert_eq!(operate("2026-01-06T05:59:59Z", ctx).0, Verdict::Allow);
    }

    #[test]
    fn otherwise_the_grant_does_not_apply() {
        let (v, why) = operate("2026-01-05T12:00:00Z", r#"{"ticket": "MW-1234"}"#);
        assert_eq!((v, why.as_str()), (Verdict::Abstain, "outside the maintenance window (22:00-06:00 UTC)"));
        let (v, why) = operate("2026-01-05T23:00:00Z", "{}");
        assert_eq!(v, Verdict::Abstain);
        assert!(why.starts_with("no maintenance ticket"), "{why}");
        let (v, _) = operate("2026-01-05T23:00:00Z", r#"{"ticket": "CHG-1"}"#);
        assert_eq!(v, Verdict::Deny);
    }
}
