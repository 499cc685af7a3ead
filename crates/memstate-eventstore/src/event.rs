//! Mapping between memstate records and EventStoreDB events.
//!
//! A record's payload becomes the event's data, unchanged. The event gets a
//! readable type (`memstate.frame` by default) and is marked as JSON when the
//! payload is exactly one JSON value — the engine's frames are JSON by default,
//! so the stream stays legible in the database's UI. Anything else (a binary
//! codec, bytes padded with whitespace) is stored as binary, because the bytes
//! read back must be the bytes appended.

use bytes::Bytes;
use kurrentdb::{EventData, RecordedEvent, ResolvedEvent};
use memstate_core::{Record, StreamError};
use serde_json::value::RawValue;

use crate::cursor;

/// The payload as one JSON value, only when serializing that value writes
/// back exactly the same bytes (serde_json's `RawValue` does not keep the
/// whitespace around a value, so padded JSON is stored as binary).
pub(crate) fn exact_json(payload: &[u8]) -> Option<&RawValue> {
    let text = std::str::from_utf8(payload).ok()?;
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    (raw.get().len() == text.len()).then_some(raw)
}

/// Builds the event the client sends for `payload`.
pub(crate) fn to_event_data(payload: Bytes, event_type: &str) -> EventData {
    if let Some(raw) = exact_json(&payload) {
        // `EventData::json` serializes its argument; a `RawValue` serializes
        // to its own text, so the stored data is the payload byte for byte.
        if let Ok(event) = EventData::json(event_type, &raw) {
            return event;
        }
    }
    EventData::binary(event_type, payload)
}

/// The server's accounting of one event against its append-size limit
/// (`Event.SizeOnDisk`: data + metadata + the event type's UTF-16 length × 2).
pub(crate) fn size_on_disk(payload_len: usize, event_type: &str) -> usize {
    payload_len.saturating_add(event_type.encode_utf16().count().saturating_mul(2))
}

/// Turns an event read from the stream into a record.
///
/// Links are not resolved (`resolve_link_tos` stays off), so the original
/// event is the one stored in this stream.
pub(crate) fn to_record(resolved: ResolvedEvent) -> Result<(u64, Record), StreamError> {
    let recorded: RecordedEvent = match (resolved.link, resolved.event) {
        (Some(link), _) => link,
        (None, Some(event)) => event,
        (None, None) => {
            return Err(StreamError::Corrupt {
                location: "EventStoreDB read response".to_owned(),
                reason: "the server sent an event message without an event".to_owned(),
            });
        }
    };
    let revision = recorded.revision;
    Ok((
        revision,
        Record {
            cursor: cursor::to_cursor(revision),
            payload: recorded.data,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: &str = "memstate.frame";

    #[test]
    fn json_frames_are_stored_as_json_events_with_the_readable_type() {
        let payload = Bytes::from_static(br#"[{"v":1,"id":"a","body":{"Cmd":{"n":3}}}]"#);
        assert!(exact_json(&payload).is_some());
        let event = format!("{:?}", to_event_data(payload, TYPE));
        assert!(event.contains("application/json"), "{event}");
        assert!(event.contains(TYPE), "{event}");
    }

    #[test]
    fn json_scalars_and_objects_count_as_json() {
        for text in [
            "{}",
            "[]",
            "1",
            "\"text\"",
            "null",
            r#"{"a":[1,2,{"b":null}]}"#,
        ] {
            assert!(exact_json(text.as_bytes()).is_some(), "{text}");
        }
    }

    #[test]
    fn non_json_payloads_are_stored_as_binary() {
        let cases: [&[u8]; 6] = [
            b"",
            b"\x00\x01\x02binary frame",
            b"{not json}",
            b"{\"a\":1} trailing",
            b"\xff\xfe{}",
            b"{\"a\":1}{\"b\":2}",
        ];
        for payload in cases {
            assert!(exact_json(payload).is_none(), "{payload:?}");
            let event = format!("{:?}", to_event_data(Bytes::copy_from_slice(payload), TYPE));
            assert!(event.contains("application/octet-stream"), "{event}");
        }
    }

    #[test]
    fn json_with_surrounding_whitespace_is_binary_so_its_bytes_survive() {
        for text in [" {}", "{}\n", "\t[1]\t"] {
            assert!(exact_json(text.as_bytes()).is_none(), "{text:?}");
        }
    }

    #[test]
    fn raw_json_serializes_to_exactly_the_payload_bytes() {
        // `EventData::json` runs `serde_json::to_vec` over its argument; this
        // is the property that keeps a JSON payload byte-identical.
        let text = r#"{"z":1,"a":[true,false],"s":"\u00e9\n","f":1.50}"#;
        let raw = exact_json(text.as_bytes());
        let written = raw.and_then(|raw| serde_json::to_vec(raw).ok());
        assert_eq!(written.as_deref(), Some(text.as_bytes()));
    }

    #[test]
    fn event_data_is_built_for_json_and_binary_payloads() {
        let json = format!(
            "{:?}",
            to_event_data(Bytes::from_static(b"{\"a\":1}"), TYPE)
        );
        assert!(json.contains("application/json"), "{json}");
        assert!(json.contains(TYPE), "{json}");
        let binary = format!("{:?}", to_event_data(Bytes::from_static(b"\x00\x01"), TYPE));
        assert!(binary.contains("application/octet-stream"), "{binary}");
    }

    #[test]
    fn size_on_disk_counts_the_event_type_as_utf16_twice() {
        assert_eq!(size_on_disk(100, "memstate.frame"), 100 + 28);
        assert_eq!(size_on_disk(0, "é"), 2);
        assert_eq!(size_on_disk(usize::MAX, TYPE), usize::MAX);
    }
}
