//! Decoding scheduler calls as a Mesos master does.
//!
//! - Protobuf: prost does not enforce proto2 `required` fields, but Mesos's parser does, so the
//!   wire bytes are walked with a table of the required fields of every message a call can
//!   carry (in Pacer's proto subset).
//! - JSON: Mesos looks fields up by their exact proto name and silently ignores anything else,
//!   including lowerCamelCase names; pbjson accepts camelCase and rejects unknown names. So
//!   keys that Mesos would ignore are removed first (and reported, since a scheduler that sends
//!   them loses data without noticing).

use pacer_mesos_proto::Call;
use prost::Message;
use serde_json::Value;

struct Schema {
    required: &'static [(u32, &'static str)],
    children: &'static [(u32, &'static str, &'static Schema)],
}

macro_rules! schema {
    ($name:ident, [$(($n:expr, $f:expr)),*], [$(($cn:expr, $cf:expr, $cs:expr)),*]) => {
        static $name: Schema = Schema {
            required: &[$(($n, $f)),*],
            children: &[$(($cn, $cf, &$cs)),*],
        };
    };
}

schema!(ID, [(1, "value")], []);
schema!(LABEL, [(1, "key")], []);
schema!(LABELS, [], [(1, "labels", LABEL)]);
schema!(
    FRAMEWORK_INFO,
    [(1, "user"), (2, "name")],
    [(3, "id", ID), (11, "labels", LABELS)]
);
schema!(
    SUBSCRIBE,
    [(1, "framework_info")],
    [(1, "framework_info", FRAMEWORK_INFO)]
);
schema!(SCALAR, [(1, "value")], []);
schema!(RANGE, [(1, "begin"), (2, "end")], []);
schema!(RANGES, [], [(1, "range", RANGE)]);
schema!(RESERVATION, [], [(2, "labels", LABELS)]);
schema!(
    RESOURCE,
    [(1, "name"), (2, "type")],
    [
        (3, "scalar", SCALAR),
        (4, "ranges", RANGES),
        (8, "reservation", RESERVATION),
        (13, "reservations", RESERVATION)
    ]
);
schema!(URI, [(1, "value")], []);
schema!(VARIABLE, [(1, "name")], []);
schema!(ENVIRONMENT, [], [(1, "variables", VARIABLE)]);
schema!(
    COMMAND,
    [],
    [(1, "uris", URI), (2, "environment", ENVIRONMENT)]
);
schema!(
    EXECUTOR,
    [(1, "executor_id")],
    [
        (1, "executor_id", ID),
        (8, "framework_id", ID),
        (7, "command", COMMAND),
        (5, "resources", RESOURCE)
    ]
);
schema!(PARAMETER, [(1, "key"), (2, "value")], []);
schema!(PORT_MAPPING, [(1, "host_port"), (2, "container_port")], []);
schema!(
    DOCKER,
    [(1, "image")],
    [
        (3, "port_mappings", PORT_MAPPING),
        (5, "parameters", PARAMETER)
    ]
);
schema!(VOLUME, [(3, "mode"), (1, "container_path")], []);
schema!(
    NETWORK,
    [],
    [(7, "port_mappings", PORT_MAPPING), (4, "labels", LABELS)]
);
schema!(
    CONTAINER,
    [(1, "type")],
    [
        (2, "volumes", VOLUME),
        (3, "docker", DOCKER),
        (7, "network_infos", NETWORK)
    ]
);
schema!(PORT_CHECK, [(1, "port")], []);
schema!(
    HEALTH,
    [],
    [
        (7, "command", COMMAND),
        (1, "http", PORT_CHECK),
        (9, "tcp", PORT_CHECK)
    ]
);
schema!(DURATION, [(1, "nanoseconds")], []);
schema!(KILL_POLICY, [], [(1, "grace_period", DURATION)]);
schema!(PORT, [(1, "number")], [(5, "labels", LABELS)]);
schema!(PORTS, [], [(1, "ports", PORT)]);
schema!(
    DISCOVERY,
    [(1, "visibility")],
    [(6, "ports", PORTS), (7, "labels", LABELS)]
);
schema!(
    TASK_INFO,
    [(1, "name"), (2, "task_id"), (3, "agent_id")],
    [
        (2, "task_id", ID),
        (3, "agent_id", ID),
        (4, "resources", RESOURCE),
        (5, "executor", EXECUTOR),
        (7, "command", COMMAND),
        (9, "container", CONTAINER),
        (8, "health_check", HEALTH),
        (12, "kill_policy", KILL_POLICY),
        (10, "labels", LABELS),
        (11, "discovery", DISCOVERY)
    ]
);
schema!(LAUNCH, [], [(1, "task_infos", TASK_INFO)]);
schema!(OPERATION, [], [(2, "launch", LAUNCH)]);
schema!(
    ACCEPT,
    [],
    [(1, "offer_ids", ID), (2, "operations", OPERATION)]
);
schema!(DECLINE, [], [(1, "offer_ids", ID)]);
schema!(
    KILL,
    [(1, "task_id")],
    [
        (1, "task_id", ID),
        (2, "agent_id", ID),
        (3, "kill_policy", KILL_POLICY)
    ]
);
schema!(
    SHUTDOWN,
    [(1, "executor_id"), (2, "agent_id")],
    [(1, "executor_id", ID), (2, "agent_id", ID)]
);
schema!(
    ACKNOWLEDGE,
    [(1, "agent_id"), (2, "task_id"), (3, "uuid")],
    [(1, "agent_id", ID), (2, "task_id", ID)]
);
schema!(
    RECONCILE_TASK,
    [(1, "task_id")],
    [(1, "task_id", ID), (2, "agent_id", ID)]
);
schema!(RECONCILE, [], [(1, "tasks", RECONCILE_TASK)]);
schema!(
    UPDATE_FRAMEWORK,
    [(1, "framework_info")],
    [(1, "framework_info", FRAMEWORK_INFO)]
);
schema!(
    CALL,
    [],
    [
        (1, "framework_id", ID),
        (3, "subscribe", SUBSCRIBE),
        (4, "accept", ACCEPT),
        (5, "decline", DECLINE),
        (6, "kill", KILL),
        (7, "shutdown", SHUTDOWN),
        (8, "acknowledge", ACKNOWLEDGE),
        (9, "reconcile", RECONCILE),
        (19, "update_framework", UPDATE_FRAMEWORK)
    ]
);

fn varint(buf: &[u8], i: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*i).ok_or("truncated varint")?;
        *i += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("overlong varint".into())
}

/// The first missing required field, as a dotted path.
fn missing_required(buf: &[u8], schema: &Schema, path: &str) -> Result<(), String> {
    let mut seen = 0u64;
    let mut i = 0;
    while i < buf.len() {
        let key = varint(buf, &mut i)?;
        let field = (key >> 3) as u32;
        match key & 7 {
            0 => {
                varint(buf, &mut i)?;
            }
            1 => i += 8,
            5 => i += 4,
            2 => {
                let len = varint(buf, &mut i)? as usize;
                let end = i
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                if let Some((_, name, child)) = schema.children.iter().find(|(n, _, _)| *n == field)
                {
                    missing_required(&buf[i..end], child, &format!("{path}{name}."))?;
                }
                i = end;
            }
            w => return Err(format!("unsupported wire type {w}")),
        }
        if i > buf.len() {
            return Err("truncated field".into());
        }
        if field < 64 {
            seen |= 1 << field;
        }
    }
    for (n, name) in schema.required {
        if seen & (1 << n) == 0 {
            return Err(format!("missing required field '{path}{name}'"));
        }
    }
    Ok(())
}

/// A protobuf call body, or the 400 message.
/// Best effort, by content type: for the record of calls.
pub(crate) fn decode_any(content_type: Option<&str>, body: &[u8]) -> Option<Call> {
    match content_type {
        Some(pacer_mesos_proto::JSON) => decode_json(body, &mut Vec::new()).ok(),
        Some(pacer_mesos_proto::PROTOBUF) => decode_protobuf(body).ok(),
        _ => None,
    }
}

pub(crate) fn decode_protobuf(body: &[u8]) -> Result<Call, String> {
    const PREFIX: &str = "Failed to parse body into Call protobuf";
    let call = Call::decode(body).map_err(|e| format!("{PREFIX}: {e}"))?;
    missing_required(body, &CALL, "").map_err(|e| format!("{PREFIX}: {e}"))?;
    Ok(call)
}

/// Field names of `scheduler.Call` (all of Mesos's, including those the simulator ignores).
const CALL_FIELDS: &[&str] = &[
    "framework_id",
    "type",
    "subscribe",
    "accept",
    "decline",
    "accept_inverse_offers",
    "decline_inverse_offers",
    "revive",
    "kill",
    "shutdown",
    "acknowledge",
    "acknowledge_operation_status",
    "reconcile",
    "reconcile_operations",
    "message",
    "request",
    "suppress",
    "update_framework",
];

/// Fields of a real Call that Pacer's proto subset lacks: ignored without complaint.
const UNMODELLED: &[&str] = &[
    "accept_inverse_offers",
    "decline_inverse_offers",
    "acknowledge_operation_status",
    "reconcile_operations",
    "message",
    "request",
];

fn strip_camel(v: &mut Value, path: &str, notes: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let bad: Vec<String> = map
                .keys()
                .filter(|k| k.bytes().any(|b| b.is_ascii_uppercase()))
                .cloned()
                .collect();
            for k in bad {
                map.remove(&k);
                notes.push(format!(
                    "key '{k}' at '{}' is not a Mesos field name (camelCase?); a real master ignores it",
                    if path.is_empty() { "." } else { path }
                ));
            }
            for (k, child) in map.iter_mut() {
                strip_camel(child, &format!("{path}.{k}"), notes);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                strip_camel(child, &format!("{path}[{i}]"), notes);
            }
        }
        _ => {}
    }
}

fn remove_at(v: &mut Value, path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let segs: Vec<&Segment> = path.iter().collect();
    let (last, parents) = segs.split_last()?;
    let mut cur = v;
    for s in parents {
        cur = match s {
            Segment::Seq { index } => cur.get_mut(*index)?,
            Segment::Map { key } => cur.get_mut(key.as_str())?,
            _ => return None,
        };
    }
    match last {
        Segment::Map { key } => cur
            .as_object_mut()?
            .remove(key.as_str())
            .map(|_| key.clone()),
        _ => None,
    }
}

/// A JSON call body, or the 400 message. `notes` gets what a real master would have silently
/// ignored.
pub(crate) fn decode_json(body: &[u8], notes: &mut Vec<String>) -> Result<Call, String> {
    let mut v: Value =
        serde_json::from_slice(body).map_err(|e| format!("Failed to parse body into JSON: {e}"))?;
    let Some(map) = v.as_object_mut() else {
        return Err("Failed to convert JSON into Call protobuf: expecting a JSON object".into());
    };
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !CALL_FIELDS.contains(&k.as_str()))
        .filter(|k| !k.bytes().any(|b| b.is_ascii_uppercase()))
        .cloned()
        .collect();
    for k in unknown {
        map.remove(&k);
        notes.push(format!(
            "unknown top-level key '{k}'; a real master ignores it"
        ));
    }
    for k in UNMODELLED {
        map.remove(*k);
    }
    strip_camel(&mut v, "", notes);
    // Whatever else pbjson rejects by name (an unknown nested key, an unknown enum name on an
    // optional field) Mesos ignores: drop it and try again.
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, Call>(&v) {
            Ok(call) => return Ok(call),
            Err(e) => {
                let msg = e.inner().to_string();
                let ignorable =
                    msg.starts_with("unknown field") || msg.starts_with("unknown variant");
                let path = e.path().clone();
                if ignorable {
                    if let Some(key) = remove_at(&mut v, &path) {
                        if msg.starts_with("unknown field") {
                            notes.push(format!(
                                "unknown key '{key}' at '{path}'; a real master ignores it"
                            ));
                        } else {
                            notes.push(format!(
                                "unknown enum value at '{path}' ({msg}); a real master drops the field"
                            ));
                        }
                        continue;
                    }
                }
                return Err(format!(
                    "Failed to convert JSON into Call protobuf: {path}: {msg}"
                ));
            }
        }
    }
    Err("Failed to convert JSON into Call protobuf: too many unknown fields".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_mesos_proto::{call, v1};

    #[test]
    fn protobuf_missing_required_fields_are_rejected() {
        let mut c = Call {
            r#type: Some(call::Type::Kill as i32),
            framework_id: Some(v1::FrameworkId { value: "f".into() }),
            kill: Some(call::Kill {
                task_id: v1::TaskId { value: "t".into() },
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(decode_protobuf(&c.encode_to_vec()).is_ok());
        // prost always writes required fields; an empty string id is still present.
        c.kill.as_mut().unwrap().task_id.value.clear();
        assert!(decode_protobuf(&c.encode_to_vec()).is_ok());
        // A hand-made body without kill.task_id: field 6 (kill) with an empty message.
        let body = [0x10, 0x06, 0x32, 0x00];
        let err = decode_protobuf(&body).unwrap_err();
        assert!(err.contains("kill.task_id"), "{err}");
    }

    #[test]
    fn json_camel_case_and_unknown_keys_are_dropped_and_noted() {
        let body = br#"{"type":"KILL","frameworkId":{"value":"f"},"kill":{"task_id":{"value":"t"},"bogus":1},"extra":true}"#;
        let mut notes = Vec::new();
        let call = decode_json(body, &mut notes).unwrap();
        assert!(call.framework_id.is_none());
        assert_eq!(call.kill.unwrap().task_id.value, "t");
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn json_missing_required_is_an_error() {
        let mut notes = Vec::new();
        let err = decode_json(br#"{"type":"KILL","kill":{}}"#, &mut notes).unwrap_err();
        assert!(
            err.starts_with("Failed to convert JSON into Call protobuf"),
            "{err}"
        );
        let err = decode_json(b"{", &mut notes).unwrap_err();
        assert!(err.starts_with("Failed to parse body into JSON"), "{err}");
    }
}
