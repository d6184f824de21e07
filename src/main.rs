//! The `portcullis` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::engine::{self, DEMO_DATA};
use portcullis::model::file::{self, DataFile};
use portcullis::snapshot::Registry;
use portcullis::{clock, model};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Multi-tenant authorization sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: data-plane API on the embedded default (demo data unless --data).
    Serve(ServeArgs),
    /// Load a data file and check its `tests:` assertions (exit 1 on any failure).
    Test {
        /// Data file (YAML or JSON).
        file: PathBuf,
    },
    /// Decide one request against a data file (exit 0 allow, 2 deny).
    Check(RequestArgs),
    /// Explain one decision against a data file, as JSON.
    Explain(RequestArgs),
    /// Mint a JWT for development and tests (production tokens come from your identity
    /// provider): signed with an HS256 key of the config, or with --private-key.
    Token(TokenArgs),
    /// Tenant WASM plugins: validate a module locally, or upload, list, show and delete a
    /// tenant's plugins through a running server's management API.
    Plugin {
        #[command(subcommand)]
        cmd: portcullis::cli_plugin::PluginCommand,
    },
    /// Write a generated benchmark world (s or m) as a JSON data file.
    Generate {
        /// World: `s` (1k nodes, 5k assignments) or `m` (50k nodes, 100k assignments).
        #[arg(long, default_value = "s")]
        world: String,
        /// Output file; standard output when omitted.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file (YAML or JSON); flags and PORTCULLIS_* variables override it.
    #[arg(long, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8180].
    #[arg(long, env = "PORTCULLIS_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Data file (YAML or JSON) [default: the bundled demo data].
    #[arg(long, env = "PORTCULLIS_DATA")]
    data: Option<PathBuf>,
    /// Durable store directory (control plane).
    #[arg(long, env = "PORTCULLIS_STORE")]
    store: Option<String>,
    /// Log filter, e.g. `info`, `debug`, `portcullis=trace`.
    #[arg(long, env = "PORTCULLIS_LOG")]
    log: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT")]
    log_format: Option<String>,
    /// Management API address (separate listener); default: same as --listen.
    #[arg(long, env = "PORTCULLIS_ADMIN_LISTEN")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Management API bearer token (at least 16 characters).
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Config file whose HS256 key signs the token (e.g. deploy/portcullis.yaml).
    #[arg(long, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    /// Key id: selects the config key and goes into the token header.
    #[arg(long)]
    kid: Option<String>,
    /// Sign with this private key (PEM) instead of a config secret; needs --alg.
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// RS256 or EdDSA, with --private-key.
    #[arg(long)]
    alg: Option<String>,
    /// User id (the subject claim).
    #[arg(long)]
    sub: String,
    /// Tenant id (the tenant claim).
    #[arg(long)]
    tenant: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
}

#[derive(clap::Args)]
struct RequestArgs {
    /// Data file; the bundled demo data when omitted.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    subject: String,
    #[arg(long)]
    action: String,
    #[arg(long)]
    resource: String,
    /// Decide at this time (RFC 3339 or unix seconds) instead of now.
    #[arg(long)]
    at: Option<String>,
    /// Request context (a JSON object) handed to plugin conditions.
    #[arg(long)]
    context: Option<String>,
}

fn load(path: Option<&PathBuf>) -> Result<DataFile, String> {
    match path {
        Some(p) => file::load_path(p).map_err(|e| format!("{}: {e}", p.display())),
        None => file::load_str(DEMO_DATA).map_err(|e| format!("bundled demo data: {e}")),
    }
}

fn registry(data: &DataFile) -> Result<Registry, String> {
    let r = engine::plugin_registry();
    engine::install_all(&r, data).map_err(|e| e.to_string())?;
    Ok(r)
}

fn run() -> Result<ExitCode, String> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Plugin { cmd } => portcullis::cli_plugin::run(cmd),
        Command::Test { file } => {
            let data = load(Some(&file))?;
            let reg = registry(&data)?;
            let failures = engine::run_tests(&reg, &data, clock::unix_now());
            for f in &failures {
                println!("FAIL {f}");
            }
            let total = data.tests.len();
            println!(
                "{} passed, {} failed",
                total - failures.len(),
                failures.len()
            );
            Ok(if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Generate { world, out } => {
            let tenants = match world.to_ascii_lowercase().as_str() {
                "s" => portcullis::worlds::world_s(),
                "m" => portcullis::worlds::world_m(),
                other => return Err(format!("unknown world '{other}' (expected s or m)")),
            };
            let text = file::to_json(&tenants, &[]);
            match out {
                Some(p) => std::fs::write(&p, text)
                    .map_err(|e| format!("cannot write '{}': {e}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(a) => {
            println!("{}", mint(&a)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(a) | Command::Explain(a) if a.tenant.is_empty() => {
            Err("--tenant must not be empty".into())
        }
        Command::Check(a) => decide_one(&a, false),
        Command::Explain(a) => decide_one(&a, true),
    }
}

/// `check` and `explain`: one decision on the data file, printed as a line or as the
/// explanation's JSON; exit 0 on allow, 2 on deny.
fn decide_one(a: &RequestArgs, explain: bool) -> Result<ExitCode, String> {
    let (reg, now) = request_setup(a)?;
    let snap = reg
        .get(&a.tenant)
        .ok_or_else(|| format!("unknown tenant '{}'", a.tenant))?;
    let ctx = context_arg(a)?;
    let req = engine::Request {
        subject: &a.subject,
        action: &a.action,
        now,
        context: ctx.as_deref(),
    };
    let allowed = if explain {
        let e = req.explain(&snap, &a.resource);
        println!(
            "{}",
            serde_json::to_string_pretty(&e).map_err(|e| e.to_string())?
        );
        e.allowed
    } else {
        let d = req.check(&snap, &a.resource);
        println!(
            "{} ({}) at revision {}",
            if d.allowed { "allow" } else { "deny" },
            d.reason.code(),
            snap.revision()
        );
        d.allowed
    };
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn mint(a: &TokenArgs) -> Result<String, String> {
    use portcullis::server::tokens::sign::{sign, SigningKey};
    use portcullis::server::Config;
    let config = match &a.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let t = &config.tokens;
    let now = clock::unix_now();
    let mut claims = serde_json::Map::new();
    claims.insert(t.subject_claim.clone(), a.sub.clone().into());
    claims.insert(t.tenant_claim.clone(), a.tenant.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(a.ttl).into());
    if let Some(iss) = &t.issuer {
        claims.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = &t.audience {
        claims.insert("aud".into(), aud.clone().into());
    }
    let claims = serde_json::Value::Object(claims).to_string();
    if let Some(path) = &a.private_key {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
        let key = match a.alg.as_deref() {
            Some("RS256") => SigningKey::Rs256Pem(&pem),
            Some("EdDSA") => SigningKey::EdDsaPem(&pem),
            _ => return Err("--private-key needs --alg RS256 or --alg EdDSA".into()),
        };
        return sign(&key, a.kid.as_deref(), &claims);
    }
    let key = t
        .keys
        .iter()
        .filter(|k| k.alg == "HS256")
        .find(|k| a.kid.is_none() || k.kid == a.kid)
        .ok_or("no HS256 key in the config (use --config, or --private-key with --alg)")?;
    let secret = match (&key.secret, &key.secret_file) {
        (Some(s), _) => s.0.clone(),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read '{}': {e}", p.display()))?
            .trim()
            .to_string(),
        (None, None) => return Err("the HS256 key has no secret".into()),
    };
    sign(
        &SigningKey::Hs256(secret.as_bytes()),
        key.kid.as_deref(),
        &claims,
    )
}

/// `--context`, checked as the server checks a request's context.
fn context_arg(a: &RequestArgs) -> Result<Option<String>, String> {
    match &a.context {
        None => Ok(None),
        Some(c) => portcullis::plugin::check_context(c)
            .map(|()| Some(c.clone()))
            .map_err(|e| format!("--context: {e}")),
    }
}

fn request_setup(a: &RequestArgs) -> Result<(Registry, i64), String> {
    let data = load(a.data.as_ref())?;
    let now = match &a.at {
        Some(t) => model::parse_timestamp(t)?,
        None => clock::unix_now(),
    };
    Ok((registry(&data)?, now))
}

fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    use portcullis::server::Config;
    let mut config = match &args.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data {
        config.data = Some(d);
    }
    if let Some(s) = args.store {
        config.store = Some(s);
    }
    if let Some(l) = args.log {
        config.log = l;
    }
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    if let Some(a) = args.admin_listen {
        config.admin_listen = Some(a);
    }
    if let Some(t) = args.admin_token {
        config.admin_token = Some(t);
    }
    config.validate().map_err(|e| e.to_string())?;
    init_logging(&config)?;

    // Load data, open the store, seed and compile everything before binding: bad data or an
    // unusable store exits before any port is open.
    let data = load(config.data.as_ref())?;
    let token = match config.admin_token.clone() {
        Some(t) => t,
        None => {
            let t = portcullis::app::random_token().map_err(|e| {
                format!("no admin_token configured and the OS random source failed: {e}")
            })?;
            tracing::warn!(token = %t, "no admin_token configured (PORTCULLIS_ADMIN_TOKEN); generated one for this run");
            t
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portcullis")
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(async move {
        let state = portcullis::app::start(config, &data, Some(token))
            .await
            .map_err(|e| e.to_string())?;
        portcullis::app::serve(state)
            .await
            .map_err(|e| format!("server: {e}"))
    })?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(config: &portcullis::server::Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .map_err(|e| format!("invalid log filter '{}': {e}", config.log))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let res = if config.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    res.map_err(|e| format!("cannot initialise logging: {e}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::from(1)
        }
    }
}
