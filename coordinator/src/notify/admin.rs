//! The AdminService calls of alerts: checks a request, seals a channel's
//! secret under the notify key before the catalog sees it, and turns rows
//! into messages (which never carry a secret).
use pgsnapman_proto::timestamp;
use pgsnapman_proto::v1;
use serde_json::json;
use tonic::Status;
use zeroize::Zeroizing;

use super::rules::{self, MAX_THRESHOLD_SECONDS};
use super::secret::{MAX_SECRET_BYTES, NotifyKey};
use super::{Notifier, email, webhook};
use crate::catalog::notify::{ChannelRow, NewRule, RuleRow, cut};

/// Longest channel or rule name.
pub const MAX_NAME: usize = 64;
/// Shortest HMAC key accepted for a webhook.
pub const MIN_HMAC_KEY_BYTES: usize = 16;
/// Most channels one rule names.
pub const MAX_RULE_CHANNELS: usize = 16;

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// Names: 1-64 of `A-Z a-z 0-9 . _ -`.
pub fn check_name(what: &str, name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} name {:?} must be 1-{MAX_NAME} characters of A-Z a-z 0-9 . _ -",
            cut(name, MAX_NAME)
        )))
    }
}

pub async fn add_channel(
    n: &Notifier,
    req: v1::AddNotifyChannelRequest,
) -> Result<v1::NotifyChannel, Status> {
    check_name("channel", &req.name)?;
    let secret = Zeroizing::new(req.secret.into_bytes());
    if secret.len() > MAX_SECRET_BYTES {
        return Err(invalid(format!(
            "the secret of channel {:?} is longer than {MAX_SECRET_BYTES} bytes",
            req.name
        )));
    }
    let (kind, settings) = match req.kind.as_str() {
        "webhook" => {
            webhook::check_url(&req.url).map_err(invalid)?;
            if secret.len() < MIN_HMAC_KEY_BYTES {
                return Err(invalid(format!(
                    "webhook channel {:?} needs an HMAC key of at least {MIN_HMAC_KEY_BYTES} bytes",
                    req.name
                )));
            }
            ("WEBHOOK", json!({ "url": req.url }))
        }
        "email" => {
            let s = email::EmailSettings {
                relay: req.smtp_relay,
                port: u16::try_from(req.smtp_port)
                    .map_err(|_| invalid(format!("SMTP port {} is out of range", req.smtp_port)))?,
                tls: req.smtp_tls,
                from: req.mail_from,
                to: req.mail_to,
                username: req.smtp_username,
            }
            .checked()
            .map_err(|e| invalid(format!("e-mail channel {:?}: {e}", req.name)))?;
            if !s.username.is_empty() && secret.is_empty() {
                return Err(invalid(format!(
                    "e-mail channel {:?}: SMTP user {:?} needs a password",
                    req.name, s.username
                )));
            }
            let v = serde_json::to_value(&s).map_err(|e| Status::internal(e.to_string()))?;
            ("EMAIL", v)
        }
        other => {
            return Err(invalid(format!(
                "channel kind {:?} is not webhook or email",
                cut(other, 32)
            )));
        }
    };
    let (sealed, key_id) = if secret.is_empty() {
        (None, String::new())
    } else {
        let key = NotifyKey::load(&n.key_path, true).map_err(|e| {
            tracing::error!("notify key: {e:#}");
            Status::failed_precondition(format!("{e:#}"))
        })?;
        let sealed = key
            .seal(&secret)
            .map_err(|e| Status::internal(e.to_string()))?;
        (Some(sealed), key.id())
    };
    let row = n
        .catalog
        .add_notify_channel(&req.name, kind, &settings, sealed, &key_id)
        .await?;
    tracing::info!(channel = %row.name, kind, "notification channel added");
    Ok(channel_proto(&row))
}

/// Sends a test notification to a channel now and says what it answered.
pub async fn test_channel(
    n: &Notifier,
    name: &str,
) -> Result<v1::TestNotifyChannelResponse, Status> {
    let ch = n.catalog.notify_channel(name).await?;
    let now = chrono::Utc::now();
    let payload = json!({
        "version": rules::PAYLOAD_VERSION,
        "status": "test",
        "incident_id": 0,
        "rule": "",
        "class": "test",
        "severity": "info",
        "subject": format!("channel:{}", ch.id),
        "summary": format!("test notification to channel {} (pgsnap notify test)", ch.name),
        "details": {},
        "opened_at": now,
        "resolved_at": null,
    });
    match n.send(&ch, 0, &payload).await {
        Ok(detail) => Ok(v1::TestNotifyChannelResponse { detail }),
        Err(e) => Err(Status::unavailable(format!(
            "test notification to channel {name} failed: {e}"
        ))),
    }
}

pub async fn add_rule(
    n: &Notifier,
    req: v1::AddNotifyRuleRequest,
) -> Result<v1::NotifyRule, Status> {
    check_name("rule", &req.name)?;
    let (class, default_severity) = rules::class(&req.class).map_err(invalid)?;
    let severity = if req.severity.is_empty() {
        default_severity
    } else {
        rules::severity(&req.severity).map_err(invalid)?
    };
    if req.channels.is_empty() || req.channels.len() > MAX_RULE_CHANNELS {
        return Err(invalid(format!(
            "rule {:?} must name 1 to {MAX_RULE_CHANNELS} channels",
            req.name
        )));
    }
    for c in &req.channels {
        check_name("channel", c)?;
    }
    let job_id = (req.job_id != 0).then_some(req.job_id);
    if job_id.is_some() && !matches!(class, "DUMP_FAILED" | "DUMP_MISSING" | "VERIFY_FAILED") {
        return Err(invalid(format!(
            "rule class {} does not take a job (only dump_failed, dump_missing, verify_failed)",
            req.class
        )));
    }
    if let Some(j) = job_id {
        n.catalog.job(j).await?;
    }
    if req.threshold_seconds > MAX_THRESHOLD_SECONDS {
        return Err(invalid(format!(
            "the threshold of rule {:?} is longer than a year",
            req.name
        )));
    }
    let threshold_seconds = match (class, req.threshold_seconds) {
        (_, 0) => None,
        ("WORKER_OFFLINE" | "DUMP_MISSING", s) => Some(i64::try_from(s).unwrap_or(i64::MAX)),
        _ => {
            return Err(invalid(format!(
                "rule class {} takes no duration (only worker_offline and dump_missing)",
                req.class
            )));
        }
    };
    let threshold_count = match (class, req.threshold_count) {
        (_, None) => None,
        ("OUTBOX_BACKLOG", Some(c)) => Some(
            i64::try_from(c).map_err(|_| invalid(format!("backlog threshold {c} is too large")))?,
        ),
        _ => {
            return Err(invalid(format!(
                "rule class {} takes no count (only outbox_backlog)",
                req.class
            )));
        }
    };
    let row = n
        .catalog
        .add_notify_rule(&NewRule {
            name: &req.name,
            class,
            severity: &severity.to_ascii_uppercase(),
            job_id,
            threshold_seconds,
            threshold_count,
            send_resolved: req.send_resolved,
            channels: &req.channels,
        })
        .await?;
    tracing::info!(rule = %row.name, class, "notification rule added");
    Ok(rule_proto(&row))
}

/// A channel as the API shows it: settings, never the secret.
pub fn channel_proto(c: &ChannelRow) -> v1::NotifyChannel {
    let s = |k: &str| c.settings[k].as_str().unwrap_or_default().to_string();
    v1::NotifyChannel {
        id: c.id,
        name: c.name.clone(),
        kind: c.kind.to_ascii_lowercase(),
        url: pgsnapman_proto::redact_url(&s("url")),
        smtp_relay: s("relay"),
        smtp_port: c.settings["port"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        smtp_tls: s("tls"),
        mail_from: s("from"),
        mail_to: c.settings["to"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        smtp_username: s("username"),
        has_secret: c.sealed_secret.is_some(),
        key_id: c.key_id.clone(),
        created_at: Some(timestamp(c.created_at)),
        failing_since: c.failing_since.map(timestamp),
        last_error: c.last_error.clone(),
        rules: c.rules.clone(),
    }
}

pub fn rule_proto(r: &RuleRow) -> v1::NotifyRule {
    v1::NotifyRule {
        id: r.id,
        name: r.name.clone(),
        class: rules::api_class(&r.class).to_string(),
        severity: r.severity.to_ascii_lowercase(),
        job_id: r.job_id.unwrap_or(0),
        threshold_seconds: r
            .threshold_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
        threshold_count: r
            .threshold_count
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
        send_resolved: r.send_resolved,
        channels: r.channels.clone(),
        created_at: Some(timestamp(r.created_at)),
        open_incidents: u32::try_from(r.open_incidents).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_cut_in_errors() {
        check_name("channel", "ops-2.mail_x").unwrap();
        for bad in ["", "has space", "semi;colon", &"x".repeat(MAX_NAME + 1)] {
            let e = check_name("channel", bad).unwrap_err();
            assert!(e.message().contains("channel name"), "{e:?}");
            assert!(e.message().len() < 200, "the input is cut: {}", e.message());
        }
    }
}
