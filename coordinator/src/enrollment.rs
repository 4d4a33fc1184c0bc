//! Enrollment tokens: made from 32 random bytes, shown once, kept only as
//! their SHA-256; and the audit line of every enrollment, renewal and
//! revocation. No token text is ever logged or stored.
use base64::Engine;
use sha2::{Digest, Sha256};

/// Prefix of every enrollment token, so that one found in a file or a paste
/// is recognisable (and distinct from operator tokens, `psm_`).
pub const TOKEN_PREFIX: &str = "pse_";
/// Longest token text we hash; anything longer is not one of ours.
pub const MAX_TOKEN_LEN: usize = 128;

/// A new token and its hash.
pub fn new_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes);
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = token_hash(&token);
    (token, hash)
}

/// The catalog's key of a token: SHA-256 of its text (trimmed).
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// One audit record of a worker-identity event (Enroll, RenewCertificate):
/// a row in the audit log (actor `worker:<name>`, or '' for a token that
/// names no worker) and a log line (target `pgsnapman::audit`).
pub async fn audit(
    catalog: &crate::catalog::Catalog,
    actor: &str,
    method: &str,
    args: &serde_json::Value,
    peer: Option<&str>,
    ok: bool,
    detail: &str,
) {
    let actor = if actor.is_empty() {
        String::new()
    } else {
        format!("worker:{actor}")
    };
    if ok {
        tracing::info!(target: "pgsnapman::audit", actor, method, args = %args,
            peer = peer.unwrap_or("-"), ok, detail, "audit");
    } else {
        tracing::warn!(target: "pgsnapman::audit", actor, method, args = %args,
            peer = peer.unwrap_or("-"), ok, detail, "audit");
    }
    catalog
        .audit(crate::catalog::AuditEntry {
            actor,
            method: method.to_string(),
            args_json: args.clone(),
            peer: peer.map(str::to_string),
            ok,
            detail: detail.to_string(),
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(token_hash(&a), ha);
        assert_eq!(
            token_hash(&format!(" {a}\n")),
            ha,
            "a pasted newline is no error"
        );
    }
}
