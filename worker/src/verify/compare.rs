//! The counting query of a restore verification and the comparison of its
//! output with the dump-time counts (pure).
use anyhow::{Result, anyhow};
use pgsnapman_proto::model::excerpt;
use pgsnapman_proto::v1::{RowMismatch, TableRowCount};

use crate::restore::names::quote_literal;

/// A session-local function that counts one table's rows (-1 when the
/// table is missing). PL/pgSQL, which every database has from template0,
/// not `query_to_xml`: servers built without libxml (embedded and minimal
/// builds) refuse XML functions.
pub const COUNT_FN: &str = "CREATE FUNCTION pg_temp.pgsnapman_rows(s text, t text) \
     RETURNS bigint LANGUAGE plpgsql AS $pgsnapman$ \
     DECLARE n bigint; \
     BEGIN \
       IF to_regclass(format('%I.%I', s, t)) IS NULL THEN RETURN -1; END IF; \
       EXECUTE format('SELECT count(*) FROM ONLY %I.%I', s, t) INTO n; \
       RETURN n; \
     END $pgsnapman$";

/// The statement, run after `COUNT_FN` in the same session, that returns
/// `index|rows` for every expected table: names go in as literals and are
/// quoted by `%I` inside the function.
pub fn count_sql(expected: &[&TableRowCount]) -> String {
    let values: Vec<String> = expected
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "({i}, {}, {})",
                quote_literal(&t.schema),
                quote_literal(&t.table)
            )
        })
        .collect();
    format!(
        "SELECT i, pg_temp.pgsnapman_rows(s, t) FROM (VALUES {}) AS v(i, s, t) ORDER BY i",
        values.join(", ")
    )
}

/// The tables whose count in `out` (the output of `count_sql`) differs.
pub fn mismatches(expected: &[&TableRowCount], out: &str) -> Result<Vec<RowMismatch>> {
    let mut found = vec![None; expected.len()];
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (i, n) = line
            .split_once('|')
            .and_then(|(i, n)| {
                Some((
                    i.trim().parse::<usize>().ok()?,
                    n.trim().parse::<i64>().ok()?,
                ))
            })
            .ok_or_else(|| {
                anyhow!(
                    "unexpected output of the counting query: {:?}",
                    excerpt(line)
                )
            })?;
        if let Some(slot) = found.get_mut(i) {
            *slot = Some(n);
        }
    }
    let mut out = Vec::new();
    for (t, n) in expected.iter().zip(found) {
        let n =
            n.ok_or_else(|| anyhow!("no count came back for table {}.{}", t.schema, t.table))?;
        if u64::try_from(n).ok() != Some(t.rows) {
            out.push(RowMismatch {
                schema: t.schema.clone(),
                table: t.table.clone(),
                expected: t.rows,
                found: n,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(schema: &str, table: &str, rows: u64) -> TableRowCount {
        TableRowCount {
            schema: schema.into(),
            table: table.into(),
            rows,
            database: String::new(),
        }
    }

    #[test]
    fn names_are_literals() {
        let a = t("it's", "a\\b", 1);
        let sql = count_sql(&[&a]);
        assert!(sql.contains("(0, 'it''s', E'a\\\\b')"), "{sql}");
    }

    #[test]
    fn differing_and_missing_tables_are_named() {
        let (a, b, c) = (t("s", "a", 3), t("s", "b", 2), t("s", "c", 0));
        let e = [&a, &b, &c];
        assert!(mismatches(&e, "0|3\n1|2\n2|0\n").unwrap().is_empty());
        let m = mismatches(&e, "0|3\n1|1\n2|-1").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].table.as_str(), m[0].expected, m[0].found),
            ("b", 2, 1)
        );
        assert_eq!((m[1].table.as_str(), m[1].found), ("c", -1));
        assert!(mismatches(&e, "0|3\n1|2").is_err());
        assert!(mismatches(&e, "garbage").is_err());
    }
}
