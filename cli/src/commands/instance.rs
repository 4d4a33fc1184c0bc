//! `pgsnap instance …`: the Postgres servers that get dumped, and their
//! auto-discovery settings. Passwords come from stdin or an environment
//! variable, never from argv, and are never printed.
use std::io::Read;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::model::{validate_identifier, validate_password};
use pgsnapman_proto::v1;

use super::Ctx;
use super::job::DEFAULT_RETENTION;
use crate::args::{InstanceAddArgs, InstanceCommand, InstanceEditArgs, PasswordArgs, worker_ref};
use crate::client::rpc;
use crate::output::{json, table};

/// Longest password read from stdin; anything longer is a mistake (a file
/// piped by accident), not a password.
const MAX_PASSWORD_BYTES: u64 = 4096;

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
    }
}

async fn add(ctx: &Ctx, a: InstanceAddArgs) -> Result<()> {
    check_names(a.user.as_deref(), a.maintenance_db.as_deref())?;
    let password = read_password(&a.password)?;
    if a.auto_discover && a.worker.is_none() {
        bail!("--auto-discover needs --worker: the default worker lists the databases");
    }
    let d = &a.discovery;
    let req = v1::AddInstanceRequest {
        name: a.name,
        host: a.host,
        port: a.port.map_or(0, u32::from),
        user: a.user.unwrap_or_default(),
        password,
        maintenance_db: a.maintenance_db.unwrap_or_default(),
        default_worker: worker_ref(a.worker.as_ref()),
        comment: a.comment.unwrap_or_default(),
        auto_discover: a.auto_discover,
        backup_window_start: d.backup_window.map(|w| w.start()),
        backup_window_end: d.backup_window.map(|w| w.end()),
        discovered_status: d.discovered_status.map_or(0, |s| s.to_proto() as i32),
        discovered_retention: d.retention_over(&DEFAULT_RETENTION),
        sslmode: a.sslmode.unwrap_or_default(),
    };
    let mut admin = ctx.admin().await?;
    let i = rpc(admin.add_instance(req).await)?;
    ctx.out.changed(
        &format!("created instance {} ({})", i.id, i.name),
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
    let req = v1::UpdateInstanceRequest {
        id: a.id,
        name: a.name,
        host: a.host,
        port: a.port.map(u32::from),
        user: a.user,
        password,
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
    };
    let i = rpc(admin.update_instance(req).await)?;
    ctx.out.changed(
        &format!("updated instance {} ({})", i.id, i.name),
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

/// The password chosen by `--password-stdin` or `--password-env`, if any.
fn read_password(p: &PasswordArgs) -> Result<Option<String>> {
    let password = if p.password_stdin {
        let stdin = std::io::stdin().lock();
        stdin_password(stdin)?
    } else {
        let Some(var) = &p.password_env else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(v) if v.is_empty() => bail!("environment variable {var} is empty"),
            Ok(v) => v,
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
fn stdin_password(input: impl Read) -> Result<String> {
    let mut text = String::new();
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
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_stdin_without_one_line_ending() {
        assert_eq!(stdin_password(&b"s3cret\n"[..]).unwrap(), "s3cret");
        assert_eq!(stdin_password(&b"s3cret\r\n"[..]).unwrap(), "s3cret");
        assert_eq!(stdin_password(&b"no newline"[..]).unwrap(), "no newline");
        assert_eq!(
            stdin_password(&b" spaces kept \n"[..]).unwrap(),
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
