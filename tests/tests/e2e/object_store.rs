//! The pack store in an S3-compatible bucket (issue 16 item 1), through the
//! real worker against a real S3-protocol server (moto, `tests/src/s3.rs`):
//! dump and restore, verify of the bucket's bytes, stats naming the backend,
//! the bucket unreachable for a whole run and killed mid-upload.
use std::time::Duration;

use pgsnapman_tests::s3::{S3Server, SECRET_ACCESS_KEY};
use pgsnapman_tests::{Proxy, Worker, WorkerOptions, wait};
use serde_json::Value;

use crate::common::*;

/// A stack whose worker stores into `endpoint` under `prefix`.
async fn s3_stack(worker: &str, endpoint: &str, secret_dir: &std::path::Path) -> Stack {
    let env = S3Server::worker_env(endpoint, worker, secret_dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut with_small_packs = env.clone();
    // Several packs per dump, so that a dump is several uploads.
    with_small_packs.push(("PGSNAPMAN_STORE__PACK_TARGET_BYTES", "1048576"));
    Stack::start_with(worker, &with_small_packs, None).await
}

/// A stack whose worker reaches the bucket through a fault-injecting proxy,
/// with one job on a database of `tables` tables of 8,000 rows.
struct Proxied {
    s3: S3Server,
    proxy: Proxy,
    endpoint: String,
    secret_dir: tempfile::TempDir,
    stack: Stack,
    inst: i64,
    job: i64,
}

impl Proxied {
    async fn start(worker: &str, tables: usize, row_bytes: usize) -> Proxied {
        let s3 = S3Server::start().unwrap();
        let proxy = Proxy::to(&format!("127.0.0.1:{}", s3.port()))
            .await
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{}", proxy.port());
        let secret_dir = pgsnapman_tests::shared_tempdir("pgsnapman-s3-secret-");
        let stack = s3_stack(worker, &endpoint, secret_dir.path()).await;
        stack.source.create_database("shop").unwrap();
        fill_mixed(&stack.source, "shop", "t", tables, 8_000, row_bytes);
        let inst = add_instance(&stack.cli, "src", stack.source.port, worker, None);
        let job = add_job(&stack.cli, inst, "shop");
        Proxied {
            s3,
            proxy,
            endpoint,
            secret_dir,
            stack,
            inst,
            job,
        }
    }
}

/// The worker's "dump stored" log lines (what each ingest stored, and how).
fn dump_stored_lines(stack: &Stack) -> Vec<String> {
    worker_log_lines(stack, "dump stored")
}

fn objects(s3: &S3Server, prefix: &str, dir: &str) -> Vec<(String, u64)> {
    s3.list(prefix, dir).unwrap()
}

fn restore_into(stack: &Stack, dump: &Value, inst: i64, database: &str) {
    let (dump, inst) = (id_of(dump).to_string(), inst.to_string());
    let run = stack
        .cli
        .run(&[
            "restore",
            "now",
            "--dump",
            &dump,
            "--to-instance",
            &inst,
            "--to-database",
            database,
            "--wait",
        ])
        .unwrap();
    assert!(run.success(), "restore from the bucket: {run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_restore_verify_through_the_bucket() {
    let s3 = S3Server::start().unwrap();
    let secret_dir = pgsnapman_tests::shared_tempdir("pgsnapman-s3-secret-");
    let stack = s3_stack("w-s3", &s3.endpoint(), secret_dir.path()).await;
    stack.source.create_database("shop").unwrap();
    fill_mixed(&stack.source, "shop", "t", 2, 8_000, 256);
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-s3", None);
    let job = add_job(&stack.cli, inst, "shop");

    let d1 = dump_and_show(&stack.cli, job);
    let uuid = d1["dump_uuid"].as_str().unwrap().to_string();
    // The manifest and the packs are in the bucket; with a cache of 0
    // bytes at most the pack read last stays on the worker's disk.
    let manifests = objects(&s3, "w-s3", "manifests");
    assert!(
        manifests.iter().any(|(k, _)| k.contains(&uuid)),
        "{manifests:?}"
    );
    let packs = objects(&s3, "w-s3", "packs");
    assert!(packs.len() >= 2, "a multi-pack dump: {packs:?}");
    let local = files_with_suffix(&stack.worker.data_dir.join("packs"), ".pack");
    assert!(local.len() <= 1, "packs left in a 0-byte cache: {local:?}");
    // Nothing is left uncompressed for after the dump on object storage
    // (every pack would be uploaded twice), though the worker's
    // `store.compress_later_max_bytes` is at its default (4 GiB): the dump
    // compressed its chunks as it stored them.
    let stored_lines = dump_stored_lines(&stack);
    assert!(
        !stored_lines.is_empty()
            && stored_lines
                .iter()
                .all(|l| l.contains("later_chunks=0") && l.contains("later_bytes=0")),
        "{stored_lines:?}"
    );
    assert!(
        d1["stored_bytes"].as_u64().unwrap() < d1["dump_bytes"].as_u64().unwrap() * 4 / 5,
        "{d1}"
    );

    // A second dump of unchanged data uploads (nearly) nothing new: the
    // chunk with the archive header's timestamp, as a delta. (A chunk the
    // first dump split in two was once cut another way and stored again.)
    let d2 = dump_and_show(&stack.cli, job);
    let (stored, size) = (
        d2["stored_bytes"].as_u64().unwrap(),
        d2["dump_bytes"].as_u64().unwrap(),
    );
    assert!(
        stored < size / 50,
        "the second dump stored {stored} of {size} bytes: {:?}",
        dump_stored_lines(&stack)
    );

    // `pgsnap store stats` names the backend, and never the secret.
    let stats = wait_store_stats(&stack.cli, "w-s3", 2).await;
    assert_eq!(stats[0]["backend"], "s3", "{stats}");
    let location = stats[0]["backend_location"].as_str().unwrap();
    assert!(
        location.contains(&s3.endpoint()) && location.contains("w-s3"),
        "{stats}"
    );
    assert!(stats[0]["packs"].as_u64().unwrap() >= 2, "{stats}");

    // Restore reads every chunk back from the bucket (ranged GETs).
    restore_into(&stack, &d1, inst, "shop_r1");
    let count = stack
        .source
        .query("shop_r1", "SELECT count(*) FROM t0")
        .unwrap();
    assert_eq!(count, "8000");

    // Verify checks the bucket's bytes; one flipped byte in a pack object
    // fails it and names the dumps.
    let run = stack
        .cli
        .run(&["store", "verify", "--worker", "w-s3", "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let (key, _) = objects(&s3, "w-s3", "packs")
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .unwrap();
    let mut bytes = s3.get("w-s3", "packs", &key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    s3.put("w-s3", "packs", &key, bytes).unwrap();
    let run = stack
        .cli
        .run(&["store", "verify", "--worker", "w-s3", "--wait"])
        .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&uuid),
        "the damaged dump must be named: {run:?}"
    );

    // Deleting both dumps and collecting deletes their objects.
    for d in [&d1, &d2] {
        let del = stack
            .cli
            .json(&["catalog", "delete", &id_of(d).to_string(), "--wait"])
            .unwrap();
        assert_eq!(del["state"], "SUCCEEDED", "{del}");
    }
    let left = wait::until(
        "the bucket emptied by gc",
        Duration::from_secs(60),
        || async {
            let packs = objects(&s3, "w-s3", "packs");
            let manifests = objects(&s3, "w-s3", "manifests");
            (packs.is_empty() && manifests.is_empty()).then_some(())
        },
    )
    .await;
    let () = left;

    let log = std::fs::read_to_string(stack.worker.process.log_path()).unwrap();
    assert!(
        !log.contains(SECRET_ACCESS_KEY),
        "the secret reached the worker log"
    );
    stack.stop_clean(&["verify", "corrupt"]).await;
}

/// The bucket unreachable for a whole run: the dump fails with one line
/// naming the endpoint (never the secret), no dump is visible, and the next
/// run after the bucket is back stores and restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_down_for_a_run_fails_the_dump_and_loses_nothing() {
    let Proxied {
        s3,
        proxy,
        endpoint,
        secret_dir: _secret_dir,
        stack,
        inst,
        job,
    } = Proxied::start("w-s3down", 2, 256).await;

    proxy.cut();
    let run = stack
        .cli
        .run(&["dump", "now", &job.to_string(), "--wait"])
        .unwrap();
    assert!(!run.success(), "{run:?}");
    let rows = catalog_of_job(&stack.cli, job);
    let failed: Vec<&Value> = rows.iter().filter(|r| r["status"] == "FAILED").collect();
    assert_eq!(
        failed.len(),
        rows.len(),
        "only a FAILED row may exist: {rows:?}"
    );
    let all = format!("{run:?} {rows:?}");
    assert!(
        all.contains(&endpoint),
        "the error must name the endpoint: {all}"
    );
    assert!(!all.contains(SECRET_ACCESS_KEY), "{all}");
    assert!(objects(&s3, "w-s3down", "manifests").is_empty());

    proxy.restore();
    let d = dump_and_show(&stack.cli, job);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let run = stack
        .cli
        .run(&["store", "verify", "--worker", "w-s3down", "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    restore_into(&stack, &d, inst, "shop_r");
    assert_eq!(
        stack
            .source
            .query("shop_r", "SELECT count(*) FROM t1")
            .unwrap(),
        "8000"
    );
    let log = std::fs::read_to_string(stack.worker.process.log_path()).unwrap();
    assert!(
        !log.contains(SECRET_ACCESS_KEY),
        "the secret reached the worker log"
    );
    stack.stop_clean(&["object store", "dump", "upload"]).await;
}

/// SIGKILL of the worker while packs go up (the link to the bucket slowed so
/// that the kill lands mid-upload): no dump is visible, the bucket
/// verifies, and the restarted worker's next dump works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_leaves_no_dump() {
    let Proxied {
        s3,
        proxy,
        endpoint,
        secret_dir,
        mut stack,
        inst,
        job,
    } = Proxied::start("w-s3kill", 4, 512).await;

    proxy.slow(Duration::from_millis(100));
    stack.cli.json(&["dump", "now", &job.to_string()]).unwrap();
    // One pack is up and the next ones are going (16 MB of new data in
    // packs of 1 MiB through a slowed link).
    wait::until("a pack uploaded", Duration::from_secs(60), || async {
        (!objects(&s3, "w-s3kill", "packs").is_empty()).then_some(())
    })
    .await;
    stack.worker.process.kill9().await.unwrap();
    assert!(objects(&s3, "w-s3kill", "manifests").is_empty());

    proxy.restore();
    let data_dir = stack.worker.data_dir.clone();
    let env = S3Server::worker_env(&endpoint, "w-s3kill", secret_dir.path());
    let restarted = Worker::start(WorkerOptions {
        name: "w-s3kill".into(),
        coordinator: stack.coordinator.access(),
        data_dir: Some(data_dir),
        env,
    })
    .unwrap();
    // The killed worker owns the temporary directory: keep it until the end.
    let _killed = std::mem::replace(&mut stack.worker, restarted);
    stack.coordinator.wait_worker_connected("w-s3kill").await;
    let run = stack
        .cli
        .run(&["store", "verify", "--worker", "w-s3kill", "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    // The leased task is retried by the restarted worker or failed; either
    // way the next dump stores and its data reads back.
    let d = dump_and_show(&stack.cli, job);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    restore_into(&stack, &d, inst, "shop_r");
    assert_eq!(
        stack
            .source
            .query("shop_r", "SELECT count(*) FROM t3")
            .unwrap(),
        "8000"
    );
    let manifests = objects(&s3, "w-s3kill", "manifests");
    let stored: Vec<String> = catalog_of_job(&stack.cli, job)
        .iter()
        .filter(|r| r["status"] == "SUCCEEDED")
        .map(|r| r["dump_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(manifests.len(), stored.len(), "{manifests:?} vs {stored:?}");
    stack
        .stop_clean(&["object store", "dump", "upload", "lease"])
        .await;
}
