//! Alerts (docs/alerts.md): the background task that evaluates notification
//! rules against the catalog, opens and resolves incidents, and sends the
//! queued deliveries to webhooks and SMTP relays with retries. The SQL is
//! in `catalog/notify.rs`; this module holds no query.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::catalog::notify::{ChannelRow, Firing, RuleRow};

pub mod admin;
mod config;
pub mod email;
pub mod rules;
pub mod secret;
pub mod webhook;

pub use config::NotifyConfig;
use secret::NotifyKey;

/// Deliveries claimed per round (more wait for the next one).
const CLAIM_BATCH: i64 = 32;
/// How often resolved incidents past `notify.history` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Evaluates rules and sends deliveries; shared with the Admin handlers
/// (which seal secrets and send test notifications with it).
pub struct Notifier {
    pub catalog: Catalog,
    pub cfg: NotifyConfig,
    pub key_path: PathBuf,
    http: reqwest::Client,
    /// `notify.ca_file`: extra roots for SMTP TLS (the HTTP client has them).
    ca_pem: Option<Vec<u8>>,
}

impl Notifier {
    pub fn new(
        catalog: Catalog,
        cfg: NotifyConfig,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let ca_pem = match &cfg.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("read notify.ca_file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let http = webhook::client(cfg.send_timeout, ca_pem.as_deref())?;
        Ok(Self {
            catalog,
            key_path: cfg.key_path(data_dir),
            cfg,
            http,
            ca_pem,
        })
    }

    /// Runs rounds every `notify.interval` until `stop` is cancelled. A
    /// failed round is logged and the next one tries again.
    pub async fn run(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruned = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.evaluate().await {
                tracing::warn!("notify: evaluating rules: {e:#}");
            }
            if let Err(e) = self.deliver(&stop).await {
                tracing::warn!("notify: sending notifications: {e:#}");
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                match self.catalog.prune_incidents(self.cfg.history).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(incidents = n, "old resolved incidents pruned"),
                    Err(e) => tracing::warn!("notify: pruning incidents: {e}"),
                }
            }
        }
    }

    /// The subjects for which `rule`'s condition holds now.
    async fn firing(&self, rule: &RuleRow) -> anyhow::Result<Vec<Firing>> {
        let c = &self.catalog;
        let secs = |s: Option<i64>| {
            s.and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
        };
        Ok(match rule.class.as_str() {
            "DUMP_FAILED" => c.failed_dump_jobs(rule.job_id).await?,
            "RESTORE_FAILED" => {
                let mut f = c.failed_restore_jobs().await?;
                f.extend(c.failed_adhoc_restores().await?);
                f
            }
            "VERIFY_FAILED" => c.failed_verifications(rule.job_id).await?,
            "DUMP_MISSING" => {
                let jobs = c.job_freshness(rule.job_id).await?;
                rules::missing_dumps(&jobs, secs(rule.threshold_seconds), chrono::Utc::now())
            }
            "WORKER_OFFLINE" => {
                let after = secs(rule.threshold_seconds).unwrap_or(rules::DEFAULT_OFFLINE_AFTER);
                c.offline_workers(after).await?
            }
            "OUTBOX_BACKLOG" => {
                let above = rule.threshold_count.unwrap_or(rules::DEFAULT_BACKLOG);
                c.outbox_backlogs(above).await?
            }
            "CHANNEL_FAILED" => c.failing_channels().await?,
            other => anyhow::bail!("rule {}: unknown class {other}", rule.name),
        })
    }

    /// One evaluation of every rule: incidents open for new subjects (one
    /// notification each) and resolve for subjects whose condition cleared.
    pub async fn evaluate(&self) -> anyhow::Result<()> {
        for rule in self.catalog.list_notify_rules().await? {
            let firing = match self.firing(&rule).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(rule = %rule.name, "notify: rule condition: {e:#}");
                    continue;
                }
            };
            let open = self.catalog.open_incidents(rule.id).await?;
            let open_subjects: HashSet<&str> = open.iter().map(|i| i.subject.as_str()).collect();
            let now_subjects: HashSet<&str> = firing.iter().map(|f| f.subject.as_str()).collect();
            for f in firing
                .iter()
                .filter(|f| !open_subjects.contains(f.subject.as_str()))
            {
                // A failing channel is not told about itself.
                let skip = own_channel(&rule, &f.subject);
                let opened = self
                    .catalog
                    .open_incident(rule.id, &rule.channel_ids, skip, f, |id, at| {
                        rules::payload(&rule, id, &f.subject, &f.summary, &f.details, at, None)
                    })
                    .await?;
                if let Some(id) = opened {
                    tracing::info!(rule = %rule.name, incident = id, subject = %f.subject, "incident opened");
                }
            }
            for i in open
                .iter()
                .filter(|i| !now_subjects.contains(i.subject.as_str()))
            {
                let payload = rule.send_resolved.then_some(|at| {
                    rules::payload(
                        &rule,
                        i.id,
                        &i.subject,
                        &i.summary,
                        &i.details,
                        i.opened_at,
                        Some(at),
                    )
                });
                let skip = own_channel(&rule, &i.subject);
                if self
                    .catalog
                    .resolve_incident(i.id, &rule.channel_ids, skip, payload)
                    .await?
                {
                    tracing::info!(rule = %rule.name, incident = i.id, subject = %i.subject, "incident resolved");
                }
            }
        }
        Ok(())
    }

    /// Sends the due deliveries, a batch at a time, until none is due.
    pub async fn deliver(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        loop {
            let batch = self
                .catalog
                .claim_deliveries(CLAIM_BATCH, self.cfg.claim_ttl())
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            let channels: HashMap<i64, ChannelRow> = self
                .catalog
                .list_notify_channels()
                .await?
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
            for d in batch {
                if stop.is_cancelled() {
                    // Claimed but unsent: due again after the claim ttl.
                    return Ok(());
                }
                let Some(ch) = channels.get(&d.channel_id) else {
                    continue; // removed meanwhile (its deliveries went with it)
                };
                let attempts = u32::try_from(d.attempts).unwrap_or(u32::MAX);
                match self.send(ch, d.id, &d.payload).await {
                    Ok(detail) => {
                        tracing::info!(channel = %ch.name, delivery = d.id, %detail, "notification sent");
                        self.catalog.delivery_sent(d.id, ch.id).await?;
                    }
                    Err(e) => {
                        let retry =
                            (attempts < self.cfg.max_attempts).then(|| self.cfg.backoff(attempts));
                        match retry {
                            Some(wait) => {
                                tracing::warn!(channel = %ch.name, delivery = d.id, attempts,
                                retry_in = %humantime::format_duration(wait), "notification not sent: {e}")
                            }
                            None => tracing::error!(channel = %ch.name, delivery = d.id, attempts,
                                "notification channel failed, delivery given up: {e}"),
                        }
                        self.catalog
                            .delivery_failed(d.id, &ch.name, ch.id, d.attempts, &e, retry)
                            .await?;
                    }
                }
            }
        }
    }

    /// Sends `payload` to `channel` once; `Ok` with what the receiver said.
    pub async fn send(
        &self,
        channel: &ChannelRow,
        delivery_id: i64,
        payload: &Value,
    ) -> Result<String, String> {
        let secret = match &channel.sealed_secret {
            Some(sealed) => {
                let key = NotifyKey::load(&self.key_path, false).map_err(|e| format!("{e:#}"))?;
                Some(
                    key.open(&channel.name, &channel.key_id, sealed)
                        .map_err(|e| format!("{e:#}"))?,
                )
            }
            None => None,
        };
        match channel.kind.as_str() {
            "WEBHOOK" => {
                let url = channel.settings["url"].as_str().unwrap_or_default();
                let key = secret
                    .as_deref()
                    .ok_or_else(|| format!("webhook channel {} has no HMAC key", channel.name))?;
                let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
                webhook::send(&self.http, url, key, delivery_id, &body).await
            }
            "EMAIL" => {
                let s: email::EmailSettings = serde_json::from_value(channel.settings.clone())
                    .map_err(|e| format!("channel {}: settings: {e}", channel.name))?;
                let (subject, text) = rules::mail(payload);
                email::send(
                    &s,
                    secret.as_deref().map(|v| v.as_slice()),
                    &subject,
                    text,
                    self.cfg.send_timeout,
                    self.ca_pem.as_deref(),
                )
                .await
            }
            other => Err(format!("channel {}: unknown kind {other}", channel.name)),
        }
    }
}

/// For a `channel_failed` incident, the channel it is about.
fn own_channel(rule: &RuleRow, subject: &str) -> Option<i64> {
    if rule.class != "CHANNEL_FAILED" {
        return None;
    }
    subject.strip_prefix("channel:")?.parse().ok()
}
