//! Typed errors of the client-program layer (psql, pg_dump, pg_dumpall,
//! pg_restore run as children): the cases callers branch on are variants,
//! so nobody matches on message text; the texts are the user-visible ones.
use std::process::ExitStatus;
use std::time::Duration;

/// `postgres.statement_timeout`: the server cancelled a statement of psql.
pub const STATEMENT_TIMEOUT: &str = "postgres.statement_timeout";
/// `postgres.lock_timeout`: the server gave up waiting for a lock of psql.
pub const LOCK_TIMEOUT: &str = "postgres.lock_timeout";
/// `dump.lock_wait_timeout`: pg_dump's LOCK TABLE was not granted in time.
pub const LOCK_WAIT_TIMEOUT: &str = "dump.lock_wait_timeout";
/// `dump.max_run_time`: the worker cancelled a dump that ran too long.
pub const MAX_RUN_TIME: &str = "dump.max_run_time";

/// Which server-side timeout cancelled a statement, from the server's
/// message (the only place its text is read for that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTimeout {
    Statement,
    Lock,
}

impl ServerTimeout {
    /// The timeout named by the server's error `text`, if any.
    pub fn in_text(text: &str) -> Option<Self> {
        if text.contains("canceling statement due to statement timeout") {
            Some(Self::Statement)
        } else if text.contains("canceling statement due to lock timeout") {
            Some(Self::Lock)
        } else {
            None
        }
    }
}

/// A client program's run that did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The program could not be started (missing binary, no permission).
    #[error("start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the started program failed.
    #[error("wait for {program}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The program exited unsuccessfully; `text` is its error text (the
    /// important stderr lines), or says that it gave none.
    #[error("{text}")]
    Exited {
        program: String,
        status: ExitStatus,
        text: String,
    },
    /// The program wrote more than `postgres.max_query_output_bytes`.
    #[error(
        "{program} wrote {seen} bytes of output, more than the {limit} bytes \
         postgres.max_query_output_bytes allows (raise it in the worker's configuration)"
    )]
    OutputTooLarge {
        program: String,
        seen: u64,
        limit: u64,
    },
    /// A timeout of the worker's configuration fired: `setting` is its key
    /// (one of the constants of this module), `value` its value, `text` the
    /// program's error text (empty for `dump.max_run_time`).
    #[error("{}", timeout_message(setting, *value, text))]
    Timeout {
        setting: &'static str,
        value: Duration,
        text: String,
    },
    /// Cancelled where no cancellation was expected.
    #[error("{program} was cancelled")]
    Cancelled { program: String },
    /// Preparing the run failed (a script file could not be written).
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
}

fn timeout_message(setting: &str, value: Duration, text: &str) -> String {
    let value = humantime::format_duration(value);
    match setting {
        MAX_RUN_TIME => format!("cancelled: the dump exceeded {setting} = {value}"),
        LOCK_WAIT_TIMEOUT => format!(
            "{text} (a table lock was not granted within the worker's {setting} = {value}, \
             or the job's own --lock-wait-timeout)"
        ),
        _ => format!("{text} (the worker's {setting} = {value})"),
    }
}

impl ClientError {
    /// An unsuccessful exit with the error text `text` (maybe empty).
    pub fn exited(program: &str, status: ExitStatus, text: String) -> Self {
        let text = if text.is_empty() {
            format!("{program} exited with {status}")
        } else {
            text
        };
        Self::Exited {
            program: program.to_string(),
            status,
            text,
        }
    }

    /// The server timeout that made the program fail, if one did.
    pub fn server_timeout(&self) -> Option<ServerTimeout> {
        match self {
            Self::Exited { text, .. } => ServerTimeout::in_text(text),
            _ => None,
        }
    }

    /// True when `err` is a client program's failure whose error text holds
    /// `message` (a server message: psql shows no SQLSTATE to go by).
    pub fn said(err: &anyhow::Error, message: &str) -> bool {
        err.downcast_ref::<Self>()
            .and_then(Self::exit_text)
            .is_some_and(|text| text.contains(message))
    }

    /// The program's error text when it exited unsuccessfully.
    pub fn exit_text(&self) -> Option<&str> {
        match self {
            Self::Exited { text, .. } | Self::Timeout { text, .. } => Some(text),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn messages_name_the_setting() {
        let t = |setting, value, text: &str| {
            ClientError::Timeout {
                setting,
                value,
                text: text.into(),
            }
            .to_string()
        };
        assert_eq!(
            t(MAX_RUN_TIME, Duration::from_secs(3), ""),
            "cancelled: the dump exceeded dump.max_run_time = 3s"
        );
        assert_eq!(
            t(LOCK_WAIT_TIMEOUT, Duration::from_secs(2), "E"),
            "E (a table lock was not granted within the worker's dump.lock_wait_timeout = 2s, \
             or the job's own --lock-wait-timeout)"
        );
        assert_eq!(
            t(LOCK_TIMEOUT, Duration::from_millis(1500), "E"),
            "E (the worker's postgres.lock_timeout = 1s 500ms)"
        );
    }

    #[test]
    fn exits_keep_the_text_or_say_there_was_none() {
        let status = ExitStatus::from_raw(1 << 8);
        let e = ClientError::exited("pg_dump", status, String::new());
        assert_eq!(e.to_string(), "pg_dump exited with exit status: 1");
        let e = ClientError::exited(
            "pg_dump",
            status,
            "ERROR:  canceling statement due to lock timeout".into(),
        );
        assert_eq!(e.server_timeout(), Some(ServerTimeout::Lock));
        assert_eq!(
            e.exit_text(),
            Some("ERROR:  canceling statement due to lock timeout")
        );
        let spawn = ClientError::Spawn {
            program: "psql".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            format!("{:#}", anyhow::Error::from(spawn)),
            "start psql: entity not found"
        );
        assert_eq!(
            ClientError::exited("x", status, "ERROR:  y".into()).server_timeout(),
            None
        );
        let busy = anyhow::Error::from(ClientError::exited("psql", status, "ERROR:  busy".into()));
        assert!(ClientError::said(&busy, "busy"));
        assert!(!ClientError::said(&busy, "idle"));
        assert!(!ClientError::said(&anyhow::anyhow!("ERROR:  busy"), "busy"));
    }
}
