//! `pgsnap script …`: registered scripts that SCRIPT dump jobs run.
use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ScriptCommand {
    /// Register a script, or a new version of one (same name, new content;
    /// jobs that run it get the new version with their worker's schedule)
    Add {
        /// 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit
        name: String,
        /// The script (starts with #!; at most 1 MiB)
        file: PathBuf,
        /// Free text for people
        #[arg(long)]
        comment: Option<String>,
    },
    /// List registered scripts with their hashes and the jobs that run them
    List,
    /// Show a script's content and its hash
    Show { name: String },
    /// Remove a script (refused while a dump job runs it)
    Remove { name: String },
}
