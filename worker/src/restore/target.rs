//! The SQL a restore runs on the target server itself (not the dump): what
//! exists there, creating and dropping databases, ending sessions, renaming,
//! roles from the metadata, the database's owner, ACL and settings, schemas
//! and the tables to truncate. Every name is quoted (`names`); statements
//! go one by one through the run's psql `Session`. The pure statement
//! builders are separate from the calls so they can be tested.
use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::metadata::{
    Metadata, database_privilege, plain_setting_name, plain_setting_value, single_statement,
};
use super::names::{quote_ident, quote_literal};
use super::pipeline::Cancelled;
use crate::error::ClientError;
use crate::runner::connection::Session;
use crate::runner::process::excerpt;

/// Attempts to end other sessions and rename or drop a database.
const SWAP_ATTEMPTS: u32 = 5;
/// Pause between those attempts (each also waits up to 5 s in the server
/// for the sessions to go).
const SWAP_PAUSE: Duration = Duration::from_secs(1);

/// Names inside a database (schemas, tables) are exchanged in UTF-8
/// whatever its encoding (names in shared catalogs are not converted).
const IN_UTF8: &str = "SET client_encoding = 'UTF8'";

/// A rename or drop has no statement timeout: a DROP DATABASE waits for a
/// checkpoint and must not be stopped halfway (it would leave an invalid
/// database). Its waits for locks are bounded by `postgres.lock_timeout`,
/// its wait for other sessions by the server (5 s).
const SWAP_STATEMENT_TIMEOUT: &str = "SET statement_timeout = 0";

/// What the target says about itself.
#[derive(Debug, Clone, Deserialize)]
pub struct Facts {
    pub version_num: u32,
    pub version: String,
    pub user: String,
    pub superuser: bool,
    /// Those of the asked databases that exist.
    pub databases: Vec<String>,
    /// Those of the asked roles that exist.
    pub roles: Vec<String>,
}

impl Facts {
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }

    pub fn has_database(&self, name: &str) -> bool {
        self.databases.iter().any(|d| d == name)
    }

    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r == name)
    }
}

/// `ARRAY['a', 'b']::text[]`.
fn text_array(items: &[&str]) -> String {
    let lits: Vec<String> = items.iter().map(|s| quote_literal(s)).collect();
    format!("ARRAY[{}]::text[]", lits.join(", "))
}

/// The query behind `Facts`.
pub fn inspect_sql(databases: &[&str], roles: &[&str]) -> String {
    format!(
        "SELECT json_build_object(\
         'version_num', current_setting('server_version_num')::int, \
         'version', current_setting('server_version'), \
         'user', current_user, \
         'superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
         'databases', (SELECT coalesce(json_agg(datname ORDER BY datname), '[]'::json) \
                       FROM pg_database WHERE datname = ANY ({})), \
         'roles', (SELECT coalesce(json_agg(rolname ORDER BY rolname), '[]'::json) \
                   FROM pg_roles WHERE rolname = ANY ({})))",
        text_array(databases),
        text_array(roles)
    )
}

/// `CREATE DATABASE` with the dumped encoding, locale and provider (from
/// template0, so any encoding and locale works), the owner, and a
/// tablespace only when given. `None` metadata: the target's defaults.
pub fn create_database_sql(
    name: &str,
    meta: Option<&Metadata>,
    owner: &str,
    tablespace: Option<&str>,
    target_major: u32,
) -> Result<String, String> {
    let mut sql = format!(
        "CREATE DATABASE {} WITH TEMPLATE = template0",
        quote_ident(name)
    );
    if let Some(m) = meta {
        sql.push_str(&format!(
            " ENCODING = {} LC_COLLATE = {} LC_CTYPE = {}",
            quote_literal(&m.encoding),
            quote_literal(&m.collate),
            quote_literal(&m.ctype)
        ));
        let provider = m.locale_provider.as_deref().unwrap_or("libc");
        let locale = m.icu_locale.as_deref().unwrap_or_default();
        match provider {
            "libc" if target_major >= 15 => sql.push_str(" LOCALE_PROVIDER = libc"),
            "libc" => {}
            "icu" if target_major >= 15 => sql.push_str(&format!(
                " LOCALE_PROVIDER = icu ICU_LOCALE = {}",
                quote_literal(locale)
            )),
            "builtin" if target_major >= 17 => sql.push_str(&format!(
                " LOCALE_PROVIDER = builtin BUILTIN_LOCALE = {}",
                quote_literal(locale)
            )),
            other => {
                return Err(format!(
                    "the dumped database uses the {other} locale provider, which PostgreSQL {target_major} cannot create"
                ));
            }
        }
    }
    if let Some(ts) = tablespace {
        sql.push_str(&format!(" TABLESPACE = {}", quote_ident(ts)));
    }
    sql.push_str(&format!(" OWNER = {}", quote_ident(owner)));
    Ok(sql)
}

/// The statements that give database `db`, created with the dumped owner
/// (`create_database_sql`), the dumped ACL (run in one transaction). None
/// for the default ACL: the owner needs no statement of its own.
pub fn database_acl_sql(db: &str, meta: &Metadata) -> Result<Vec<String>, String> {
    let d = quote_ident(db);
    let mut out = Vec::new();
    if !meta.acl_is_default {
        out.push(format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"));
        out.push(format!(
            "REVOKE ALL ON DATABASE {d} FROM {}",
            quote_ident(&meta.owner)
        ));
        for item in &meta.acl {
            let privilege = database_privilege(&item.privilege).ok_or_else(|| {
                format!(
                    "unknown database privilege {:?} in the metadata",
                    item.privilege
                )
            })?;
            let grantee = item
                .grantee
                .as_deref()
                .map_or("PUBLIC".to_string(), quote_ident);
            let option = if item.grantable {
                " WITH GRANT OPTION"
            } else {
                ""
            };
            out.push(format!(
                "GRANT {privilege} ON DATABASE {d} TO {grantee}{option}"
            ));
        }
    }
    Ok(out)
}

/// `ALTER DATABASE … SET` and (with roles) `ALTER ROLE … IN DATABASE …
/// SET` statements for `db`, and the settings left out with the reason.
pub fn settings_sql(db: &str, meta: &Metadata, with_roles: bool) -> (Vec<String>, Vec<String>) {
    let mut statements = Vec::new();
    let mut skipped = Vec::new();
    for s in &meta.settings {
        if !plain_setting_name(&s.name) || !plain_setting_value(&s.sql_value) {
            skipped.push(format!(
                "setting {:?} = {:?} (not a plain name and value)",
                s.name, s.value
            ));
            continue;
        }
        match &s.role {
            None => statements.push(format!(
                "ALTER DATABASE {} SET {} TO {}",
                quote_ident(db),
                s.name,
                s.sql_value
            )),
            Some(role) if with_roles => statements.push(format!(
                "ALTER ROLE {} IN DATABASE {} SET {} TO {}",
                quote_ident(role),
                quote_ident(db),
                s.name,
                s.sql_value
            )),
            Some(role) => skipped.push(format!(
                "setting {} = {} of role \"{role}\" (role handling is off)",
                s.name, s.value
            )),
        }
    }
    (statements, skipped)
}

/// What creating the dump's roles on the target takes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RolePlan {
    /// Roles to create, in order.
    pub create: Vec<String>,
    /// Their statements, then the memberships, all in one transaction.
    pub statements: Vec<String>,
    /// Created roles that can log in (no password is captured).
    pub login_without_password: Vec<String>,
    /// Roles or memberships left out, with the reason.
    pub skipped: Vec<String>,
}

/// The roles of `meta` that `existing` lacks (predefined `pg_*` roles are
/// never created), from their captured statements; memberships where one
/// side is created now and both exist afterwards.
pub fn role_plan(meta: &Metadata, existing: &BTreeSet<String>) -> RolePlan {
    const ROLE_SQL: &[&[&str]] = &[&["CREATE", "ROLE"], &["ALTER", "ROLE"]];
    const GRANT_SQL: &[&[&str]] = &[&["GRANT"]];
    let mut plan = RolePlan::default();
    for r in &meta.roles {
        if existing.contains(&r.name) || r.predefined {
            continue;
        }
        if r.sql.is_empty() || !r.sql.iter().all(|s| single_statement(s, ROLE_SQL)) {
            plan.skipped.push(format!(
                "role \"{}\": its captured statements are not plain CREATE/ALTER ROLE statements",
                r.name
            ));
            continue;
        }
        plan.create.push(r.name.clone());
        plan.statements.extend(r.sql.iter().cloned());
        if r.login {
            plan.login_without_password.push(r.name.clone());
        }
    }
    let created: BTreeSet<&String> = plan.create.iter().collect();
    let exists_after = |n: &String| existing.contains(n) || created.contains(n);
    for r in &meta.roles {
        for m in &r.member_of {
            let touches_new = created.contains(&r.name) || created.contains(&m.role);
            if !touches_new {
                continue;
            }
            if !exists_after(&r.name) || !exists_after(&m.role) {
                plan.skipped.push(format!(
                    "membership of \"{}\" in \"{}\": \"{}\" does not exist on the target",
                    r.name,
                    m.role,
                    if exists_after(&r.name) {
                        &m.role
                    } else {
                        &r.name
                    }
                ));
                continue;
            }
            if !single_statement(&m.sql, GRANT_SQL) {
                plan.skipped.push(format!(
                    "membership of \"{}\" in \"{}\": not a plain GRANT",
                    r.name, m.role
                ));
                continue;
            }
            plan.statements.push(m.sql.clone());
        }
    }
    plan
}

/// Runs SQL on the target instance as the instance user, through the
/// run's session (which also gives pg_restore and psql their password file).
pub struct Target {
    session: Session,
}

impl Target {
    pub fn new(session: Session) -> Self {
        Self { session }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Runs `statements` on `db`, each on its own, stopping at the first
    /// error; returns the output. Cancelled: the `Cancelled` error.
    pub async fn sql(
        &self,
        db: &str,
        statements: &[&str],
        cancel: &CancellationToken,
    ) -> Result<String> {
        self.session
            .run(db, statements, cancel)
            .await?
            .ok_or_else(|| Cancelled.into())
    }

    /// `sql` that cannot be cancelled (cleanup, the swap).
    pub async fn sql_now(&self, db: &str, statements: &[&str]) -> Result<String> {
        Ok(self.session.run_uncancelled(db, statements).await?)
    }

    /// `statements` in one transaction.
    pub async fn transaction(
        &self,
        db: &str,
        statements: &[String],
        cancel: &CancellationToken,
    ) -> Result<()> {
        self.session
            .transaction(db, statements, cancel)
            .await?
            .ok_or_else(|| Cancelled.into())
    }

    pub async fn inspect(
        &self,
        admin_db: &str,
        databases: &[&str],
        roles: &[&str],
        cancel: &CancellationToken,
    ) -> Result<Facts> {
        let out = self
            .sql(admin_db, &[&inspect_sql(databases, roles)], cancel)
            .await?;
        serde_json::from_str(&out)
            .with_context(|| format!("unexpected answer from the target: {:?}", excerpt(&out)))
    }

    pub async fn database_exists(&self, admin_db: &str, name: &str) -> Result<bool> {
        let sql = format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            quote_literal(name)
        );
        Ok(self.sql_now(admin_db, &[&sql]).await? == "1")
    }

    pub async fn schema_exists(
        &self,
        db: &str,
        schema: &str,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let sql = format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = {}",
            quote_literal(schema)
        );
        Ok(self.sql(db, &[IN_UTF8, &sql], cancel).await? == "1")
    }

    /// `(schema, table)` of the ordinary and partitioned tables of `db`
    /// (of one schema if given).
    pub async fn tables(
        &self,
        db: &str,
        schema: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Vec<(String, String)>> {
        let filter = schema.map_or(String::new(), |s| {
            format!(" AND n.nspname = {}", quote_literal(s))
        });
        let sql = format!(
            "SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname)), '[]'::json) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%'{filter}"
        );
        let out = self.sql(db, &[IN_UTF8, &sql], cancel).await?;
        serde_json::from_str(&out)
            .with_context(|| format!("unexpected answer from the target: {:?}", excerpt(&out)))
    }

    /// Ends every other session of this run (its application name): a
    /// killed client does not stop a server backend waiting on a lock, and
    /// a CREATE DATABASE that goes on after a cancellation would leave a
    /// database behind.
    pub async fn terminate_own(&self, admin_db: &str) -> Result<u64> {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = {} AND pid <> pg_backend_pid()",
            quote_literal(self.session.app_name())
        );
        let out = self.sql_now(admin_db, &[&sql]).await?;
        Ok(out.parse().unwrap_or(0))
    }

    /// Ends the sessions on `db` and runs `statement` (a rename or drop of
    /// it) in the same psql, again while other sessions keep it busy, at
    /// most `SWAP_ATTEMPTS` times; returns how many sessions were ended.
    /// Never touches `datallowconn`.
    async fn while_idle(&self, admin_db: &str, db: &str, statement: &str) -> Result<u64> {
        let mut ended = 0;
        let terminate = terminate_sql(db);
        for attempt in 1..=SWAP_ATTEMPTS {
            let (out, failure) = self
                .session
                .run_uncancelled_partial(admin_db, &[&terminate, SWAP_STATEMENT_TIMEOUT, statement])
                .await?;
            // The count is the output's first line, also when the statement failed.
            ended += out.lines().next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let Some(failure) = failure else {
                return Ok(ended);
            };
            let e = anyhow::Error::from(failure);
            if attempt < SWAP_ATTEMPTS && ClientError::said(&e, "being accessed by other users") {
                tokio::time::sleep(SWAP_PAUSE).await;
                continue;
            }
            return Err(e);
        }
        bail!("database \"{db}\" stayed in use")
    }

    /// Renames `from` to `to` after ending the sessions on `from`.
    pub async fn rename_database(&self, admin_db: &str, from: &str, to: &str) -> Result<u64> {
        let sql = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(from),
            quote_ident(to)
        );
        self.while_idle(admin_db, from, &sql)
            .await
            .with_context(|| format!("cannot rename database \"{from}\" to \"{to}\""))
    }

    /// Drops `name` (if it exists) after ending the sessions on it.
    pub async fn drop_database(&self, admin_db: &str, name: &str) -> Result<u64> {
        let sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(name));
        self.while_idle(admin_db, name, &sql)
            .await
            .with_context(|| format!("cannot drop database \"{name}\""))
    }

    /// Drops roles this run created (best effort; the errors are returned).
    pub async fn drop_roles(&self, admin_db: &str, roles: &[String]) -> Vec<String> {
        let mut errors = Vec::new();
        for r in roles.iter().rev() {
            let sql = format!("DROP ROLE IF EXISTS {}", quote_ident(r));
            if let Err(e) = self.sql_now(admin_db, &[&sql]).await {
                errors.push(format!("role \"{r}\": {e:#}"));
            }
        }
        errors
    }
}

/// Ends the other sessions on `db` this role may end (a superuser: all;
/// else those of roles it is a member of, or all but superusers' with
/// `pg_signal_backend`) and selects how many were signalled. Sessions it
/// may not end keep the database busy, and the rename or drop then fails
/// saying so.
fn terminate_sql(db: &str) -> String {
    format!(
        "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a \
         LEFT JOIN pg_roles r ON r.oid = a.usesysid \
         WHERE a.datname = {} AND a.pid <> pg_backend_pid() \
         AND ((SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
              OR (NOT coalesce(r.rolsuper, true) \
                  AND (pg_has_role('pg_signal_backend', 'MEMBER') OR pg_has_role(a.usesysid, 'MEMBER'))))",
        quote_literal(db)
    )
}

/// A database of the instance to run admin statements in that is none of
/// `busy` (you cannot rename or drop the database you are connected to).
pub fn admin_db<'s>(maintenance: &'s str, busy: &[&str]) -> &'s str {
    for candidate in [maintenance, "postgres", "template1"] {
        if !busy.contains(&candidate) {
            return candidate;
        }
    }
    "template1"
}

/// Turns an error of a statement into the text of a failed step.
pub fn step_error(what: &str, e: anyhow::Error) -> anyhow::Error {
    if e.is::<Cancelled>() {
        return e;
    }
    anyhow!("{what}: {e:#}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::metadata::{AclItem, Membership, Role, Setting};

    fn meta() -> Metadata {
        Metadata {
            format_version: 1,
            database: "src".into(),
            owner: "Owner \"o\"".into(),
            encoding: "UTF8".into(),
            collate: "C.UTF-8".into(),
            ctype: "C.UTF-8".into(),
            locale_provider: Some("libc".into()),
            icu_locale: None,
            tablespace: Some("pg_default".into()),
            connection_limit: 7,
            is_template: false,
            allow_connections: true,
            acl_is_default: false,
            comment: None,
            acl: vec![
                AclItem {
                    grantee: None,
                    privilege: "CONNECT".into(),
                    grantable: false,
                },
                AclItem {
                    grantee: Some("odd role".into()),
                    privilege: "TEMPORARY".into(),
                    grantable: true,
                },
            ],
            settings: vec![
                Setting {
                    role: None,
                    name: "work_mem".into(),
                    value: "64MB".into(),
                    sql_value: "'64MB'".into(),
                },
                Setting {
                    role: Some("odd role".into()),
                    name: "search_path".into(),
                    value: "\"Odd Schema\", public".into(),
                    sql_value: "\"Odd Schema\", public".into(),
                },
                Setting {
                    role: None,
                    name: "search_path".into(),
                    value: "x; DROP DATABASE y".into(),
                    sql_value: "x; DROP DATABASE y".into(),
                },
            ],
            roles: vec![
                Role {
                    name: "app".into(),
                    predefined: false,
                    bootstrap_superuser: false,
                    superuser: false,
                    login: false,
                    sql: vec![
                        "CREATE ROLE app;".into(),
                        "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1;".into(),
                    ],
                    member_of: vec![],
                },
                Role {
                    name: "odd role".into(),
                    predefined: false,
                    bootstrap_superuser: false,
                    superuser: false,
                    login: true,
                    sql: vec!["CREATE ROLE \"odd role\";".into()],
                    member_of: vec![
                        Membership {
                            role: "app".into(),
                            admin_option: false,
                            sql: "GRANT app TO \"odd role\";".into(),
                        },
                        Membership {
                            role: "pg_read_all_data".into(),
                            admin_option: false,
                            sql: "GRANT pg_read_all_data TO \"odd role\";".into(),
                        },
                    ],
                },
                Role {
                    name: "evil".into(),
                    predefined: false,
                    bootstrap_superuser: false,
                    superuser: false,
                    login: false,
                    sql: vec!["CREATE ROLE evil; DROP DATABASE x;".into()],
                    member_of: vec![],
                },
                Role {
                    name: "pg_read_all_data".into(),
                    predefined: true,
                    bootstrap_superuser: false,
                    superuser: false,
                    login: false,
                    sql: vec![],
                    member_of: vec![],
                },
            ],
        }
    }

    #[test]
    fn create_database_follows_the_metadata() {
        let m = meta();
        let sql = create_database_sql("new \"db\"", Some(&m), "Owner \"o\"", None, 15).unwrap();
        assert_eq!(
            sql,
            "CREATE DATABASE \"new \"\"db\"\"\" WITH TEMPLATE = template0 ENCODING = 'UTF8' \
             LC_COLLATE = 'C.UTF-8' LC_CTYPE = 'C.UTF-8' LOCALE_PROVIDER = libc OWNER = \"Owner \"\"o\"\"\""
        );
        let mut icu = meta();
        icu.locale_provider = Some("icu".into());
        icu.icu_locale = Some("en-US".into());
        let sql = create_database_sql("d", Some(&icu), "o", Some("fast ts"), 16).unwrap();
        assert!(
            sql.contains(
                "LOCALE_PROVIDER = icu ICU_LOCALE = 'en-US' TABLESPACE = \"fast ts\" OWNER = \"o\""
            ),
            "{sql}"
        );
        assert!(
            create_database_sql("d", Some(&icu), "o", None, 14)
                .unwrap_err()
                .contains("PostgreSQL 14")
        );
        assert_eq!(
            create_database_sql("d", None, "o", None, 15).unwrap(),
            "CREATE DATABASE \"d\" WITH TEMPLATE = template0 OWNER = \"o\""
        );
    }

    #[test]
    fn acl_and_settings_are_quoted_and_checked() {
        let m = meta();
        let acl = database_acl_sql("d b", &m).unwrap();
        assert_eq!(
            acl,
            vec![
                "REVOKE ALL ON DATABASE \"d b\" FROM PUBLIC",
                "REVOKE ALL ON DATABASE \"d b\" FROM \"Owner \"\"o\"\"\"",
                "GRANT CONNECT ON DATABASE \"d b\" TO PUBLIC",
                "GRANT TEMPORARY ON DATABASE \"d b\" TO \"odd role\" WITH GRANT OPTION",
            ]
        );
        let mut bad = meta();
        bad.acl[0].privilege = "ALL; DROP".into();
        assert!(database_acl_sql("d", &bad).is_err());
        // The default ACL takes no statement (the owner comes with CREATE DATABASE).
        let mut default = meta();
        default.acl_is_default = true;
        assert_eq!(database_acl_sql("d", &default), Ok(Vec::new()));
        let (s, skipped) = settings_sql("d", &m, true);
        assert_eq!(
            s,
            vec![
                "ALTER DATABASE \"d\" SET work_mem TO '64MB'",
                "ALTER ROLE \"odd role\" IN DATABASE \"d\" SET search_path TO \"Odd Schema\", public",
            ]
        );
        assert_eq!(skipped.len(), 1);
        let (s, skipped) = settings_sql("d", &m, false);
        assert_eq!(s.len(), 1);
        assert_eq!(skipped.len(), 2);
    }

    #[test]
    fn missing_roles_are_created_with_their_memberships() {
        let m = meta();
        let existing = BTreeSet::from(["pg_read_all_data".to_string()]);
        let p = role_plan(&m, &existing);
        assert_eq!(p.create, vec!["app".to_string(), "odd role".to_string()]);
        assert_eq!(p.login_without_password, vec!["odd role".to_string()]);
        assert_eq!(
            p.statements.last().map(String::as_str),
            Some("GRANT pg_read_all_data TO \"odd role\";")
        );
        assert!(
            p.statements
                .contains(&"GRANT app TO \"odd role\";".to_string())
        );
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert!(p.skipped[0].contains("evil"));
        // Everything exists: nothing to do.
        let all = BTreeSet::from(["app".into(), "odd role".into(), "evil".into()]);
        assert_eq!(role_plan(&m, &all), RolePlan::default());
        // A membership in a role the target lacks is left out.
        let p = role_plan(&m, &BTreeSet::new());
        assert!(
            p.skipped.iter().any(|s| s.contains("pg_read_all_data")),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn inspect_and_admin_database() {
        let q = inspect_sql(&["a'b"], &[]);
        assert!(q.contains("ARRAY['a''b']::text[]") && q.contains("ARRAY[]::text[]"));
        assert_eq!(admin_db("postgres", &["app"]), "postgres");
        assert_eq!(admin_db("postgres", &["postgres"]), "template1");
        assert_eq!(admin_db("maint", &["maint"]), "postgres");
    }
}
