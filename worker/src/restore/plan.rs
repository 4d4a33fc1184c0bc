//! What a `RestoreSpec` asks for, checked before anything runs: types,
//! policies, names and options with their defaults applied, and the
//! combinations that cannot work refused with the reason (the run is then
//! ABORTED). Also which client versions may read a dump. Pure; no I/O.
use std::collections::BTreeMap;

use pgsnapman_proto::model::{validate_identifier, validate_restore_options};
use pgsnapman_proto::v1::{
    DumpFormat, DumpType, ExistingDatabase, InstanceConnection, RestoreSpec, RestoreType,
};
use uuid::Uuid;

use super::script::Tablespaces;

/// What is restored: one database (or schema) through pg_restore/psql, or a
/// pg_dumpall script through psql.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Database,
    Cluster,
}

/// A checked spec.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub run_id: i64,
    pub dump_uuid: Uuid,
    /// The worker whose store holds the dump (empty: this worker).
    pub dump_worker: String,
    /// Where `dump_worker`'s store keeps its packs (granted restores only).
    pub dump_store: Option<pgsnapman_proto::v1::StoreLocation>,
    pub dump_type: DumpType,
    pub format: DumpFormat,
    pub restore_type: RestoreType,
    pub existing: ExistingDatabase,
    /// The target database (empty for cluster dumps).
    pub database: String,
    /// Only this schema.
    pub schema: Option<String>,
    pub roles: bool,
    /// With roles off: who owns the new database (None: the instance user).
    pub owner: Option<String>,
    pub tablespaces: Tablespaces,
    pub parallel: u32,
    pub extra_options: Vec<String>,
    pub instance: InstanceConnection,
    /// The pg_dump/pg_dumpall version that wrote the dump (major, minor).
    pub dump_client: Option<(u32, u32)>,
    pub dump_client_text: String,
}

impl Plan {
    /// The store file a single-stream dump is kept in.
    pub fn stream_file(&self) -> &'static str {
        match (self.kind, self.format) {
            (Kind::Cluster, _) => "dumpall.sql",
            (_, DumpFormat::Plain) => "dump.sql",
            _ => "archive.dump",
        }
    }

    /// The maintenance database of the target instance.
    pub fn maintenance_db(&self) -> &str {
        if self.instance.maintenance_db.is_empty() {
            "postgres"
        } else {
            &self.instance.maintenance_db
        }
    }

    /// The role the worker connects as.
    pub fn instance_user(&self) -> &str {
        if self.instance.user.is_empty() {
            "postgres"
        } else {
            &self.instance.user
        }
    }

    /// The role that owns what a roles-off restore creates.
    pub fn roles_off_owner(&self) -> &str {
        self.owner.as_deref().unwrap_or(self.instance_user())
    }
}

/// `(major, minor)` from a `pg_dump --version` line or a server version:
/// "pg_dump (PostgreSQL) 15.14 (Debian …)" → (15, 14), "16beta2" → (16, 0),
/// "9.6.24" → (9, 6).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let rest = match text.find(')') {
        Some(i) if text.contains("(PostgreSQL)") => &text[i + 1..],
        _ => text,
    };
    let token = rest
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
    let number = |s: &str| {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (s[..n].parse::<u32>().ok(), n)
    };
    let (major, n) = number(token);
    let minor = token[n..]
        .strip_prefix('.')
        .and_then(|r| number(r).0)
        .unwrap_or(0);
    Some((major?, minor))
}

/// `RENAME`, `DROP`, … for messages.
pub fn policy_label(e: ExistingDatabase) -> &'static str {
    e.as_str_name().trim_start_matches("EXISTING_DATABASE_")
}

/// `FULL`, `SCHEMA`, `DATA` for messages.
pub fn restore_type_label(t: RestoreType) -> &'static str {
    t.as_str_name().trim_start_matches("RESTORE_TYPE_")
}

/// True for client versions that know `\restrict` (CVE-2025-8714): plain
/// scripts written by such a pg_dump carry it, and only such a psql reads
/// them.
pub fn knows_restrict((major, minor): (u32, u32)) -> bool {
    match major {
        0..=12 => false,
        13 => minor >= 22,
        14 => minor >= 19,
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        _ => true,
    }
}

/// Checks `spec`; the error is the reason to abort.
pub fn check(spec: &RestoreSpec) -> Result<Plan, String> {
    let instance = spec
        .target_instance
        .clone()
        .ok_or("the task names no target instance")?;
    if instance.host.is_empty() {
        return Err(format!(
            "target instance {} has no host",
            instance.instance_id
        ));
    }
    let target = spec
        .target
        .clone()
        .ok_or("the task has no restore target")?;
    let dump_uuid = Uuid::parse_str(&spec.dump_uuid)
        .map_err(|_| format!("dump uuid {:?} is not a UUID", spec.dump_uuid))?;
    let dump_type = DumpType::try_from(spec.dump_type)
        .map_err(|_| format!("unknown dump type {}", spec.dump_type))?;
    let kind = match dump_type {
        // A SCRIPT dump is a database archive like pg_dump's (docs/scripts.md).
        DumpType::Full | DumpType::Schema | DumpType::Script => Kind::Database,
        DumpType::Cluster | DumpType::ClusterSchema | DumpType::Globals => Kind::Cluster,
        other => {
            return Err(format!(
                "dumps of type {} cannot be restored",
                other.label()
            ));
        }
    };
    let format = match DumpFormat::try_from(spec.format) {
        Ok(DumpFormat::Unspecified) => dump_type.default_format(),
        Ok(f) => f,
        Err(_) => return Err(format!("unknown dump format {}", spec.format)),
    };
    let restore_type = match RestoreType::try_from(target.restore_type) {
        Ok(RestoreType::Unspecified) => RestoreType::Full,
        Ok(t) => t,
        Err(_) => return Err(format!("unknown restore type {}", target.restore_type)),
    };
    let existing = match ExistingDatabase::try_from(target.existing_database) {
        Ok(ExistingDatabase::Unspecified) => ExistingDatabase::Rename,
        Ok(e) => e,
        Err(_) => {
            return Err(format!(
                "unknown existing-database policy {}",
                target.existing_database
            ));
        }
    };
    validate_restore_options(&target.extra_options).map_err(|e| e.to_string())?;
    let schema = (!target.schema.is_empty()).then(|| target.schema.clone());
    if let Some(s) = &schema {
        validate_identifier("schema", s).map_err(|e| e.to_string())?;
    }
    let owner = (!target.owner.is_empty()).then(|| target.owner.clone());
    if let Some(o) = &owner {
        validate_identifier("owner", o).map_err(|e| e.to_string())?;
    }
    let mut map = BTreeMap::new();
    for (old, new) in &target.tablespace_map {
        validate_identifier("tablespace", old).map_err(|e| e.to_string())?;
        if !new.is_empty() {
            validate_identifier("tablespace", new).map_err(|e| e.to_string())?;
        }
        map.insert(old.clone(), new.clone());
    }
    let database = if kind == Kind::Database {
        validate_identifier("target database", &target.database).map_err(|e| e.to_string())?;
        target.database.clone()
    } else {
        String::new()
    };
    if kind == Kind::Database {
        check_combination(
            dump_type,
            format,
            restore_type,
            existing,
            schema.as_deref(),
            &spec.source_schema,
        )?;
    }
    let dump_client_text = if spec.dump_client_version.is_empty() {
        spec.dump_server_version.clone()
    } else {
        spec.dump_client_version.clone()
    };
    Ok(Plan {
        kind,
        run_id: spec.run_id,
        dump_uuid,
        dump_worker: spec.dump_worker_name.clone(),
        dump_store: spec.dump_store.clone(),
        dump_type,
        format,
        restore_type,
        existing,
        database,
        schema,
        roles: target.roles,
        owner,
        tablespaces: Tablespaces {
            keep: target.keep_tablespaces,
            map,
        },
        parallel: target.parallel_jobs,
        extra_options: target.extra_options,
        instance,
        dump_client: parse_version(&dump_client_text),
        dump_client_text,
    })
}

/// How a new database takes the target's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// There is no database of that name: rename the new one.
    Fresh,
    /// The old one becomes the backup, the new one takes its name.
    Rename,
    /// As Rename, then the old one is dropped.
    Drop,
}

/// A change inside the existing database, in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlace {
    /// Truncate the dumped tables, load their data.
    Truncate,
    /// The schema does not exist: create it, restore into it.
    CreateSchema,
    /// The schema exists: move it aside as the backup (`keep_backup`) or
    /// drop it, then create and restore it.
    ReplaceSchema { keep_backup: bool },
}

/// What a restore does, given what exists on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refuse, changing nothing (ABORTED).
    Abort(String),
    /// Restore into a new database under a temporary name, then give it
    /// the target's name; `drop_first`: DROP_BEFORE drops the target first.
    New {
        drop_first: bool,
        swap: Swap,
    },
    InPlace(InPlace),
}

/// The decision for `plan` when the target database exists (`db_exists`)
/// and, for one-schema restores into it, whether the schema does.
pub fn decide(plan: &Plan, db_exists: bool, schema_exists: Option<bool>) -> Decision {
    let db = &plan.database;
    let data = plan.restore_type == RestoreType::Data;
    let policy = plan.existing;
    let exists_abort = |what: String| {
        Decision::Abort(format!(
            "{what} exists and the policy is LEAVE: nothing was changed"
        ))
    };
    match (&plan.schema, db_exists) {
        (Some(s), true) => {
            let s_exists = schema_exists.unwrap_or(false);
            if data {
                return match (policy, s_exists) {
                    (_, false) => Decision::Abort(format!(
                        "schema \"{s}\" does not exist in database \"{db}\": a DATA restore has no tables to load into"
                    )),
                    (ExistingDatabase::Truncate, true) => Decision::InPlace(InPlace::Truncate),
                    _ => exists_abort(format!("schema \"{s}\" of database \"{db}\"")),
                };
            }
            if !s_exists {
                return Decision::InPlace(InPlace::CreateSchema);
            }
            match policy {
                ExistingDatabase::Rename => {
                    Decision::InPlace(InPlace::ReplaceSchema { keep_backup: true })
                }
                ExistingDatabase::Drop | ExistingDatabase::DropBefore => {
                    Decision::InPlace(InPlace::ReplaceSchema { keep_backup: false })
                }
                ExistingDatabase::Leave => {
                    exists_abort(format!("schema \"{s}\" of database \"{db}\""))
                }
                other => Decision::Abort(format!(
                    "policy {} does not apply to a {} restore",
                    policy_label(other),
                    restore_type_label(plan.restore_type)
                )),
            }
        }
        (_, true) => match (data, policy) {
            (true, ExistingDatabase::Truncate) => Decision::InPlace(InPlace::Truncate),
            (_, ExistingDatabase::Leave) => exists_abort(format!("database \"{db}\"")),
            (false, ExistingDatabase::Rename) => Decision::New {
                drop_first: false,
                swap: Swap::Rename,
            },
            (false, ExistingDatabase::Drop) => Decision::New {
                drop_first: false,
                swap: Swap::Drop,
            },
            (false, ExistingDatabase::DropBefore) => Decision::New {
                drop_first: true,
                swap: Swap::Fresh,
            },
            (_, other) => Decision::Abort(format!(
                "policy {} does not apply to a {} restore",
                policy_label(other),
                restore_type_label(plan.restore_type)
            )),
        },
        (_, false) if data => Decision::Abort(format!(
            "database \"{db}\" does not exist on the target: a DATA restore loads into existing tables"
        )),
        (_, false) => Decision::New {
            drop_first: false,
            swap: Swap::Fresh,
        },
    }
}

/// Combinations of dump and target settings that can never work.
fn check_combination(
    dump_type: DumpType,
    format: DumpFormat,
    restore_type: RestoreType,
    existing: ExistingDatabase,
    schema: Option<&str>,
    source_schema: &str,
) -> Result<(), String> {
    if existing == ExistingDatabase::Truncate && restore_type != RestoreType::Data {
        return Err("the TRUNCATE policy is for DATA restores only".into());
    }
    if restore_type == RestoreType::Data && dump_type == DumpType::Schema {
        return Err("a SCHEMA dump holds no data: a DATA restore has nothing to load".into());
    }
    if restore_type == RestoreType::Data
        && !matches!(
            existing,
            ExistingDatabase::Truncate | ExistingDatabase::Leave
        )
    {
        return Err(format!(
            "a DATA restore loads into the existing tables: use the TRUNCATE policy (not {})",
            policy_label(existing)
        ));
    }
    if format == DumpFormat::Plain {
        if restore_type == RestoreType::Data {
            return Err("a plain-format dump cannot be restored data-only (use the custom or directory format)".into());
        }
        if restore_type == RestoreType::Schema && dump_type == DumpType::Full {
            return Err("a plain-format FULL dump cannot be restored schema-only (use the custom or directory format)".into());
        }
        if let Some(s) = schema
            && s != source_schema
        {
            return Err(format!(
                "a plain-format dump cannot be restored one schema at a time (schema \"{s}\"); use the custom or directory format"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsnapman_proto::v1::RestoreTarget;

    fn spec() -> RestoreSpec {
        RestoreSpec {
            run_id: 5,
            restore_job_id: 0,
            dump_uuid: Uuid::now_v7().to_string(),
            source_database: "src".into(),
            source_schema: String::new(),
            dump_type: DumpType::Full as i32,
            format: DumpFormat::Custom as i32,
            dump_server_version: "15.8".into(),
            dump_client_version: "pg_dump (PostgreSQL) 15.14 (Debian 15.14-1)".into(),
            restore_metadata_json: String::new(),
            target: Some(RestoreTarget {
                instance_id: 1,
                database: "Odd \"db\"".into(),
                ..RestoreTarget::default()
            }),
            target_instance: Some(InstanceConnection {
                instance_id: 1,
                host: "127.0.0.1".into(),
                port: 5432,
                user: "postgres".into(),
                ..InstanceConnection::default()
            }),
            dump_worker_name: String::new(),
            script: None,
            dump_store: None,
        }
    }

    fn with(f: impl FnOnce(&mut RestoreSpec)) -> Result<Plan, String> {
        let mut s = spec();
        f(&mut s);
        check(&s)
    }

    #[test]
    fn defaults_are_applied() {
        let p = check(&spec()).unwrap();
        assert_eq!(p.kind, Kind::Database);
        assert_eq!(p.restore_type, RestoreType::Full);
        assert_eq!(p.existing, ExistingDatabase::Rename);
        assert_eq!(p.stream_file(), "archive.dump");
        assert_eq!(p.maintenance_db(), "postgres");
        assert_eq!(p.roles_off_owner(), "postgres");
        assert_eq!(p.dump_client, Some((15, 14)));
        let c = with(|s| {
            s.dump_type = DumpType::Globals as i32;
            s.format = 0;
            s.target.as_mut().unwrap().database.clear();
        })
        .unwrap();
        assert_eq!(
            (c.kind, c.format, c.stream_file()),
            (Kind::Cluster, DumpFormat::Plain, "dumpall.sql")
        );
    }

    #[test]
    fn impossible_combinations_are_refused_with_a_reason() {
        let e = with(|s| {
            s.target.as_mut().unwrap().existing_database = ExistingDatabase::Truncate as i32
        })
        .unwrap_err();
        assert!(e.contains("DATA restores only"), "{e}");
        let e = with(|s| {
            let t = s.target.as_mut().unwrap();
            t.restore_type = RestoreType::Data as i32;
            t.existing_database = ExistingDatabase::Drop as i32;
        })
        .unwrap_err();
        assert!(e.contains("TRUNCATE"), "{e}");
        let e = with(|s| {
            s.format = DumpFormat::Plain as i32;
            s.target.as_mut().unwrap().schema = "x".into();
        })
        .unwrap_err();
        assert!(e.contains("one schema at a time"), "{e}");
        let e = with(|s| s.target.as_mut().unwrap().extra_options = vec!["--clean".into()])
            .unwrap_err();
        assert!(e.contains("--clean"), "{e}");
        assert!(with(|s| s.target.as_mut().unwrap().database.clear()).is_err());
        assert!(with(|s| s.target_instance = None).is_err());
        assert!(with(|s| s.dump_type = DumpType::Unspecified as i32).is_err());
        assert!(with(|s| s.dump_type = DumpType::Script as i32).is_ok());
        assert!(with(|s| s.dump_uuid = "x".into()).is_err());
        let ok = with(|s| {
            let t = s.target.as_mut().unwrap();
            t.restore_type = RestoreType::Data as i32;
            t.existing_database = ExistingDatabase::Truncate as i32;
            t.tablespace_map.insert("old".into(), String::new());
        })
        .unwrap();
        assert_eq!(ok.tablespaces.target("old"), "");
    }

    #[test]
    fn decisions_follow_the_policy_and_what_exists() {
        let plan = |ty: RestoreType, policy: ExistingDatabase, schema: Option<&str>| {
            let mut p = check(&spec()).unwrap();
            p.restore_type = ty;
            p.existing = policy;
            p.schema = schema.map(str::to_string);
            p
        };
        use ExistingDatabase as E;
        use RestoreType as T;
        let new = |drop_first, swap| Decision::New { drop_first, swap };
        assert_eq!(
            decide(&plan(T::Full, E::Rename, None), true, None),
            new(false, Swap::Rename)
        );
        assert_eq!(
            decide(&plan(T::Full, E::Drop, None), true, None),
            new(false, Swap::Drop)
        );
        assert_eq!(
            decide(&plan(T::Schema, E::DropBefore, None), true, None),
            new(true, Swap::Fresh)
        );
        assert_eq!(
            decide(&plan(T::Full, E::Leave, None), false, None),
            new(false, Swap::Fresh)
        );
        assert!(
            matches!(decide(&plan(T::Full, E::Leave, None), true, None), Decision::Abort(r) if r.contains("LEAVE"))
        );
        assert_eq!(
            decide(&plan(T::Data, E::Truncate, None), true, None),
            Decision::InPlace(InPlace::Truncate)
        );
        assert!(
            matches!(decide(&plan(T::Data, E::Truncate, None), false, None), Decision::Abort(r) if r.contains("does not exist"))
        );
        // One schema into an existing database: the policy applies to the schema.
        let s = Some("s");
        assert_eq!(
            decide(&plan(T::Full, E::Leave, s), true, Some(false)),
            Decision::InPlace(InPlace::CreateSchema)
        );
        assert_eq!(
            decide(&plan(T::Full, E::Rename, s), true, Some(true)),
            Decision::InPlace(InPlace::ReplaceSchema { keep_backup: true })
        );
        assert_eq!(
            decide(&plan(T::Full, E::Drop, s), true, Some(true)),
            Decision::InPlace(InPlace::ReplaceSchema { keep_backup: false })
        );
        assert!(matches!(
            decide(&plan(T::Full, E::Leave, s), true, Some(true)),
            Decision::Abort(_)
        ));
        assert_eq!(
            decide(&plan(T::Data, E::Truncate, s), true, Some(true)),
            Decision::InPlace(InPlace::Truncate)
        );
        assert!(matches!(
            decide(&plan(T::Data, E::Truncate, s), true, Some(false)),
            Decision::Abort(_)
        ));
        // ... and a new database when it does not exist.
        assert_eq!(
            decide(&plan(T::Full, E::Rename, s), false, None),
            new(false, Swap::Fresh)
        );
    }

    #[test]
    fn versions_are_parsed() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"),
            Some((15, 14))
        );
        assert_eq!(parse_version("pg_dumpall (PostgreSQL) 17.6"), Some((17, 6)));
        assert_eq!(parse_version("16beta2"), Some((16, 0)));
        assert_eq!(parse_version("15.8"), Some((15, 8)));
        assert_eq!(parse_version("9.6.24"), Some((9, 6)));
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn restrict_support_by_version() {
        assert!(knows_restrict((15, 14)) && knows_restrict((17, 6)) && knows_restrict((18, 0)));
        assert!(!knows_restrict((15, 13)) && !knows_restrict((16, 9)) && !knows_restrict((12, 22)));
    }
}
