//! `pgsnap instance …`: the Postgres servers that get dumped, and their
//! auto-discovery settings. Passwords come from stdin or an environment
//! variable, never from argv, are never printed, and leave this machine
//! only sealed to the workers that use them (commands/password.rs).
use std::io::Read;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::model::{validate_identifier, validate_password};
use pgsnapman_proto::v1;
use zeroize::Zeroizing;

use super::Ctx;
use super::job::DEFAULT_RETENTION;
use super::password::{SealedTo, missing_notes, notice, seal_for, sealed_note};
use crate::args::{
    DiscoverMode, InstanceAddArgs, InstanceCommand, InstanceEditArgs, PasswordArgs,
    SetPasswordArgs, WorkerArg, worker_ref,
};
use crate::client::{Admin, rpc};
use crate::output::{json, table};

/// Longest password read from stdin; anything longer is a mistake (a file
/// piped by accident), not a password.
const MAX_PASSWORD_BYTES: u64 = pgsnapman_proto::seal::MAX_PASSWORD_BYTES as u64;

pub async fn run(ctx: &Ctx, cmd: InstanceCommand) -> Result<()> {
    match cmd {
        InstanceCommand::Add(args) => add(ctx, args).await,
        InstanceCommand::List => {
            let mut admin = ctx.admin().await?;
            let list = rpc(admin.list_instances(v1::ListInstancesRequest {}).await)?;
            ctx.out.list(
                list.instances.iter().map(json::instance).collect(),
                table::instances(&list.instances),
            )
        }
        InstanceCommand::Show { id } => {
            let mut admin = ctx.admin().await?;
            let i = rpc(admin.get_instance(v1::IdRequest { id }).await)?;
            ctx.out.object(json::instance(&i), table::instance_rows(&i))
        }
        InstanceCommand::Edit(args) => edit(ctx, args).await,
        InstanceCommand::Halt { id } => set_status(ctx, id, v1::Status::Halted, "halted").await,
        InstanceCommand::Resume { id } => set_status(ctx, id, v1::Status::Active, "resumed").await,
        InstanceCommand::Remove { id } => {
            let mut admin = ctx.admin().await?;
            rpc(admin.remove_instance(v1::IdRequest { id }).await)?;
            ctx.out.removed("instance", id)
        }
        InstanceCommand::SetPassword(args) => set_password(ctx, args).await,
    }
}

/// Seals the password to every worker that uses the instance and to
/// `--worker`, replacing every copy of the old one.
async fn set_password(ctx: &Ctx, a: SetPasswordArgs) -> Result<()> {
    let Some(password) = read_password(&a.password)? else {
        bail!("give the password with --password-stdin or --password-env VAR");
    };
    let mut admin = ctx.admin().await?;
    let cur = find_instance(&mut admin, &a.instance).await?;
    let (sealed, to) = seal_for_users(&mut admin, &cur, &a.worker, &a.password, &password).await?;
    let i = rpc(admin
        .update_instance(v1::UpdateInstanceRequest {
            id: cur.id,
            sealed_passwords: sealed,
            ..Default::default()
        })
        .await)?;
    ctx.out.changed(
        &format!(
            "updated instance {} ({}): {}",
            i.id,
            i.name,
            sealed_note(&to)
        ),
        json::instance(&i),
        table::instances(std::slice::from_ref(&i)),
    )
}

/// Seals `password` to every worker that uses or holds the password of
/// `cur` and to `worker`.
async fn seal_for_users(
    admin: &mut Admin,
    cur: &v1::Instance,
    worker: &Option<WorkerArg>,
    args: &PasswordArgs,
    password: &Zeroizing<String>,
) -> Result<(Vec<v1::SealedPassword>, Vec<SealedTo>)> {
    let mut workers = users(cur);
    workers.extend(worker_ref(worker.as_ref()));
    if workers.is_empty() {
        bail!(
            "no worker uses instance {} yet: name the one that will with --worker",
            cur.name
        );
    }
    let expect = args.worker_fingerprint.as_deref();
    seal_for(admin, &workers, password, expect).await
}

/// An instance named by id (all digits) or by name.
async fn find_instance(admin: &mut Admin, arg: &str) -> Result<v1::Instance> {
    if let Ok(id) = arg.parse::<i64>() {
        return rpc(admin.get_instance(v1::IdRequest { id }).await);
    }
    let list = rpc(admin.list_instances(v1::ListInstancesRequest {}).await)?;
    list.instances
        .into_iter()
        .find(|i| i.name == arg)
        .with_context(|| {
            format!(
                "no instance is named {}",
                pgsnapman_proto::model::quoted(arg)
            )
        })
}

/// The workers that use or hold the password of `i` (its default worker
/// when the coordinator lists none).
fn users(i: &v1::Instance) -> Vec<v1::WorkerRef> {
    let mut ids: Vec<i64> = i.passwords.iter().map(|p| p.worker_id).collect();
    if ids.is_empty() && i.default_worker_id != 0 {
        ids.push(i.default_worker_id);
    }
    ids.into_iter()
        .map(|id| v1::WorkerRef {
            r#ref: Some(v1::worker_ref::Ref::Id(id)),
        })
        .collect()
}

async fn add(ctx: &Ctx, a: InstanceAddArgs) -> Result<()> {
    check_names(a.user.as_deref(), a.maintenance_db.as_deref())?;
    let password = read_password(&a.password)?;
    if a.auto_discover && a.worker.is_none() {
        bail!("--auto-discover needs --worker: the default worker lists the databases");
    }
    if password.is_some() && a.worker.is_none() {
        bail!(
            "a password is sealed to the worker that uses it: name the default worker with --worker"
        );
    }
    let d = &a.discovery;
    let req = v1::AddInstanceRequest {
        name: a.name,
        host: a.host,
        port: a.port.map_or(0, u32::from),
        user: a.user.unwrap_or_default(),
        password: None,
        maintenance_db: a.maintenance_db.unwrap_or_default(),
        default_worker: worker_ref(a.worker.as_ref()),
        comment: a.comment.unwrap_or_default(),
        auto_discover: a.auto_discover,
        backup_window_start: d.backup_window.map(|w| w.start()),
        backup_window_end: d.backup_window.map(|w| w.end()),
        discovered_status: d.discovered_status.map_or(0, |s| s.to_proto() as i32),
        discovered_retention: d.retention_over(&DEFAULT_RETENTION),
        sslmode: a.sslmode.unwrap_or_default(),
        sealed_passwords: Vec::new(),
        // The next free id (only `pgsnap job import` gives one).
        id: 0,
        discover_report_only: d.discover == Some(DiscoverMode::Report),
    };
    let mut admin = ctx.admin().await?;
    let mut req = req;
    let mut note = String::new();
    if let Some(password) = &password {
        let workers: Vec<v1::WorkerRef> = worker_ref(a.worker.as_ref()).into_iter().collect();
        let expect = a.password.worker_fingerprint.as_deref();
        let (sealed, to) = seal_for(&mut admin, &workers, password, expect).await?;
        req.sealed_passwords = sealed;
        note = format!(": {}", sealed_note(&to));
    }
    let i = rpc(admin.add_instance(req).await)?;
    ctx.out.changed(
        &format!("created instance {} ({}){note}", i.id, i.name),
        json::instance(&i),
        table::instances(std::slice::from_ref(&i)),
    )
}

async fn edit(ctx: &Ctx, a: InstanceEditArgs) -> Result<()> {
    check_names(a.user.as_deref(), a.maintenance_db.as_deref())?;
    let password = read_password(&a.password)?;
    let d = &a.discovery;
    let unchanged = a.name.is_none()
        && a.host.is_none()
        && a.port.is_none()
        && a.user.is_none()
        && password.is_none()
        && !a.clear_password
        && a.maintenance_db.is_none()
        && a.worker.is_none()
        && a.comment.is_none()
        && a.auto_discover.is_none()
        && a.sslmode.is_none()
        && d.is_empty();
    if unchanged {
        bail!(
            "nothing to change for instance {}: give at least one option",
            a.id
        );
    }
    let mut admin = ctx.admin().await?;
    // Keep flags given without the others apply over the current retention.
    let discovered_retention = match d.retention_over(&v1::Retention::default()) {
        None => None,
        Some(_) => {
            let cur = rpc(admin.get_instance(v1::IdRequest { id: a.id }).await)?;
            d.retention_over(&cur.discovered_retention.unwrap_or(DEFAULT_RETENTION))
        }
    };
    let mut note = String::new();
    let mut sealed_passwords = Vec::new();
    if let Some(password) = &password {
        let cur = rpc(admin.get_instance(v1::IdRequest { id: a.id }).await)?;
        let (sealed, to) =
            seal_for_users(&mut admin, &cur, &a.worker, &a.password, password).await?;
        sealed_passwords = sealed;
        note = format!(": {}", sealed_note(&to));
    }
    let req = v1::UpdateInstanceRequest {
        id: a.id,
        name: a.name,
        host: a.host,
        port: a.port.map(u32::from),
        user: a.user,
        password: None,
        clear_password: a.clear_password,
        maintenance_db: a.maintenance_db,
        default_worker: worker_ref(a.worker.as_ref()),
        comment: a.comment,
        auto_discover: a.auto_discover,
        backup_window_start: d.backup_window.map(|w| w.start()),
        backup_window_end: d.backup_window.map(|w| w.end()),
        discovered_status: d.discovered_status.map_or(0, |s| s.to_proto() as i32),
        discovered_retention,
        sslmode: a.sslmode,
        sealed_passwords,
        discover_report_only: d.discover.map(|m| m == DiscoverMode::Report),
    };
    let i = rpc(admin.update_instance(req).await)?;
    // A new default worker has no copy of the password yet.
    for line in missing_notes(&i) {
        notice(&line);
    }
    ctx.out.changed(
        &format!("updated instance {} ({}){note}", i.id, i.name),
        json::instance(&i),
        table::instances(std::slice::from_ref(&i)),
    )
}

async fn set_status(ctx: &Ctx, id: i64, status: v1::Status, verb: &str) -> Result<()> {
    let mut admin = ctx.admin().await?;
    let i = rpc(admin
        .set_instance_status(v1::SetStatusRequest {
            id,
            status: status as i32,
        })
        .await)?;
    ctx.out.changed(
        &format!("{verb} instance {} ({})", i.id, i.name),
        json::instance(&i),
        table::instances(std::slice::from_ref(&i)),
    )
}

fn check_names(user: Option<&str>, maintenance_db: Option<&str>) -> Result<()> {
    if let Some(u) = user {
        validate_identifier("user", u)?;
    }
    if let Some(db) = maintenance_db {
        validate_identifier("maintenance database", db)?;
    }
    Ok(())
}

/// The password chosen by `--password-stdin` or `--password-env`, if any
/// (wiped from memory when dropped).
fn read_password(p: &PasswordArgs) -> Result<Option<Zeroizing<String>>> {
    let password = if p.password_stdin {
        let stdin = std::io::stdin().lock();
        stdin_password(stdin)?
    } else {
        let Some(var) = &p.password_env else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(v) if v.is_empty() => bail!("environment variable {var} is empty"),
            Ok(v) => Zeroizing::new(v),
            Err(std::env::VarError::NotPresent) => bail!("environment variable {var} is not set"),
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("environment variable {var} is not valid UTF-8")
            }
        }
    };
    validate_password(&password)?;
    Ok(Some(password))
}

/// All of `input` without one trailing line ending: the password. A line
/// break anywhere else is refused (by `validate_password`), not cut off.
fn stdin_password(input: impl Read) -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    let n = input
        .take(MAX_PASSWORD_BYTES + 1)
        .read_to_string(&mut text)
        .context("--password-stdin: read standard input as UTF-8")?;
    if n == 0 {
        bail!("--password-stdin: standard input is empty");
    }
    if u64::try_from(n).unwrap_or(u64::MAX) > MAX_PASSWORD_BYTES {
        bail!("--password-stdin: standard input is longer than {MAX_PASSWORD_BYTES} bytes");
    }
    let password = text
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&text);
    if password.is_empty() {
        bail!("--password-stdin: the password on standard input is empty");
    }
    validate_password(password).context("--password-stdin")?;
    Ok(Zeroizing::new(password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_stdin_without_one_line_ending() {
        assert_eq!(stdin_password(&b"s3cret\n"[..]).unwrap().as_str(), "s3cret");
        assert_eq!(
            stdin_password(&b"s3cret\r\n"[..]).unwrap().as_str(),
            "s3cret"
        );
        assert_eq!(
            stdin_password(&b"no newline"[..]).unwrap().as_str(),
            "no newline"
        );
        assert_eq!(
            stdin_password(&b" spaces kept \n"[..]).unwrap().as_str(),
            " spaces kept "
        );
        assert!(stdin_password(&b""[..]).is_err());
        assert!(stdin_password(&b"\n"[..]).is_err());
        let long = vec![b'x'; 5000];
        assert!(stdin_password(&long[..]).is_err());
        // A line break inside is refused, not silently cut off.
        for bad in [&b"s3cret\r\nmore\n"[..], b"a\nb", b"ab\n\n", b"a\rb\n"] {
            let err = format!("{:#}", stdin_password(bad).unwrap_err());
            assert!(err.contains("line break"), "{err}");
        }
    }
}
