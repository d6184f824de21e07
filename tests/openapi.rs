#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `deploy/openapi.json` against the code: a valid OpenAPI 3 document whose `$ref`s resolve,
//! whose paths are exactly the routes the server handles, whose enums are the code's, whose
//! request schemas are the request types' fields, and whose data-plane examples are what the
//! handlers answer.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use portcullis::control::rules;
use portcullis::decide::{GrantOutcome, Reason};
use portcullis::model::{
    Channel, GroupStatus, LogoutPeriod, Quotas, Rbac, TenantStatus, UserKind, UserStatus,
};
use portcullis::server::{api, metrics::ERROR_CODES, Config, State};
use portcullis::store::Kind;

/// Every (method, path template) the server answers, read off `route` in `src/server/router.rs`
/// and `handle` in `src/server/admin/mod.rs`. A route added to the code must be added here and to
/// the document; a path in the document that the code does not route fails too.
const ROUTES: &[(&str, &str)] = &[
    // src/server/router.rs
    ("get", "/healthz"),
    ("head", "/healthz"),
    ("get", "/readyz"),
    ("head", "/readyz"),
    ("get", "/metrics"),
    ("post", "/v1/check"),
    ("post", "/v1/check/batch"),
    ("post", "/v1/filter"),
    ("post", "/v1/scopes"),
    ("post", "/v1/explain"),
    ("get", "/.well-known/jwks.json"),
    ("head", "/.well-known/jwks.json"),
    // src/server/admin/mod.rs
    ("get", "/v1/openapi.json"),
    ("get", "/v1/users"),
    ("get", "/v1/fleet/sidecars"),
    ("get", "/v1/tenants"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants/{tenant}"),
    ("patch", "/v1/tenants/{tenant}"),
    ("delete", "/v1/tenants/{tenant}"),
    ("get", "/v1/tenants/{tenant}/audit"),
    ("get", "/v1/tenants/{tenant}/audit/{revision}"),
    ("get", "/v1/tenants/{tenant}/users/overview"),
    ("get", "/v1/tenants/{tenant}/nodes"),
    ("post", "/v1/tenants/{tenant}/nodes"),
    ("get", "/v1/tenants/{tenant}/nodes/{node}"),
    ("patch", "/v1/tenants/{tenant}/nodes/{node}"),
    ("delete", "/v1/tenants/{tenant}/nodes/{node}"),
    ("get", "/v1/tenants/{tenant}/users"),
    ("post", "/v1/tenants/{tenant}/users"),
    ("get", "/v1/tenants/{tenant}/users/{user}"),
    ("patch", "/v1/tenants/{tenant}/users/{user}"),
    ("delete", "/v1/tenants/{tenant}/users/{user}"),
    ("post", "/v1/tenants/{tenant}/users/{user}/activate"),
    ("post", "/v1/tenants/{tenant}/users/{user}/deactivate"),
    ("post", "/v1/tenants/{tenant}/users/{user}/restore"),
    ("post", "/v1/tenants/{tenant}/users/{user}/delete"),
    ("post", "/v1/tenants/{tenant}/users/{user}/erase"),
    ("post", "/v1/tenants/{tenant}/users/{user}/login"),
    ("get", "/v1/tenants/{tenant}/groups"),
    ("post", "/v1/tenants/{tenant}/groups"),
    ("get", "/v1/tenants/{tenant}/groups/{group}"),
    ("patch", "/v1/tenants/{tenant}/groups/{group}"),
    ("delete", "/v1/tenants/{tenant}/groups/{group}"),
    ("post", "/v1/tenants/{tenant}/groups/{group}/members"),
    (
        "delete",
        "/v1/tenants/{tenant}/groups/{group}/members/{member}",
    ),
    ("get", "/v1/tenants/{tenant}/groups/{group}/recipients"),
    ("get", "/v1/tenants/{tenant}/notification-rules"),
    ("post", "/v1/tenants/{tenant}/notification-rules"),
    ("get", "/v1/tenants/{tenant}/notification-rules/{rule}"),
    ("patch", "/v1/tenants/{tenant}/notification-rules/{rule}"),
    ("delete", "/v1/tenants/{tenant}/notification-rules/{rule}"),
    (
        "get",
        "/v1/tenants/{tenant}/notification-rules/{rule}/recipients",
    ),
    ("get", "/v1/tenants/{tenant}/roles"),
    ("post", "/v1/tenants/{tenant}/roles"),
    ("get", "/v1/tenants/{tenant}/roles/{role}"),
    ("patch", "/v1/tenants/{tenant}/roles/{role}"),
    ("delete", "/v1/tenants/{tenant}/roles/{role}"),
    ("get", "/v1/tenants/{tenant}/assignments"),
    ("post", "/v1/tenants/{tenant}/assignments"),
    ("get", "/v1/tenants/{tenant}/assignments/{assignment}"),
    ("patch", "/v1/tenants/{tenant}/assignments/{assignment}"),
    ("delete", "/v1/tenants/{tenant}/assignments/{assignment}"),
    ("get", "/v1/tenants/{tenant}/plugins"),
    ("get", "/v1/tenants/{tenant}/plugins/{plugin}"),
    ("put", "/v1/tenants/{tenant}/plugins/{plugin}"),
    ("delete", "/v1/tenants/{tenant}/plugins/{plugin}"),
    ("get", "/v1/tenants/{tenant}/plugins/{plugin}/wasm"),
    ("get", "/v1/tenants/{tenant}/plugins/{plugin}/versions"),
    ("post", "/v1/tenants/{tenant}/plugins/{plugin}/rollback"),
    ("get", "/v1/tenants/{tenant}/plugins/{plugin}/canary"),
    ("patch", "/v1/tenants/{tenant}/plugins/{plugin}/canary"),
    ("delete", "/v1/tenants/{tenant}/plugins/{plugin}/canary"),
    (
        "post",
        "/v1/tenants/{tenant}/plugins/{plugin}/canary/promote",
    ),
    // src/server/admin/mod.rs, identity (handlers in src/server/admin/identity.rs)
    ("post", "/v1/tenants/{tenant}/sessions"),
    ("delete", "/v1/tenants/{tenant}/sessions/current"),
    ("post", "/v1/tenants/{tenant}/invitations/{token}/accept"),
    ("post", "/v1/tenants/{tenant}/users/{user}/password"),
    ("post", "/v1/tenants/{tenant}/users/{user}/invitation"),
    ("post", "/v1/tenants/{tenant}/users/{user}/cards"),
    ("delete", "/v1/tenants/{tenant}/users/{user}/cards"),
    ("get", "/v1/tenants/{tenant}/api-keys"),
    ("post", "/v1/tenants/{tenant}/api-keys"),
    ("delete", "/v1/tenants/{tenant}/api-keys/{key}"),
    ("post", "/v1/tenants/{tenant}/guests"),
    ("delete", "/v1/tenants/{tenant}/guests/{guest}"),
    ("post", "/v1/tenants/{tenant}/owner"),
    ("get", "/v1/audit"),
];

/// Management routes that need no bearer (`handle` in `src/server/admin/mod.rs` answers them
/// before `identity::authenticate`): sign-in and invitation acceptance carry their own
/// credentials, and the document itself is public.
const PUBLIC_MANAGEMENT: &[(&str, &str)] = &[
    ("get", "/v1/openapi.json"),
    ("post", "/v1/tenants/{tenant}/sessions"),
    ("post", "/v1/tenants/{tenant}/invitations/{token}/accept"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/openapi.json");
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        text,
        portcullis::server::admin::OPENAPI,
        "the served document is the file"
    );
    serde_json::from_str(&text).expect("deploy/openapi.json is JSON")
}

/// Follows a local `$ref` (panics on any other kind).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    let mut v = v;
    let mut hops = 0;
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let ptr = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = doc
            .pointer(ptr)
            .unwrap_or_else(|| panic!("unresolved $ref {r}"));
        hops += 1;
        assert!(hops < 16, "$ref loop at {r}");
    }
    v
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), op));
            }
        }
    }
    out
}

fn is_management(path: &str) -> bool {
    path.starts_with("/v1/tenants")
        || path == "/v1/users"
        || path == "/v1/audit"
        || path == "/v1/fleet/sidecars"
        || path == "/v1/openapi.json"
}

fn needs_bearer(method: &str, path: &str) -> bool {
    is_management(path) && !PUBLIC_MANAGEMENT.contains(&(method, path))
}

fn string_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn schema_enum(doc: &Value, name: &str) -> BTreeSet<String> {
    string_set(&doc["components"]["schemas"][name]["enum"])
}

#[test]
fn is_openapi_3_and_every_ref_resolves() {
    let doc = doc();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "openapi is {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    fn walk(doc: &Value, v: &Value, at: &str, n: &mut usize) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref") {
                    let r = r
                        .as_str()
                        .unwrap_or_else(|| panic!("$ref at {at} not a string"));
                    let ptr = r
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("non-local $ref {r} at {at}"));
                    assert!(
                        doc.pointer(ptr).is_some(),
                        "$ref {r} at {at} does not resolve"
                    );
                    *n += 1;
                }
                for (k, x) in m {
                    walk(doc, x, &format!("{at}/{k}"), n);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(doc, x, &format!("{at}/{i}"), n);
                }
            }
            _ => {}
        }
    }
    let mut n = 0;
    walk(&doc, &doc, "", &mut n);
    assert!(n > 100, "only {n} $refs: components are not reused");
}

#[test]
fn paths_are_exactly_the_routes_of_the_code() {
    let doc = doc();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routed.len(), ROUTES.len(), "duplicate in ROUTES");
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    // Path items hold nothing but operations (and shared parameters/summary/description).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for k in item.as_object().unwrap().keys() {
            assert!(
                METHODS.contains(&k.as_str())
                    || matches!(k.as_str(), "parameters" | "summary" | "description"),
                "{path}: unexpected member {k}"
            );
        }
    }
}

#[test]
fn operations_are_well_formed() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let at = format!("{method} {path}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(
            ids.insert(id.to_string()),
            "{at}: duplicate operationId {id}"
        );
        // Every template parameter is declared as a path parameter, and nothing more.
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| resolve(&doc, p))
                    .filter(|p| p["in"] == "path")
                    .map(|p| {
                        assert_eq!(p["required"], true, "{at}: path parameter not required");
                        p["name"].as_str().unwrap().to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(in_template, declared, "{at}: path parameters");
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{at}: no responses");
        for (status, r) in responses {
            assert!(
                resolve(&doc, r)["description"].is_string(),
                "{at} {status}: no description"
            );
            let code: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{at}: status {status}"));
            if code >= 400 && !matches!((path.as_str(), code), ("/readyz", 503)) {
                let schema = &resolve(&doc, r)["content"]["application/json"]["schema"];
                let schema = resolve(&doc, schema);
                let is_error = schema == &doc["components"]["schemas"]["Error"]
                    || schema == &doc["components"]["schemas"]["ValidationError"];
                assert!(is_error, "{at} {status}: error body is not Error");
            }
        }
    }
}

#[test]
fn management_routes_need_the_bearer_token_and_the_data_plane_does_not() {
    let doc = doc();
    assert!(doc.get("security").is_none(), "no global security");
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    let unauthenticated = json!({"$ref": "#/components/responses/Unauthenticated"});
    for (method, path, op) in operations(&doc) {
        if needs_bearer(&method, &path) {
            assert_eq!(
                op["security"],
                json!([{"bearerAuth": []}]),
                "{method} {path}"
            );
            assert_eq!(
                op["responses"]["401"], unauthenticated,
                "{method} {path}: no 401"
            );
            // `permit`: a signed-in user who does not manage the tenant, another tenant's
            // credential, or a platform-wide endpoint without the platform token.
            assert!(
                op["responses"]["403"].is_object(),
                "{method} {path}: no 403"
            );
        } else if is_management(&path) {
            // Explicitly open, and never the bearer's 401.
            assert_eq!(op["security"], json!([]), "{method} {path} needs no bearer");
            assert_ne!(
                op["responses"]["401"], unauthenticated,
                "{method} {path} checks no bearer"
            );
        } else {
            assert!(
                op.get("security").is_none(),
                "{method} {path} needs no auth"
            );
        }
    }
}

#[test]
fn error_codes_are_the_codes_of_the_code() {
    let doc = doc();
    let documented = schema_enum(&doc, "ErrorCode");
    let code: BTreeSet<String> = ERROR_CODES.iter().map(|c| c.to_string()).collect();
    let missing: Vec<_> = code.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "ERROR_CODES missing from ErrorCode: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "ErrorCode values not in ERROR_CODES: {extra:?}"
    );
}

/// Serializes every variant; the exhaustive `match` breaks the build when a variant is added.
fn names<T: serde::Serialize + Copy>(all: &[T], exhaustive: fn(T)) -> BTreeSet<String> {
    all.iter()
        .map(|v| {
            exhaustive(*v);
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn enums_are_the_code_enums() {
    let doc = doc();
    let reasons: BTreeSet<String> = Reason::ALL.iter().map(|r| r.code().to_string()).collect();
    assert_eq!(schema_enum(&doc, "ReasonCode"), reasons, "ReasonCode");

    use GrantOutcome as G;
    let outcomes = names(
        &[
            G::Matched,
            G::AlsoGrants,
            G::WouldGrant,
            G::ScopeMismatch,
            G::RoleLacksPermission,
            G::Expired,
            G::GroupInactive,
            G::PluginDenied,
            G::ConditionNotMet,
        ],
        |o| match o {
            G::Matched
            | G::AlsoGrants
            | G::WouldGrant
            | G::ScopeMismatch
            | G::RoleLacksPermission
            | G::Expired
            | G::GroupInactive
            | G::PluginDenied
            | G::ConditionNotMet => {}
        },
    );
    assert_eq!(schema_enum(&doc, "GrantOutcome"), outcomes, "GrantOutcome");

    let rbac = names(&[Rbac::None, Rbac::Basic, Rbac::Enterprise], |r| match r {
        Rbac::None | Rbac::Basic | Rbac::Enterprise => {}
    });
    assert_eq!(schema_enum(&doc, "Rbac"), rbac, "Rbac");

    let ts = names(
        &[TenantStatus::Active, TenantStatus::Suspended],
        |s| match s {
            TenantStatus::Active | TenantStatus::Suspended => {}
        },
    );
    assert_eq!(schema_enum(&doc, "TenantStatus"), ts, "TenantStatus");

    let us = names(
        &[
            UserStatus::Active,
            UserStatus::Inactive,
            UserStatus::Deleted,
        ],
        |s| match s {
            UserStatus::Active | UserStatus::Inactive | UserStatus::Deleted => {}
        },
    );
    assert_eq!(schema_enum(&doc, "UserStatus"), us, "UserStatus");
    let create_status =
        string_set(&doc["components"]["schemas"]["UserCreate"]["properties"]["status"]["enum"]);
    assert_eq!(create_status, us, "UserCreate.status");

    let uk = names(
        &[
            UserKind::Owner,
            UserKind::Admin,
            UserKind::Member,
            UserKind::Guest,
        ],
        |k| match k {
            UserKind::Owner | UserKind::Admin | UserKind::Member | UserKind::Guest => {}
        },
    );
    assert_eq!(schema_enum(&doc, "UserKind"), uk, "UserKind");

    let ch = names(&[Channel::Console, Channel::Field], |c| match c {
        Channel::Console | Channel::Field => {}
    });
    assert_eq!(schema_enum(&doc, "Channel"), ch, "Channel");

    let gs = names(&[GroupStatus::Active, GroupStatus::Inactive], |s| match s {
        GroupStatus::Active | GroupStatus::Inactive => {}
    });
    assert_eq!(schema_enum(&doc, "GroupStatus"), gs, "GroupStatus");

    let kinds: BTreeSet<String> = Kind::ALL
        .iter()
        .map(|k| {
            serde_json::to_value(k)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        schema_enum(&doc, "RowKind"),
        kinds,
        "RowKind (audit changes)"
    );
}

// ---------------------------------------------------------------------------------------------
// Request bodies against the request types

type Parse = fn(&Value) -> Result<(), String>;

macro_rules! parser {
    ($t:ty) => {
        (|v: &Value| -> Result<(), String> {
            let text = v.to_string();
            serde_json::from_str::<$t>(&text)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }) as Parse
    };
}

/// Request schemas and the types the server deserializes them into.
fn request_types() -> Vec<(&'static str, Parse)> {
    vec![
        ("CheckRequest", parser!(api::CheckReq)),
        ("BatchCheckRequest", parser!(api::BatchReq)),
        (
            "BatchCheckItem",
            (|v: &Value| parser!(api::BatchReq)(&json!({"tenant": "t", "checks": [v]}))) as Parse,
        ),
        ("FilterRequest", parser!(api::FilterReq)),
        ("ScopesRequest", parser!(api::ScopesReq)),
        ("TenantCreate", parser!(rules::TenantCreate)),
        ("TenantPatch", parser!(rules::TenantPatch)),
        ("Quotas", parser!(Quotas)),
        ("NodeCreate", parser!(rules::NodeCreate)),
        ("NodePatch", parser!(rules::NodePatch)),
        ("UserCreate", parser!(rules::UserCreate)),
        ("UserPatch", parser!(rules::UserPatch)),
        ("GroupCreate", parser!(rules::GroupCreate)),
        ("GroupPatch", parser!(rules::GroupPatch)),
        ("RoleCreate", parser!(rules::RoleCreate)),
        ("RolePatch", parser!(rules::RolePatch)),
        ("AssignmentCreate", parser!(rules::AssignmentCreate)),
        ("AssignmentPatch", parser!(rules::AssignmentPatch)),
        (
            "NotificationRuleCreate",
            parser!(rules::NotificationRuleCreate),
        ),
        (
            "NotificationRulePatch",
            parser!(rules::NotificationRulePatch),
        ),
        ("PluginRollback", parser!(rules::PluginRollback)),
        ("CanaryPatch", parser!(rules::CanaryPatch)),
        ("ApiKeyCreate", parser!(rules::ApiKeyCreate)),
        ("GuestCreate", parser!(rules::GuestCreate)),
    ]
}

/// A value of `schema` with every property present.
fn sample(doc: &Value, schema: &Value) -> Value {
    let s = resolve(doc, schema);
    if let Some(p) = s.get("properties").and_then(Value::as_object) {
        return Value::Object(p.iter().map(|(k, v)| (k.clone(), sample(doc, v))).collect());
    }
    if let Some(e) = s.get("example") {
        return e.clone();
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    for k in ["allOf", "oneOf", "anyOf"] {
        if let Some(a) = s.get(k).and_then(Value::as_array) {
            return sample(doc, &a[0]);
        }
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") => json!("x"),
        Some("integer") => json!(1),
        Some("boolean") => json!(true),
        Some("array") => json!([sample(doc, &s["items"])]),
        Some("object") | None => json!({}),
        Some(t) => panic!("no sample for type {t}"),
    }
}

/// The field names serde lists when it rejects an unknown field.
fn expected_fields(err: &str) -> BTreeSet<String> {
    let (_, tail) = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("not an unknown-field error: {err}"));
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn request_schemas_are_the_request_types() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    for (name, parse) in request_types() {
        let schema = &schemas[name];
        assert_eq!(schema["type"], "object", "{name}");
        assert_eq!(
            schema["additionalProperties"], false,
            "{name}: the type denies unknown fields"
        );
        let props: BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let required: BTreeSet<String> = schema.get("required").map(string_set).unwrap_or_default();
        assert!(
            required.is_subset(&props),
            "{name}: required not in properties"
        );

        // Every documented property is accepted.
        let full = sample(&doc, schema);
        parse(&full).unwrap_or_else(|e| panic!("{name}: full sample {full} rejected: {e}"));
        // The type has no field the document lacks (serde names them all when it refuses one).
        let mut probe = full.clone();
        probe["zz_not_a_field"] = json!(1);
        let err = parse(&probe).expect_err("unknown fields are refused");
        assert_eq!(expected_fields(&err), props, "{name}: fields of the type");
        // Exactly the documented members are required.
        for r in &required {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(r);
            assert!(
                parse(&v).is_err(),
                "{name}: '{r}' is documented required but optional"
            );
        }
        let minimal: Value = full
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| required.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<serde_json::Map<_, _>>()
            .into();
        parse(&minimal).unwrap_or_else(|e| {
            panic!("{name}: only the required members {minimal} rejected: {e}")
        });
        // The schema's own example is accepted.
        if let Some(ex) = schema.get("example") {
            parse(ex).unwrap_or_else(|e| panic!("{name}: example rejected: {e}"));
        }
    }
    // Private request types, all `deny_unknown_fields`: `MemberAdd` is `struct M { user }` and
    // `OwnerTransfer` is `struct To { user }` in admin/writes.rs; in admin/identity.rs `SignIn` is `SignInRequest { email?, password?,
    // card?, channel? }`, `PasswordSet` is `PasswordBody { password }`, `CardAdd` is
    // `CardBody { card }`.
    for (name, fields, required) in PRIVATE_REQUEST_TYPES {
        let m = &schemas[*name];
        let props: BTreeSet<&str> = m["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(props, fields.iter().copied().collect(), "{name}: fields");
        assert_eq!(
            m.get("required").cloned().unwrap_or(json!([])),
            json!(required),
            "{name}: required"
        );
        assert_eq!(m["additionalProperties"], false, "{name}");
        let ex = &m["example"];
        conforms(&doc, m, ex).unwrap_or_else(|e| panic!("{name}: example {ex}: {e}"));
    }
    // Sign-in takes an email and a password, or a card: the document says exactly which.
    let sign_in = &schemas["SignIn"];
    for (body, ok) in [
        (json!({"email": "a@b.example", "password": "x"}), true),
        (json!({"card": "04A1B2C3", "channel": "field"}), true),
        (
            json!({"email": "a@b.example", "password": "x", "card": "c"}),
            false,
        ),
        (json!({"email": "a@b.example", "card": "c"}), false),
        (json!({"email": "a@b.example"}), false),
        (json!({}), false),
    ] {
        assert_eq!(conforms(&doc, sign_in, &body).is_ok(), ok, "SignIn {body}");
    }
}

/// Request types private to the server: (schema, fields, required).
const PRIVATE_REQUEST_TYPES: &[(&str, &[&str], &[&str])] = &[
    ("MemberAdd", &["user"], &["user"]),
    ("SignIn", &["email", "password", "card", "channel"], &[]),
    ("PasswordSet", &["password"], &["password"]),
    ("CardAdd", &["card"], &["card"]),
    ("OwnerTransfer", &["user"], &["user"]),
];

/// Whether `v` has the members `schema` requires and no others (`properties`,
/// `additionalProperties: false`, `required`, and `oneOf`/`anyOf`/`not` over those). Enough
/// for the bodies of the private request types; member values are not checked.
fn conforms(doc: &Value, schema: &Value, v: &Value) -> Result<(), String> {
    let s = resolve(doc, schema);
    let obj = v.as_object().ok_or("not an object")?;
    for r in s.get("required").map(string_set).unwrap_or_default() {
        if !obj.contains_key(&r) {
            return Err(format!("lacks '{r}'"));
        }
    }
    if let (Some(p), Some(false)) = (
        s.get("properties").and_then(Value::as_object),
        s.get("additionalProperties").and_then(Value::as_bool),
    ) {
        if let Some(k) = obj.keys().find(|k| !p.contains_key(*k)) {
            return Err(format!("unknown member '{k}'"));
        }
    }
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let n = alts.iter().filter(|a| conforms(doc, a, v).is_ok()).count();
        if n != 1 {
            return Err(format!("matches {n} of oneOf"));
        }
    }
    if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
        if !alts.iter().any(|a| conforms(doc, a, v).is_ok()) {
            return Err("matches none of anyOf".into());
        }
    }
    if let Some(not) = s.get("not") {
        if conforms(doc, not, v).is_ok() {
            return Err("matches 'not'".into());
        }
    }
    Ok(())
}

#[test]
fn logout_periods_are_the_documented_forms() {
    let doc = doc();
    let s = &doc["components"]["schemas"]["LogoutPeriod"];
    let hours = &s["oneOf"][0];
    assert_eq!(hours["minimum"], 1);
    assert_eq!(hours["maximum"], LogoutPeriod::MAX_HOURS);
    assert_eq!(
        doc["components"]["schemas"]["LogoutHours"]["maximum"],
        LogoutPeriod::MAX_HOURS
    );
    let parse = |v: Value| serde_json::from_value::<LogoutPeriod>(v).map(LogoutPeriod::hours);
    for (v, h) in [
        (json!(1), 1),
        (json!(720), 720),
        (json!("1d"), 22),
        (json!("5d"), 110),
        (json!("8h"), 8),
        (json!("12"), 12),
    ] {
        assert_eq!(parse(v.clone()).ok(), Some(h), "{v}");
    }
    let text = s["description"].as_str().unwrap();
    assert!(text.contains("`1d` (= 22 hours)") && text.contains("`5d` (= 110 hours)"));
    for v in [json!(0), json!(721), json!("2w"), json!("0h"), json!(-1)] {
        assert!(parse(v.clone()).is_err(), "{v} accepted");
    }
    // Every request schema with a `logout` takes this form.
    for name in [
        "TenantCreate",
        "TenantPatch",
        "UserCreate",
        "UserPatch",
        "GroupCreate",
        "GroupPatch",
    ] {
        let l = &doc["components"]["schemas"][name]["properties"]["logout"];
        let l = l.get("allOf").map_or(l, |a| &a[0]);
        assert_eq!(
            l["$ref"], "#/components/schemas/LogoutPeriod",
            "{name}.logout"
        );
    }
}

#[test]
fn every_request_body_is_checked_and_its_examples_parse() {
    let doc = doc();
    let types = request_types();
    for (method, path, op) in operations(&doc) {
        let Some(body) = op.get("requestBody") else {
            continue;
        };
        if body["content"].get("application/json").is_none() {
            // Binary uploads (plugin modules): no JSON request type to check.
            let types: Vec<&String> = body["content"].as_object().unwrap().keys().collect();
            assert_eq!(
                types,
                ["application/octet-stream", "application/wasm"],
                "{method} {path}"
            );
            continue;
        }
        let media = &body["content"]["application/json"];
        let name = media["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: body schema is not a component"))
            .trim_start_matches("#/components/schemas/");
        if let Some((_, fields, _)) = PRIVATE_REQUEST_TYPES.iter().find(|(n, ..)| *n == name) {
            let schema = &doc["components"]["schemas"][name];
            for (k, e) in media["examples"].as_object().into_iter().flatten() {
                conforms(&doc, schema, &e["value"])
                    .unwrap_or_else(|err| panic!("{method} {path} example {k}: {err}"));
                assert!(e["value"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .all(|k| fields.contains(&k.as_str())));
            }
            continue;
        }
        let parse = types
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{method} {path}: no request type for {name}"))
            .1;
        let examples = media["examples"].as_object();
        assert!(
            examples.is_some_and(|e| !e.is_empty()),
            "{method} {path}: no request examples"
        );
        for (k, e) in examples.into_iter().flatten() {
            parse(&e["value"]).unwrap_or_else(|err| panic!("{method} {path} example {k}: {err}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data-plane examples against the handlers, on the demo data

#[test]
fn data_plane_examples_are_what_the_handlers_answer() {
    let doc = doc();
    let data = portcullis::model::file::load_str(portcullis::engine::DEMO_DATA).unwrap();
    let registry = portcullis::snapshot::Registry::new();
    portcullis::engine::install_all(&registry, &data).unwrap();
    // 2026-11-01: after the expiry of the demo's only expiring assignment.
    let clock = portcullis::clock::Clock::fixed(1_793_491_200);
    let state = State::new(Config::default(), Arc::new(registry), clock).unwrap();

    let answer = |path: &str, req: &Value| -> Value {
        let text = req.to_string();
        let tenant = req["tenant"].as_str().unwrap();
        let snap = state.registry.get(tenant).unwrap();
        let out = match path {
            "/v1/check" => api::check(&state, &snap, &serde_json::from_str(&text).unwrap()),
            "/v1/explain" => api::explain(&state, &snap, &serde_json::from_str(&text).unwrap()),
            "/v1/check/batch" => api::batch(&state, &snap, &serde_json::from_str(&text).unwrap()),
            "/v1/filter" => api::filter(&state, &snap, &serde_json::from_str(&text).unwrap()),
            "/v1/scopes" => api::scopes(&state, &snap, &serde_json::from_str(&text).unwrap()),
            p => panic!("not a data-plane path: {p}"),
        }
        .unwrap_or_else(|e| panic!("{path} {req}: {e:?}"));
        serde_json::from_slice(&out).unwrap()
    };

    let mut compared = 0;
    for path in [
        "/v1/check",
        "/v1/check/batch",
        "/v1/filter",
        "/v1/scopes",
        "/v1/explain",
    ] {
        let op = &doc["paths"][path]["post"];
        let requests = op["requestBody"]["content"]["application/json"]["examples"]
            .as_object()
            .unwrap();
        let responses = op["responses"]["200"]["content"]["application/json"]["examples"]
            .as_object()
            .unwrap();
        for (k, resp) in responses {
            let req = &requests
                .get(k)
                .unwrap_or_else(|| panic!("{path}: response example {k} has no request"))["value"];
            assert_eq!(answer(path, req), resp["value"], "{path} example {k}");
            compared += 1;
        }
    }
    assert!(compared >= 5, "only {compared} examples compared");
}
