//! Registered scripts, as both sides see them: the name rule, the size
//! limit and the content hash (docs/scripts.md). Pure; no I/O.
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::model::InvalidInput;

/// Largest script content accepted (1 MiB): a script drives client programs,
/// it is not a place for data. Enforced by the coordinator at `AddScript`
/// and again by the worker before it runs one.
pub const MAX_SCRIPT_BYTES: usize = 1024 * 1024;
/// Most bytes of scripts one worker's SCRIPT jobs may use in all: they
/// travel in its schedule, which must fit a gRPC message
/// ([`crate::MAX_MESSAGE_BYTES`], 16 MiB) with the jobs and instances.
pub const MAX_SCRIPT_BYTES_PER_WORKER: usize = 8 * 1024 * 1024;
/// Longest script name.
pub const MAX_NAME_BYTES: usize = 63;

/// Checks a script name: 1 to 63 characters from `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit (it names a file on the worker).
pub fn validate_name(name: &str) -> Result<(), InvalidInput> {
    let invalid = |reason| InvalidInput::Identifier {
        what: "script name",
        value: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid("longer than 63 bytes"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("must start with a letter or a digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid("may hold only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Checks a script's content: it starts with `#!` and an absolute
/// interpreter path (the worker runs that interpreter on it) and has at
/// most [`MAX_SCRIPT_BYTES`].
pub fn validate_content(name: &str, content: &[u8]) -> Result<(), InvalidInput> {
    if content.is_empty() {
        return Err(InvalidInput::Other(format!("script {name:?} is empty")));
    }
    let absolute = content
        .strip_prefix(b"#!")
        .map(|rest| rest.trim_ascii_start())
        .is_some_and(|rest| rest.starts_with(b"/"));
    if !absolute {
        return Err(InvalidInput::Other(format!(
            "script {name:?} does not start with an interpreter line naming an absolute path (#!/bin/sh, #!/usr/bin/env python3, …)"
        )));
    }
    if content.len() > MAX_SCRIPT_BYTES {
        return Err(InvalidInput::Other(format!(
            "script {name:?} has {} bytes, more than the limit of {MAX_SCRIPT_BYTES} bytes (1 MiB)",
            content.len()
        )));
    }
    Ok(())
}

/// Most arguments a SCRIPT job passes to its script.
pub const MAX_ARGUMENTS: usize = 64;
/// Longest single argument.
pub const MAX_ARGUMENT_BYTES: usize = 1024;

/// Checks a SCRIPT job's arguments (its extra options, passed to the script
/// as they are): at most 64, each at most 1 KiB and without a NUL byte.
pub fn validate_arguments(args: &[String]) -> Result<(), InvalidInput> {
    if args.len() > MAX_ARGUMENTS {
        return Err(InvalidInput::Other(format!(
            "a script job takes at most {MAX_ARGUMENTS} arguments, not {}",
            args.len()
        )));
    }
    for a in args {
        if a.len() > MAX_ARGUMENT_BYTES || a.contains('\0') {
            let mut cut = a.len().min(40);
            while !a.is_char_boundary(cut) {
                cut -= 1;
            }
            return Err(InvalidInput::Other(format!(
                "script argument {:?}… is longer than {MAX_ARGUMENT_BYTES} bytes or holds a NUL byte",
                &a[..cut]
            )));
        }
    }
    Ok(())
}

/// Checks what a script restore (`RestoreTarget.script_name`) may ask for:
/// a valid script name, arguments as for SCRIPT jobs, and none of the
/// options only pg_restore honours (parallel jobs, tablespaces): the script
/// decides how it restores (docs/scripts.md, "Restore scripts").
pub fn validate_restore_target(t: &crate::v1::RestoreTarget) -> Result<(), InvalidInput> {
    validate_name(&t.script_name)?;
    let refused = if t.parallel_jobs != 0 {
        Some("--jobs")
    } else if t.keep_tablespaces || !t.tablespace_map.is_empty() {
        Some("tablespace handling")
    } else {
        None
    };
    if let Some(what) = refused {
        return Err(InvalidInput::Other(format!(
            "a restore by script {:?} takes no {what}: the script decides how it restores",
            t.script_name
        )));
    }
    validate_arguments(&t.extra_options)
}

/// True for a well-formed content address (`sha256:` and 64 lower-case hex
/// digits), as [`content_hash`] writes it.
pub fn is_content_hash(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The content address of a script: `sha256:` and the hex SHA-256 of the
/// content (the same as `sha256sum` prints).
pub fn content_hash(content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "dump-filter.sh", "X_1.2", &"a".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".hidden",
            "a/b",
            "a b",
            "ä",
            "x;rm",
            &"a".repeat(64),
        ] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("script name"), "{err}");
        }
    }

    #[test]
    fn content_is_limited_and_hashed() {
        assert!(validate_content("s", b"").is_err());
        assert!(validate_content("s", b"echo hi").is_err());
        assert!(validate_content("s", b"#!sh\n").is_err());
        assert!(validate_content("s", b"#! /bin/sh\n").is_ok());
        let mut big = b"#!/bin/sh\n".to_vec();
        big.resize(MAX_SCRIPT_BYTES, b'#');
        assert!(validate_content("s", &big).is_ok());
        big.push(b'#');
        let err = validate_content("s", &big).unwrap_err().to_string();
        assert!(
            err.contains("1048577 bytes") && err.contains("1 MiB"),
            "{err}"
        );
        assert!(validate_arguments(&vec!["--x".to_string(); 64]).is_ok());
        assert!(validate_arguments(&vec!["--x".to_string(); 65]).is_err());
        assert!(validate_arguments(&["a\0b".into()]).is_err());
        assert!(validate_arguments(&["a".repeat(1025)]).is_err());
        assert_eq!(
            content_hash(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_content_hash(&content_hash(b"abc")));
        assert!(!is_content_hash("sha256:ABC"));
        assert!(!is_content_hash(""));
    }

    #[test]
    fn a_script_restore_takes_arguments_not_pg_restore_options() {
        use crate::v1::RestoreTarget;
        let t = |f: fn(&mut RestoreTarget)| {
            let mut t = RestoreTarget {
                instance_id: 1,
                script_name: "restore.sh".into(),
                extra_options: vec!["not-a-pg_restore-option".into()],
                ..Default::default()
            };
            f(&mut t);
            crate::model::validate_restore_target(&t).map_err(|e| e.to_string())
        };
        assert!(t(|_| {}).is_ok());
        // Without a script the same option is refused as a pg_restore option.
        assert!(t(|t| t.script_name.clear()).is_err());
        let err = t(|t| t.parallel_jobs = 2).unwrap_err();
        assert!(err.contains("takes no --jobs"), "{err}");
        let err = t(|t| t.keep_tablespaces = true).unwrap_err();
        assert!(err.contains("tablespace"), "{err}");
        assert!(t(|t| t.script_name = "../x".into()).is_err());
        assert!(t(|t| t.extra_options = vec!["a\0b".into()]).is_err());
    }
}
