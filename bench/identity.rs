//! Identity costs, side by side in one run:
//! - forward-auth with a trusted identity header vs a Portcullis session token (EdDSA), the
//!   token's signature cached (the steady state: a client reuses its token) and not cached (its
//!   first request);
//! - a data-plane API key (SHA-256 of the secret per request);
//! - sign-in: one argon2id verification (19 MiB, t=2, p=1), i.e. logins per second per core.
//!
//! `cargo bench --bench identity`; results in `bench/identity-results.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Method;

use portcullis::clock::Clock;
use portcullis::identity::session::{SessionClaims, SessionKind, ISSUER};
use portcullis::identity::{secret, SessionKeys};
use portcullis::model::Channel;
use portcullis::server::{forward, tokens::Tokens, Config, State};

const NOW: i64 = 1_790_000_000;

fn state() -> (State, SessionKeys) {
    let data = portcullis::model::file::load_str(portcullis::engine::DEMO_DATA).unwrap();
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
    let keys = SessionKeys::from_pems(&[(None, SessionKeys::generate_pem().unwrap())]).unwrap();
    let mut state = State::new(config, Arc::new(registry), Clock::fixed(NOW)).unwrap();
    state.tokens = Tokens::with_sessions(&state.config.tokens, &keys.public_keys()).unwrap();
    (state, keys)
}

fn token(keys: &SessionKeys, sid: &str) -> String {
    keys.sign(&SessionClaims {
        iss: ISSUER,
        sub: "alice",
        tenant: "femo",
        sid,
        sep: 0,
        ch: Channel::Console,
        knd: SessionKind::Session,
        iat: NOW,
        exp: NOW + 3600,
    })
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

fn bench_forward(c: &mut Criterion) {
    let (state, keys) = state();
    let mut g = c.benchmark_group("forward_auth");
    let hdr = headers(&[("x-user", "alice")]);
    let allowed = |r: Result<portcullis::server::Resp, _>| r.unwrap().status().as_u16() == 200;
    assert!(allowed(forward::handle(
        &state,
        &Method::GET,
        "@hdr",
        None,
        &hdr
    )));
    g.bench_function("trusted_header", |b| {
        b.iter(|| forward::handle(&state, &Method::GET, "@hdr", None, &hdr))
    });
    let t = token(&keys, "s1");
    let jwt = headers(&[("authorization", &format!("Bearer {t}"))]);
    assert!(allowed(forward::handle(
        &state,
        &Method::GET,
        "",
        None,
        &jwt
    )));
    g.bench_function("session_jwt_cached", |b| {
        b.iter(|| forward::handle(&state, &Method::GET, "", None, &jwt))
    });
    let mut n = 0u64;
    g.bench_function("session_jwt_first_use", |b| {
        b.iter_batched(
            || {
                n += 1;
                headers(&[(
                    "authorization",
                    &format!("Bearer {}", token(&keys, &format!("s{n}"))),
                )])
            },
            |h| forward::handle(&state, &Method::GET, "", None, &h),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_login(c: &mut Criterion) {
    let hash = secret::hash_password("Bench-pass-1").unwrap();
    let mut g = c.benchmark_group("sign_in");
    g.sample_size(20);
    g.bench_function("argon2id_verify", |b| {
        b.iter(|| secret::verify_password(&hash, "Bench-pass-1"))
    });
    g.finish();
}

criterion_group!(benches, bench_forward, bench_login);
criterion_main!(benches);
