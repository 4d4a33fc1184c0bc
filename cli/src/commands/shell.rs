//! `pgsnap completions` and `pgsnap man`: describe pgsnap itself from the same
//! clap definitions as `--help`, so scripts and pages cannot drift from it.
//! They read no config and never reach a coordinator.
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, CompletionShell};

/// The name completions and man pages know pgsnap by.
const BIN: &str = "pgsnap";

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: CompletionShell) -> Result<()> {
    let script = completion_script(shell);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("write the completion script to stdout"),
    }
}

/// The completion script for `shell`.
fn completion_script(shell: CompletionShell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        BIN,
        &mut script,
    );
    script
}

/// Writes pgsnap.1 and one page per subcommand (pgsnap-worker-register.1, …)
/// into `dir` and says how many.
pub fn man(dir: &Path) -> Result<()> {
    let written = pgsnapman_proto::manpage::write_all(Cli::command().name(BIN), "1", dir)
        .map_err(anyhow::Error::msg)?;
    println!("{written} man pages written to {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Every visible subcommand name, at every depth.
    fn subcommand_names() -> Vec<String> {
        let mut names = Vec::new();
        let mut todo = vec![Cli::command()];
        while let Some(cmd) = todo.pop() {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                names.push(sub.get_name().to_string());
                todo.push(sub.clone());
            }
        }
        names
    }

    #[test]
    fn completion_scripts_name_every_subcommand() {
        let names = subcommand_names();
        assert!(names.iter().any(|n| n == "enroll-token"), "{names:?}");
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let script = String::from_utf8(completion_script(shell)).expect("utf-8 script");
            for name in &names {
                assert!(
                    script.contains(name.as_str()),
                    "{shell:?} script lacks {name}"
                );
            }
        }
    }

    #[test]
    fn bash_completion_script_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pgsnap.bash");
        std::fs::write(&path, completion_script(CompletionShell::Bash)).expect("write script");
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("run bash -n (bash is needed by this test)");
        assert!(
            out.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn man_writes_one_roff_page_per_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        man(dir.path()).expect("pgsnap man");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        assert_eq!(files.len(), subcommand_names().len() + 1);
        for (file, section) in [
            ("pgsnap.1", "worker"),
            ("pgsnap-worker.1", "register"),
            ("pgsnap-worker-register.1", "enrollment token"),
            ("pgsnap-completions.1", "fish"),
        ] {
            let page = std::fs::read_to_string(dir.path().join(file)).expect(file);
            assert!(
                page.starts_with(".TH ") || page.contains("\n.TH "),
                "{file} has no .TH"
            );
            for heading in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS"] {
                assert!(page.contains(heading), "{file} lacks {heading}");
            }
            assert!(page.contains(section), "{file} lacks {section:?}");
        }
        // groff finds what a man reader would trip over (when installed);
        // -k: UTF-8 input through preconv, as man(1) does.
        if Path::new("/usr/bin/groff").exists() {
            for file in &files {
                let out = std::process::Command::new("groff")
                    .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                    .arg(file)
                    .output()
                    .expect("run groff");
                assert!(
                    out.status.success() && out.stderr.is_empty(),
                    "groff on {}: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
