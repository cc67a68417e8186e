//! Event sink that POSTs each batch of events as one JSON array to a webhook.
//!
//! Configuration: `{"url": "http://host:port/path", "token": "...", "eventTypes": [...]}`;
//! `token` (sent as `Authorization: Bearer <token>`) and `eventTypes` (only these are sent)
//! are optional.

use std::collections::BTreeSet;

use pacer_plugin_sdk::Error;
use pacer_plugin_sdk::http;
use pacer_plugin_sdk::sink::{Event, EventSink};

const TIMEOUT_MS: u32 = 5000;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    url: Option<String>,
    token: Option<String>,
    event_types: Option<BTreeSet<String>>,
}

#[derive(Default)]
struct Webhook {
    url: String,
    authorization: Option<String>,
    event_types: Option<BTreeSet<String>>,
}

impl EventSink for Webhook {
    fn configure(config: &str) -> Result<Self, Error> {
        let config: Config = pacer_plugin_sdk::config::parse(config)?;
        let url = config
            .url
            .ok_or_else(|| Error::bad_config("url is required"))?;
        match url.strip_prefix("http://") {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
            _ => {
                return Err(Error::bad_config(format!(
                    "url must be an http://host:port/path URL, got {url:?}"
                )));
            }
        }
        Ok(Webhook {
            url,
            authorization: config.token.map(|t| format!("Bearer {t}")),
            event_types: config.event_types,
        })
    }

    fn deliver(&mut self, events: Vec<Event>) -> Result<(), Error> {
        let Some(body) = json_array(&events, self.event_types.as_ref()) else {
            return Ok(());
        };
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(authorization) = &self.authorization {
            headers.push(("Authorization", authorization));
        }
        let response = http::post(&self.url, &headers, &body, TIMEOUT_MS)
            .map_err(|e| Error::failed(format!("webhook unreachable: {e}")))?;
        if !response.is_success() {
            return Err(Error::failed(format!(
                "webhook answered {}",
                response.status
            )));
        }
        Ok(())
    }
}

/// The events of the wanted types as one JSON array (each event's JSON spliced in verbatim),
/// or `None` when there are none.
fn json_array(events: &[Event], types: Option<&BTreeSet<String>>) -> Option<Vec<u8>> {
    let wanted = |e: &&Event| types.is_none_or(|t| t.contains(&e.event_type));
    let mut body = Vec::with_capacity(2 + events.iter().map(|e| e.json.len() + 1).sum::<usize>());
    for event in events.iter().filter(wanted) {
        body.push(if body.is_empty() { b'[' } else { b',' });
        body.extend_from_slice(event.json.as_bytes());
    }
    if body.is_empty() {
        return None;
    }
    body.push(b']');
    Some(body)
}

pacer_plugin_sdk::export_sink!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_splices() {
        let event = |t: &str, json: &str| Event {
            event_type: t.into(),
            json: json.into(),
        };
        let events = [event("a", r#"{"x":1}"#), event("b", r#"{"y":2}"#)];
        assert_eq!(json_array(&events, None).unwrap(), br#"[{"x":1},{"y":2}]"#);
        let only_b = BTreeSet::from(["b".to_string()]);
        assert_eq!(json_array(&events, Some(&only_b)).unwrap(), br#"[{"y":2}]"#);
        assert_eq!(json_array(&events[..1], Some(&only_b)), None);
    }

    #[test]
    fn needs_an_http_url() {
        assert!(Webhook::configure(r#"{"url": "http://hooks:8080/pacer", "token": "t"}"#).is_ok());
        for bad in [
            "",
            "{}",
            r#"{"url": "https://x/"}"#,
            r#"{"url": "http:///x"}"#,
            r#"{"url": 1}"#,
        ] {
            assert!(
                matches!(Webhook::configure(bad), Err(Error::BadConfig(_))),
                "{bad}"
            );
        }
    }
}
