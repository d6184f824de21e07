//! Rules of notification-rule writes: an id, a display name, an event kind (an id such as
//! `alarm.raised`) and the target groups — at least one, each known and listed once. A group
//! cannot be deleted while a rule names it (see [`super::delete_group`]). Whom a rule reaches
//! is a read: `control::views::recipients`.

use super::{find, Fields, Rule};
use crate::control::doc::{NotificationRuleRow, TenantDoc};
use crate::model::check_id;
use crate::store::Kind;

/// Most target groups one rule may name.
pub const MAX_RULE_GROUPS: usize = 256;

requests! {
    NotificationRuleCreate {
        pub id: String,
        pub name: Option<String>,
        pub event: String,
        pub groups: Vec<String>,
    }
    NotificationRulePatch {
        pub name: Option<String>,
        pub event: Option<String>,
        pub groups: Option<Vec<String>>,
    }
}

fn check_groups(doc: &TenantDoc, groups: &[String], f: &mut Fields) {
    if groups.is_empty() {
        f.push(
            "groups",
            "a notification rule needs at least one target group",
        );
    }
    if groups.len() > MAX_RULE_GROUPS {
        f.push(
            "groups",
            format!("at most {MAX_RULE_GROUPS} target groups per rule"),
        );
        return;
    }
    for (i, g) in groups.iter().enumerate() {
        if !doc.groups.contains_key(g) {
            f.push(&format!("groups[{i}]"), format!("unknown group '{g}'"));
        } else if groups[..i].contains(g) {
            f.push(
                &format!("groups[{i}]"),
                format!("group '{g}' is listed twice"),
            );
        }
    }
}

pub fn create_notification_rule(doc: &TenantDoc, req: &NotificationRuleCreate) -> Rule {
    let mut f = Fields::default();
    f.check("id", check_id("notification rule id", &req.id));
    let name = super::name_or_id(&req.name, &req.id, &mut f);
    f.check("event", check_id("event kind", &req.event));
    check_groups(doc, &req.groups, &mut f);
    f.done()?;
    super::absent(&doc.notification_rules, Kind::NotificationRule, &req.id)?;
    let r = NotificationRuleRow {
        id: req.id.clone(),
        name,
        event: req.event.clone(),
        groups: req.groups.clone(),
    };
    Ok(super::created(Kind::NotificationRule, &r.id, &r))
}

pub fn update_notification_rule(doc: &TenantDoc, id: &str, patch: &NotificationRulePatch) -> Rule {
    super::edit(
        &doc.notification_rules,
        Kind::NotificationRule,
        id,
        |_, r, f| {
            super::rename(&patch.name, &mut r.name, f);
            if let Some(e) = &patch.event {
                f.check("event", check_id("event kind", e));
                r.event.clone_from(e);
            }
            if let Some(g) = &patch.groups {
                check_groups(doc, g, f);
                r.groups.clone_from(g);
            }
            Ok("notification_rule.update")
        },
    )
}

pub fn delete_notification_rule(doc: &TenantDoc, id: &str) -> Rule {
    let cur = find(&doc.notification_rules, "notification rule", id)?;
    Ok(super::deleted(Kind::NotificationRule, id, cur, Vec::new()))
}
