//! Reads `pg_restore --list` output: entry ids, catalog ids and the
//! description text. pg_restore prints names unquoted (newlines become
//! spaces), so a name with spaces cannot be split out of a line on its own;
//! the lookups here match whole lines against names known from elsewhere
//! (the target's catalog, the dump's roles) and refuse ambiguous matches.

/// `pg_namespace`'s catalog id: SCHEMA entries carry it.
const PG_NAMESPACE: u32 = 2615;

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u32,
    /// The catalog of the object (0 for data, comments, ACLs).
    pub catalog: u32,
    pub oid: u32,
    /// `DESC namespace tag owner`, as printed.
    pub text: String,
}

/// The entries of a list (comment lines starting with `;` are skipped).
pub fn parse(list: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in list.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        let Some((id, rest)) = line.split_once("; ") else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(catalog), Some(oid), Some(text)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(id), Ok(catalog), Ok(oid)) = (id.parse(), catalog.parse(), oid.parse()) else {
            continue;
        };
        out.push(Entry {
            id,
            catalog,
            oid,
            text: text.to_string(),
        });
    }
    out
}

/// A name as pg_restore prints it.
fn sanitize(name: &str) -> String {
    name.replace(['\n', '\r'], " ")
}

/// The `namespace tag owner` texts of the TABLE DATA entries.
pub fn table_data(entries: &[Entry]) -> Vec<&str> {
    entries
        .iter()
        .filter(|e| e.catalog == 0)
        .filter_map(|e| e.text.strip_prefix("TABLE DATA "))
        .collect()
}

/// Which of the target's `(schema, table)` each TABLE DATA text names.
/// Fails naming the entry when none or more than one table fits.
pub fn resolve_tables(
    texts: &[&str],
    candidates: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let prefixes: Vec<String> = candidates
        .iter()
        .map(|(s, t)| format!("{} {} ", sanitize(s), sanitize(t)))
        .collect();
    let mut out = Vec::new();
    for text in texts {
        let hits: Vec<usize> = prefixes
            .iter()
            .enumerate()
            .filter(|(_, p)| text.starts_with(p.as_str()))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => out.push(candidates[*i].clone()),
            [] => {
                return Err(format!(
                    "the dump has data for table \"{text}\" (schema, name, owner), which the target database does not have"
                ));
            }
            _ => {
                return Err(format!(
                    "the dump's table data entry \"{text}\" fits more than one table of the target (names with spaces); restore with a different policy"
                ));
            }
        }
    }
    Ok(out)
}

/// The entry ids that create `schema` with its comment and privileges:
/// the SCHEMA entry owned by one of `owners`, and the COMMENT and ACL
/// entries on it. Empty when the dump has no SCHEMA entry for it.
pub fn schema_entries(entries: &[Entry], schema: &str, owners: &[String]) -> Vec<u32> {
    let name = sanitize(schema);
    let schema_line = |e: &Entry, owner: &str| e.text == format!("SCHEMA - {name} {owner}");
    let Some((schema_entry, owner)) = entries
        .iter()
        .filter(|e| e.catalog == PG_NAMESPACE)
        .find_map(|e| {
            owners
                .iter()
                .find(|o| schema_line(e, &sanitize(o)))
                .map(|o| (e, sanitize(o)))
        })
    else {
        return Vec::new();
    };
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let mut ids = vec![schema_entry.id];
    for e in entries.iter().filter(|e| e.catalog == 0) {
        for desc in ["COMMENT", "ACL"] {
            for n in [&name, &quoted] {
                if e.text == format!("{desc} - SCHEMA {n} {owner}") {
                    ids.push(e.id);
                }
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A `-L` list file's text for `ids` (pg_restore reads only the ids).
pub fn use_list(ids: &[u32]) -> String {
    ids.iter().map(|id| format!("{id};\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = ";
; Archive created at 2026-11-24 09:16:05 UTC
;     dbname: src
;
; Selected TOC Entries:
;
8; 2615 16479 SCHEMA - DATA postgres
7; 2615 16468 SCHEMA - Odd Schema app
3408; 0 0 COMMENT - SCHEMA \"Odd Schema\" app
3409; 0 0 ACL - SCHEMA \"Odd Schema\" app
5; 2615 2200 SCHEMA - public app
3340; 0 0 COMMENT - SCHEMA public app
2; 3079 16387 EXTENSION - pg_trgm 
219; 1259 16480 TABLE DATA x postgres
217; 1259 16469 TABLE Odd Schema my table postgres
3401; 0 16480 TABLE DATA DATA x postgres
3399; 0 16469 TABLE DATA Odd Schema my table postgres
3400; 0 16476 TABLE DATA public t postgres
";

    #[test]
    fn lines_are_parsed() {
        let e = parse(LIST);
        assert_eq!(e.len(), 12);
        assert_eq!(
            e[0],
            Entry {
                id: 8,
                catalog: 2615,
                oid: 16479,
                text: "SCHEMA - DATA postgres".into()
            }
        );
        assert_eq!(e[6].text, "EXTENSION - pg_trgm ");
    }

    #[test]
    fn table_data_is_told_from_tables_in_a_schema_named_data() {
        let e = parse(LIST);
        assert_eq!(
            table_data(&e),
            vec![
                "DATA x postgres",
                "Odd Schema my table postgres",
                "public t postgres"
            ]
        );
    }

    #[test]
    fn tables_resolve_against_the_target_or_fail_clearly() {
        let e = parse(LIST);
        let texts = table_data(&e);
        let cand = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let target = cand(&[
            ("public", "t"),
            ("Odd Schema", "my table"),
            ("DATA", "x"),
            ("public", "u"),
        ]);
        assert_eq!(
            resolve_tables(&texts, &target).unwrap(),
            cand(&[("DATA", "x"), ("Odd Schema", "my table"), ("public", "t")])
        );
        let missing = resolve_tables(&texts, &cand(&[("public", "t")])).unwrap_err();
        assert!(missing.contains("DATA x postgres"), "{missing}");
        let ambiguous = cand(&[
            ("Odd", "Schema my"),
            ("Odd Schema", "my"),
            ("public", "t"),
            ("DATA", "x"),
        ]);
        assert!(
            resolve_tables(&texts, &ambiguous)
                .unwrap_err()
                .contains("more than one")
        );
    }

    #[test]
    fn schema_entries_with_comment_and_acl() {
        let e = parse(LIST);
        let owners = vec!["app".to_string(), "postgres".to_string()];
        assert_eq!(
            schema_entries(&e, "Odd Schema", &owners),
            vec![7, 3408, 3409]
        );
        assert_eq!(schema_entries(&e, "public", &owners), vec![5, 3340]);
        assert_eq!(schema_entries(&e, "DATA", &owners), vec![8]);
        assert!(schema_entries(&e, "Odd", &owners).is_empty());
        assert!(schema_entries(&e, "Odd Schema", &["postgres".to_string()]).is_empty());
        assert_eq!(use_list(&[7, 3408]), "7;\n3408;\n");
    }
}
