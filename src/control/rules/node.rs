//! Rules of node writes: create, rename/re-kind/move (no cycles), delete (no children, no
//! assignments scoped to it).

use super::{find, Fields, Rule};
use crate::control::doc::TenantDoc;
use crate::model::{check_id, Node};
use crate::store::Kind;

requests! {
    NodeCreate {
        pub id: String,
        pub kind: String,
        pub parent: Option<String>,
        pub name: Option<String>,
    }
    NodePatch {
        pub name: Option<String>,
        pub kind: Option<String>,
        /// Move the subtree under this node; `null` makes it a root.
        #[serde(default, with = "super::double_option")]
        pub parent: Option<Option<String>>,
    }
}

pub fn create_node(doc: &TenantDoc, req: &NodeCreate) -> Rule {
    let mut f = Fields::default();
    f.check("id", check_id("node id", &req.id));
    f.check("kind", check_id("node kind", &req.kind));
    if let Some(n) = &req.name {
        f.check("name", crate::model::check_text("name", n));
    }
    if let Some(p) = &req.parent {
        if !doc.nodes.contains_key(p) {
            f.push("parent", format!("unknown parent node '{p}'"));
        }
    }
    f.done()?;
    super::absent(&doc.nodes, Kind::Node, &req.id)?;
    let n = Node {
        id: req.id.clone(),
        kind: req.kind.clone(),
        parent: req.parent.clone(),
        name: req.name.clone(),
    };
    Ok(super::created(Kind::Node, &n.id, &n))
}

/// Is `ancestor` equal to `node` or above it?
fn is_ancestor_or_self(doc: &TenantDoc, ancestor: &str, node: &str) -> bool {
    let mut cur = Some(node.to_string());
    let mut steps = 0;
    while let Some(c) = cur {
        if c == ancestor {
            return true;
        }
        steps += 1;
        if steps > doc.nodes.len() + 1 {
            return true; // corrupt (cycle): treat as unsafe
        }
        cur = doc.nodes.get(&c).and_then(|n| n.parent.clone());
    }
    false
}

pub fn update_node(doc: &TenantDoc, id: &str, patch: &NodePatch) -> Rule {
    super::edit(&doc.nodes, Kind::Node, id, |_, n, f| {
        if let Some(name) = &patch.name {
            f.check("name", crate::model::check_text("name", name));
            n.name = Some(name.clone());
        }
        if let Some(k) = &patch.kind {
            f.check("kind", check_id("node kind", k));
            n.kind = k.clone();
        }
        let Some(parent) = &patch.parent else {
            return Ok("node.update");
        };
        if let Some(p) = parent {
            if !doc.nodes.contains_key(p) {
                f.push("parent", format!("unknown parent node '{p}'"));
            } else if is_ancestor_or_self(doc, id, p) {
                f.push(
                    "parent",
                    format!("moving '{id}' under '{p}' would create a cycle"),
                );
            }
        }
        let moved = n.parent != *parent;
        n.parent = parent.clone();
        Ok(if moved { "node.move" } else { "node.update" })
    })
}

pub fn delete_node(doc: &TenantDoc, id: &str) -> Rule {
    let cur = find(&doc.nodes, "node", id)?;
    let children = doc
        .nodes
        .values()
        .filter(|n| n.parent.as_deref() == Some(id))
        .count();
    super::unused(children, || {
        format!("node '{id}' has {children} child node(s); move or delete them first")
    })?;
    let what = format!("node '{id}' is the scope of");
    super::unassigned(doc, |a| a.scope == id, &what)?;
    let n = super::tenant::sso_uses(doc, |m| m.scope == id);
    super::unused(n, || {
        format!("node '{id}' is the scope of {n} SSO mapping(s); change the tenant's sso first")
    })?;
    Ok(super::deleted(Kind::Node, id, cur, Vec::new()))
}
