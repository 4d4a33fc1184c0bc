//! Logs that go to a file carry no terminal colour codes, even without
//! `NO_COLOR` (the harness sets it for every other scenario).
use std::process::{Command, Stdio};

#[test]
fn logs_written_to_a_file_have_no_colour_codes() {
    let dir = pgsnapman_tests::shared_tempdir("pgsnapman-colour-");
    let runs: [(&str, &[(&str, &str)]); 2] = [
        // No worker.name: logged as an ERROR, exit 1.
        ("pgsnapman-worker", &[("PGSNAPMAN_WORKER__NAME", "")]),
        // Starts (an INFO line), then refuses the catalog URL (an ERROR).
        (
            "pgsnapman-coordinator",
            &[("PGSNAPMAN_CATALOG__URL", "not a url")],
        ),
    ];
    for (binary, env) in runs {
        let log_path = dir.path().join(format!("{binary}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let status = Command::new(pgsnapman_tests::binary(binary))
            .env_remove("NO_COLOR")
            .env_remove("PGSNAPMAN_CONFIG")
            .env("RUST_LOG", "info")
            .env("PGSNAPMAN_COORDINATOR__DATA_DIR", dir.path().join("coord"))
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "{binary} should refuse its configuration"
        );
        let text = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            text.contains("ERROR"),
            "{binary} logged no ERROR line: {text}"
        );
        assert!(
            !text.contains("\x1b["),
            "{binary} wrote colour codes into its log file: {text:?}"
        );
    }
}
