//! The names a restore gives databases and schemas (temporary, backup and
//! transient ones, docs/worker.md "Restores") and how any name or value is
//! written into SQL: identifiers always double-quoted, literals always
//! quoted. Pure string work; nothing here talks to a server.

/// Postgres keeps at most this many bytes of an identifier.
pub const MAX_IDENT_BYTES: usize = 63;

/// A double-quoted SQL identifier: any name (quotes, spaces, dots, unicode,
/// upper case) is taken literally.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal, correct whatever
/// `standard_conforming_strings` says: with a backslash in the value the
/// escape form `E'…'` is used.
pub fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// 32-bit FNV-1a of `s`, as 8 hex digits: tells truncated names apart.
fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// `base` + `suffix`, at most 63 bytes. When that is too long, `base` is cut
/// at a character boundary and `_<8 hex digits of FNV-1a(base)>` is put
/// before the suffix, so two long names sharing a prefix never share a
/// derived name.
pub fn derived(base: &str, suffix: &str) -> String {
    if base.len() + suffix.len() <= MAX_IDENT_BYTES {
        return format!("{base}{suffix}");
    }
    let hash = short_hash(base);
    let room = MAX_IDENT_BYTES.saturating_sub(suffix.len() + 1 + hash.len());
    let mut cut = room.min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}{suffix}", &base[..cut])
}

/// The database a RENAME/DROP restore (or one into a missing database)
/// fills before it takes the target's name.
pub fn temp_database(target: &str, run_id: i64) -> String {
    derived(target, &format!("_pgsnapman_{run_id}"))
}

/// Where RENAME keeps the previous target (an older one is replaced).
pub fn backup_database(target: &str) -> String {
    derived(target, "_pgsnapman_bak")
}

/// Where DROP moves the previous target for the moment between the swap
/// and its drop.
pub fn old_database(target: &str, run_id: i64) -> String {
    derived(target, &format!("_pgsnapman_old_{run_id}"))
}

/// Where RENAME keeps the previous schema of a one-schema restore.
pub fn backup_schema(schema: &str) -> String {
    derived(schema, "_pgsnapman_bak")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("My \"odd\" db.ü"), "\"My \"\"odd\"\" db.ü\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
        assert_eq!(quote_literal(""), "''");
    }

    #[test]
    fn short_names_are_suffixed() {
        assert_eq!(temp_database("app", 42), "app_pgsnapman_42");
        assert_eq!(backup_database("My db"), "My db_pgsnapman_bak");
        assert_eq!(old_database("app", 7), "app_pgsnapman_old_7");
        assert_eq!(backup_schema("s"), "s_pgsnapman_bak");
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary_and_hashed() {
        let long = "ü".repeat(40); // 80 bytes
        let t = temp_database(&long, 123_456);
        assert!(t.len() <= MAX_IDENT_BYTES, "{t} is {} bytes", t.len());
        assert!(t.ends_with("_pgsnapman_123456"));
        assert!(t.starts_with("üü"));
        let b = backup_database(&long);
        assert!(b.len() <= MAX_IDENT_BYTES && b.ends_with("_pgsnapman_bak"));
        // Two long names with the same prefix get different derived names.
        let other = format!("{}x", "ü".repeat(40));
        assert_ne!(backup_database(&other), b);
        // Exactly at the limit: no hash.
        let fits = "a".repeat(MAX_IDENT_BYTES - "_pgsnapman_bak".len());
        assert_eq!(backup_database(&fits), format!("{fits}_pgsnapman_bak"));
        let over = "a".repeat(MAX_IDENT_BYTES - "_pgsnapman_bak".len() + 1);
        let d = backup_database(&over);
        assert_eq!(d.len(), MAX_IDENT_BYTES);
        assert_eq!(
            &d[d.len() - 23..d.len() - 14],
            &format!("_{}", short_hash(&over))
        );
    }

    #[test]
    fn names_at_the_limit_never_derive_themselves_or_a_sibling() {
        // Postgres would cut `<63 bytes>_pgsnapman_bak` back to the target
        // itself; 21 three-byte characters put every cut inside a character.
        let euros = "€".repeat(21);
        let sibling = format!("{}xyz", "€".repeat(20));
        for target in [&euros, &sibling] {
            assert_eq!(target.len(), MAX_IDENT_BYTES);
            for d in [
                temp_database(target, i64::MAX),
                backup_database(target),
                old_database(target, 1),
                backup_schema(target),
            ] {
                assert!(d.len() <= MAX_IDENT_BYTES, "{d}");
                assert!(!d.starts_with(target.as_str()), "{d}");
            }
        }
        assert_ne!(backup_database(&euros), backup_database(&sibling));
        assert_ne!(temp_database(&euros, 9), temp_database(&sibling, 9));
    }

    #[test]
    fn the_hash_is_fnv1a() {
        assert_eq!(short_hash(""), "811c9dc5");
        assert_eq!(short_hash("a"), "e40c292c");
    }
}
