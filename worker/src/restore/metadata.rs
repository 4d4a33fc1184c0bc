//! The restore metadata document (docs/worker.md "Restore metadata",
//! captured by `runner::metadata`) as typed values, and the checks that make
//! its statements safe to run on another server: only single statements of
//! the expected kind, only plain setting names, only known privileges.
use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::script::lexer::{Token, statement_tokens};
use crate::runner::metadata::METADATA_FORMAT_VERSION;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AclItem {
    /// None: PUBLIC.
    pub grantee: Option<String>,
    pub privilege: String,
    #[serde(default)]
    pub grantable: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Setting {
    /// None: `ALTER DATABASE … SET`; else `ALTER ROLE … IN DATABASE … SET`.
    pub role: Option<String>,
    pub name: String,
    pub value: String,
    /// Ready to follow `SET name TO`.
    pub sql_value: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Membership {
    pub role: String,
    #[serde(default)]
    pub admin_option: bool,
    pub sql: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub predefined: bool,
    #[serde(default)]
    pub bootstrap_superuser: bool,
    #[serde(default)]
    pub superuser: bool,
    #[serde(default)]
    pub login: bool,
    #[serde(default)]
    pub sql: Vec<String>,
    #[serde(default)]
    pub member_of: Vec<Membership>,
}

fn no_limit() -> i64 {
    -1
}

/// The database's properties, privileges, settings and roles.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Metadata {
    pub format_version: u64,
    pub database: String,
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    #[serde(default)]
    pub locale_provider: Option<String>,
    #[serde(default)]
    pub icu_locale: Option<String>,
    #[serde(default)]
    pub tablespace: Option<String>,
    #[serde(default = "no_limit")]
    pub connection_limit: i64,
    #[serde(default)]
    pub is_template: bool,
    #[serde(default = "yes")]
    pub allow_connections: bool,
    #[serde(default = "yes")]
    pub acl_is_default: bool,
    /// `COMMENT ON DATABASE`; absent in documents of older workers.
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub acl: Vec<AclItem>,
    #[serde(default)]
    pub settings: Vec<Setting>,
    #[serde(default)]
    pub roles: Vec<Role>,
}

fn yes() -> bool {
    true
}

/// Parses the document; `None` when the dump has none (empty text).
pub fn parse(json: &str) -> Result<Option<Metadata>> {
    if json.trim().is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_str(json).context("the dump's restore metadata is not JSON")?;
    let version = v.get("format_version").and_then(serde_json::Value::as_u64);
    if version != Some(METADATA_FORMAT_VERSION) {
        bail!(
            "the dump's restore metadata has format version {}, this worker reads version {METADATA_FORMAT_VERSION}",
            version.map_or("(none)".to_string(), |v| v.to_string())
        );
    }
    let m: Metadata =
        serde_json::from_value(v).context("the dump's restore metadata is not valid")?;
    Ok(Some(m))
}

/// Database privileges that may appear in a GRANT.
pub fn database_privilege(p: &str) -> Option<&'static str> {
    match p {
        "CREATE" => Some("CREATE"),
        "TEMPORARY" | "TEMP" => Some("TEMPORARY"),
        "CONNECT" => Some("CONNECT"),
        _ => None,
    }
}

/// True for a setting name that can follow `SET` unquoted: identifiers
/// separated by dots (`work_mem`, `app.tenant`).
pub fn plain_setting_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        })
}

/// True when `value` is one literal or identifier, or a comma-separated
/// list of them (list settings such as `search_path` keep their list
/// syntax): nothing that could end the statement or run anything.
pub fn plain_setting_value(value: &str) -> bool {
    let Some(tokens) = statement_tokens(format!("SELECT {value};").as_bytes()) else {
        return false;
    };
    let items = &tokens[1..tokens.len() - 1];
    !items.is_empty() && items.split(|t| *t == Token::Punct(b',')).all(|group| {
        matches!(group, [Token::Word(_) | Token::Quoted(_)])
            || matches!(group, [Token::Literal(l)] if l.starts_with('\'') || l.starts_with("E'"))
    })
}

/// True when `sql` is exactly one statement starting with one of the
/// keyword sequences `starts` (e.g. `["CREATE", "ROLE"]`). Comments may not
/// hide a second statement; a backslash outside quotes (a psql
/// meta-command) or inside a plain string literal (whose meaning depends on
/// `standard_conforming_strings`) is refused.
pub fn single_statement(sql: &str, starts: &[&[&str]]) -> bool {
    let Some(t) = statement_tokens(sql.as_bytes()) else {
        return false;
    };
    let ambiguous = |t: &Token| match t {
        Token::Punct(b'\\') => true,
        Token::Literal(l) => l.starts_with('\'') && l.contains('\\'),
        _ => false,
    };
    if t.iter().any(ambiguous) {
        return false;
    }
    starts.iter().any(|kws| {
        kws.iter()
            .enumerate()
            .all(|(i, kw)| t.get(i).is_some_and(|t| t.is(kw)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_with_defaults() {
        assert_eq!(parse("  ").unwrap(), None);
        let m = parse(
            r#"{"format_version":1,"database":"d","owner":"o","encoding":"UTF8","collate":"C","ctype":"C",
                "acl":[{"grantee":null,"privilege":"CONNECT","grantable":false}],
                "roles":[{"name":"o","sql":["CREATE ROLE o;"],"member_of":[]}]}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.connection_limit, -1);
        assert_eq!(m.comment, None);
        assert!(m.allow_connections && m.acl_is_default);
        assert_eq!(m.acl[0].grantee, None);
        assert!(
            parse(r#"{"format_version":2}"#)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        assert!(parse("nonsense").is_err());
    }

    #[test]
    fn setting_names_and_values_are_checked() {
        assert!(plain_setting_name("work_mem") && plain_setting_name("app.tenant_id"));
        assert!(
            !plain_setting_name("a b") && !plain_setting_name("x;y") && !plain_setting_name("")
        );
        assert!(plain_setting_value("'64MB'"));
        assert!(plain_setting_value("\"$user\", public, \"Odd Schema\""));
        assert!(plain_setting_value("E'a\\'b'"));
        assert!(!plain_setting_value("a; DROP DATABASE x"));
        assert!(!plain_setting_value("a, "));
        assert!(!plain_setting_value(""));
        assert!(!plain_setting_value("$$x$$"));
    }

    #[test]
    fn statements_must_be_single_and_of_the_expected_kind() {
        let role: &[&[&str]] = &[&["CREATE", "ROLE"], &["ALTER", "ROLE"]];
        assert!(single_statement("CREATE ROLE \"a;b\";", role));
        assert!(single_statement(
            "ALTER ROLE a WITH LOGIN VALID UNTIL '2030-01-01';",
            role
        ));
        assert!(!single_statement("CREATE ROLE a; DROP DATABASE x;", role));
        assert!(!single_statement("DROP ROLE a;", role));
        // Whatever hides behind comments, quotes or psql syntax is refused.
        for sql in [
            "CREATE ROLE a; -- x\nDROP DATABASE x;",
            "CREATE ROLE a; /* x */ DROP DATABASE x;",
            "CREATE ROLE a /* x; DROP DATABASE x;",
            "CREATE ROLE a $$; DROP DATABASE x;",
            "CREATE ROLE a VALID UNTIL 'x\\'; DROP DATABASE x; --';",
            "CREATE ROLE a\n\\! rm -rf /\n;",
            "CREATE ROLE a \\gexec",
            "CREATE ROLE \"a;",
            "-- CREATE ROLE a;\nDROP DATABASE x;",
            "/* CREATE ROLE a; */ DROP DATABASE x;",
            "",
            ";",
        ] {
            assert!(!single_statement(sql, role), "{sql:?}");
        }
        // Comments and quoted look-alikes are fine where they hide nothing.
        assert!(single_statement("CREATE ROLE \"a--b\"; -- done", role));
        assert!(single_statement("/* captured */ CREATE ROLE \"/*\";", role));
        assert!(single_statement("ALTER ROLE a VALID UNTIL E'x\\'y';", role));
        assert!(!plain_setting_value("x; --\nDROP DATABASE y"));
        assert!(!plain_setting_value("x /* */; DROP DATABASE y"));
        assert_eq!(database_privilege("TEMPORARY"), Some("TEMPORARY"));
        assert_eq!(database_privilege("ALL; DROP"), None);
    }
}
