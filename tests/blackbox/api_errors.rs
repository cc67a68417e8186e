use crate::harness::*;
use serde_json::json;

#[test]
fn bad_input_gets_marathons_errors() {
    let p = Pacer::start(&[]);

    let r = p.post("/v2/apps", "{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.body["message"], "Invalid JSON");
    assert!(r.body["details"].is_string());

    let r = p.post("/v2/apps", r#"{"id": "/x", "cmd": "a", "cpus": "many"}"#);
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body,
        json!({"message": "Invalid JSON", "details": [{"path": "/cpus", "errors": ["error.expected.jsnumber"]}]})
    );

    let r = p.post(
        "/v2/apps",
        r#"{"id": "/x", "cmd": "a", "upgradeStrategy": {"minimumHealthCapacity": 1.5}}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body,
        json!({"message": "Object is not valid", "details": [{"path": "/upgradeStrategy/minimumHealthCapacity", "errors": ["is greater than 1"]}]})
    );

    let r = p.post(
        "/v2/apps",
        r#"{"id": "/x", "cmd": "a", "portDefinitions": [{"port": 1}, {"port": 99999}]}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/portDefinitions(1)/port");

    let r = p.post("/v2/apps", r#"{"id": "/x"}"#);
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/");
    assert_eq!(
        r.body["details"][0]["errors"][0],
        "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."
    );

    let r = p.post("/v2/apps", r#"{"id": "/Bad_Id", "cmd": "a"}"#);
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/id");

    let r = p.post("/v2/apps", r#"{"id": "/a/tasks", "cmd": "a"}"#);
    assert_eq!(r.status, 422);

    // Nothing of a rejected request was applied.
    assert_eq!(p.get("/v2/apps").body, json!({"apps": []}));

    let ok = json!({"id": "/dup", "cmd": "sleep 100", "cpus": 0.01, "mem": 8, "instances": 0});
    assert_eq!(p.post("/v2/apps", &ok.to_string()).status, 201);
    let r = p.post("/v2/apps", &ok.to_string());
    assert_eq!(r.status, 409);
    assert_eq!(
        r.body,
        json!({"message": "An app with id [/dup] already exists."})
    );

    let r = p.get("/v2/apps/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, json!({"message": "App '/nope' does not exist"}));
    assert_eq!(
        p.call("PATCH", "/v2/apps/nope", Some(r#"{"instances": 1}"#))
            .status,
        404
    );
    assert_eq!(
        p.get("/v2/apps/dup/versions/2015-01-01T00:00:00.000Z").body,
        json!({"message": "App '/dup' does not exist in version 2015-01-01T00:00:00.000Z"})
    );

    let r = p.delete("/v2/apps/dup/tasks?scale=true&wipe=true");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["message"],
        "You cannot use scale and wipe at the same time."
    );

    let r = p.delete("/v2/apps/dup/tasks/dup.instance-00000000-0000-1000-8000-000000000000._app.1");
    assert_eq!(r.status, 404);

    let r = p.put(
        "/v2/apps/dup",
        r#"{"version": "2015-01-01T00:00:00.000Z", "cmd": "x"}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["message"],
        "The 'version' field may only be combined with the 'id' field."
    );

    let r = p.get("/v2/apps?label=a==");
    assert_eq!(r.status, 422);

    let r = p.post("/v2/tasks/delete", r#"{"ids": ["garbage"]}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.body["message"], "Invalid task id 'garbage'.");

    // Bodies over the limit are refused from their declared length, before they are read. (A raw
    // socket: the server may answer before a client finished sending, which is correct but would
    // make an ordinary client report a broken pipe.)
    let raw = raw_request(&p, "POST /v2/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\n\r\n{\"id\":");
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");

    let r = p.get("/v2/nothing-here");
    assert_eq!(r.status, 404);
    assert_eq!(r.body["message"], "URI not found");
}

#[test]
fn partial_and_full_updates_and_rollback() {
    let p = Pacer::start(&[]);
    let app = json!({"id": "/u", "cmd": "sleep 100", "cpus": 0.01, "mem": 8, "instances": 0, "labels": {"a": "1"}});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    let v1 = p.app("/u")["version"].as_str().unwrap().to_string();

    // partialUpdate (default): other fields stay.
    assert_eq!(p.put("/v2/apps/u", r#"{"mem": 16}"#).status, 200);
    let a = p.app("/u");
    assert_eq!(a["mem"], 16.0);
    assert_eq!(a["labels"], json!({"a": "1"}));

    // PATCH behaves the same and never creates.
    assert_eq!(
        p.call("PATCH", "/v2/apps/u", Some(r#"{"labels": {"b": "2"}}"#))
            .status,
        200
    );
    assert_eq!(p.app("/u")["labels"], json!({"b": "2"}));

    // partialUpdate=false replaces the whole definition: omitted fields get defaults.
    assert_eq!(
        p.put(
            "/v2/apps/u?partialUpdate=false",
            r#"{"cmd": "sleep 200", "instances": 0}"#
        )
        .status,
        200
    );
    let a = p.app("/u");
    assert_eq!(a["mem"], 128.0);
    assert_eq!(a["labels"], json!({}));
    assert_eq!(a["portDefinitions"][0]["port"], 10000, "service port kept");

    // Rollback to the first version.
    let r = p.put("/v2/apps/u", &json!({"version": v1}).to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    let a = p.app("/u");
    assert_eq!(a["cmd"], "sleep 100");
    assert_eq!(a["mem"], 8.0);
    assert_ne!(a["version"], v1.as_str(), "a rollback is a new version");

    // PUT on a missing app creates it: 201 with Location.
    let r = p.put("/v2/apps/fresh", r#"{"cmd": "sleep 1", "instances": 0}"#);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Location"), Some("/v2/apps/fresh"));

    // Bulk PUT and filters.
    let r = p.put("/v2/apps", r#"[{"id": "/g/one", "cmd": "sleep 1", "instances": 0, "labels": {"tier": "web"}}, {"id": "g/two", "cmd": "echo", "instances": 0}]"#);
    assert_eq!(r.status, 200, "{}", r.text);
    let ids = |path: &str| -> Vec<String> {
        let b = p.get(path).body;
        let list = b
            .get("apps")
            .or_else(|| b.get("*"))
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        list.iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("/v2/apps?label=tier==web"), ["/g/one"]);
    assert_eq!(ids("/v2/apps?cmd=ECHO"), ["/g/two"]);
    assert_eq!(ids("/v2/apps?id=g/"), ["/g/one", "/g/two"]);
    assert_eq!(ids("/v2/apps/g/*"), ["/g/one", "/g/two"]);
}

fn raw_request(p: &Pacer, head: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}
