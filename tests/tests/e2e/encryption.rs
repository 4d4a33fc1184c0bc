//! Encryption at rest (issue 16 item 2) through the real worker storing into
//! a real S3-protocol server: no row value and no plain record in the
//! bucket or the local pack cache, chunk ids keyed, `store stats` saying
//! so, a restore round trip, key export and import, and a wrong key refused
//! in one line.
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use pgsnapman_store::pack::{ChunkKind, check_hash, decode_chunk, scan_pack};
use pgsnapman_store::{ChunkId, Crypto, Naming, StoreKey};
use pgsnapman_tests::s3::S3Server;
use pgsnapman_tests::{Worker, WorkerOptions};

use crate::common::*;

/// First bytes of every zstd frame: a plain store's records all start so.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The distinctive row value the bucket must not show.
const MARKER: &str = "zebra-marmalade-quokka";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Scans every pack in `dir` (oldest first): no record is a plain zstd
/// frame, every record opens with `crypto`, and no chunk id is the plain
/// BLAKE3 of its content. Returns the records checked.
fn check_packs(dir: &Path, crypto: &Crypto) -> usize {
    let mut packs: Vec<_> = files_with_suffix(dir, ".pack");
    packs.sort();
    let mut raw_of: HashMap<ChunkId, Vec<u8>> = HashMap::new();
    let mut checked = 0;
    for path in packs {
        scan_pack(&path, |offset, h, stored| {
            assert!(!stored.starts_with(&ZSTD_MAGIC), "plain record in {path:?}");
            let plain = crypto.open_record(h, stored).unwrap();
            let base = match h.kind {
                ChunkKind::Full => None,
                ChunkKind::Delta => raw_of.get(&h.base).cloned(),
            };
            if h.kind == ChunkKind::Delta && base.is_none() {
                return Ok(());
            }
            let raw =
                decode_chunk(h, &plain, base.as_deref(), crypto.naming(), &path, offset).unwrap();
            assert!(check_hash(h, &raw, Naming::Plain, &path, offset).is_err());
            assert_ne!(h.chunk, ChunkId::of(&raw));
            raw_of.insert(h.chunk, raw);
            checked += 1;
            Ok(())
        })
        .unwrap();
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_bucket_hides_rows_and_needs_its_key() {
    let s3 = S3Server::start().unwrap();
    let secret_dir = pgsnapman_tests::shared_tempdir("pgsnapman-s3-secret-");
    let env = S3Server::worker_env(&s3.endpoint(), "w-enc", secret_dir.path());
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("PGSNAPMAN_STORE__ENCRYPTION__ENABLED", "true"));
    // A cache large enough to keep the packs: the local copies are checked too.
    env.push(("PGSNAPMAN_STORE__S3__CACHE_SIZE", "1073741824"));
    let stack = Stack::start_with("w-enc", &env, None).await;
    stack.source.create_database("shop").unwrap();
    stack
        .source
        .script(
            "shop",
            &format!(
                "CREATE TABLE secrets (id int PRIMARY KEY, v text); \
                 INSERT INTO secrets SELECT i, '{MARKER}-' || i FROM generate_series(1, 20000) i;"
            ),
        )
        .unwrap();
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-enc", None);
    let job = add_job(&stack.cli, inst, "shop");
    let d1 = dump_and_show(&stack.cli, job);
    let d2 = dump_and_show(&stack.cli, job);
    assert!(
        d2["stored_bytes"].as_u64().unwrap() < d2["dump_bytes"].as_u64().unwrap() / 10,
        "dedup works within the key: {d2}"
    );

    // The key file: 0600, never in the bucket or the log.
    let key_path = stack.worker.data_dir.join("store.key");
    let key = StoreKey::load(&key_path).unwrap();
    let crypto = Crypto::new(&key);
    let key_hex = key.to_text().lines().nth(1).unwrap().to_string();

    // Every object in the bucket: no row value, no key.
    let mut objects = 0;
    for sub in ["packs", "manifests"] {
        for (name, _) in s3.list("w-enc", sub).unwrap() {
            let bytes = s3.get("w-enc", sub, &name).unwrap();
            assert!(!contains(&bytes, MARKER.as_bytes()), "{sub}/{name}");
            assert!(
                !contains(&bytes, key_hex.as_bytes()),
                "{sub}/{name} holds the key"
            );
            objects += 1;
        }
    }
    assert!(objects >= 3, "packs and two manifests: {objects}");
    // The local pack cache and the bucket's packs: sealed records, keyed ids.
    let bucket_packs = stack.scratch.path().join("bucket-packs");
    std::fs::create_dir_all(&bucket_packs).unwrap();
    for (name, _) in s3.list("w-enc", "packs").unwrap() {
        let bytes = s3.get("w-enc", "packs", &name).unwrap();
        std::fs::write(bucket_packs.join(&name), bytes).unwrap();
    }
    assert!(check_packs(&bucket_packs, &crypto) > 0);
    check_packs(&stack.worker.data_dir.join("packs"), &crypto);
    for f in manifest_files(&stack.worker.data_dir.join("manifests")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(bytes.starts_with(b"PGSNMENC"), "{f:?} is not encrypted");
    }

    // `pgsnap store stats` says the store is encrypted, with the key's id.
    let stats = wait_store_stats(&stack.cli, "w-enc", 2).await;
    assert_eq!(stats[0]["encrypted"], true, "{stats}");
    assert_eq!(stats[0]["key_id"], key.id(), "{stats}");

    // A restore round trip reads the encrypted chunks back.
    let run = restore_now(&stack.cli, id_of(&d1), inst, "shop_r", &[]);
    assert!(run.success(), "{run:?}");
    let got = stack
        .source
        .query("shop_r", "SELECT v FROM secrets WHERE id = 777")
        .unwrap();
    assert_eq!(got.trim(), format!("{MARKER}-777"));

    let log = std::fs::read_to_string(stack.worker.process.log_path()).unwrap();
    assert!(!log.contains(&key_hex), "the key reached the worker log");
    assert!(log.contains(key.id()), "the log names the key id");

    // Escrow: `store key export` prints the key; `store key import` writes it
    // for a rebuilt worker (stdin only, never over an existing file); the
    // offline tools read the encrypted store with the key file.
    let exported = stack.worker.store_tool(&["key", "export"]).unwrap();
    assert_eq!(
        StoreKey::from_text(&exported, "export").unwrap().id(),
        key.id()
    );
    let listed = stack.worker.store_tool(&["list"]).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let rebuilt = stack.scratch.path().join("rebuilt");
    std::fs::create_dir_all(&rebuilt).unwrap();
    for expect_ok in [true, false] {
        let mut child = std::process::Command::new(pgsnapman_tests::binary("pgsnapman-worker"))
            .args(["store", "--data-dir"])
            .arg(&rebuilt)
            .args(["key", "import"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, exported.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.success(), expect_ok, "import: {out:?}");
    }
    assert_eq!(
        StoreKey::load(&rebuilt.join("store.key")).unwrap().id(),
        key.id()
    );

    // The same store with another key: the worker refuses to start, in
    // one line naming the store and both key ids.
    let data_dir = stack.worker.data_dir.clone();
    let access = stack.coordinator.access();
    let mut stack = stack;
    stack.worker.process.stop_clean().await;
    std::fs::remove_file(&key_path).unwrap();
    let wrong = StoreKey::generate();
    wrong.write_new(&key_path).unwrap();
    let mut worker = Worker::start(WorkerOptions {
        name: "w-enc".into(),
        coordinator: access,
        data_dir: Some(data_dir.clone()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .unwrap();
    // It exits on its own; a bound keeps a hang from blocking the suite.
    for _ in 0..600 {
        if !worker.process.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = worker.process.is_running();
    let log = std::fs::read_to_string(worker.process.log_path()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("but the key given is"))
        .unwrap_or_else(|| panic!("no wrong-key error in the log (running: {status}):\n{log}"));
    assert!(!status, "the worker must exit: {log}");
    assert!(
        line.contains(key.id())
            && line.contains(wrong.id())
            && line.contains(&*data_dir.to_string_lossy()),
        "{line}"
    );
    stack.coordinator.process.stop_clean().await;
}
