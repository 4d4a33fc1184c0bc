//! Row counts at dump time (issue 14 item 3): a worker counts the rows of
//! every table as the dump streams into its store, with no query on the
//! source; `catalog show` lists them. Exact for a database of hard-to-count
//! tables in the custom, directory and plain formats, and per database in a
//! cluster dump.
use pgsnapman_tests::rowdata;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_counts_are_exact_in_every_format() {
    let stack = Stack::start("w-rows").await;
    let db = "rows \"db\"";
    stack.source.create_database(db).unwrap();
    rowdata::create(&stack.source, db).unwrap();
    let want = rowdata::counts(&stack.source, db).unwrap();
    assert!(want.iter().any(|(_, t, n)| t == "empty" && *n == 0));
    assert!(want.iter().any(|(_, t, _)| t == rowdata::LONG_NAME));
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-rows", None).to_string();
    let job = |extra: &[&str]| {
        let mut args = vec!["job", "add", "--instance", &inst, "--cron", "0 3 1 1 *"];
        args.extend_from_slice(extra);
        id_of(&stack.cli.json(&args).unwrap())
    };

    for format in ["custom", "directory", "plain"] {
        let j = job(&["--database", db, "--format", format]);
        let row = dump_and_show(&stack.cli, j);
        assert_eq!(counted_rows(&row, ""), want, "{format}");
    }
    // Directory format, dumped by two processes (files close in any order).
    let j = job(&["--database", db, "--format", "directory", "--jobs", "2"]);
    assert_eq!(counted_rows(&dump_and_show(&stack.cli, j), ""), want);

    // A cluster dump: the tables of each database, named with it.
    let j = job(&["--type", "cluster"]);
    let row = dump_and_show(&stack.cli, j);
    assert_eq!(counted_rows(&row, db), want, "cluster");

    // For people: the summary and one line per table.
    let shown = stack
        .cli
        .run(&["catalog", "show", &id_of(&row).to_string()])
        .unwrap();
    assert!(shown.success(), "{shown:?}");
    let total: u64 = row["table_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows"].as_u64().unwrap())
        .sum();
    assert!(
        shown.stdout.contains(&format!("{total} row(s)")),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("we.ird \"q\" tbl"),
        "{}",
        shown.stdout
    );
    // catalog list does not carry the counts (a dump may have 10,000 tables).
    let listed = catalog_of_job(&stack.cli, j);
    assert_eq!(listed[0]["table_rows"], serde_json::json!([]));
    assert_eq!(listed[0]["table_rows_counted"], true);

    // Data as INSERT statements cannot be counted: the dump still
    // succeeds, says why, and a WARNING message tells the operator.
    let j = job(&["--database", db, "--option=--inserts"]);
    let row = dump_and_show(&stack.cli, j);
    assert_eq!(row["status"], "SUCCEEDED", "{row}");
    assert_eq!(row["table_rows_counted"], false, "{row}");
    let why = row["table_rows_error"].as_str().unwrap();
    assert!(why.contains("--inserts"), "{why}");
    let warnings = stack
        .cli
        .json(&["messages", "--class", "DUMP", "--level", "WARNING"])
        .unwrap();
    let texts: Vec<&str> = warnings
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("row counts unavailable") && t.contains("--inserts")),
        "{texts:?}"
    );
    let shown = stack
        .cli
        .run(&["catalog", "show", &id_of(&row).to_string()])
        .unwrap();
    assert!(shown.stdout.contains("unavailable: "), "{}", shown.stdout);
    stack.stop_clean(&[]).await;
}
