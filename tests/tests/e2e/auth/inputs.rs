//! Bad input on the AdminService through a raw client: each is refused with
//! one short line, the coordinator keeps serving, the catalog is unchanged.
use pgsnapman_proto::v1;
use prost::Message;
use tonic::Code;

use super::{Setup, generous_limits};

const P: &str = "/pgsnapman.v1.AdminService/";

struct Case {
    what: &'static str,
    method: &'static str,
    body: Vec<u8>,
    /// `None`: the admin token.
    auth: Option<String>,
    /// The code it must get.
    expect: Code,
}

fn case(what: &'static str, method: &'static str, msg: impl Message, expect: Code) -> Case {
    Case {
        what,
        method,
        body: msg.encode_to_vec(),
        auth: None,
        expect,
    }
}

fn cases() -> Vec<Case> {
    let sql = "w'; DROP TABLE workers; --".to_string();
    let mb = "x".repeat(1 << 20);
    let token = |name: &str, role: i32, expires: u64| v1::CreateTokenRequest {
        name: name.into(),
        role,
        expires_in_seconds: expires,
    };
    let admin = v1::Role::Admin as i32;
    let id = |id: i64| v1::IdRequest { id };
    let mut v = vec![
        case(
            "SQL-looking worker name",
            "RegisterWorker",
            v1::RegisterWorkerRequest { name: sql.clone() },
            Code::InvalidArgument,
        ),
        case(
            "1 MB worker name",
            "RegisterWorker",
            v1::RegisterWorkerRequest { name: mb.clone() },
            Code::InvalidArgument,
        ),
        case(
            "empty worker name",
            "RegisterWorker",
            v1::RegisterWorkerRequest {
                name: String::new(),
            },
            Code::InvalidArgument,
        ),
        case(
            "SQL-looking token name",
            "CreateToken",
            token("x' OR '1'='1", admin, 0),
            Code::InvalidArgument,
        ),
        case(
            "1 MB token name",
            "CreateToken",
            token(&mb, admin, 0),
            Code::InvalidArgument,
        ),
        case(
            "empty token name",
            "CreateToken",
            token("", admin, 0),
            Code::InvalidArgument,
        ),
        case(
            "unknown role 99",
            "CreateToken",
            token("t1", 99, 0),
            Code::InvalidArgument,
        ),
        case(
            "unspecified role",
            "CreateToken",
            token("t2", 0, 0),
            Code::InvalidArgument,
        ),
        case(
            "expiry u64::MAX",
            "CreateToken",
            token("t3", admin, u64::MAX),
            Code::InvalidArgument,
        ),
        case(
            "SQL-looking revoke",
            "RevokeToken",
            v1::RevokeTokenRequest {
                name: "'; DELETE FROM api_tokens; --".into(),
            },
            Code::InvalidArgument,
        ),
        case(
            "revoke of an unknown token",
            "RevokeToken",
            v1::RevokeTokenRequest {
                name: "nosuch".into(),
            },
            Code::NotFound,
        ),
        case(
            "negative instance id",
            "GetInstance",
            id(-1),
            Code::NotFound,
        ),
        case("i64::MAX dump id", "GetDump", id(i64::MAX), Code::NotFound),
        case(
            "i64::MIN instance removal",
            "RemoveInstance",
            id(i64::MIN),
            Code::NotFound,
        ),
        case(
            "unknown status 99",
            "SetDumpJobStatus",
            v1::SetStatusRequest { id: 1, status: 99 },
            Code::InvalidArgument,
        ),
        case(
            "audit limit 10^6",
            "ListAudit",
            v1::ListAuditRequest {
                limit: 1_000_000,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        case(
            "audit since out of range",
            "ListAudit",
            v1::ListAuditRequest {
                since: Some(prost_types_ts(i64::MAX)),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        case(
            "negative job id",
            "DumpNow",
            v1::DumpNowRequest { job_id: -5 },
            Code::NotFound,
        ),
        case(
            "unknown method",
            "NoSuchMethod",
            v1::Empty {},
            Code::Unimplemented,
        ),
    ];
    v.push(Case {
        what: "garbage protobuf bytes",
        method: "AddInstance",
        body: vec![0xff; 64],
        auth: None,
        expect: Code::InvalidArgument,
    });
    v.push(Case {
        what: "17 MB message",
        method: "AddInstance",
        body: v1::AddInstanceRequest {
            name: "big".into(),
            comment: "y".repeat(17 << 20),
            ..Default::default()
        }
        .encode_to_vec(),
        auth: None,
        expect: Code::OutOfRange,
    });
    for (what, auth) in [
        ("SQL-looking bearer", "Bearer ' OR 1=1 --".to_string()),
        ("10 KB token", format!("Bearer psm_{}", "A".repeat(10_000))),
        ("Basic credentials", "Basic dXNlcjpwYXNz".to_string()),
        ("bearer without a token", "Bearer ".to_string()),
    ] {
        v.push(Case {
            what,
            method: "ListWorkers",
            body: Vec::new(),
            auth: Some(auth),
            expect: Code::Unauthenticated,
        });
    }
    v
}

fn prost_types_ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// A clear error: one line, short, not repeating a long input.
fn assert_clear(what: &str, message: &str) {
    assert!(
        !message.is_empty() && message.len() < 300 && !message.contains('\n'),
        "{what}: not one short line ({} bytes): {}",
        message.len(),
        message.chars().take(300).collect::<String>()
    );
    // The project quotes at most 100 characters of an input.
    let run = "x".repeat(101);
    assert!(
        !message.contains(&run) && !message.contains("AAAAAAAAAA"),
        "{what}: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_input_is_refused_and_changes_nothing() {
    let s = Setup::start(generous_limits()).await;
    let admin = s.admin_bearer();
    let before = s.fingerprint();
    let list = format!("{P}ListWorkers");
    let mut count = 0;

    for c in cases() {
        let auth = c.auth.clone().unwrap_or_else(|| admin.clone());
        let path = format!("{P}{}", c.method);
        let err = s
            .raw
            .unary(&path, c.body, Some(&auth))
            .await
            .expect_err(c.what);
        assert_eq!(err.code(), c.expect, "{}: {err:?}", c.what);
        assert_clear(c.what, err.message());
        s.raw.unary(&list, Vec::new(), Some(&admin)).await.unwrap();
        assert_eq!(s.fingerprint(), before, "{} changed the catalog", c.what);
        count += 1;
    }

    // Raw HTTP/2: broken frames and a wrong content type.
    let frame = |flag: u8, announced: u32, payload: &[u8]| {
        let mut b = vec![flag];
        b.extend_from_slice(&announced.to_be_bytes());
        b.extend_from_slice(payload);
        b
    };
    let http_cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        (
            "truncated frame",
            "AddInstance",
            "application/grpc",
            frame(0, 100, b"\x0a\x03abc"),
        ),
        (
            "compressed frame, no compression agreed",
            "AddInstance",
            "application/grpc",
            frame(1, 1, b"\x00"),
        ),
        (
            "no frame at all",
            "RegisterWorker",
            "application/grpc",
            Vec::new(),
        ),
        (
            "half a frame header",
            "RegisterWorker",
            "application/grpc",
            vec![0, 0],
        ),
        (
            "two frames for a unary call",
            "RegisterWorker",
            "application/grpc",
            [frame(0, 3, b"\x0a\x01a"), frame(0, 3, b"\x0a\x01b")].concat(),
        ),
        (
            "text/plain content type",
            "ListWorkers",
            "text/plain",
            b"hello".to_vec(),
        ),
        (
            "JSON content type",
            "RegisterWorker",
            "application/json",
            br#"{"name":"w"}"#.to_vec(),
        ),
    ];
    for (what, method, content_type, body) in http_cases {
        let reply = s
            .raw
            .http(&format!("{P}{method}"), content_type, Some(&admin), body)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let refused = reply.http_status != 200 || reply.grpc_status.is_some_and(|c| c != Code::Ok);
        assert!(refused, "{what}: accepted: {reply:?}");
        if reply.grpc_status.is_some() {
            assert_clear(what, &reply.grpc_message);
        }
        s.raw.unary(&list, Vec::new(), Some(&admin)).await.unwrap();
        assert_eq!(s.fingerprint(), before, "{what} changed the catalog");
        count += 1;
    }
    assert!(count >= 30, "{count} bad inputs");
    eprintln!("{count} bad inputs on the AdminService refused");

    // None of it reached the audit whole: long inputs are cut.
    let longest = s.count("SELECT coalesce(max(length(args::text)), 0) FROM audit_log");
    assert!(
        longest < 4096,
        "an audit row holds {longest} bytes of arguments"
    );
    s.coordinator.process.assert_no_unexpected_errors(&[]);
    let mut coordinator = s.coordinator;
    coordinator.process.stop_clean().await;
}
