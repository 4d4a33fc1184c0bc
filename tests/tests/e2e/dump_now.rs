//! register worker → add instance → add job → dump now → the catalog row
//! appears with correct sizes and server version; odd database names dump and
//! restore correctly.

use pgsnapman_tests::cluster::quote_ident;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_now_records_a_complete_catalog_row() {
    let stack = Stack::start("w-basic").await;
    stack.source.create_database("sample").unwrap();
    stack
        .source
        .script(
            "sample",
            "CREATE TABLE t (id int PRIMARY KEY, payload text, at timestamptz DEFAULT now());
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
        )
        .unwrap();
    let instance = add_instance(&stack.cli, "src", stack.source.port, "w-basic", None);
    let job = add_job(&stack.cli, instance, "sample");

    // The operator's way: `dump now --wait` succeeds and exits 0.
    let run = stack
        .cli
        .run(&["dump", "now", &job.to_string(), "--wait"])
        .unwrap();
    assert!(run.success(), "dump now --wait failed: {run:?}");

    let rows = catalog_of_job(&stack.cli, job);
    assert_eq!(rows.len(), 1, "one catalog row expected: {rows:?}");
    let id = id_of(&rows[0]);
    let dump = stack
        .cli
        .json(&["catalog", "show", &id.to_string()])
        .unwrap();
    assert_eq!(dump["status"], "SUCCEEDED", "{dump}");
    assert_eq!(dump["database"], "sample");
    assert_eq!(dump["dump_type"], "FULL");
    assert_eq!(
        dump["server_version"].as_str().unwrap(),
        stack.source.server_version().unwrap()
    );
    let db_size: i64 = stack
        .source
        .query("sample", "SELECT pg_database_size('sample')")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(dump["database_bytes"].as_i64().unwrap(), db_size);
    // The archive is in the worker's store, as pg_dump wrote it.
    let location = stack.extract(&dump);
    let on_disk = std::fs::metadata(&location).unwrap().len();
    assert!(
        on_disk > 100_000,
        "dump of 20000 rows is only {on_disk} bytes"
    );
    assert_eq!(dump["dump_bytes"].as_u64().unwrap(), on_disk);
    // A first dump's chunks are new: stored uncompressed and compressed
    // after the dump (docs/store.md, "Compression after the dump"), so the
    // catalog counts them at about their raw size.
    let stored = dump["stored_bytes"].as_u64().unwrap();
    assert!(
        stored > on_disk * 9 / 10 && stored < on_disk + on_disk / 50,
        "written whole: {dump}"
    );
    assert!(dump["dedup_ratio"].as_f64().unwrap() > 0.9, "{dump}");
    assert!(
        dump["location"].as_str().unwrap().ends_with(&format!(
            "manifests/{}.manifest",
            dump["dump_uuid"].as_str().unwrap()
        )),
        "{dump}"
    );
    assert!(
        dump["client_version"]
            .as_str()
            .unwrap()
            .contains(&PG_MAJOR.to_string()),
        "{dump}"
    );
    assert!(dump["started_at"].as_str().unwrap() <= dump["finished_at"].as_str().unwrap());

    // The archive is a real, readable pg_dump archive that restores.
    let restored = "sample_restored";
    stack.source.create_database(restored).unwrap();
    pg_restore(&stack.source, restored, &location.to_string_lossy());
    assert_eq!(
        stack
            .source
            .query(restored, "SELECT count(*) FROM t")
            .unwrap(),
        "20000"
    );
    stack.stop_clean(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_database_names_dump_correctly() {
    let stack = Stack::start("w-odd").await;
    let db = "My \"odd\" db.ünï 'x'";
    stack.source.create_database(db).unwrap();
    let schema = "Sch \"ema\".ü";
    let table = "Tab le \"ü\"";
    stack
        .source
        .script(
            db,
            &format!(
                "CREATE SCHEMA {s}; CREATE TABLE {s}.{t} (v text);
                 INSERT INTO {s}.{t} SELECT 'row ' || g FROM generate_series(1, 321) g;",
                s = quote_ident(schema),
                t = quote_ident(table)
            ),
        )
        .unwrap();
    let instance = add_instance(&stack.cli, "odd", stack.source.port, "w-odd", None);
    let job = add_job(&stack.cli, instance, db);
    let task = dump_now(&stack.cli, job);
    let t = wait_task_done(&stack.cli, task).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");
    let dump = stack
        .cli
        .json(&[
            "catalog",
            "show",
            &t["dump_id"].as_i64().unwrap().to_string(),
        ])
        .unwrap();
    assert_eq!(dump["database"].as_str().unwrap(), db);

    let copy = "cöpy of \"odd\"";
    stack.source.create_database(copy).unwrap();
    pg_restore(&stack.source, copy, &stack.extract(&dump).to_string_lossy());
    let count = stack
        .source
        .query(
            copy,
            &format!(
                "SELECT count(*) FROM {}.{}",
                quote_ident(schema),
                quote_ident(table)
            ),
        )
        .unwrap();
    assert_eq!(count, "321");
    stack.stop_clean(&[]).await;
}
