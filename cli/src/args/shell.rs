//! Arguments of the commands that describe `pgsnap` itself to the shell and to
//! `man`: completion scripts and man pages. They never reach a coordinator.
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell the script is for
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells `pgsnap completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory the pages are written into (created if missing; existing
    /// pages of the same names are replaced)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}
