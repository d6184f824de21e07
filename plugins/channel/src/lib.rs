//! Access channel: the grant applies only when `context.channel` is `console` (e.g. the plant's
//! control-room console, not the mobile app). Otherwise the plugin abstains.
#![cfg_attr(target_arch = "wasm32", no_std)]

use portcullis_plugin_sdk::{export_plugin, set_reason, Input, Verdict};

fn evaluate(input: &Input) -> Verdict {
    match input.context().find("channel") {
        Some("console") => Verdict::Allow,
        Some(_) => {
            set_reason("this role applies only on the console channel");
            Verdict::Abstain
        }
        None => {
            set_reason("context.channel is missing");
            Verdict::Abstain
        }
    }
}

export_plugin!(evaluate);
