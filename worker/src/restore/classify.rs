//! Reads what pg_restore and psql write on stderr during a restore and
//! sorts every error into harmless (counted as a warning, e.g. an extension
//! that already exists) or fatal (anything else: a missing role or
//! tablespace, permission denied, any message not recognised). Bounded: only
//! counts and the first errors are kept. Knows nothing of processes.

/// Errors kept with their text (more are only counted).
const KEPT_ERRORS: usize = 30;
/// Notices and server warnings kept for the restore log.
const KEPT_NOTICES: usize = 30;
/// Longest message or command kept.
const MAX_TEXT: usize = 600;

/// Who wrote the lines: pg_restore (continues after errors) or psql with
/// ON_ERROR_STOP (stops at the first; every error is fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    PgRestore,
    Psql,
}

/// One error as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedError {
    /// The server's message (after `ERROR:  `) or the client's error text.
    pub message: String,
    /// DETAIL/HINT/LINE lines that came with it.
    pub detail: Vec<String>,
    /// The statement (`Command was:`), first line only.
    pub command: String,
    /// Why it is harmless; `None`: fatal.
    pub harmless: Option<&'static str>,
}

impl ReportedError {
    /// The error as one text for the log.
    pub fn text(&self) -> String {
        let mut t = self.message.clone();
        for d in &self.detail {
            t.push('\n');
            t.push_str(d);
        }
        if !self.command.is_empty() {
            t.push_str("\nCommand was: ");
            t.push_str(&self.command);
        }
        t
    }
}

/// Why a server error is harmless, if it is. Only exact, known cases; the
/// messages are the English ones (other `lc_messages` make every error
/// fatal, the safe side).
pub fn harmless(message: &str, command: &str) -> Option<&'static str> {
    let cmd = command.trim_start().to_ascii_uppercase();
    let quoted_name_then = |prefix: &str, suffix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .is_some_and(|name| name.starts_with('"') && name.ends_with('"') && name.len() >= 2)
    };
    if quoted_name_then("extension ", " already exists") {
        return Some("the extension exists in the target database");
    }
    if message == "schema \"public\" already exists" {
        return Some("every new database has schema public");
    }
    if quoted_name_then("language ", " already exists") && message.contains("plpgsql") {
        return Some("every new database has plpgsql");
    }
    if message.starts_with("must be owner of extension ")
        && cmd.starts_with("COMMENT ON EXTENSION ")
    {
        return Some("a comment on an extension the restoring role does not own");
    }
    if message == "must be owner of schema public" && cmd.starts_with("COMMENT ON SCHEMA PUBLIC ") {
        return Some("a comment on schema public, which the restoring role does not own");
    }
    None
}

/// `s` with every password value masked, at most `MAX_TEXT` bytes.
fn cut(s: &str) -> String {
    let s = redact(s);
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut n = MAX_TEXT;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    format!("{}…", &s[..n])
}

/// Length of the SQL string literal at the start of `s` (`''` inside it
/// doubles a quote; in an `E'…'` string, `backslash`, `\` escapes the next
/// byte); all of `s` when it is not closed.
fn quoted_len(s: &str, backslash: bool) -> usize {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    s.len()
}

/// Length of the dollar-quoted text (`$$…$$`, `$tag$…$tag$`) at the start
/// of `s`, all of `s` when it is not closed; 0 when `s` does not start with
/// a dollar quote.
fn dollar_len(s: &str) -> usize {
    let Some(tag_len) = s[1..].find('$').map(|n| n + 2) else {
        return 0;
    };
    let tag = &s[..tag_len];
    if !tag[1..tag_len - 1]
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
    {
        return 0;
    }
    s[tag_len..]
        .find(tag)
        .map_or(s.len(), |end| tag_len + end + tag_len)
}

/// Length of the password value at the start of `after`: a string literal
/// (`'…'`, `E'…'`), a dollar quote, or (after `=`, `key_value`) a bare word.
fn value_len(after: &str, key_value: bool) -> usize {
    let b = after.as_bytes();
    match b.first() {
        Some(b'\'') => quoted_len(after, false),
        Some(b'E' | b'e') if b.get(1) == Some(&b'\'') => 1 + quoted_len(&after[1..], true),
        Some(b'$') if dollar_len(after) > 0 => dollar_len(after),
        _ if key_value => after
            .find([' ', '\t', '\n', '\'', ')', ','])
            .unwrap_or(after.len()),
        _ => 0,
    }
}

/// Masks what follows `password` (any case) as a quoted value or a
/// `key=value` pair: role passwords and hashes (`PASSWORD '…'`, `E'…'`,
/// `$$…$$`, after `ENCRYPTED` too), user mapping options (`password '…'`),
/// connection strings (`password=…`). Errors quote the failing statement,
/// and none of these may reach a log.
pub fn redact(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find("password") {
        let key_end = i + found + "password".len();
        out.push_str(&s[i..key_end]);
        let rest = &s[key_end..];
        let gap = rest.len() - rest.trim_start_matches([' ', '\t', '\n', '\r', '=']).len();
        let value_len = value_len(&rest[gap..], rest[..gap].contains('='));
        out.push_str(&rest[..gap]);
        if value_len > 0 {
            out.push_str("***");
        }
        i = key_end + gap + value_len;
    }
    out.push_str(&s[i..]);
    out
}

/// Collects and classifies the errors of one program run.
#[derive(Debug)]
pub struct Classifier {
    source: Source,
    pending: Option<ReportedError>,
    /// Reading the lines of a `Command was:` statement.
    in_command: bool,
    pub errors: Vec<ReportedError>,
    pub harmless_count: u64,
    pub fatal_count: u64,
    /// pg_restore's own count ("errors ignored on restore: N").
    pub ignored_reported: Option<u64>,
    /// Server notices and warnings, and client warnings.
    pub notices: Vec<String>,
    pub notices_dropped: u64,
}

impl Classifier {
    pub fn new(source: Source) -> Self {
        Self {
            source,
            pending: None,
            in_command: false,
            errors: Vec::new(),
            harmless_count: 0,
            fatal_count: 0,
            ignored_reported: None,
            notices: Vec::new(),
            notices_dropped: 0,
        }
    }

    fn flush(&mut self) {
        self.in_command = false;
        let Some(mut e) = self.pending.take() else {
            return;
        };
        e.harmless = match self.source {
            Source::PgRestore => harmless(&e.message, &e.command),
            Source::Psql => None,
        };
        if e.harmless.is_some() {
            self.harmless_count += 1;
        } else {
            self.fatal_count += 1;
        }
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(e);
        }
    }

    fn start(&mut self, message: &str) {
        self.flush();
        self.pending = Some(ReportedError {
            message: cut(message.trim()),
            detail: Vec::new(),
            command: String::new(),
            harmless: None,
        });
    }

    fn notice(&mut self, line: &str) {
        if self.notices.len() < KEPT_NOTICES {
            self.notices.push(cut(line.trim()));
        } else {
            self.notices_dropped += 1;
        }
    }

    /// One stderr line.
    pub fn line(&mut self, line: &str) {
        let l = line.trim_end();
        // psql prefixes script messages with "psql:<stdin>:LINE: ".
        let body = match l.strip_prefix("psql:") {
            Some(rest) if !rest.starts_with(' ') => match rest.find(": ") {
                Some(i) => &rest[i + 2..],
                None => l,
            },
            _ => l,
        };
        let body = body
            .strip_prefix("pg_restore: ")
            .or_else(|| body.strip_prefix("psql: "))
            .unwrap_or(body);
        let body = body.strip_prefix("[archiver (db)] ").unwrap_or(body);
        if let Some(n) = body
            .strip_prefix("warning: errors ignored on restore: ")
            .or_else(|| body.strip_prefix("WARNING: errors ignored on restore: "))
        {
            self.flush();
            self.ignored_reported = n.trim().parse().ok();
            return;
        }
        if let Some(i) = body.find("ERROR:  ") {
            // A server error, possibly behind client text ("could not
            // execute query: ", "COPY failed for table …: ").
            let prefix = &body[..i];
            if prefix.is_empty() || prefix.starts_with("error: ") || prefix.starts_with("could not")
            {
                let message = &body[i + "ERROR:  ".len()..];
                if prefix.starts_with("error: COPY failed") {
                    self.start(&format!("{}{message}", &prefix["error: ".len()..]));
                } else {
                    self.start(message);
                }
                return;
            }
        }
        if let Some(rest) = body.strip_prefix("error: ") {
            self.start(rest);
            return;
        }
        if let Some(cmd) = l.trim_start().strip_prefix("Command was: ") {
            if let Some(p) = self.pending.as_mut() {
                p.command = cut(cmd);
            }
            self.in_command = true;
            return;
        }
        for key in ["DETAIL:  ", "HINT:  ", "LINE ", "CONTEXT:  "] {
            if body.starts_with(key) {
                if let Some(p) = self.pending.as_mut()
                    && !self.in_command
                    && p.detail.len() < 4
                {
                    p.detail.push(cut(body));
                }
                return;
            }
        }
        if body.starts_with("NOTICE:  ")
            || body.starts_with("WARNING:  ")
            || body.starts_with("warning: ")
        {
            self.flush();
            self.notice(body);
        }
        // Anything else: the continuation of a command, or context lines
        // ("while PROCESSING TOC", "from TOC entry …") that add nothing.
    }

    /// Ends the input; call before reading the counts.
    pub fn finish(&mut self) {
        self.flush();
    }

    /// The first fatal errors as one text (for the run's error).
    pub fn fatal_text(&self, max: usize) -> String {
        let texts: Vec<String> = self
            .errors
            .iter()
            .filter(|e| e.harmless.is_none())
            .take(max)
            .map(ReportedError::text)
            .collect();
        let mut t = texts.join("\n");
        let shown = texts.len() as u64;
        if self.fatal_count > shown {
            t.push_str(&format!("\n… and {} more errors", self.fatal_count - shown));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(source: Source, text: &str) -> Classifier {
        let mut c = Classifier::new(source);
        for l in text.lines() {
            c.line(l);
        }
        c.finish();
        c
    }

    #[test]
    fn harmless_errors_are_recognised_exactly() {
        assert!(
            harmless(
                "extension \"pg_trgm\" already exists",
                "CREATE EXTENSION pg_trgm;"
            )
            .is_some()
        );
        assert!(harmless("schema \"public\" already exists", "CREATE SCHEMA public;").is_some());
        assert!(harmless("schema \"app\" already exists", "CREATE SCHEMA app;").is_none());
        assert!(
            harmless(
                "must be owner of extension plpgsql",
                "COMMENT ON EXTENSION plpgsql IS 'PL/pgSQL procedural language';"
            )
            .is_some()
        );
        assert!(
            harmless(
                "must be owner of extension pg_trgm",
                "ALTER EXTENSION pg_trgm UPDATE;"
            )
            .is_none()
        );
        assert!(
            harmless(
                "language \"plpgsql\" already exists",
                "CREATE LANGUAGE plpgsql;"
            )
            .is_some()
        );
        assert!(harmless("role \"app\" does not exist", "ALTER TABLE t OWNER TO app;").is_none());
        assert!(
            harmless(
                "tablespace \"ts\" does not exist",
                "SET default_tablespace = ts;"
            )
            .is_none()
        );
        assert!(harmless("permission denied for schema s", "CREATE TABLE s.t ();").is_none());
    }

    #[test]
    fn pg_restore_output_is_classified() {
        let c = feed(
            Source::PgRestore,
            "pg_restore: error: could not execute query: ERROR:  extension \"pg_trgm\" already exists
Command was: CREATE EXTENSION pg_trgm WITH SCHEMA public;


pg_restore: error: could not execute query: ERROR:  role \"app\" does not exist
Command was: ALTER SCHEMA \"Odd Schema\" OWNER TO app;

pg_restore: warning: errors ignored on restore: 2",
        );
        assert_eq!((c.harmless_count, c.fatal_count), (1, 1));
        assert_eq!(c.ignored_reported, Some(2));
        assert_eq!(c.errors[1].message, "role \"app\" does not exist");
        assert_eq!(
            c.errors[1].command,
            "ALTER SCHEMA \"Odd Schema\" OWNER TO app;"
        );
        let t = c.fatal_text(5);
        assert!(
            t.contains("role \"app\" does not exist") && !t.contains("pg_trgm"),
            "{t}"
        );
    }

    #[test]
    fn old_format_and_client_errors() {
        let c = feed(
            Source::PgRestore,
            "pg_restore: [archiver (db)] Error while PROCESSING TOC:
pg_restore: [archiver (db)] Error from TOC entry 3; 0 0 COMMENT EXTENSION plpgsql
pg_restore: [archiver (db)] could not execute query: ERROR:  must be owner of extension plpgsql
    Command was: COMMENT ON EXTENSION plpgsql IS 'x';
pg_restore: error: could not read from input file: end of file
pg_restore: error: COPY failed for table \"t\": ERROR:  invalid input syntax for type integer: \"x\"
DETAIL:  more",
        );
        assert_eq!((c.harmless_count, c.fatal_count), (1, 2));
        assert_eq!(
            c.errors[1].message,
            "could not read from input file: end of file"
        );
        assert!(
            c.errors[2]
                .message
                .starts_with("COPY failed for table \"t\": invalid input")
        );
        assert_eq!(c.errors[2].detail, vec!["DETAIL:  more".to_string()]);
    }

    #[test]
    fn psql_errors_are_all_fatal_and_notices_kept() {
        let c = feed(
            Source::Psql,
            "psql:<stdin>:12: NOTICE:  drop cascades to view v
psql:<stdin>:40: ERROR:  extension \"citext\" already exists
psql: error: connection to server at \"h\" failed: FATAL:  no",
        );
        assert_eq!(c.fatal_count, 2);
        assert_eq!(
            c.notices,
            vec!["NOTICE:  drop cascades to view v".to_string()]
        );
        assert_eq!(c.errors[0].message, "extension \"citext\" already exists");
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact("ALTER ROLE x WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc';"),
            "ALTER ROLE x WITH LOGIN PASSWORD ***;"
        );
        assert_eq!(
            redact("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'a', password 's3cr''t');"),
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'a', password ***);"
        );
        assert_eq!(
            redact("CONNECTION 'host=h password=pw dbname=d'"),
            "CONNECTION 'host=h password=*** dbname=d'"
        );
        assert_eq!(
            redact("ALTER ROLE x PASSWORD E'se\\'cr''et' VALID UNTIL 'infinity';"),
            "ALTER ROLE x PASSWORD *** VALID UNTIL 'infinity';"
        );
        assert_eq!(
            redact("CREATE ROLE x ENCRYPTED PASSWORD 'secret' LOGIN;"),
            "CREATE ROLE x ENCRYPTED PASSWORD *** LOGIN;"
        );
        assert_eq!(
            redact("ALTER ROLE x PASSWORD $$sec'ret$$;"),
            "ALTER ROLE x PASSWORD ***;"
        );
        assert_eq!(
            redact("ALTER ROLE x PASSWORD $q$sec$$ret$q$ LOGIN;"),
            "ALTER ROLE x PASSWORD *** LOGIN;"
        );
        assert_eq!(
            redact("ALTER ROLE x PASSWORD\n  e'secret"),
            "ALTER ROLE x PASSWORD\n  ***"
        );
        assert_eq!(redact("PASSWORD $1"), "PASSWORD $1");
        assert_eq!(
            redact("ALTER ROLE x PASSWORD NULL;"),
            "ALTER ROLE x PASSWORD NULL;"
        );
        assert_eq!(
            redact("password authentication failed"),
            "password authentication failed"
        );
        let c = feed(
            Source::Psql,
            "psql:<stdin>:9: ERROR:  role \"x\" does not exist
LINE 1: ALTER ROLE x WITH PASSWORD 'md5abcdef';",
        );
        assert!(
            !c.fatal_text(3).contains("md5abcdef"),
            "{}",
            c.fatal_text(3)
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = Classifier::new(Source::PgRestore);
        for i in 0..1000 {
            c.line(&format!(
                "pg_restore: error: could not execute query: ERROR:  boom {i}"
            ));
            c.line(&format!("Command was: {}", "x".repeat(5000)));
            c.line("NOTICE:  n");
        }
        c.finish();
        assert_eq!(c.fatal_count, 1000);
        assert_eq!(c.errors.len(), KEPT_ERRORS);
        assert!(c.errors[0].command.len() <= MAX_TEXT + 3);
        assert_eq!(c.notices.len() as u64 + c.notices_dropped, 1000);
        assert!(c.fatal_text(3).ends_with("… and 997 more errors"));
    }
}
