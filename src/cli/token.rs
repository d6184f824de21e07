//! `token`: mint a JWT for development and tests.

use std::path::PathBuf;
use std::process::ExitCode;

use portcullis::clock;
use portcullis::server::tokens::sign::{sign, SigningKey};
use portcullis::server::Config;

#[derive(clap::Args)]
pub struct TokenArgs {
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
    /// Tenant id (the tenant claim; SSO tokens of an identity provider carry none).
    #[arg(long)]
    tenant: Option<String>,
    /// Issuer (`iss`), instead of the config's (e.g. a tenant's SSO issuer).
    #[arg(long)]
    iss: Option<String>,
    /// Audience (`aud`), instead of the config's.
    #[arg(long)]
    aud: Option<String>,
    /// Group names, comma-separated: a `groups` claim (as an identity provider sends for SSO).
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
    /// Name of the groups claim.
    #[arg(long, default_value = "groups")]
    groups_claim: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
}

pub fn run(a: &TokenArgs) -> Result<ExitCode, String> {
    super::out(&mint(a)?)?;
    Ok(ExitCode::SUCCESS)
}

fn mint(a: &TokenArgs) -> Result<String, String> {
    let config = match &a.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let t = &config.tokens;
    let now = clock::unix_now();
    let mut claims = serde_json::Map::new();
    claims.insert(t.subject_claim.clone(), a.sub.clone().into());
    if let Some(tenant) = &a.tenant {
        claims.insert(t.tenant_claim.clone(), tenant.clone().into());
    }
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(a.ttl).into());
    if let Some(iss) = a.iss.as_ref().or(t.issuer.as_ref()) {
        claims.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = a.aud.as_ref().or(t.audience.as_ref()) {
        claims.insert("aud".into(), aud.clone().into());
    }
    if let Some(groups) = &a.groups {
        claims.insert(a.groups_claim.clone(), groups.clone().into());
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
