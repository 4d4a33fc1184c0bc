//! Breaking-change detection for `pgsnapman.v1` (docs/api.md): the contract
//! compiled into this build against the descriptor set of the last release
//! (`proto/released/pgsnapman.v1.binpb`), with buf's WIRE_JSON rules — what
//! an existing client could notice on the wire or in JSON. No I/O.
use prost_reflect::{Cardinality, DescriptorPool, FieldDescriptor, Kind};

/// The descriptor set of the last released contract.
pub const RELEASED: &[u8] = include_bytes!("../released/pgsnapman.v1.binpb");

/// What `new` breaks of `old`, one line each (empty: compatible). Adding
/// services, methods, messages, fields and enum values is allowed; removing
/// or renaming any of them, renumbering, or changing a field's type,
/// cardinality or oneof, or a method's types or streaming, is not.
pub fn breaking_changes(old: &DescriptorPool, new: &DescriptorPool) -> Vec<String> {
    let mut out = Vec::new();
    for s in old.services() {
        let Some(n) = new.get_service_by_name(s.full_name()) else {
            out.push(format!("service {} removed", s.full_name()));
            continue;
        };
        for m in s.methods() {
            let Some(nm) = n.methods().find(|x| x.name() == m.name()) else {
                out.push(format!("method {} removed", m.full_name()));
                continue;
            };
            if nm.input().full_name() != m.input().full_name()
                || nm.output().full_name() != m.output().full_name()
            {
                out.push(format!("method {} changed its types", m.full_name()));
            }
            if nm.is_client_streaming() != m.is_client_streaming()
                || nm.is_server_streaming() != m.is_server_streaming()
            {
                out.push(format!("method {} changed its streaming", m.full_name()));
            }
        }
    }
    for msg in old.all_messages() {
        let Some(n) = new.get_message_by_name(msg.full_name()) else {
            out.push(format!("message {} removed", msg.full_name()));
            continue;
        };
        for f in msg.fields() {
            match n.get_field(f.number()) {
                None => out.push(format!(
                    "field {} = {} removed (reserve its number and name instead)",
                    f.full_name(),
                    f.number()
                )),
                Some(nf) => field_changes(&f, &nf, &mut out),
            }
        }
    }
    for e in old.all_enums() {
        let Some(n) = new.get_enum_by_name(e.full_name()) else {
            out.push(format!("enum {} removed", e.full_name()));
            continue;
        };
        for v in e.values() {
            match n.get_value(v.number()) {
                None => out.push(format!(
                    "enum value {} = {} removed",
                    v.full_name(),
                    v.number()
                )),
                Some(nv) if nv.name() != v.name() => out.push(format!(
                    "enum value {} = {} renamed to {}",
                    v.full_name(),
                    v.number(),
                    nv.name()
                )),
                Some(_) => {}
            }
        }
    }
    out
}

fn field_changes(old: &FieldDescriptor, new: &FieldDescriptor, out: &mut Vec<String>) {
    let what = format!("field {} = {}", old.full_name(), old.number());
    if new.name() != old.name() {
        out.push(format!("{what} renamed to {} (breaks JSON)", new.name()));
    }
    if kind_name(&new.kind()) != kind_name(&old.kind()) {
        out.push(format!(
            "{what} changed type from {} to {}",
            kind_name(&old.kind()),
            kind_name(&new.kind())
        ));
    }
    if cardinality(new) != cardinality(old) {
        out.push(format!(
            "{what} changed from {} to {}",
            cardinality(old),
            cardinality(new)
        ));
    }
    let oneof = |f: &FieldDescriptor| {
        f.containing_oneof()
            .filter(|o| !o.is_synthetic())
            .map(|o| o.name().to_string())
    };
    if oneof(new) != oneof(old) {
        out.push(format!("{what} moved into or out of a oneof"));
    }
}

fn cardinality(f: &FieldDescriptor) -> &'static str {
    if f.is_map() {
        "map"
    } else {
        match f.cardinality() {
            Cardinality::Repeated => "repeated",
            Cardinality::Required => "required",
            Cardinality::Optional if f.supports_presence() && f.kind().as_message().is_none() => {
                "optional"
            }
            Cardinality::Optional => "singular",
        }
    }
}

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    fn pool(bytes: &[u8]) -> DescriptorPool {
        DescriptorPool::decode(bytes).unwrap()
    }

    /// THE check: this build breaks nothing of the last release. To release
    /// a new baseline, run with PGSNAPMAN_WRITE_RELEASED_PROTO=1 (docs/api.md).
    #[test]
    fn this_build_keeps_the_released_contract() {
        if std::env::var_os("PGSNAPMAN_WRITE_RELEASED_PROTO").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/released/pgsnapman.v1.binpb");
            std::fs::write(path, crate::v1::FILE_DESCRIPTOR_SET).unwrap();
        }
        let broken = breaking_changes(&pool(RELEASED), &pool(crate::v1::FILE_DESCRIPTOR_SET));
        assert!(
            broken.is_empty(),
            "breaking changes:\n{}",
            broken.join("\n")
        );
    }

    /// Edits the current contract's first file with `edit` and returns what
    /// the check says about the result.
    fn changes_after(edit: impl FnOnce(&mut prost_types::FileDescriptorProto)) -> Vec<String> {
        let mut set = FileDescriptorSet::decode(crate::v1::FILE_DESCRIPTOR_SET).unwrap();
        let file = set
            .file
            .iter_mut()
            .find(|f| f.package() == "pgsnapman.v1")
            .unwrap();
        edit(file);
        let new = pool(&set.encode_to_vec());
        breaking_changes(&pool(crate::v1::FILE_DESCRIPTOR_SET), &new)
    }

    fn message<'a>(
        f: &'a mut prost_types::FileDescriptorProto,
        name: &str,
    ) -> &'a mut prost_types::DescriptorProto {
        f.message_type
            .iter_mut()
            .find(|m| m.name() == name)
            .unwrap()
    }

    #[test]
    fn removing_renaming_retyping_and_renumbering_are_found() {
        let c = changes_after(|f| {
            message(f, "Dump").field.retain(|x| x.name() != "dump_uuid");
        });
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(
            c[0].contains("pgsnapman.v1.Dump.dump_uuid = 2 removed"),
            "{c:?}"
        );

        let c = changes_after(|f| {
            let d = message(f, "Dump");
            let field = d.field.iter_mut().find(|x| x.name() == "database").unwrap();
            field.name = Some("db".into());
            field.json_name = Some("db".into());
        });
        assert!(c.iter().any(|l| l.contains("renamed to db")), "{c:?}");

        let c = changes_after(|f| {
            let d = message(f, "Dump");
            let field = d.field.iter_mut().find(|x| x.name() == "port").unwrap();
            field.r#type = Some(prost_types::field_descriptor_proto::Type::Int64.into());
        });
        assert!(c.iter().any(|l| l.contains("changed type")), "{c:?}");

        let c = changes_after(|f| {
            let d = message(f, "Dump");
            let field = d.field.iter_mut().find(|x| x.name() == "host").unwrap();
            field.label = Some(prost_types::field_descriptor_proto::Label::Repeated.into());
        });
        assert!(c.iter().any(|l| l.contains("to repeated")), "{c:?}");

        let c = changes_after(|f| {
            let s = f
                .service
                .iter_mut()
                .find(|s| s.name() == "AdminService")
                .unwrap();
            s.method.retain(|m| m.name() != "GetDump");
            let w = s
                .method
                .iter_mut()
                .find(|m| m.name() == "WatchTask")
                .unwrap();
            w.server_streaming = Some(false);
        });
        assert!(c.iter().any(|l| l.contains("GetDump removed")), "{c:?}");
        assert!(
            c.iter()
                .any(|l| l.contains("WatchTask changed its streaming")),
            "{c:?}"
        );
    }

    #[test]
    fn additions_are_compatible() {
        let c = changes_after(|f| {
            let d = message(f, "Dump");
            let mut extra = d.field[0].clone();
            extra.name = Some("added_later".into());
            extra.json_name = Some("addedLater".into());
            extra.number = Some(999);
            d.field.push(extra);
        });
        assert!(c.is_empty(), "{c:?}");
    }
}
