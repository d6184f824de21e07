//! Device attribute, for kiosk roles: the grant applies only to reads (`*:read`) made from a
//! device whose `context.device_class` is `public` (a shared kiosk screen). Anything else from a
//! public device is vetoed, so a kiosk can never act through another grant of its user; other
//! requests abstain (the kiosk grant simply does not apply). The host consults a plugin only for
//! grants that match the request, so give the kiosk role the actions it must veto (e.g. `*`).
#![cfg_attr(target_arch = "wasm32", no_std)]

use portcullis_plugin_sdk::{export_plugin, set_reason, Input, Verdict};

fn evaluate(input: &Input) -> Verdict {
    let public = input.context().find("device_class") == Some("public");
    match (public, input.verb() == "read") {
        (true, true) => Verdict::Allow,
        (true, false) => {
            set_reason("public devices may only read");
            Verdict::Deny
        }
        (false, _) => {
            set_reason("kiosk role applies only on public devices");
            Verdict::Abstain
        }
    }
}

export_plugin!(evaluate);
