//! The generated messages against Mesos's own bytes and JSON.

use pacer_mesos_proto::{call, event, v1, Call, Event};
use prost::Message;

#[test]
fn heartbeat_is_two_bytes_and_mesos_json() {
    let hb = Event {
        r#type: Some(event::Type::Heartbeat as i32),
        ..Default::default()
    };
    assert_eq!(hb.encode_to_vec(), vec![0x08, 0x08]);
    assert_eq!(
        serde_json::to_string(&hb).unwrap(),
        r#"{"type":"HEARTBEAT"}"#
    );
    let back: Event = serde_json::from_str(r#"{"type":"HEARTBEAT"}"#).unwrap();
    assert_eq!(back, hb);
}

#[test]
fn json_uses_proto_field_names_enum_names_and_base64() {
    let ack = Call {
        framework_id: Some(v1::FrameworkId { value: "F".into() }),
        r#type: Some(call::Type::Acknowledge as i32),
        acknowledge: Some(call::Acknowledge {
            agent_id: v1::AgentId { value: "A".into() },
            task_id: v1::TaskId { value: "T".into() },
            uuid: vec![0xff; 16],
        }),
        ..Default::default()
    };
    let json: serde_json::Value = serde_json::to_value(&ack).unwrap();
    assert_eq!(json["framework_id"]["value"], "F");
    assert_eq!(json["type"], "ACKNOWLEDGE");
    assert_eq!(json["acknowledge"]["task_id"]["value"], "T");
    assert_eq!(json["acknowledge"]["uuid"], "/////////////////////w==");
    let back: Call = serde_json::from_value(json).unwrap();
    assert_eq!(back, ack);
}

#[test]
fn field_numbers_match_mesos() {
    // Call{type=REVIVE(5)} is field 2 varint 5; revive{roles:["r"]} is field 15.
    let c = Call {
        r#type: Some(call::Type::Revive as i32),
        revive: Some(call::Revive {
            roles: vec!["r".into()],
        }),
        ..Default::default()
    };
    assert_eq!(
        c.encode_to_vec(),
        vec![0x10, 0x05, 0x7a, 0x03, 0x0a, 0x01, b'r']
    );
    // Attribute.text is field 5 and Attribute.set field 6 (swapped against Value).
    let a = v1::Attribute {
        name: "n".into(),
        r#type: v1::value::Type::Text as i32,
        text: Some(v1::value::Text { value: "t".into() }),
        ..Default::default()
    };
    assert_eq!(
        a.encode_to_vec(),
        vec![0x0a, 0x01, b'n', 0x10, 0x03, 0x2a, 0x03, 0x0a, 0x01, b't']
    );
    // TaskState numbers are not in lifecycle order.
    assert_eq!(v1::TaskState::TaskStaging as i32, 6);
    assert_eq!(v1::TaskState::TaskStarting as i32, 0);
    assert_eq!(v1::TaskState::TaskUnreachable as i32, 10);
}
