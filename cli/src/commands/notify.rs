//! `pgsnap notify …`: add, list, test and remove notification channels and
//! their rules. A channel's secret is read from a 0600 file or standard
//! input (never argv) and sent once over TLS; the coordinator seals it.
use std::io::Read;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::v1;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::Ctx;
use crate::args::{NotifyAddCommand, NotifyCommand, NotifyRuleCommand, SecretArgs};
use crate::client::rpc;
use crate::output::table;

/// Longest secret read (the coordinator refuses more as well).
const MAX_SECRET_BYTES: u64 = 1024;

pub async fn run(ctx: &Ctx, cmd: NotifyCommand) -> Result<()> {
    match cmd {
        NotifyCommand::Add(add) => {
            let req = add_request(add)?;
            let mut admin = ctx.admin().await?;
            let c = rpc(admin.add_notify_channel(req).await)?;
            ctx.out.changed(
                &format!("added notification channel {} ({})", c.name, c.kind),
                channel_json(&c),
                channels(std::slice::from_ref(&c)),
            )
        }
        NotifyCommand::List => {
            let mut admin = ctx.admin().await?;
            let list = rpc(admin
                .list_notify_channels(v1::ListNotifyChannelsRequest {})
                .await)?;
            ctx.out.list(
                list.channels.iter().map(channel_json).collect(),
                channels(&list.channels),
            )
        }
        NotifyCommand::Test { name } => {
            let mut admin = ctx.admin().await?;
            let r = rpc(admin
                .test_notify_channel(v1::NotifyChannelRef { name: name.clone() })
                .await)?;
            ctx.out.object(
                json!({ "channel": name, "detail": r.detail }),
                vec![("channel", name), ("answer", r.detail)],
            )
        }
        NotifyCommand::Remove { name } => {
            let mut admin = ctx.admin().await?;
            rpc(admin
                .remove_notify_channel(v1::NotifyChannelRef { name: name.clone() })
                .await)?;
            ctx.out
                .note(&format!("removed notification channel {name}"))
        }
        NotifyCommand::Rule(r) => rule(ctx, r).await,
    }
}

async fn rule(ctx: &Ctx, cmd: NotifyRuleCommand) -> Result<()> {
    match cmd {
        NotifyRuleCommand::Add(a) => {
            let secs = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_secs().max(1));
            if a.offline_after.is_some() && a.max_age.is_some() {
                bail!(
                    "--offline-after (worker_offline) and --max-age (dump_missing) exclude each other"
                );
            }
            let req = v1::AddNotifyRuleRequest {
                name: a.name,
                class: a.class,
                severity: a.severity.unwrap_or_default(),
                job_id: a.job.unwrap_or(0),
                threshold_seconds: secs(a.offline_after.or(a.max_age)),
                threshold_count: a.backlog,
                send_resolved: a.send_resolved,
                channels: a.channels,
            };
            let mut admin = ctx.admin().await?;
            let r = rpc(admin.add_notify_rule(req).await)?;
            ctx.out.changed(
                &format!("added notification rule {} ({})", r.name, r.class),
                rule_json(&r),
                rules(std::slice::from_ref(&r)),
            )
        }
        NotifyRuleCommand::List => {
            let mut admin = ctx.admin().await?;
            let list = rpc(admin.list_notify_rules(v1::ListNotifyRulesRequest {}).await)?;
            ctx.out.list(
                list.rules.iter().map(rule_json).collect(),
                rules(&list.rules),
            )
        }
        NotifyRuleCommand::Remove { name } => {
            let mut admin = ctx.admin().await?;
            rpc(admin
                .remove_notify_rule(v1::NotifyRuleRef { name: name.clone() })
                .await)?;
            removed(ctx, "rule", &name)
        }
    }
}

/// `removed notification rule NAME`, or `{"name": NAME, "removed": true}`.
fn removed(ctx: &Ctx, what: &str, name: &str) -> Result<()> {
    if ctx.out.is_json() {
        ctx.out
            .object(json!({ "name": name, "removed": true }), Vec::new())
    } else {
        ctx.out.note(&format!("removed notification {what} {name}"))
    }
}

fn add_request(add: NotifyAddCommand) -> Result<v1::AddNotifyChannelRequest> {
    Ok(match add {
        NotifyAddCommand::Webhook { name, url, secret } => {
            let key = read_secret(&secret)?
                .context("a webhook needs its HMAC key: --secret-file PATH or --secret-stdin")?;
            v1::AddNotifyChannelRequest {
                name,
                kind: "webhook".into(),
                url,
                secret: key.to_string(),
                ..Default::default()
            }
        }
        NotifyAddCommand::Email {
            name,
            smtp_relay,
            smtp_port,
            smtp_tls,
            from,
            to,
            smtp_user,
            secret,
        } => {
            let password = read_secret(&secret)?;
            if smtp_user.is_some() != password.is_some() {
                bail!("--smtp-user and its password (--secret-file or --secret-stdin) go together");
            }
            v1::AddNotifyChannelRequest {
                name,
                kind: "email".into(),
                smtp_relay,
                smtp_port: u32::from(smtp_port.unwrap_or(0)),
                smtp_tls: smtp_tls.unwrap_or_default(),
                mail_from: from,
                mail_to: to,
                smtp_username: smtp_user.unwrap_or_default(),
                secret: password.map(|p| p.to_string()).unwrap_or_default(),
                ..Default::default()
            }
        }
    })
}

/// The secret from `--secret-file` (0600) or `--secret-stdin`, without one
/// trailing line break; `None` when neither is given.
fn read_secret(a: &SecretArgs) -> Result<Option<Zeroizing<String>>> {
    let (raw, from) = if let Some(path) = &a.secret_file {
        let bytes = pgsnapman_proto::secret_file::read_private(path)?;
        if bytes.len() as u64 > MAX_SECRET_BYTES {
            bail!(
                "--secret-file {}: longer than {MAX_SECRET_BYTES} bytes",
                path.display()
            );
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("--secret-file {}: not UTF-8 text", path.display()))?;
        (
            Zeroizing::new(text),
            format!("--secret-file {}", path.display()),
        )
    } else if a.secret_stdin {
        let mut text = Zeroizing::new(String::new());
        let n = std::io::stdin()
            .lock()
            .take(MAX_SECRET_BYTES + 1)
            .read_to_string(&mut text)
            .context("--secret-stdin: read standard input as UTF-8")?;
        if n as u64 > MAX_SECRET_BYTES {
            bail!("--secret-stdin: standard input is longer than {MAX_SECRET_BYTES} bytes");
        }
        (text, "--secret-stdin".to_string())
    } else {
        return Ok(None);
    };
    let line = raw
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&raw);
    if line.is_empty() {
        bail!("{from}: the secret is empty");
    }
    if line.contains(['\n', '\r']) {
        bail!("{from}: the secret must be one line");
    }
    Ok(Some(Zeroizing::new(line.to_string())))
}

fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| table::time(Some(t)).into())
}

fn channel_json(c: &v1::NotifyChannel) -> Value {
    let mut v = json!({
        "id": c.id, "name": c.name, "kind": c.kind, "has_secret": c.has_secret,
        "key_id": c.key_id, "rules": c.rules, "created_at": time(c.created_at.as_ref()),
        "failing_since": time(c.failing_since.as_ref()), "last_error": c.last_error,
    });
    if c.kind == "webhook" {
        v["url"] = c.url.clone().into();
    } else {
        v["smtp_relay"] = c.smtp_relay.clone().into();
        v["smtp_port"] = c.smtp_port.into();
        v["smtp_tls"] = c.smtp_tls.clone().into();
        v["from"] = c.mail_from.clone().into();
        v["to"] = c.mail_to.clone().into();
        v["smtp_user"] = c.smtp_username.clone().into();
    }
    v
}

fn channels(cs: &[v1::NotifyChannel]) -> comfy_table::Table {
    let mut t = table::with_header(&["NAME", "KIND", "TARGET", "SECRET", "RULES", "STATE"]);
    for c in cs {
        let target = if c.kind == "webhook" {
            c.url.clone()
        } else {
            format!(
                "{} via {}:{} ({})",
                c.mail_to.join(", "),
                c.smtp_relay,
                c.smtp_port,
                c.smtp_tls
            )
        };
        let state = match &c.failing_since {
            Some(since) => format!(
                "FAILING since {}: {}",
                table::time(Some(since)),
                c.last_error
            ),
            None => "ok".into(),
        };
        t.add_row(vec![
            c.name.clone(),
            c.kind.clone(),
            target,
            if c.has_secret {
                format!("sealed (key {})", c.key_id)
            } else {
                "none".into()
            },
            c.rules.join(", "),
            state,
        ]);
    }
    t
}

fn rule_json(r: &v1::NotifyRule) -> Value {
    json!({
        "id": r.id, "name": r.name, "class": r.class, "severity": r.severity,
        "job_id": (r.job_id != 0).then_some(r.job_id),
        "threshold_seconds": (r.threshold_seconds != 0).then_some(r.threshold_seconds),
        "threshold_count": (r.threshold_count != 0).then_some(r.threshold_count),
        "send_resolved": r.send_resolved, "channels": r.channels,
        "open_incidents": r.open_incidents, "created_at": time(r.created_at.as_ref()),
    })
}

fn rules(rs: &[v1::NotifyRule]) -> comfy_table::Table {
    let mut t = table::with_header(&["NAME", "CLASS", "SEVERITY", "SCOPE", "CHANNELS", "OPEN"]);
    for r in rs {
        let mut scope = Vec::new();
        if r.job_id != 0 {
            scope.push(format!("job {}", r.job_id));
        }
        if r.threshold_seconds != 0 {
            scope.push(format!(
                "after {}",
                humantime::format_duration(std::time::Duration::from_secs(r.threshold_seconds))
            ));
        }
        if r.threshold_count != 0 {
            scope.push(format!("above {}", r.threshold_count));
        }
        if r.send_resolved {
            scope.push("resolved too".into());
        }
        t.add_row(vec![
            r.name.clone(),
            r.class.clone(),
            r.severity.clone(),
            scope.join(", "),
            r.channels.join(", "),
            r.open_incidents.to_string(),
        ]);
    }
    t
}
