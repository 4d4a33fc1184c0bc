//! Each instance has its own libpq `sslmode`: the worker connects with it,
//! so `require` against a server without TLS fails with libpq's reason
//! instead of falling back to cleartext.
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_per_instance_reaches_the_worker() {
    let stack = Stack::start("w-ssl").await;
    let port = stack.source.port.to_string();
    let add = |name: &str, mode: Option<&str>| {
        let mut args = vec![
            "instance",
            "add",
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--worker",
            "w-ssl",
        ];
        if let Some(m) = mode {
            args.extend(["--sslmode", m]);
        }
        stack.cli.json(&args).unwrap()
    };

    // Loopback: the default is prefer; a remote host would get require.
    let local = add("local", None);
    assert_eq!(local["sslmode"], "prefer", "{local}");
    let remote = add("remote", Some("verify-full"));
    assert_eq!(remote["sslmode"], "verify-full", "{remote}");
    let shown = stack
        .cli
        .run(&["instance", "show", &id_of(&remote).to_string()])
        .unwrap();
    assert!(shown.stdout.contains("verify-full"), "{shown:?}");
    let bad = stack
        .cli
        .run(&[
            "instance",
            "add",
            "--name",
            "x",
            "--host",
            "h",
            "--sslmode",
            "on",
        ])
        .unwrap();
    assert_ne!(bad.code, 0, "{bad:?}");

    // The test cluster has no TLS: require fails clearly, disable and prefer work.
    let strict = add("strict", Some("require"));
    let job = add_job(&stack.cli, id_of(&strict), "postgres");
    let t = wait_task_done(&stack.cli, dump_now(&stack.cli, job)).await;
    assert_eq!(t["state"], "FAILED", "{t}");
    let error = t["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("SSL") && error.len() < 2000,
        "the failure should say that SSL was required: {t}"
    );
    for mode in ["disable", "prefer"] {
        let edited = stack
            .cli
            .json(&[
                "instance",
                "edit",
                &id_of(&strict).to_string(),
                "--sslmode",
                mode,
            ])
            .unwrap();
        assert_eq!(edited["sslmode"], mode, "{edited}");
        let t = wait_task_done(&stack.cli, dump_now(&stack.cli, job)).await;
        assert_eq!(t["state"], "SUCCEEDED", "sslmode {mode}: {t}");
    }
    stack.stop_clean(&["SSL"]).await;
}
