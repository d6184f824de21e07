//! SSO token costs beside a plain subject, in one run, through the data plane's check handler
//! (body parse, identity, decision, answer) and forward-auth:
//! - `/v1/check` with `"subject"` vs with an SSO token (Ed25519) whose verification is cached
//!   (a client reusing its token) and not cached (its first request: signature verified);
//! - forward-auth with a trusted identity header vs the cached SSO token.
//!
//! `cargo bench --bench sso`; results in `bench/sso-results.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Method;

use portcullis::clock::Clock;
use portcullis::model::{Sso, SsoKey, SsoMapping};
use portcullis::server::tokens::sign::{sign, SigningKey};
use portcullis::server::{api, forward, Config, State};

const NOW: i64 = 1_790_000_000;
const ED1: &str = include_str!("../src/server/testdata/ed1.key");
const ED1_PUB: &str = include_str!("../src/server/testdata/ed1.pub");
const ISS: &str = "https://idp.example";

fn state() -> State {
    let mut data = portcullis::model::file::load_str(portcullis::engine::DEMO_DATA).unwrap();
    let femo = data.tenants.iter_mut().find(|t| t.id == "femo").unwrap();
    femo.sign_in.sso = Some(Sso {
        issuer: ISS.into(),
        keys: vec![SsoKey {
            kid: Some("idp-1".into()),
            pem: Some(ED1_PUB.into()),
            ..SsoKey::default()
        }],
        audience: Some("portcullis".into()),
        groups_claim: "groups".into(),
        subject_claim: "sub".into(),
        mappings: vec![
            SsoMapping {
                group: "hawthorne-ops".into(),
                role: "operator".into(),
                scope: "hawthorne".into(),
            },
            SsoMapping {
                group: "auditors".into(),
                role: "viewer".into(),
                scope: "femo".into(),
            },
        ],
    });
    let registry = portcullis::snapshot::Registry::new();
    portcullis::engine::install_all(&registry, &data).unwrap();
    let config = Config::parse(
        r#"
forward_auth:
  identity: bearer
  routes:
    - { methods: [GET], path: "/api/{tenant}/assets/{asset}", tenant: "{tenant}", action: "asset:read", resource: "{asset}" }
  tables:
    hdr:
      identity: { header: x-user }
      routes:
        - { methods: [GET], path: "/api/{tenant}/assets/{asset}", tenant: "{tenant}", action: "asset:read", resource: "{asset}" }
"#,
        "bench",
    )
    .unwrap();
    State::new(config, Arc::new(registry), Clock::fixed(NOW)).unwrap()
}

fn token(sub: &str) -> String {
    let claims = serde_json::json!({
        "iss": ISS, "sub": sub, "aud": "portcullis",
        "groups": ["staff", "hawthorne-ops", "auditors", "coffee-club"],
        "iat": NOW, "exp": NOW + 3600,
    });
    sign(
        &SigningKey::EdDsaPem(ED1),
        Some("idp-1"),
        &claims.to_string(),
    )
    .unwrap()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-method", HeaderValue::from_static("GET"));
    h.insert(
        "x-forwarded-uri",
        HeaderValue::from_static("/api/femo/assets/press-7"),
    );
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn check(state: &State, body: &[u8]) -> bool {
    let req = api::parse_check(body).unwrap();
    let snap = state.registry.get(&req.tenant).unwrap();
    let out = api::check(state, &snap, &req).unwrap();
    out.starts_with(b"{\"allowed\":true")
}

fn bench_check(c: &mut Criterion) {
    let state = state();
    let mut g = c.benchmark_group("check");
    let plain =
        br#"{"tenant":"femo","subject":"alice","action":"asset:operate","resource":"press-7"}"#;
    assert!(check(&state, plain));
    g.bench_function("subject", |b| b.iter(|| check(&state, plain)));
    let t = token("jane@idp.example");
    let body = format!(
        r#"{{"tenant":"femo","token":"{t}","action":"asset:operate","resource":"press-7"}}"#
    );
    assert!(check(&state, body.as_bytes()));
    g.bench_function("sso_token_cached", |b| {
        b.iter(|| check(&state, body.as_bytes()))
    });
    let mut n = 0u64;
    g.bench_function("sso_token_first_use", |b| {
        b.iter_batched(
            || {
                n += 1;
                let t = token(&format!("u{n}@idp.example"));
                format!(
                    r#"{{"tenant":"femo","token":"{t}","action":"asset:operate","resource":"press-7"}}"#
                )
            },
            |body| check(&state, body.as_bytes()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_forward(c: &mut Criterion) {
    let state = state();
    let mut g = c.benchmark_group("forward_auth");
    let ok = |r: Result<portcullis::server::Resp, _>| r.unwrap().status().as_u16() == 200;
    let hdr = headers(&[("x-user", "alice")]);
    assert!(ok(forward::handle(
        &state,
        &Method::GET,
        "@hdr",
        None,
        &hdr
    )));
    g.bench_function("trusted_header", |b| {
        b.iter(|| forward::handle(&state, &Method::GET, "@hdr", None, &hdr))
    });
    let t = token("jane@idp.example");
    let sso = headers(&[("authorization", &format!("Bearer {t}"))]);
    assert!(ok(forward::handle(&state, &Method::GET, "", None, &sso)));
    g.bench_function("sso_token_cached", |b| {
        b.iter(|| forward::handle(&state, &Method::GET, "", None, &sso))
    });
    g.finish();
}

criterion_group!(benches, bench_check, bench_forward);
criterion_main!(benches);
