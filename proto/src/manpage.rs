//! Man pages of the three binaries, rendered from their clap definitions so
//! that a page and `--help` cannot disagree (docs/packages.md). Pure except
//! for [`write_all`] and [`write_daemon_pages`], which write into a directory.
use std::path::Path;

/// Every page of `cmd` as (file name, roff text): the command itself and,
/// depth first, each visible subcommand (`pgsnap-worker-register.1`).
pub fn render_all(cmd: clap::Command, section: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut root = cmd.disable_help_subcommand(true);
    root.build();
    let version = root.get_version().unwrap_or_default().to_string();
    let mut pages = Vec::new();
    let mut todo = vec![root];
    while let Some(cmd) = todo.pop() {
        todo.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let man = clap_mangen::Man::new(cmd)
            .section(section)
            .source(format!("pgsnapman {version}"))
            .manual("pgsnapman manual");
        let mut page = Vec::new();
        man.render(&mut page)?;
        pages.push((man.get_filename(), page));
    }
    Ok(pages)
}

/// Writes every page of `cmd` into `dir` (created if missing; pages of the
/// same names are replaced) and returns how many.
pub fn write_all(cmd: clap::Command, section: &str, dir: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let pages = render_all(cmd, section).map_err(|e| format!("render a man page: {e}"))?;
    for (name, page) in &pages {
        let path = dir.join(name);
        std::fs::write(&path, page).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(pages.len())
}

/// `--man-dir DIR` of the daemons: writes `cmd`'s pages (section 8) into `dir`;
/// an error is one line on stderr, named after the program.
pub fn write_daemon_pages(cmd: clap::Command, dir: &Path) -> std::process::ExitCode {
    let name = cmd.get_name().to_string();
    match write_all(cmd, "8", dir) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_command_with_the_section() {
        let cmd = clap::Command::new("tool")
            .version("1.2.3")
            .about("Does things")
            .arg(clap::Arg::new("config").long("config").help("Config file"))
            .arg(clap::Arg::new("man-dir").long("man-dir").hide(true))
            .subcommand(clap::Command::new("run").about("Run it"))
            .subcommand(clap::Command::new("secret").hide(true));
        let pages = render_all(cmd, "8").expect("render");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["tool.8", "tool-run.8"]);
        let page = String::from_utf8(pages[0].1.clone()).expect("utf-8");
        assert!(page.contains("\n.TH tool 8 "), "{page}");
        assert!(page.contains("pgsnapman 1.2.3"), "{page}");
        assert!(page.contains("\\fB\\-\\-config\\fR"), "{page}");
        assert!(page.contains("tool\\-run(8)"), "{page}");
        assert!(
            !page.contains("man\\-dir"),
            "hidden options stay hidden: {page}"
        );
    }
}
