//! What pg_dump leaves out of a database dump and a restore elsewhere needs:
//! the database's own properties (owner, encoding, collation, ctype, locale
//! provider, tablespace, connection limit, comment), its ACL, its settings (`ALTER
//! DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET`), and the roles the
//! dump references — owners, grantees, default privileges, policy roles, and
//! the roles those are members of — with their attributes, settings and
//! memberships (with 16's INHERIT and SET options when the server has them). Not every role of the cluster: only those.
//!
//! Captured in one read-only query (`METADATA_SQL`) that returns a JSON
//! document; role statements are rendered by the server (`format('%I')`), so
//! odd names are quoted exactly as Postgres quotes them. Passwords are not
//! captured. Format: docs/worker.md ("Restore metadata").
use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Version of the JSON document below.
pub const METADATA_FORMAT_VERSION: u64 = 1;

/// The capture query. Works on PostgreSQL 11 and later: version-specific
/// columns of `pg_database` (locale provider, ICU locale) are taken from
/// `to_jsonb` of the row, so a missing column is simply absent.
pub const METADATA_SQL: &str = r#"
WITH RECURSIVE d AS (
    SELECT * FROM pg_database WHERE datname = current_database()
), refs(oid) AS (
    SELECT datdba FROM d
    UNION SELECT (aclexplode(d.datacl)).grantee FROM d
    UNION SELECT s.setrole FROM pg_db_role_setting s, d WHERE s.setdatabase = d.oid
    UNION SELECT nspowner FROM pg_namespace WHERE oid >= 16384 OR nspname = 'public'
    UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE oid >= 16384 OR nspname = 'public'
    UNION SELECT relowner FROM pg_class WHERE oid >= 16384
    UNION SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE oid >= 16384
    UNION SELECT (aclexplode(attacl)).grantee FROM pg_attribute WHERE attrelid >= 16384 AND attacl IS NOT NULL
    UNION SELECT proowner FROM pg_proc WHERE oid >= 16384
    UNION SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE oid >= 16384
    UNION SELECT typowner FROM pg_type WHERE oid >= 16384
    UNION SELECT (aclexplode(typacl)).grantee FROM pg_type WHERE oid >= 16384
    UNION SELECT defaclrole FROM pg_default_acl
    UNION SELECT (aclexplode(defaclacl)).grantee FROM pg_default_acl
    UNION SELECT unnest(polroles) FROM pg_policy
    UNION SELECT extowner FROM pg_extension WHERE oid >= 16384
    UNION SELECT oprowner FROM pg_operator WHERE oid >= 16384
    UNION SELECT opcowner FROM pg_opclass WHERE oid >= 16384
    UNION SELECT opfowner FROM pg_opfamily WHERE oid >= 16384
    UNION SELECT collowner FROM pg_collation WHERE oid >= 16384
    UNION SELECT conowner FROM pg_conversion WHERE oid >= 16384
    UNION SELECT stxowner FROM pg_statistic_ext
    UNION SELECT cfgowner FROM pg_ts_config WHERE oid >= 16384
    UNION SELECT dictowner FROM pg_ts_dict WHERE oid >= 16384
    UNION SELECT evtowner FROM pg_event_trigger
    UNION SELECT lomowner FROM pg_largeobject_metadata
    UNION SELECT (aclexplode(lomacl)).grantee FROM pg_largeobject_metadata
    UNION SELECT fdwowner FROM pg_foreign_data_wrapper WHERE oid >= 16384
    UNION SELECT (aclexplode(fdwacl)).grantee FROM pg_foreign_data_wrapper WHERE oid >= 16384
    UNION SELECT srvowner FROM pg_foreign_server
    UNION SELECT (aclexplode(srvacl)).grantee FROM pg_foreign_server
    UNION SELECT umuser FROM pg_user_mappings
    UNION SELECT pubowner FROM pg_publication
), member_of(oid) AS (
    SELECT oid FROM refs WHERE oid <> 0
    UNION SELECT am.roleid FROM pg_auth_members am JOIN member_of m ON am.member = m.oid
), roles AS (
    SELECT r.* FROM pg_roles r JOIN member_of m ON m.oid = r.oid
), setting(role_oid, db_oid, name, value) AS (
    SELECT s.setrole, s.setdatabase, split_part(c, '=', 1), substr(c, strpos(c, '=') + 1)
    FROM pg_db_role_setting s, unnest(s.setconfig) c
), rendered_setting AS (
    SELECT role_oid, db_oid, name, value,
           CASE WHEN name IN ('search_path', 'temp_tablespaces', 'session_preload_libraries',
                              'local_preload_libraries', 'shared_preload_libraries')
                THEN value ELSE quote_literal(value) END AS sql_value
    FROM setting
)
SELECT jsonb_build_object(
    'format_version', 1,
    'database', d.datname,
    'owner', pg_get_userbyid(d.datdba),
    'encoding', pg_encoding_to_char(d.encoding),
    'collate', d.datcollate,
    'ctype', d.datctype,
    'locale_provider', CASE to_jsonb(d) ->> 'datlocprovider'
                           WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin'
                           ELSE to_jsonb(d) ->> 'datlocprovider' END,
    'icu_locale', COALESCE(to_jsonb(d) ->> 'daticulocale', to_jsonb(d) ->> 'datlocale'),
    'tablespace', (SELECT spcname FROM pg_tablespace WHERE oid = d.dattablespace),
    'connection_limit', d.datconnlimit,
    'allow_connections', d.datallowconn,
    'is_template', d.datistemplate,
    'comment', shobj_description(d.oid, 'pg_database'),
    'acl_is_default', d.datacl IS NULL,
    'acl', COALESCE((
        SELECT jsonb_agg(jsonb_build_object(
                   'grantee', CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
                   'privilege', a.privilege_type,
                   'grantable', a.is_grantable)
               ORDER BY a.grantee, a.privilege_type)
        FROM aclexplode(d.datacl) a), '[]'::jsonb),
    'settings', COALESCE((
        SELECT jsonb_agg(jsonb_build_object(
                   'role', CASE WHEN s.role_oid = 0 THEN NULL ELSE pg_get_userbyid(s.role_oid) END,
                   'name', s.name, 'value', s.value, 'sql_value', s.sql_value)
               ORDER BY s.role_oid, s.name)
        FROM rendered_setting s WHERE s.db_oid = d.oid), '[]'::jsonb),
    'roles', COALESCE((
        SELECT jsonb_agg(jsonb_build_object(
                   'name', r.rolname,
                   'predefined', r.rolname LIKE 'pg\_%',
                   'bootstrap_superuser', r.oid = 10,
                   'superuser', r.rolsuper, 'login', r.rolcanlogin,
                   'sql', CASE WHEN r.rolname LIKE 'pg\_%' THEN '[]'::jsonb ELSE (
                       SELECT jsonb_agg(stmt ORDER BY ord) FROM (
                           SELECT 1 AS ord, format('CREATE ROLE %I;', r.rolname) AS stmt
                           UNION ALL
                           SELECT 2, format('ALTER ROLE %I WITH %s %s %s %s %s %s %s CONNECTION LIMIT %s%s;',
                               r.rolname,
                               CASE WHEN r.rolsuper THEN 'SUPERUSER' ELSE 'NOSUPERUSER' END,
                               CASE WHEN r.rolinherit THEN 'INHERIT' ELSE 'NOINHERIT' END,
                               CASE WHEN r.rolcreaterole THEN 'CREATEROLE' ELSE 'NOCREATEROLE' END,
                               CASE WHEN r.rolcreatedb THEN 'CREATEDB' ELSE 'NOCREATEDB' END,
                               CASE WHEN r.rolcanlogin THEN 'LOGIN' ELSE 'NOLOGIN' END,
                               CASE WHEN r.rolreplication THEN 'REPLICATION' ELSE 'NOREPLICATION' END,
                               CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' ELSE 'NOBYPASSRLS' END,
                               r.rolconnlimit,
                               CASE WHEN r.rolvaliduntil IS NULL THEN ''
                                    ELSE format(' VALID UNTIL %L', r.rolvaliduntil) END)
                           UNION ALL
                           SELECT 3, format('ALTER ROLE %I SET %s TO %s;', r.rolname, s.name, s.sql_value)
                           FROM rendered_setting s WHERE s.role_oid = r.oid AND s.db_oid = 0
                       ) x) END,
                   'member_of', COALESCE((
                       SELECT jsonb_agg(jsonb_build_object(
                                  'role', pg_get_userbyid(g.roleid),
                                  'admin_option', g.admin_option,
                                  'inherit_option', g.inherit_option,
                                  'set_option', g.set_option,
                                  'sql', format('GRANT %I TO %I%s;', pg_get_userbyid(g.roleid), r.rolname,
                                                CASE WHEN g.inherit_option IS NOT NULL
                                                     THEN format(' WITH ADMIN %s, INHERIT %s, SET %s',
                                                                 upper(g.admin_option::text),
                                                                 upper(g.inherit_option::text),
                                                                 upper(g.set_option::text))
                                                     WHEN g.admin_option THEN ' WITH ADMIN OPTION'
                                                     ELSE '' END))
                              ORDER BY pg_get_userbyid(g.roleid), g.admin_option, g.inherit_option, g.set_option)
                       FROM (SELECT DISTINCT am.roleid, am.admin_option,
                                    (to_jsonb(am) ->> 'inherit_option')::boolean AS inherit_option,
                                    (to_jsonb(am) ->> 'set_option')::boolean AS set_option
                               FROM pg_auth_members am WHERE am.member = r.oid) g), '[]'::jsonb))
               ORDER BY r.rolname)
        FROM roles r), '[]'::jsonb)
)
FROM d
"#;

/// Parses and checks the capture query's output.
pub fn parse(out: &str) -> Result<Value> {
    let text = out.trim();
    if text.is_empty() {
        bail!("the metadata query returned nothing");
    }
    let v: Value =
        serde_json::from_str(text).context("the metadata query returned invalid JSON")?;
    match v.get("format_version").and_then(Value::as_u64) {
        Some(METADATA_FORMAT_VERSION) => Ok(v),
        other => bail!(
            "metadata document has format version {other:?}, expected {METADATA_FORMAT_VERSION}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_checked() {
        assert!(parse("").is_err());
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"format_version": 2}"#).is_err());
        let v = parse(" {\"format_version\": 1, \"database\": \"x\"}\n").unwrap();
        assert_eq!(v["database"], "x");
    }
}
