//! The arguments of an AdminService call as its audit row shows them: the
//! request's one gRPC frame decoded through the descriptor set, every
//! secret redacted (`pgsnapman_proto::redact_json`). Never fails: an
//! undecodable body is recorded as such.
use pgsnapman_proto::{redact_json, reflect};
use serde_json::{Value, json};

/// The redacted JSON of the unary request `body` (one gRPC frame: a
/// compression flag byte, a 4-byte big-endian length, the message).
pub fn args(path: &str, body: &[u8]) -> Value {
    let mut v = match body {
        [0, l0, l1, l2, l3, msg @ ..] => {
            let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
            if usize::try_from(len).ok() == Some(msg.len()) {
                reflect::request_json(path, msg).unwrap_or_else(|e| json!({ "undecoded": e }))
            } else {
                json!({ "undecoded": format!(
                    "a frame of {len} bytes announced, {} sent", msg.len()) })
            }
        }
        [1, ..] => json!({ "undecoded": "compressed message" }),
        [] => json!({ "undecoded": "empty body" }),
        _ => json!({ "undecoded": "not a gRPC frame" }),
    };
    redact_json(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use pgsnapman_proto::v1;
    use prost::Message;

    use super::*;

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
        out.extend_from_slice(msg);
        out
    }

    #[test]
    fn requests_are_decoded_and_redacted() {
        let req = v1::AddInstanceRequest {
            name: "prod".into(),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        let v = args(
            "/pgsnapman.v1.AdminService/AddInstance",
            &frame(&req.encode_to_vec()),
        );
        assert_eq!(v["name"], "prod", "{v}");
        assert!(!v.to_string().contains("hunter2"), "{v}");
        let req = v1::CreateTokenRequest {
            name: "ci".into(),
            role: v1::Role::Operator as i32,
            expires_in_seconds: 0,
        };
        let v = args(
            "/pgsnapman.v1.AdminService/CreateToken",
            &frame(&req.encode_to_vec()),
        );
        assert_eq!(v["role"], "ROLE_OPERATOR", "{v}");
    }

    #[test]
    fn bad_bodies_are_recorded_as_undecoded() {
        let p = "/pgsnapman.v1.AdminService/AddInstance";
        for body in [
            &b""[..],
            b"\x00\x00\x00\x00\x09ab",
            b"\x01\x00",
            b"\x07garbage",
        ] {
            let v = args(p, body);
            assert!(v["undecoded"].is_string(), "{body:?}: {v}");
        }
        let v = args(p, &frame(b"\xff\xff\xff"));
        assert!(v["undecoded"].is_string(), "{v}");
    }
}
