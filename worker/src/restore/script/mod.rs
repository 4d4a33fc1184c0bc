//! The SQL stream filter between a script (a plain dump, pg_dumpall output,
//! or `pg_restore -f -`) and psql: it follows statements and COPY data
//! (never touching data rows or multi-line statements) and applies a few
//! documented rules to complete single-line statements — tablespace
//! assignments, owners and privileges with role handling off, `CREATE
//! SCHEMA public`, `CREATE ROLE` of existing roles. It does not parse SQL
//! beyond that.
pub mod lexer;

use std::collections::{BTreeMap, BTreeSet};

use self::lexer::{Lexer, Token, statement_tokens};
use super::names::quote_ident;

/// Longest line the rules look at; longer lines pass through untouched
/// (pg_dump's single-line statements are far shorter; a COPY header of 1600
/// columns is ~210 KB).
const MAX_RULE_LINE: usize = 1 << 20;

/// What happens to `SET default_tablespace = X;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tablespaces {
    /// Keep assignments not in `map` (else they become `''`).
    pub keep: bool,
    /// Old name → new name; an empty new name drops the assignment.
    pub map: BTreeMap<String, String>,
}

impl Tablespaces {
    /// The tablespace an object dumped in `old` goes to ("" = default).
    pub fn target(&self, old: &str) -> String {
        match self.map.get(old) {
            Some(new) => new.clone(),
            None if self.keep => old.to_string(),
            None => String::new(),
        }
    }
}

/// The rules of one run.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Rewrite tablespace assignments (None: leave them as they are).
    pub tablespaces: Option<Tablespaces>,
    /// Leave out `ALTER … OWNER TO`, `GRANT`, `REVOKE`, `ALTER DEFAULT
    /// PRIVILEGES` and `SET SESSION AUTHORIZATION` (role handling off).
    pub drop_owners_and_privileges: bool,
    /// `CREATE SCHEMA public;` becomes `CREATE SCHEMA IF NOT EXISTS public;`
    /// (every new database has it).
    pub public_if_not_exists: bool,
    /// `CREATE ROLE x;` of these roles is left out (they exist).
    pub existing_roles: BTreeSet<String>,
    /// `ALTER ROLE x WITH …;` of this role (the one restoring) is left out,
    /// so a cluster script never changes its password or attributes.
    pub protected_role: Option<String>,
    /// `BEGIN;`, `COMMIT;` and their synonyms are left out: the script runs
    /// inside the runner's own transaction, which an inner `COMMIT`
    /// (pg_restore writes one around large objects) would end early.
    pub drop_transaction_control: bool,
}

/// What the filter did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub tablespaces_rewritten: u64,
    pub owner_or_privilege_dropped: u64,
    pub public_schema_rewritten: u64,
    /// Roles whose `CREATE ROLE` was left out.
    pub roles_skipped: Vec<String>,
    pub protected_role_skipped: bool,
    pub transaction_control_dropped: u64,
    /// The script carries a `\restrict` key (pg_dump 17.6/16.10/15.14 on).
    pub restrict_seen: bool,
}

/// What to do with one complete line.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Keep,
    Drop,
    Replace(String),
}

/// Where the filter is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Buffering a line that began between statements (rules may apply).
    Buffer,
    /// Streaming the rest of a line through the lexer.
    Stream,
    /// At the start of a COPY data line: `probe` holds its first bytes
    /// while they may still be the end marker `\.`.
    CopyStart,
    /// Inside a COPY data line.
    CopyLine,
}

/// Applies `Rules` to a script fed in arbitrary pieces.
pub struct Filter {
    rules: Rules,
    lexer: Lexer,
    mode: Mode,
    line: Vec<u8>,
    report: Report,
}

const COPY_END: &[u8] = b"\\.\n";

impl Filter {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            lexer: Lexer::default(),
            mode: Mode::Buffer,
            line: Vec::new(),
            report: Report::default(),
        }
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Filters the next piece of the script into `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            let (piece, rest, eol) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => (&input[..=i], &input[i + 1..], true),
                None => (input, &input[input.len()..], false),
            };
            input = rest;
            self.piece(piece, eol, out);
        }
    }

    /// Ends the script: a last line without newline is flushed as it is.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            if self.mode == Mode::Buffer {
                self.lexer.scan(&self.line);
            }
            out.append(&mut self.line);
        }
        self.mode = Mode::Buffer;
    }

    /// A piece of one line (`eol`: it ends with the newline).
    fn piece(&mut self, piece: &[u8], eol: bool, out: &mut Vec<u8>) {
        match self.mode {
            Mode::Buffer => {
                if self.line.len() + piece.len() > MAX_RULE_LINE {
                    // Too long for a rule: stream it.
                    self.lexer.scan(&self.line);
                    out.append(&mut self.line);
                    self.lexer.scan(piece);
                    out.extend_from_slice(piece);
                    self.mode = if eol {
                        self.next_line_mode()
                    } else {
                        Mode::Stream
                    };
                    return;
                }
                self.line.extend_from_slice(piece);
                if eol {
                    let line = std::mem::take(&mut self.line);
                    self.complete_line(&line, out);
                }
            }
            Mode::Stream => {
                self.lexer.scan(piece);
                out.extend_from_slice(piece);
                if eol {
                    self.mode = self.next_line_mode();
                }
            }
            Mode::CopyStart => {
                self.line.extend_from_slice(piece);
                if COPY_END.starts_with(&self.line) {
                    if eol {
                        // `\.`: the data ends.
                        out.append(&mut self.line);
                        self.mode = Mode::Buffer;
                    }
                    return;
                }
                out.append(&mut self.line);
                self.mode = if eol { Mode::CopyStart } else { Mode::CopyLine };
            }
            Mode::CopyLine => {
                out.extend_from_slice(piece);
                if eol {
                    self.mode = Mode::CopyStart;
                }
            }
        }
    }

    /// How the next line starts: buffered if it begins between statements.
    fn next_line_mode(&self) -> Mode {
        if self.lexer.at_statement_start() {
            Mode::Buffer
        } else {
            Mode::Stream
        }
    }

    /// A whole line (with its newline) that began in `Buffer` mode.
    fn complete_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if !self.lexer.at_statement_start() {
            self.lexer.scan(line);
            out.extend_from_slice(line);
            self.mode = self.next_line_mode();
            return;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.first() == Some(&b'\\') {
            // A psql meta-command (\connect, \restrict …): never lexed.
            if body.starts_with(b"\\restrict ") {
                self.report.restrict_seen = true;
            }
            out.extend_from_slice(line);
            self.mode = Mode::Buffer;
            return;
        }
        self.lexer.scan(line);
        let action = match statement_tokens(body) {
            Some(tokens) if self.lexer.at_statement_start() => self.rule(&tokens),
            _ => Action::Keep,
        };
        match action {
            Action::Keep => out.extend_from_slice(line),
            Action::Drop => {}
            Action::Replace(new) => {
                out.extend_from_slice(new.as_bytes());
                out.push(b'\n');
            }
        }
        let is_copy = self.lexer.at_statement_start()
            && body.starts_with(b"COPY ")
            && body.ends_with(b" FROM stdin;");
        self.mode = if is_copy {
            Mode::CopyStart
        } else {
            self.next_line_mode()
        };
    }

    /// The rule for one complete single-line statement.
    fn rule(&mut self, t: &[Token]) -> Action {
        let n = t.len();
        let r = &self.rules;
        // SET default_tablespace = X;
        if let Some(ts) = &r.tablespaces
            && n == 5
            && t[0].is("set")
            && t[1].is("default_tablespace")
            && (t[2] == Token::Punct(b'=') || t[2].is("to"))
        {
            let old = match &t[3] {
                Token::Literal(l) if l == "''" => String::new(),
                other => match other.name() {
                    Some(n) => n,
                    None => return Action::Keep,
                },
            };
            if old.is_empty() {
                return Action::Keep;
            }
            let new = ts.target(&old);
            if new == old {
                return Action::Keep;
            }
            self.report.tablespaces_rewritten += 1;
            let value = if new.is_empty() {
                "''".to_string()
            } else {
                quote_ident(&new)
            };
            return Action::Replace(format!("SET default_tablespace = {value};"));
        }
        if r.drop_owners_and_privileges {
            let owner = n >= 5
                && t[0].is("alter")
                && t[n - 4].is("owner")
                && t[n - 3].is("to")
                && t[n - 2].name().is_some();
            let acl = t[0].is("grant")
                || t[0].is("revoke")
                || (n > 3 && t[0].is("alter") && t[1].is("default") && t[2].is("privileges"));
            let session = (n > 3
                && t[0].is("set")
                && t[1].is("session")
                && t[2].is("authorization"))
                || (n > 3 && t[0].is("reset") && t[1].is("session") && t[2].is("authorization"));
            if owner || acl || session {
                self.report.owner_or_privilege_dropped += 1;
                return Action::Drop;
            }
        }
        if r.drop_transaction_control
            && (n == 2 || (n == 3 && (t[1].is("transaction") || t[1].is("work"))))
        {
            let kw = &t[0];
            if kw.is("begin")
                || kw.is("commit")
                || kw.is("end")
                || kw.is("rollback")
                || (n == 3 && kw.is("start") && t[1].is("transaction"))
            {
                self.report.transaction_control_dropped += 1;
                return Action::Drop;
            }
        }
        if r.public_if_not_exists
            && n == 4
            && t[0].is("create")
            && t[1].is("schema")
            && t[2].name().as_deref() == Some("public")
        {
            self.report.public_schema_rewritten += 1;
            return Action::Replace("CREATE SCHEMA IF NOT EXISTS public;".into());
        }
        if n == 4
            && t[0].is("create")
            && t[1].is("role")
            && let Some(name) = t[2].name()
            && r.existing_roles.contains(&name)
        {
            self.report.roles_skipped.push(name);
            return Action::Drop;
        }
        if n > 4
            && t[0].is("alter")
            && t[1].is("role")
            && t[3].is("with")
            && t[2].name().is_some()
            && t[2].name() == r.protected_role
        {
            self.report.protected_role_skipped = true;
            return Action::Drop;
        }
        Action::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
\\restrict abc123
SET default_tablespace = '';
SET default_tablespace = ts_old;
CREATE SCHEMA public;
CREATE TABLE \"Odd Schema\".\"my table\" (
    id integer,
    v text
);
ALTER TABLE \"Odd Schema\".\"my table\" OWNER TO \"odd role\";
CREATE FUNCTION public.f() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
GRANT SELECT ON t TO x;
END$$;
COPY \"Odd Schema\".\"my table\" (id, v) FROM stdin;
1\tGRANT SELECT ON t TO x;
2\tSET default_tablespace = ts_old;
\\.
GRANT SELECT ON TABLE \"Odd Schema\".\"my table\" TO \"odd role\";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE x GRANT SELECT ON TABLES TO y;
CREATE ROLE postgres;
CREATE ROLE \"New Role\";
ALTER ROLE postgres WITH SUPERUSER LOGIN PASSWORD 'x';
ALTER ROLE \"New Role\" WITH NOLOGIN;
\\unrestrict abc123
";

    fn run(rules: Rules, input: &str, piece: usize) -> (String, Report) {
        let mut f = Filter::new(rules);
        let mut out = Vec::new();
        for chunk in input.as_bytes().chunks(piece) {
            f.feed(chunk, &mut out);
        }
        f.finish(&mut out);
        (String::from_utf8(out).unwrap(), f.report().clone())
    }

    fn all_rules() -> Rules {
        Rules {
            tablespaces: Some(Tablespaces {
                keep: false,
                map: BTreeMap::from([("ts_old".to_string(), "ts new".to_string())]),
            }),
            drop_owners_and_privileges: true,
            public_if_not_exists: true,
            existing_roles: BTreeSet::from(["postgres".to_string()]),
            protected_role: Some("postgres".into()),
            drop_transaction_control: false,
        }
    }

    #[test]
    fn no_rules_change_nothing() {
        for piece in [1, 2, 3, 7, 1000] {
            let (out, report) = run(Rules::default(), DUMP, piece);
            assert_eq!(out, DUMP, "piece {piece}");
            assert!(report.restrict_seen);
        }
    }

    #[test]
    fn rules_apply_to_statements_only_never_to_data_or_bodies() {
        let expected = DUMP
            .replace(
                "SET default_tablespace = ts_old;\nCREATE",
                "SET default_tablespace = \"ts new\";\nCREATE",
            )
            .replace(
                "CREATE SCHEMA public;",
                "CREATE SCHEMA IF NOT EXISTS public;",
            )
            .replace(
                "ALTER TABLE \"Odd Schema\".\"my table\" OWNER TO \"odd role\";\n",
                "",
            )
            .replace(
                "GRANT SELECT ON TABLE \"Odd Schema\".\"my table\" TO \"odd role\";\n",
                "",
            )
            .replace("REVOKE ALL ON SCHEMA public FROM PUBLIC;\n", "")
            .replace(
                "ALTER DEFAULT PRIVILEGES FOR ROLE x GRANT SELECT ON TABLES TO y;\n",
                "",
            )
            .replace("CREATE ROLE postgres;\n", "")
            .replace(
                "ALTER ROLE postgres WITH SUPERUSER LOGIN PASSWORD 'x';\n",
                "",
            );
        for piece in [1, 2, 5, 64, 100_000] {
            let (out, report) = run(all_rules(), DUMP, piece);
            assert_eq!(out, expected, "piece {piece}");
            assert_eq!(report.tablespaces_rewritten, 1);
            assert_eq!(report.owner_or_privilege_dropped, 4);
            assert_eq!(report.public_schema_rewritten, 1);
            assert_eq!(report.roles_skipped, vec!["postgres".to_string()]);
            assert!(report.protected_role_skipped && report.restrict_seen);
        }
        // The data rows and the function body are untouched.
        let (out, _) = run(all_rules(), DUMP, 3);
        assert!(
            out.contains("1\tGRANT SELECT ON t TO x;\n2\tSET default_tablespace = ts_old;\n\\.\n")
        );
        assert!(out.contains("BEGIN\nGRANT SELECT ON t TO x;\nEND$$;"));
    }

    #[test]
    fn tablespaces_are_kept_dropped_or_mapped() {
        let ts = |keep, map: &[(&str, &str)]| Tablespaces {
            keep,
            map: map
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        assert_eq!(ts(false, &[]).target("a"), "");
        assert_eq!(ts(true, &[]).target("a"), "a");
        assert_eq!(ts(true, &[("a", "")]).target("a"), "");
        assert_eq!(ts(false, &[("a", "b")]).target("a"), "b");
        let rules = Rules {
            tablespaces: Some(ts(false, &[])),
            ..Rules::default()
        };
        let (out, _) = run(
            rules,
            "SET default_tablespace = \"Odd TS\";\nSELECT 1;\n",
            4,
        );
        assert_eq!(out, "SET default_tablespace = '';\nSELECT 1;\n");
    }

    #[test]
    fn copy_data_ends_only_at_the_marker_line() {
        let text = "COPY t (a) FROM stdin;\n\\\\.\n\\.x\n\\.\nGRANT a TO b;\n";
        let rules = Rules {
            drop_owners_and_privileges: true,
            ..Rules::default()
        };
        for piece in 1..6 {
            let (out, _) = run(rules.clone(), text, piece);
            assert_eq!(
                out, "COPY t (a) FROM stdin;\n\\\\.\n\\.x\n\\.\n",
                "piece {piece}"
            );
        }
    }

    #[test]
    fn multi_line_statements_and_long_lines_pass_through() {
        let rules = Rules {
            drop_owners_and_privileges: true,
            ..Rules::default()
        };
        let text = "GRANT SELECT\n  ON t TO x;\nSELECT 1;\n";
        assert_eq!(run(rules.clone(), text, 4).0, text);
        let long = format!(
            "GRANT x TO y; -- {}\nGRANT a TO b;\n",
            "z".repeat(MAX_RULE_LINE)
        );
        let (out, report) = run(rules, &long, 65536);
        assert!(out.starts_with("GRANT x TO y;"));
        assert!(!out.contains("GRANT a TO b;"));
        assert_eq!(report.owner_or_privilege_dropped, 1);
    }

    #[test]
    fn inner_transaction_control_is_left_out_when_asked() {
        let text = "BEGIN;\nSELECT pg_catalog.lo_open('1', 131072);\nCOMMIT;\nSTART TRANSACTION;\nEND;\nROLLBACK;\nCOMMIT PREPARED 'x';\nCREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\nCOMMIT;\nEND$$;\n";
        let rules = Rules {
            drop_transaction_control: true,
            ..Rules::default()
        };
        let (out, report) = run(rules, text, 3);
        assert_eq!(
            out,
            "SELECT pg_catalog.lo_open('1', 131072);\nCOMMIT PREPARED 'x';\nCREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\nCOMMIT;\nEND$$;\n"
        );
        assert_eq!(report.transaction_control_dropped, 5);
        assert_eq!(run(Rules::default(), text, 3).0, text);
    }

    #[test]
    fn a_last_line_without_newline_is_kept() {
        let (out, _) = run(all_rules(), "SELECT 1;\nGRANT x TO y;", 3);
        assert_eq!(out, "SELECT 1;\nGRANT x TO y;");
    }
}
