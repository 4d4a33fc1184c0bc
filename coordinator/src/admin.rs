//! The Admin service (used by `pgsnap`): thin handlers over the catalog.
use pgsnapman_proto::model::validate_token_name;
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::auth::{Caller, Role, is_destructive_policy, token};
use crate::catalog::{AuditFilter, Catalog};
use crate::config::EnrollmentConfig;
use crate::rows;
use crate::streams::StreamRegistry;

pub struct Admin {
    pub catalog: Catalog,
    pub enrollment: EnrollmentConfig,
    /// To cut a revoked worker's streams at once.
    pub streams: Arc<StreamRegistry>,
    pub pki: std::sync::Arc<crate::pki::Pki>,
    /// `WatchTask` streams.
    pub watches: crate::watch::Watches,
    /// Alerts: channels, rules, test notifications.
    pub notify: Arc<crate::notify::Notifier>,
}

type R<T> = Result<Response<T>, Status>;

fn ok<T>(v: T) -> R<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn register_worker(&self, req: Request<v1::RegisterWorkerRequest>) -> R<v1::Worker> {
        let w = self.catalog.register_worker(&req.into_inner().name).await?;
        tracing::info!(worker = %w.name, id = w.id, "worker registered");
        ok(w.to_proto())
    }

    async fn issue_enrollment_token(&self, req: Request<v1::WorkerRef>) -> R<v1::EnrollmentToken> {
        // Audited by the auth layer (actor: the operator token).
        let by = caller_name(&req);
        let w = self
            .catalog
            .worker_ref(Some(req.get_ref()))
            .await?
            .ok_or_else(|| Status::invalid_argument("name the worker by id or name"))?;
        let (token, hash) = crate::enrollment::new_token();
        let ttl = self.enrollment.token_ttl;
        let expires_at = self
            .catalog
            .add_enrollment_token(w.id, &hash, ttl, &by)
            .await?;
        tracing::info!(worker = %w.name, by = %by, %expires_at, "enrollment token issued");
        ok(v1::EnrollmentToken {
            worker: Some(w.to_proto()),
            token,
            expires_at: Some(pgsnapman_proto::timestamp(expires_at)),
        })
    }

    async fn revoke_worker(&self, req: Request<v1::WorkerRef>) -> R<v1::Worker> {
        // Audited by the auth layer (actor: the operator token).
        let w = self
            .catalog
            .worker_ref(Some(req.get_ref()))
            .await?
            .ok_or_else(|| Status::invalid_argument("name the worker by id or name"))?;
        let (w, requeued) = self.catalog.revoke_worker(w.id).await?;
        let cut = self.streams.cut(w.id);
        tracing::warn!(worker = %w.name, streams_cut = cut, requeued, "worker revoked");
        ok(w.to_proto())
    }

    async fn add_script(&self, req: Request<v1::AddScriptRequest>) -> R<v1::Script> {
        let s = self.catalog.add_script(req.get_ref()).await?;
        tracing::info!(script = %s.name, hash = %s.hash, "script registered");
        ok(s.to_proto(Vec::new()))
    }

    async fn list_scripts(
        &self,
        _req: Request<v1::ListScriptsRequest>,
    ) -> R<v1::ListScriptsResponse> {
        let scripts = self.catalog.list_scripts().await?;
        ok(v1::ListScriptsResponse {
            scripts: scripts.iter().map(|s| s.to_proto(Vec::new())).collect(),
        })
    }

    async fn get_script(&self, req: Request<v1::ScriptRef>) -> R<v1::Script> {
        let name = &req.get_ref().name;
        let s = self.catalog.script(name).await?;
        let source = self.catalog.script_source(name).await?;
        ok(s.to_proto(source.content))
    }

    async fn remove_script(&self, req: Request<v1::ScriptRef>) -> R<v1::Empty> {
        let name = &req.get_ref().name;
        self.catalog.remove_script(name).await?;
        tracing::info!(script = %name, "script removed");
        ok(v1::Empty {})
    }

    async fn list_workers(&self, _: Request<v1::ListWorkersRequest>) -> R<v1::ListWorkersResponse> {
        let workers = self.catalog.list_workers().await?;
        ok(v1::ListWorkersResponse {
            workers: workers.iter().map(rows::WorkerRow::to_proto).collect(),
        })
    }

    async fn get_worker(&self, req: Request<v1::WorkerRef>) -> R<v1::Worker> {
        let r = req.into_inner();
        match self.catalog.worker_ref(Some(&r)).await? {
            Some(w) => ok(w.to_proto()),
            None => Err(Status::invalid_argument("name the worker by id or name")),
        }
    }

    async fn set_worker_status(&self, req: Request<v1::SetWorkerStatusRequest>) -> R<v1::Worker> {
        let req = req.into_inner();
        let status = rows::status_label(req.status)?;
        let w = self
            .catalog
            .worker_ref(req.worker.as_ref())
            .await?
            .ok_or_else(|| Status::invalid_argument("name the worker by id or name"))?;
        let w = self.catalog.set_worker_status(w.id, status).await?;
        tracing::info!(worker = %w.name, status, "worker status changed");
        ok(w.to_proto())
    }

    async fn set_restore_worker(&self, req: Request<v1::SetRestoreWorkerRequest>) -> R<v1::Worker> {
        let req = req.into_inner();
        let w = self
            .catalog
            .worker_ref(req.worker.as_ref())
            .await?
            .ok_or_else(|| Status::invalid_argument("name the worker by id or name"))?;
        let restore = self.catalog.worker_ref(req.restore_worker.as_ref()).await?;
        let w = self
            .catalog
            .set_restore_worker(w.id, restore.map(|r| r.id))
            .await?;
        tracing::info!(worker = %w.name, restore_worker = ?w.restore_worker_name, "restore worker set");
        ok(w.to_proto())
    }

    async fn add_instance(&self, req: Request<v1::AddInstanceRequest>) -> R<v1::Instance> {
        let i = self.catalog.add_instance(&req.into_inner()).await?;
        tracing::info!(instance = %i.name, id = i.id, "instance added");
        ok(self.catalog.instance_view(&i).await?)
    }

    async fn list_instances(
        &self,
        _: Request<v1::ListInstancesRequest>,
    ) -> R<v1::ListInstancesResponse> {
        let list = self.catalog.list_instances().await?;
        let mut instances = Vec::with_capacity(list.len());
        for i in &list {
            instances.push(self.catalog.instance_view(i).await?);
        }
        ok(v1::ListInstancesResponse { instances })
    }

    async fn get_instance(&self, req: Request<v1::IdRequest>) -> R<v1::Instance> {
        let i = self.catalog.instance(req.into_inner().id).await?;
        ok(self.catalog.instance_view(&i).await?)
    }

    async fn update_instance(&self, req: Request<v1::UpdateInstanceRequest>) -> R<v1::Instance> {
        let i = self.catalog.update_instance(&req.into_inner()).await?;
        tracing::info!(instance = %i.name, id = i.id, "instance updated");
        ok(self.catalog.instance_view(&i).await?)
    }

    async fn set_instance_status(&self, req: Request<v1::SetStatusRequest>) -> R<v1::Instance> {
        let req = req.into_inner();
        let status = rows::status_label(req.status)?;
        let i = self.catalog.set_instance_status(req.id, status).await?;
        tracing::info!(instance = %i.name, status, "instance status changed");
        ok(self.catalog.instance_view(&i).await?)
    }

    async fn remove_instance(&self, req: Request<v1::IdRequest>) -> R<v1::Empty> {
        let id = req.into_inner().id;
        self.catalog.remove_instance(id).await?;
        tracing::info!(id, "instance removed");
        ok(v1::Empty {})
    }

    async fn add_dump_job(&self, req: Request<v1::AddDumpJobRequest>) -> R<v1::DumpJob> {
        let caller = req.extensions().get::<Caller>().cloned();
        let req = req.into_inner();
        checks_need_admin(caller.as_ref(), "AddDumpJob", !req.verify_checks.is_empty())?;
        let j = self.catalog.add_job(&req).await?;
        tracing::info!(job = j.id, worker = j.worker_id, "dump job added");
        ok(j.to_proto())
    }

    async fn list_dump_jobs(
        &self,
        req: Request<v1::ListDumpJobsRequest>,
    ) -> R<v1::ListDumpJobsResponse> {
        let jobs = self.catalog.list_jobs(&req.into_inner()).await?;
        ok(v1::ListDumpJobsResponse {
            jobs: jobs.iter().map(rows::JobRow::to_proto).collect(),
        })
    }

    async fn get_dump_job(&self, req: Request<v1::IdRequest>) -> R<v1::DumpJob> {
        ok(self.catalog.job(req.into_inner().id).await?.to_proto())
    }

    async fn update_dump_job(&self, req: Request<v1::UpdateDumpJobRequest>) -> R<v1::DumpJob> {
        let caller = req.extensions().get::<Caller>().cloned();
        let req = req.into_inner();
        // Setting checks, or moving existing ones to another instance, runs
        // SQL as that instance's user; removing them does not.
        let sets = req
            .verify_checks
            .as_ref()
            .is_some_and(|c| !c.checks.is_empty());
        let moves = !req.no_verify
            && (req.verify_instance_id.is_some() || req.verify_method.is_some())
            && !self.catalog.job(req.id).await?.verify_checks.is_empty();
        checks_need_admin(caller.as_ref(), "UpdateDumpJob", sets || moves)?;
        let j = self.catalog.update_job(&req).await?;
        tracing::info!(job = j.id, "dump job updated");
        ok(j.to_proto())
    }

    async fn set_dump_job_status(&self, req: Request<v1::SetStatusRequest>) -> R<v1::DumpJob> {
        let req = req.into_inner();
        let status = rows::status_label(req.status)?;
        let j = self.catalog.set_job_status(req.id, status).await?;
        tracing::info!(job = j.id, status, "dump job status changed");
        ok(j.to_proto())
    }

    async fn remove_dump_job(&self, req: Request<v1::IdRequest>) -> R<v1::Empty> {
        let id = req.into_inner().id;
        self.catalog.remove_job(id).await?;
        tracing::info!(job = id, "dump job removed");
        ok(v1::Empty {})
    }

    async fn list_dumps(&self, req: Request<v1::ListDumpsRequest>) -> R<v1::ListDumpsResponse> {
        let dumps = self.catalog.list_dumps(&req.into_inner()).await?;
        ok(v1::ListDumpsResponse {
            dumps: dumps.iter().map(rows::DumpRow::to_proto).collect(),
        })
    }

    async fn get_dump(&self, req: Request<v1::IdRequest>) -> R<v1::Dump> {
        let id = req.into_inner().id;
        let mut dump = self.catalog.dump(id).await?.to_proto();
        dump.table_rows = self.catalog.dump_table_rows(id).await?;
        ok(dump)
    }

    async fn pin_dump(&self, req: Request<v1::IdRequest>) -> R<v1::Dump> {
        let d = self.catalog.set_pinned(req.into_inner().id, true).await?;
        tracing::info!(dump = d.id, "dump pinned");
        ok(d.to_proto())
    }

    async fn unpin_dump(&self, req: Request<v1::IdRequest>) -> R<v1::Dump> {
        let d = self.catalog.set_pinned(req.into_inner().id, false).await?;
        tracing::info!(dump = d.id, "dump unpinned");
        ok(d.to_proto())
    }

    async fn preview_retention(
        &self,
        req: Request<v1::PreviewRetentionRequest>,
    ) -> R<v1::RetentionPreview> {
        let req = req.into_inner();
        let tz = if req.timezone.is_empty() {
            "UTC"
        } else {
            req.timezone.as_str()
        };
        let (job, verdicts) = self.catalog.preview_retention(req.job_id, tz).await?;
        let job = job.to_proto();
        ok(v1::RetentionPreview {
            retention: job.retention,
            job: Some(job),
            timezone: tz.to_string(),
            verdicts: verdicts
                .into_iter()
                .map(|(d, v)| v1::RetentionVerdict {
                    keep: v.keep(),
                    reasons: v.reasons.iter().map(|r| r.label().to_string()).collect(),
                    dump: Some(d.to_proto()),
                })
                .collect(),
        })
    }

    async fn list_messages(
        &self,
        req: Request<v1::ListMessagesRequest>,
    ) -> R<v1::ListMessagesResponse> {
        let msgs = self.catalog.list_messages(&req.into_inner()).await?;
        ok(v1::ListMessagesResponse {
            messages: msgs.iter().map(rows::MessageRow::to_proto).collect(),
        })
    }

    async fn dump_now(&self, req: Request<v1::DumpNowRequest>) -> R<v1::Task> {
        let job = req.into_inner().job_id;
        let t = self.catalog.dump_now(job).await?;
        tracing::info!(task = t.id, job, "dump queued");
        ok(t.to_proto())
    }

    async fn get_task(&self, req: Request<v1::IdRequest>) -> R<v1::Task> {
        ok(self.catalog.task(req.into_inner().id).await?.to_proto())
    }

    type WatchTaskStream = crate::watch::TaskStream;

    async fn watch_task(&self, req: Request<v1::IdRequest>) -> R<Self::WatchTaskStream> {
        let id = req.into_inner().id;
        ok(self.watches.open(self.catalog.clone(), id).await?)
    }

    async fn list_tasks(&self, req: Request<v1::ListTasksRequest>) -> R<v1::ListTasksResponse> {
        let tasks = self.catalog.list_tasks(&req.into_inner()).await?;
        ok(v1::ListTasksResponse {
            tasks: tasks.iter().map(rows::TaskRow::to_proto).collect(),
        })
    }

    async fn cancel_task(&self, req: Request<v1::IdRequest>) -> R<v1::Task> {
        let by = caller_name(&req);
        let id = req.into_inner().id;
        let t = self.catalog.cancel_task(id, &by).await?;
        tracing::info!(task = id, by = %by, "task cancelled");
        ok(t.to_proto())
    }

    async fn delete_dump(&self, req: Request<v1::IdRequest>) -> R<v1::Task> {
        let id = req.into_inner().id;
        match self.catalog.delete_dump(id).await? {
            Some(t) => {
                tracing::info!(task = t.id, dump = id, "dump deletion queued");
                ok(t.to_proto())
            }
            None => {
                tracing::info!(dump = id, "failed dump removed from the catalog");
                ok(v1::Task::default())
            }
        }
    }

    async fn verify_store(&self, req: Request<v1::WorkerRef>) -> R<v1::Task> {
        let t = self
            .catalog
            .store_task(Some(&req.into_inner()), "VERIFY")
            .await?;
        tracing::info!(
            task = t.id,
            worker = t.worker_id,
            "store verification queued"
        );
        ok(t.to_proto())
    }

    async fn rebuild_catalog(&self, req: Request<v1::WorkerRef>) -> R<v1::Task> {
        let t = self
            .catalog
            .store_task(Some(&req.into_inner()), "REBUILD")
            .await?;
        tracing::info!(task = t.id, worker = t.worker_id, "catalog rebuild queued");
        ok(t.to_proto())
    }

    async fn add_restore_job(&self, req: Request<v1::AddRestoreJobRequest>) -> R<v1::RestoreJob> {
        let r = self.catalog.add_restore_job(&req.into_inner()).await?;
        tracing::info!(restore_job = r.id, kind = %r.kind, "restore job added");
        ok(r.to_proto(None))
    }

    async fn list_restore_jobs(
        &self,
        req: Request<v1::ListRestoreJobsRequest>,
    ) -> R<v1::ListRestoreJobsResponse> {
        let jobs = self.catalog.list_restore_jobs(&req.into_inner()).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for j in &jobs {
            out.push(j.to_proto(self.catalog.last_run(j.id).await?.as_ref()));
        }
        ok(v1::ListRestoreJobsResponse { jobs: out })
    }

    async fn get_restore_job(&self, req: Request<v1::IdRequest>) -> R<v1::RestoreJob> {
        let j = self.catalog.restore_job(req.into_inner().id).await?;
        let last = self.catalog.last_run(j.id).await?;
        ok(j.to_proto(last.as_ref()))
    }

    async fn set_restore_job_status(
        &self,
        req: Request<v1::SetStatusRequest>,
    ) -> R<v1::RestoreJob> {
        let req = req.into_inner();
        let status = rows::status_label(req.status)?;
        let j = self.catalog.set_restore_job_status(req.id, status).await?;
        tracing::info!(restore_job = j.id, status, "restore job status changed");
        let last = self.catalog.last_run(j.id).await?;
        ok(j.to_proto(last.as_ref()))
    }

    async fn remove_restore_job(&self, req: Request<v1::IdRequest>) -> R<v1::Empty> {
        let id = req.into_inner().id;
        self.catalog.remove_restore_job(id).await?;
        tracing::info!(restore_job = id, "restore job removed");
        ok(v1::Empty {})
    }

    async fn restore_now(&self, req: Request<v1::RestoreNowRequest>) -> R<v1::Task> {
        let caller = req.extensions().get::<Caller>().cloned();
        let req = req.into_inner();
        self.check_restore_policy(caller.as_ref(), &req).await?;
        let t = self.catalog.restore_now(&req).await?;
        tracing::info!(task = t.id, run = ?t.restore_run_id, "restore queued");
        ok(t.to_proto())
    }

    async fn verify_dump_now(&self, req: Request<v1::VerifyDumpNowRequest>) -> R<v1::Task> {
        let caller = req.extensions().get::<Caller>().cloned();
        let req = req.into_inner();
        // A check is SQL run as the instance user (often a superuser): that
        // is more than an operator may do.
        checks_need_admin(caller.as_ref(), "VerifyDumpNow", !req.checks.is_empty())?;
        let t = self.catalog.verify_dump_now(&req).await?;
        tracing::info!(task = t.id, dump = req.dump_id, method = %req.method, "dump verification queued");
        ok(t.to_proto())
    }

    async fn list_restore_runs(
        &self,
        req: Request<v1::ListRestoreRunsRequest>,
    ) -> R<v1::ListRestoreRunsResponse> {
        let runs = self.catalog.list_restore_runs(&req.into_inner()).await?;
        ok(v1::ListRestoreRunsResponse {
            runs: runs.iter().map(rows::RestoreRunRow::to_proto).collect(),
        })
    }

    async fn get_restore_log(&self, req: Request<v1::IdRequest>) -> R<v1::RestoreLog> {
        let (run, lines) = self.catalog.restore_log(req.into_inner().id).await?;
        ok(v1::RestoreLog {
            run: Some(run.to_proto()),
            lines: lines.iter().map(rows::RestoreLogRow::to_proto).collect(),
        })
    }

    async fn add_copy_job(&self, req: Request<v1::AddCopyJobRequest>) -> R<v1::CopyJob> {
        let c = self.catalog.add_copy_job(&req.into_inner()).await?;
        tracing::info!(
            job = c.dump_job.id,
            targets = c.restore_jobs.len(),
            "copy job added"
        );
        ok(self.copy_job_proto(&c).await?)
    }

    async fn list_copy_jobs(
        &self,
        _: Request<v1::ListCopyJobsRequest>,
    ) -> R<v1::ListCopyJobsResponse> {
        let list = self.catalog.list_copy_jobs().await?;
        let mut copy_jobs = Vec::with_capacity(list.len());
        for c in &list {
            copy_jobs.push(self.copy_job_proto(c).await?);
        }
        ok(v1::ListCopyJobsResponse { copy_jobs })
    }

    async fn restore_server(
        &self,
        req: Request<v1::RestoreServerRequest>,
    ) -> R<v1::RestoreServerResponse> {
        let (jobs, skipped) = self.catalog.restore_server(&req.into_inner()).await?;
        tracing::info!(
            jobs = jobs.len(),
            skipped = skipped.len(),
            "server restore queued"
        );
        ok(v1::RestoreServerResponse {
            jobs: jobs.iter().map(|j| j.to_proto(None)).collect(),
            skipped,
        })
    }

    async fn list_store_stats(
        &self,
        req: Request<v1::ListStoreStatsRequest>,
    ) -> R<v1::ListStoreStatsResponse> {
        let rows = self
            .catalog
            .list_store_stats(req.into_inner().worker.as_ref())
            .await?;
        ok(v1::ListStoreStatsResponse {
            stats: rows.iter().map(rows::StoreStatsRow::to_proto).collect(),
        })
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> R<v1::CreateTokenResponse> {
        let by = caller_name(&req);
        let req = req.into_inner();
        validate_token_name(&req.name).map_err(crate::error::ApiError::from)?;
        let role = Role::from_proto(req.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "role {} is not valid: use viewer, operator or admin",
                req.role
            ))
        })?;
        let expires_at = match req.expires_in_seconds {
            0 => None,
            s => Some(expiry(s)?),
        };
        let secret = token::generate();
        let row = self
            .catalog
            .create_token(
                &req.name,
                role.label(),
                &token::sha256(&secret),
                expires_at,
                &by,
            )
            .await?;
        tracing::info!(token = %row.name, role = %row.role, created_by = %by, "token created");
        ok(v1::CreateTokenResponse {
            token: Some(row.to_proto()),
            secret,
        })
    }

    async fn list_tokens(&self, _: Request<v1::ListTokensRequest>) -> R<v1::ListTokensResponse> {
        let list = self.catalog.list_tokens().await?;
        ok(v1::ListTokensResponse {
            tokens: list.iter().map(rows::TokenRow::to_proto).collect(),
        })
    }

    async fn revoke_token(&self, req: Request<v1::RevokeTokenRequest>) -> R<v1::ApiToken> {
        let name = req.into_inner().name;
        validate_token_name(&name).map_err(crate::error::ApiError::from)?;
        let row = self.catalog.revoke_token(&name).await?;
        tracing::info!(token = %row.name, "token revoked");
        ok(row.to_proto())
    }

    async fn issue_operator_certificate(
        &self,
        req: Request<v1::IssueOperatorCertificateRequest>,
    ) -> R<v1::OperatorCertificate> {
        let by = caller_name(&req);
        ok(crate::auth::cert::issue(&self.catalog, &self.pki, &by, req.into_inner()).await?)
    }

    async fn register_operator_certificate(
        &self,
        req: Request<v1::RegisterOperatorCertificateRequest>,
    ) -> R<v1::ApiToken> {
        let by = caller_name(&req);
        ok(crate::auth::cert::register(&self.catalog, &self.pki, &by, req.into_inner()).await?)
    }

    async fn list_audit(&self, req: Request<v1::ListAuditRequest>) -> R<v1::ListAuditResponse> {
        let req = req.into_inner();
        let time = |t: Option<&prost_types::Timestamp>, what: &str| {
            t.map(|t| {
                pgsnapman_proto::from_timestamp(t)
                    .ok_or_else(|| Status::invalid_argument(format!("{what} is out of range")))
            })
            .transpose()
        };
        let limit = match req.limit {
            0 => 100,
            n @ 1..=10_000 => i64::from(n),
            n => {
                return Err(Status::invalid_argument(format!("limit {n} is over 10000")));
            }
        };
        let filter = AuditFilter {
            actor: Some(req.actor).filter(|a| !a.is_empty()),
            method: Some(req.method).filter(|m| !m.is_empty()),
            since: time(req.since.as_ref(), "since")?,
            until: time(req.until.as_ref(), "until")?,
            failed: req.failed,
            limit,
        };
        let rows = self.catalog.list_audit(&filter).await?;
        ok(v1::ListAuditResponse {
            entries: rows.iter().map(rows::AuditRow::to_proto).collect(),
        })
    }

    // alerts (docs/alerts.md): thin wrappers over `notify::admin`.
    async fn add_notify_channel(
        &self,
        req: Request<v1::AddNotifyChannelRequest>,
    ) -> R<v1::NotifyChannel> {
        ok(crate::notify::admin::add_channel(&self.notify, req.into_inner()).await?)
    }

    async fn list_notify_channels(
        &self,
        _: Request<v1::ListNotifyChannelsRequest>,
    ) -> R<v1::ListNotifyChannelsResponse> {
        let rows = self.catalog.list_notify_channels().await?;
        ok(v1::ListNotifyChannelsResponse {
            channels: rows
                .iter()
                .map(crate::notify::admin::channel_proto)
                .collect(),
        })
    }

    async fn remove_notify_channel(&self, req: Request<v1::NotifyChannelRef>) -> R<v1::Empty> {
        self.catalog
            .remove_notify_channel(&req.get_ref().name)
            .await?;
        tracing::info!(channel = %req.get_ref().name, "notification channel removed");
        ok(v1::Empty {})
    }

    async fn test_notify_channel(
        &self,
        req: Request<v1::NotifyChannelRef>,
    ) -> R<v1::TestNotifyChannelResponse> {
        ok(crate::notify::admin::test_channel(&self.notify, &req.get_ref().name).await?)
    }

    async fn add_notify_rule(&self, req: Request<v1::AddNotifyRuleRequest>) -> R<v1::NotifyRule> {
        ok(crate::notify::admin::add_rule(&self.notify, req.into_inner()).await?)
    }

    async fn list_notify_rules(
        &self,
        _: Request<v1::ListNotifyRulesRequest>,
    ) -> R<v1::ListNotifyRulesResponse> {
        let rows = self.catalog.list_notify_rules().await?;
        ok(v1::ListNotifyRulesResponse {
            rules: rows.iter().map(crate::notify::admin::rule_proto).collect(),
        })
    }

    async fn remove_notify_rule(&self, req: Request<v1::NotifyRuleRef>) -> R<v1::Empty> {
        self.catalog.remove_notify_rule(&req.get_ref().name).await?;
        tracing::info!(rule = %req.get_ref().name, "notification rule removed");
        ok(v1::Empty {})
    }
}

/// The authenticated caller's name ('' when there is none: plaintext tests).
fn caller_name<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// Longest token validity accepted (CreateToken `expires_in_seconds`).
const MAX_TOKEN_VALIDITY_DAYS: u64 = 10 * 366;

/// Now plus `seconds`, at most ten years.
fn expiry(seconds: u64) -> Result<chrono::DateTime<chrono::Utc>, Status> {
    let too_long = || {
        Status::invalid_argument(format!(
            "expiry of {seconds}s is over the {MAX_TOKEN_VALIDITY_DAYS} days allowed"
        ))
    };
    if seconds > MAX_TOKEN_VALIDITY_DAYS * 24 * 3600 {
        return Err(too_long());
    }
    let secs = i64::try_from(seconds).map_err(|_| too_long())?;
    Ok(chrono::Utc::now() + chrono::Duration::seconds(secs))
}

impl Admin {
    /// RestoreNow by an operator: only the policies that keep the existing
    /// database (RENAME, LEAVE); DROP, DROP_BEFORE and TRUNCATE need admin.
    /// For a restore job, its own policy counts.
    async fn check_restore_policy(
        &self,
        caller: Option<&Caller>,
        req: &v1::RestoreNowRequest,
    ) -> Result<(), Status> {
        let Some(caller) = caller.filter(|c| c.role < Role::Admin) else {
            return Ok(());
        };
        use v1::restore_now_request::What;
        let existing = match &req.what {
            Some(What::Dump(d)) => d.target.as_ref().map_or(0, |t| t.existing_database),
            Some(What::RestoreJobId(id)) => {
                let job = self.catalog.restore_job(*id).await?;
                rows::existing_database_value(&job.existing_database)
            }
            None => return Ok(()),
        };
        if is_destructive_policy(existing) {
            let policy = v1::ExistingDatabase::try_from(existing)
                .map_or_else(|_| existing.to_string(), |e| e.as_str_name().to_string());
            return Err(Status::permission_denied(format!(
                "{} has the {} role; RestoreNow with existing-database policy {policy} needs admin",
                caller.describe(),
                caller.role.label()
            )));
        }
        Ok(())
    }

    async fn copy_job_proto(&self, c: &crate::catalog::CopyJobRows) -> Result<v1::CopyJob, Status> {
        let mut restore_jobs = Vec::with_capacity(c.restore_jobs.len());
        for r in &c.restore_jobs {
            restore_jobs.push(r.to_proto(self.catalog.last_run(r.id).await?.as_ref()));
        }
        Ok(v1::CopyJob {
            dump_job: Some(c.dump_job.to_proto()),
            restore_jobs,
            last_dump: c.last_dump.as_ref().map(rows::DumpRow::to_proto),
        })
    }
}

/// Verification checks are SQL run as the instance user (often a
/// superuser): that is more than an operator may do. Refuses `rpc` for a
/// caller below admin when it `touches_checks`.
fn checks_need_admin(
    caller: Option<&Caller>,
    rpc: &str,
    touches_checks: bool,
) -> Result<(), Status> {
    match caller.filter(|c| c.role < Role::Admin) {
        Some(c) if touches_checks => Err(Status::permission_denied(format!(
            "token {} has the {} role; {rpc} with verification checks runs SQL as the instance \
             user and needs admin",
            c.name,
            c.role.label()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_checks_need_admin() {
        let caller = |role| Caller {
            name: "t".into(),
            role,
        };
        let ops = caller(Role::Operator);
        let e = checks_need_admin(Some(&ops), "UpdateDumpJob", true).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message()
                .contains("UpdateDumpJob with verification checks"),
            "{e}"
        );
        assert!(e.message().contains("needs admin"), "{e}");
        assert!(checks_need_admin(Some(&ops), "UpdateDumpJob", false).is_ok());
        assert!(checks_need_admin(Some(&caller(Role::Admin)), "AddDumpJob", true).is_ok());
        // No caller: no authentication layer ran (as VerifyDumpNow treats it).
        assert!(checks_need_admin(None, "AddDumpJob", true).is_ok());
    }
}
