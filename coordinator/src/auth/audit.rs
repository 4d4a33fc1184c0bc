//! The arguments of an AdminService call as its audit row shows them: the
//! request's one gRPC frame decoded through the descriptor set, every
//! secret redacted (`pgsnapman_proto::redact_json`). A body that is not
//! exactly one well-formed request is refused with the reason.
use pgsnapman_proto::{redact_json, reflect};
use serde_json::Value;

/// The redacted JSON of the unary request `body`: exactly one gRPC frame
/// (a compression flag byte, a 4-byte big-endian length, the message).
/// `Err` says why the body is not one well-formed, uncompressed request of
/// the method (the call is then refused).
pub fn args(path: &str, body: &[u8]) -> Result<Value, String> {
    let mut v = match body {
        [0, l0, l1, l2, l3, msg @ ..] => {
            let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
            if usize::try_from(len).ok() != Some(msg.len()) {
                return Err(format!(
                    "the request must be one gRPC message: a frame of {len} bytes announced, {} bytes sent",
                    msg.len()
                ));
            }
            reflect::request_json(path, msg)?
        }
        [1, ..] => return Err("compressed requests are not accepted".into()),
        [] => return Err("the request holds no message".into()),
        _ => return Err("the request is not a gRPC frame".into()),
    };
    redact_json(&mut v);
    Ok(v)
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
        )
        .unwrap();
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
        )
        .unwrap();
        assert_eq!(v["role"], "ROLE_OPERATOR", "{v}");
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let p = "/pgsnapman.v1.AdminService/AddInstance";
        let two = [frame(b""), frame(b"")].concat();
        for body in [
            &b""[..],
            b"\x00\x00\x00\x00\x09ab",
            b"\x01\x00",
            b"\x07garbage",
            &two,
            &frame(b"\xff\xff\xff"),
        ] {
            let err = args(p, body).unwrap_err();
            assert!(err.len() < 200, "{body:?}: {err}");
        }
    }
}
