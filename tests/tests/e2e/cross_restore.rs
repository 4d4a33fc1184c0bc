//! Any worker restores any dump it is granted (issue 16 item 3): worker B
//! reads worker A's bucket prefix read-only, A's prefix unchanged; a worker
//! without bucket credentials is refused in one line; A's data directory and
//! catalog lost, the store comes back from the bucket alone and `pgsnap
//! catalog rebuild` brings back the rows. Store-level: rebuild and gc.
use std::collections::BTreeSet;
use std::time::Duration;

use pgsnapman_store::{BackendConfig, S3Config, Store, StoreKey};
use pgsnapman_tests::s3::S3Server;
use pgsnapman_tests::{Coordinator, Worker, WorkerOptions, wait};

use crate::common::*;
use crate::object_store_pack::{opts, read_back, rows, store_one};

/// Every object under `prefix` (packs and manifests) with its size.
fn objects(s3: &S3Server, prefix: &str) -> BTreeSet<(String, String, u64)> {
    let mut out = BTreeSet::new();
    for dir in ["packs", "manifests"] {
        for (name, len) in s3.list(prefix, dir).unwrap() {
            out.insert((dir.to_string(), name, len));
        }
    }
    out
}

fn s3_config(s3: &S3Server, prefix: &str, cache_size: u64) -> S3Config {
    let BackendConfig::S3(cfg) = s3.store_config(prefix, cache_size) else {
        panic!("an s3 backend");
    };
    cfg
}

/// A worker's data directory lost: the store opened on an empty directory
/// with the same bucket rebuilds its index and manifests from the bucket
/// (a cache of 0 bytes: every pack evicted), every dump reads back
/// identical, verify is clean, and gc deletes no pack a dump needs.
#[test]
fn a_lost_data_dir_comes_back_from_the_bucket_and_gc_keeps_what_dumps_need() {
    let s3 = S3Server::start().unwrap();
    let (a, mut c) = (rows(1, 40_000), rows(1, 40_000));
    for i in (0..c.len()).step_by(30_000) {
        c[i] ^= 0x20;
    }
    let b = rows(2, 20_000);
    let (dumps, before) = {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), opts(), s3.store_config("lost", 0)).unwrap();
        let dumps = [
            store_one(&store, &a),
            store_one(&store, &b),
            store_one(&store, &c),
        ];
        store.delete_dump(dumps[1]).unwrap();
        let stats = store.stats().unwrap();
        assert!(stats.delta_chunks > 0, "the test needs deltas: {stats:?}");
        (vec![dumps[0], dumps[2]], stats)
    };
    // A gc has not run: the deleted dump's chunks are still in the bucket.
    let in_bucket = objects(&s3, "lost");

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), opts(), s3.store_config("lost", 0)).unwrap();
    assert_eq!(store.dump_ids().unwrap(), dumps);
    let now = store.stats().unwrap();
    assert_eq!(
        (now.chunks, now.delta_chunks, now.manifests),
        (before.chunks, before.delta_chunks, 2)
    );
    assert_eq!(read_back(&store, dumps[0]), a);
    assert_eq!(read_back(&store, dumps[1]), c);
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(objects(&s3, "lost"), in_bucket, "a rebuild writes nothing");

    let report = store.gc(0.0).unwrap();
    assert!(report.index_entries_removed > 0, "{report:?}");
    assert_eq!(read_back(&store, dumps[0]), a);
    assert_eq!(read_back(&store, dumps[1]), c);
    assert!(store.verify().unwrap().is_clean(), "after gc");
    // Only dead packs went (the deleted dump's own data, if in packs of its own).
    let left: BTreeSet<_> = objects(&s3, "lost");
    assert!(left.is_subset(&in_bucket));
}

/// A read-only open of another prefix reads its dumps with its own cache
/// and index, follows the owner's new dumps, deletions and gc, refuses to
/// write, and never changes an object.
#[test]
fn a_read_only_open_follows_another_prefix_and_never_writes() {
    let s3 = S3Server::start().unwrap();
    let owner_dir = tempfile::tempdir().unwrap();
    let owner = Store::open_with(owner_dir.path(), opts(), s3.store_config("owner", 0)).unwrap();
    let (a, b) = (rows(3, 30_000), rows(4, 30_000));
    let d1 = store_one(&owner, &a);
    let before = objects(&s3, "owner");

    let cache = tempfile::tempdir().unwrap();
    let reader =
        Store::open_bucket_read_only(cache.path(), s3_config(&s3, "owner", 0), None).unwrap();
    assert_eq!(reader.dump_ids().unwrap(), vec![d1]);
    assert_eq!(read_back(&reader, d1), a);
    assert!(reader.verify().unwrap().is_clean());
    for err in [
        reader.begin(uuid::Uuid::now_v7()).err().unwrap(),
        reader.delete_dump(d1).unwrap_err(),
        reader.gc(0.5).unwrap_err(),
    ] {
        assert!(err.to_string().contains("read-only"), "{err}");
    }
    let e = pgsnapman_store::backend::Remote::new_read_only(s3_config(&s3, "owner", 0))
        .unwrap()
        .put_object("packs", "x.pack", vec![1])
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(
        objects(&s3, "owner"),
        before,
        "the reader changed the prefix"
    );

    // The owner moves on: a new dump, the old one deleted and collected.
    let d2 = store_one(&owner, &b);
    owner.delete_dump(d1).unwrap();
    owner.gc(0.0).unwrap();
    reader.refresh_from_bucket().unwrap();
    assert_eq!(reader.dump_ids().unwrap(), vec![d2]);
    assert_eq!(read_back(&reader, d2), b);
    drop(reader);
    // Opened again (its own index kept): still current.
    let reader =
        Store::open_bucket_read_only(cache.path(), s3_config(&s3, "owner", 0), None).unwrap();
    assert_eq!(read_back(&reader, d2), b);

    // A repack seen half-way: the records copied into a new pack while the
    // old one still exists, then the old one deleted. The reader, which
    // skipped the copies, indexes them once the old pack is gone.
    let (old, _) = s3
        .list("owner", "packs")
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let copy = s3.get("owner", "packs", &old).unwrap();
    let new = pgsnapman_store::PackId::new().sealed_name();
    s3.put("owner", "packs", &new, copy).unwrap();
    reader.refresh_from_bucket().unwrap();
    s3.client("owner")
        .unwrap()
        .delete(&s3.client("owner").unwrap().key("packs", &old))
        .unwrap();
    reader.refresh_from_bucket().unwrap();
    assert_eq!(read_back(&reader, d2), b);
    assert!(reader.verify().unwrap().is_clean());
}

/// An encrypted owner's prefix reads with the owner's key only: with it the
/// reader gets the bytes back and verifies; without it, or with another
/// key, reading a dump fails naming the key it needs (never plaintext).
#[test]
fn an_encrypted_prefix_reads_with_its_owners_key_only() {
    let s3 = S3Server::start().unwrap();
    let owner_dir = tempfile::tempdir().unwrap();
    let key = StoreKey::generate();
    let owner = Store::open_encrypted(
        owner_dir.path(),
        opts(),
        s3.store_config("sealed", 0),
        Some(&key),
    )
    .unwrap();
    let data = rows(5, 20_000);
    let dump = store_one(&owner, &data);

    let cache = tempfile::tempdir().unwrap();
    let reader =
        Store::open_bucket_read_only(cache.path(), s3_config(&s3, "sealed", 0), Some(&key))
            .unwrap();
    assert_eq!(read_back(&reader, dump), data);
    assert!(reader.verify().unwrap().is_clean());
    drop(reader);

    for (what, k) in [
        ("no key", None),
        ("another key", Some(StoreKey::generate())),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let reader =
            Store::open_bucket_read_only(cache.path(), s3_config(&s3, "sealed", 0), k.as_ref())
                .unwrap();
        let mut out = Vec::new();
        let err = reader
            .read_file(dump, "t", &mut out)
            .unwrap_err()
            .to_string();
        assert!(out.is_empty(), "{what}: bytes came out");
        assert!(err.contains(key.id()) || k.is_some(), "{what}: {err}");
        assert!(!err.contains('\n'), "{what}: {err}");
    }
}

/// The stack's worker `w-a` stores into the bucket under its name.
async fn bucket_stack(s3: &S3Server, secret_dir: &std::path::Path) -> Stack {
    let env = S3Server::worker_env(&s3.endpoint(), "w-a", secret_dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Stack::start_with("w-a", &env, None).await
}

fn start_worker(coordinator: &Coordinator, name: &str, env: Vec<(String, String)>) -> Worker {
    Worker::start(WorkerOptions {
        name: name.into(),
        coordinator: coordinator.access(),
        env,
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_worker_restores_from_the_bucket_and_a_lost_worker_comes_back() {
    let s3 = S3Server::start().unwrap();
    let secret_dir = pgsnapman_tests::shared_tempdir("pgsnapman-xr-");
    let mut stack = bucket_stack(&s3, secret_dir.path()).await;
    stack.source.create_database("app").unwrap();
    fill_mixed(&stack.source, "app", "t", 1, 3_000, 64);
    let src = add_instance(&stack.cli, "src", stack.source.port, "w-a", None);
    let job = add_job(&stack.cli, src, "app");
    let dump = dump_and_show(&stack.cli, job);
    let a_objects = objects(&s3, "w-a");
    assert!(!a_objects.is_empty());

    // w-b keeps its own store in the bucket under its own prefix and reads
    // w-a's with its own credentials; w-c has no [store.s3].
    register_worker(&stack.cli, "w-b");
    let b_dir = pgsnapman_tests::shared_tempdir("pgsnapman-xr-b-");
    let w_b = start_worker(
        &stack.coordinator,
        "w-b",
        S3Server::worker_env(&s3.endpoint(), "w-b", b_dir.path()),
    );
    register_worker(&stack.cli, "w-c");
    let w_c = start_worker(&stack.coordinator, "w-c", vec![]);
    for w in ["w-b", "w-c"] {
        stack.coordinator.wait_worker_connected(w).await;
    }
    let dst = add_instance(&stack.cli, "dst", stack.source.port, "w-b", None);

    stack
        .cli
        .json(&["worker", "set-restore-worker", "w-a", "w-b"])
        .unwrap();
    let run = restore_now(&stack.cli, id_of(&dump), dst, "app_by_b", &[]);
    assert!(run.success(), "{run:?}");
    let count = stack.source.query("app_by_b", "SELECT count(*) FROM t0");
    assert_eq!(count.unwrap(), "3000");
    let runs = stack
        .cli
        .json(&["restore-log", "list", "--limit", "1"])
        .unwrap();
    assert_eq!(runs[0]["worker_name"], "w-b", "{runs}");
    assert_eq!(objects(&s3, "w-a"), a_objects, "w-b changed w-a's prefix");
    assert!(w_b.data_dir.join("sources/w-a/index").is_dir());

    // w-c is granted but has no credentials for the bucket: refused, one
    // line naming the dump's worker and what is missing.
    stack
        .cli
        .json(&["worker", "set-restore-worker", "w-a", "w-c"])
        .unwrap();
    let run = restore_now(&stack.cli, id_of(&dump), dst, "app_by_c", &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let line = format!("{}{}", run.stdout, run.stderr);
    let why = line
        .lines()
        .find(|l| l.contains("no [store.s3] bucket credentials"))
        .unwrap_or_else(|| panic!("no reason given: {run:?}"));
    assert!(why.contains("\"w-a\"") && why.len() < 400, "{why}");
    let made = stack.source.query(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'app_by_c'",
    );
    assert_eq!(made.unwrap(), "0");
    for mut w in [w_b, w_c] {
        w.process.stop_clean().await;
        w.process
            .assert_no_unexpected_errors(&["restore", "credentials"]);
    }

    // w-a's data directory and the catalog are lost; the bucket is all that
    // is left. A new catalog, w-a registered and enrolled again on an empty
    // directory (the old one is kept only for its log): its store comes back
    // from the bucket, catalog rebuild brings back the row, and the dump
    // restores.
    stack.worker.process.stop_clean().await;
    stack.worker.process.assert_no_unexpected_errors(&[]);
    let (_catalog2, mut coord2, cli2) = fresh_catalog("w-a").await;
    let a_dir = pgsnapman_tests::shared_tempdir("pgsnapman-xr-a-");
    let mut w_a = Worker::start(WorkerOptions {
        name: "w-a".into(),
        coordinator: coord2.access(),
        data_dir: Some(a_dir.path().join("data")),
        env: S3Server::worker_env(&s3.endpoint(), "w-a", a_dir.path()),
    })
    .unwrap();
    coord2.wait_worker_connected("w-a").await;
    assert_eq!(
        objects(&s3, "w-a"),
        a_objects,
        "the rebuild changed the prefix"
    );
    let t = cli2
        .json(&["catalog", "rebuild", "--worker", "w-a", "--wait"])
        .unwrap();
    assert_eq!(t["result"]["dumps_reported"], 1, "{t}");
    let rows = wait::until("the rebuilt row", Duration::from_secs(30), || async {
        let v = cli2.json(&["catalog", "list"]).ok()?;
        (v.as_array()?.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(rows[0]["dump_uuid"], dump["dump_uuid"], "{rows}");
    let src2 = add_instance(&cli2, "src", stack.source.port, "w-a", None);
    let run = restore_now(&cli2, id_of(&rows[0]), src2, "app_again", &[]);
    assert!(run.success(), "{run:?}");
    let count = stack.source.query("app_again", "SELECT count(*) FROM t0");
    assert_eq!(count.unwrap(), "3000");
    w_a.process.stop_clean().await;
    w_a.process.assert_no_unexpected_errors(&[]);
    for c in [&mut coord2, &mut stack.coordinator] {
        c.process.stop_clean().await;
        c.process.assert_no_unexpected_errors(&["credentials"]);
    }
}
