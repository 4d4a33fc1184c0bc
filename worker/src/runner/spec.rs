//! What a `DumpSpec` becomes before anything runs: the checked spec (type,
//! format, the database to connect to) and the dump program's arguments.
//! Pure; nothing here touches a server.
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::model::{validate_dump_options, validate_identifier};
use pgsnapman_proto::v1::{DumpFormat, DumpSpec, DumpType, InstanceConnection};

use super::connection::schema_pattern;

/// Everything checked about a spec before anything runs.
pub(crate) struct Checked<'a> {
    pub spec: &'a DumpSpec,
    pub instance: &'a InstanceConnection,
    pub dump_type: DumpType,
    pub format: DumpFormat,
    /// The database the probe (and pg_dumpall's first connection) uses.
    pub connect_db: String,
}

pub(crate) fn check_spec(spec: &DumpSpec) -> Result<Checked<'_>> {
    let instance = spec
        .instance
        .as_ref()
        .context("the task names no instance")?;
    if instance.host.is_empty() {
        bail!("instance {} has no host", instance.instance_id);
    }
    let dump_type = DumpType::try_from(spec.dump_type)
        .map_err(|_| anyhow::anyhow!("unknown dump type {}", spec.dump_type))?;
    if dump_type == DumpType::Unspecified {
        bail!(
            "dump type {} is not supported by this worker",
            dump_type.label()
        )
    }
    let format = DumpFormat::try_from(spec.format)
        .map_err(|_| anyhow::anyhow!("unknown dump format {}", spec.format))?;
    let format = if format == DumpFormat::Unspecified {
        dump_type.default_format()
    } else {
        format
    };
    if dump_type.is_cluster_wide() && format != DumpFormat::Plain {
        bail!(
            "dump type {} writes PLAIN only, not {}",
            dump_type.label(),
            format.label()
        );
    }
    // A script's arguments are checked with its script (crate::script).
    if dump_type != DumpType::Script {
        validate_dump_options(&spec.extra_options)?;
    }
    let maintenance_db = if instance.maintenance_db.is_empty() {
        "postgres".to_string()
    } else {
        instance.maintenance_db.clone()
    };
    let connect_db = if dump_type.is_cluster_wide() {
        maintenance_db
    } else {
        validate_identifier("database", &spec.database)?;
        spec.database.clone()
    };
    if !spec.schema.is_empty() {
        validate_identifier("schema", &spec.schema)?;
    }
    Ok(Checked {
        spec,
        instance,
        dump_type,
        format,
        connect_db,
    })
}

/// The name a single-stream dump's output gets in the store.
pub(crate) fn stream_file_name(c: &Checked<'_>) -> &'static str {
    if c.dump_type.is_cluster_wide() {
        "dumpall.sql"
    } else if c.format == DumpFormat::Plain {
        "dump.sql"
    } else {
        "archive.dump"
    }
}

/// Arguments of the dump program (after the program name). Output goes to
/// stdout, or into `directory` for the directory format. A non-zero
/// `lock_wait_timeout` becomes `--lock-wait-timeout` (a job's own extra
/// option, which comes later, wins).
pub(crate) fn dump_args(
    c: &Checked<'_>,
    directory: Option<&Path>,
    conninfo: &str,
    lock_wait_timeout: Duration,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if c.dump_type.is_cluster_wide() {
        args.push("--no-password".into());
        match c.dump_type {
            DumpType::ClusterSchema => args.push("--schema-only".into()),
            DumpType::Globals => args.push("--globals-only".into()),
            _ => {}
        }
        // pg_dumpall ignores the conninfo's dbname; -l names the first database.
        args.push(format!("--database={}", c.connect_db).into());
    } else {
        match c.format {
            DumpFormat::Directory => {
                args.push("--format=directory".into());
                args.push("--compress=0".into());
                if c.spec.parallel_jobs > 1 {
                    args.push(format!("--jobs={}", c.spec.parallel_jobs).into());
                }
            }
            DumpFormat::Plain => args.push("--format=plain".into()),
            _ => {
                args.push("--format=custom".into());
                args.push("--compress=0".into());
            }
        }
        if let Some(dir) = directory {
            let mut file = OsString::from("--file=");
            file.push(dir);
            args.push(file);
        }
        args.push("--no-password".into());
        if c.dump_type == DumpType::Schema {
            args.push("--schema-only".into());
        }
        if !c.spec.schema.is_empty() {
            args.push(format!("--schema={}", schema_pattern(&c.spec.schema)).into());
        }
    }
    if !lock_wait_timeout.is_zero() {
        args.push(format!("--lock-wait-timeout={}", lock_wait_timeout.as_millis()).into());
    }
    args.extend(c.spec.extra_options.iter().map(OsString::from));
    args.push(format!("--dbname={conninfo}").into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dump_type: DumpType, format: DumpFormat) -> DumpSpec {
        DumpSpec {
            job_id: 3,
            instance: Some(InstanceConnection {
                instance_id: 2,
                name: "i".into(),
                host: "127.0.0.1".into(),
                port: 5432,
                user: "postgres".into(),
                password: String::new(),
                maintenance_db: "postgres".into(),
                status: 1,
                discover: false,
                ..Default::default()
            }),
            database: "db".into(),
            schema: String::new(),
            dump_type: dump_type as i32,
            format: format as i32,
            pause_replay: false,
            on_demand: false,
            extra_options: vec![],
            parallel_jobs: 0,
            script: None,
        }
    }

    fn args_of(s: &DumpSpec) -> Vec<String> {
        let c = check_spec(s).unwrap();
        let dir = (c.format == DumpFormat::Directory).then_some(Path::new("/spool/x"));
        dump_args(&c, dir, "CONN", Duration::ZERO)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn full_and_schema_dumps_use_pg_dump_arguments() {
        let mut s = spec(DumpType::Full, DumpFormat::Unspecified);
        s.schema = "Sch \"x\"".into();
        s.extra_options = vec!["--no-comments".into()];
        assert_eq!(
            args_of(&s),
            [
                "--format=custom",
                "--compress=0",
                "--no-password",
                "--schema=\"Sch \"\"x\"\"\"",
                "--no-comments",
                "--dbname=CONN"
            ]
        );
        let s = spec(DumpType::Schema, DumpFormat::Custom);
        assert!(args_of(&s).contains(&"--schema-only".to_string()));
        let mut s = spec(DumpType::Full, DumpFormat::Directory);
        s.parallel_jobs = 4;
        let a = args_of(&s);
        assert!(
            a.contains(&"--format=directory".to_string())
                && a.contains(&"--jobs=4".to_string())
                && a.contains(&"--file=/spool/x".to_string())
        );
    }

    #[test]
    fn cluster_dumps_use_pg_dumpall_arguments() {
        let mut s = spec(DumpType::Globals, DumpFormat::Unspecified);
        s.database = String::new();
        assert_eq!(
            args_of(&s),
            [
                "--no-password",
                "--globals-only",
                "--database=postgres",
                "--dbname=CONN"
            ]
        );
        assert!(check_spec(&spec(DumpType::Cluster, DumpFormat::Custom)).is_err());
    }

    #[test]
    fn the_lock_wait_timeout_comes_before_the_jobs_options() {
        for dump_type in [DumpType::Full, DumpType::Globals] {
            let mut s = spec(dump_type, DumpFormat::Unspecified);
            s.extra_options = vec!["--lock-wait-timeout=5s".into()];
            let c = check_spec(&s).unwrap();
            let args: Vec<String> = dump_args(&c, None, "CONN", Duration::from_secs(600))
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let ours = args.iter().position(|a| a == "--lock-wait-timeout=600000");
            let theirs = args.iter().position(|a| a == "--lock-wait-timeout=5s");
            assert!(ours.is_some() && ours < theirs, "{args:?}");
        }
    }

    #[test]
    fn bad_specs_are_rejected_with_a_reason() {
        let mut s = spec(DumpType::Full, DumpFormat::Custom);
        s.extra_options = vec!["-Z9".into()];
        let err = check_spec(&s).err().unwrap().to_string();
        assert!(err.contains("-Z9"), "{err}");
        let mut s = spec(DumpType::Full, DumpFormat::Custom);
        s.database = String::new();
        assert!(check_spec(&s).is_err());
        assert!(check_spec(&spec(DumpType::Unspecified, DumpFormat::Plain)).is_err());
        let mut s = spec(DumpType::Full, DumpFormat::Custom);
        s.instance = None;
        assert!(check_spec(&s).is_err());
    }
}
