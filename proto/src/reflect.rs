//! The contract read back from its compiled descriptor set: the list of
//! AdminService methods (so that tests cover every one) and any request
//! decoded into JSON (for the audit). No I/O.
use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, SerializeOptions};
use serde_json::Value;

/// The gRPC path prefix of every AdminService method.
pub const ADMIN_SERVICE_PREFIX: &str = "/pgsnapman.v1.AdminService/";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(crate::v1::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set compiled into this crate decodes")
});

/// One method of a service, as the descriptor set names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `ListWorkers`.
    pub name: String,
    /// `/pgsnapman.v1.AdminService/ListWorkers`.
    pub path: String,
    /// Full name of the request message (`pgsnapman.v1.ListWorkersRequest`).
    pub input: String,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

/// Every method of `pgsnapman.v1.<service>`, in the order of the .proto file.
pub fn methods(service: &str) -> Vec<Method> {
    let Some(s) = POOL.get_service_by_name(&format!("pgsnapman.v1.{service}")) else {
        return Vec::new();
    };
    s.methods()
        .map(|m| Method {
            name: m.name().to_string(),
            path: format!("/pgsnapman.v1.{service}/{}", m.name()),
            input: m.input().full_name().to_string(),
            client_streaming: m.is_client_streaming(),
            server_streaming: m.is_server_streaming(),
        })
        .collect()
}

/// Every AdminService method.
pub fn admin_methods() -> Vec<Method> {
    methods("AdminService")
}

fn method_by_path(path: &str) -> Option<MethodDescriptor> {
    let (service, name) = path.strip_prefix('/')?.rsplit_once('/')?;
    POOL.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)
}

/// The request message of the method at gRPC `path`, decoded from its
/// protobuf bytes into JSON (proto field names; enums by name, unknown enum
/// numbers as numbers; default values left out). Secrets are still in it:
/// pass it through [`crate::redact_json`] before it goes anywhere.
pub fn request_json(path: &str, bytes: &[u8]) -> Result<Value, String> {
    let method = method_by_path(path).ok_or_else(|| "unknown method".to_string())?;
    let msg = DynamicMessage::decode(method.input(), bytes)
        .map_err(|e| format!("undecodable {}: {e}", method.input().name()))?;
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| format!("{} as JSON: {e}", method.input().name()))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1;

    #[test]
    fn every_admin_method_is_listed_with_its_path() {
        let all = admin_methods();
        assert!(all.len() > 40, "{} methods", all.len());
        let list = all
            .iter()
            .find(|m| m.name == "ListWorkers")
            .expect("ListWorkers is an AdminService method");
        assert_eq!(list.path, "/pgsnapman.v1.AdminService/ListWorkers");
        assert_eq!(list.input, "pgsnapman.v1.ListWorkersRequest");
        assert!(all.iter().all(|m| !m.client_streaming));
        assert!(methods("NoSuchService").is_empty());
    }

    #[test]
    fn requests_decode_into_json_with_field_names() {
        let req = v1::RestoreNowRequest {
            what: Some(v1::restore_now_request::What::Dump(v1::AdHocRestore {
                dump_id: 7,
                target: None,
            })),
        };
        let json = request_json(
            "/pgsnapman.v1.AdminService/RestoreNow",
            &req.encode_to_vec(),
        )
        .unwrap();
        assert_eq!(json["dump"]["dump_id"], 7, "{json}");
        let err = request_json("/pgsnapman.v1.AdminService/Nope", b"").unwrap_err();
        assert!(err.contains("unknown"), "{err}");
        let err = request_json("/pgsnapman.v1.AdminService/RestoreNow", b"\xff\xff").unwrap_err();
        assert!(err.contains("RestoreNowRequest"), "{err}");
    }
}
