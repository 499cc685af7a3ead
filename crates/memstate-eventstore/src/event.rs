//! Mapping between memstate records and EventStoreDB events.
//!
//! A record's payload becomes the event's data, unchanged. The event gets a
//! readable type (`memstate.frame` by default) and is marked as JSON when the
//! payload is exactly one JSON value — the engine's frames are JSON by default,
//! so the stream stays legible in the database's UI. Anything else (a binary
//! codec, bytes padded with whitespace) is stored as binary, because the bytes
//! read back must be the bytes appended.
//!
//! Event ids are derived from the append call (UUID v5 over the stream name,
//! the event type and every record's bytes, then the record's index in the
//! call), so sending the same call again carries the same ids and KurrentDB
//! recognises it as a resend instead of writing it twice.

use bytes::Bytes;
use kurrentdb::{EventData, RecordedEvent, ResolvedEvent};
use memstate_core::{Record, StreamError};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::config::EventIds;
use crate::cursor;

/// The namespace of the event ids this adapter derives (a fixed random UUID,
/// so they cannot collide with v5 ids other software derives).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x659f_84ec_6857_4e16_a998_2f80_7177_f844);

/// The events the client sends for one append call, with ids chosen as
/// `ids` says.
pub(crate) fn to_events(
    records: Vec<Bytes>,
    stream: &str,
    event_type: &str,
    ids: EventIds,
) -> Vec<EventData> {
    let call = match ids {
        EventIds::FromContent => Some(call_digest(stream, event_type, &records)),
        EventIds::Random => None,
    };
    records
        .into_iter()
        .enumerate()
        .map(|(index, payload)| {
            let event = to_event_data(payload, event_type);
            match &call {
                Some(call) => event.id(content_id(call, index)),
                None => event,
            }
        })
        .collect()
}

/// A digest of everything one append call writes. Each part is
/// length-prefixed, so different splits of the same bytes differ.
fn call_digest(stream: &str, event_type: &str, records: &[Bytes]) -> [u8; 20] {
    let mut hasher = sha1_smol::Sha1::new();
    let mut part = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    part(stream.as_bytes());
    part(event_type.as_bytes());
    part(&(records.len() as u64).to_be_bytes());
    for record in records {
        part(record);
    }
    hasher.digest().bytes()
}

/// The id of the record at `index` of the call digested as `call`: two
/// identical records in one call still get different ids.
fn content_id(call: &[u8; 20], index: usize) -> Uuid {
    let mut name = [0u8; 28];
    name[..20].copy_from_slice(call);
    name[20..].copy_from_slice(&(index as u64).to_be_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

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

    fn ids_of(records: &[&'static [u8]], stream: &str, ids: EventIds) -> Vec<String> {
        let records = records.iter().map(|r| Bytes::from_static(r)).collect();
        to_events(records, stream, TYPE, ids)
            .iter()
            .map(|event| format!("{event:?}"))
            .collect()
    }

    /// The id the client will send, read from the request it builds (the
    /// client sends `id_opt`, or a fresh v4 id when it is `None`).
    fn sent_id(event_debug: &str) -> Option<Uuid> {
        let start = event_debug.find("id_opt: Some(")? + "id_opt: Some(".len();
        let end = start + event_debug[start..].find(')')?;
        Uuid::parse_str(&event_debug[start..end]).ok()
    }

    #[test]
    fn a_resend_of_the_same_call_carries_the_same_event_ids() {
        let call: [&[u8]; 2] = [br#"{"v":1,"id":"a"}"#, b"\x00binary"];
        let first = ids_of(&call, "orders", EventIds::FromContent);
        let again = ids_of(&call, "orders", EventIds::FromContent);
        let ids: Vec<_> = first.iter().map(|e| sent_id(e)).collect();
        let resent: Vec<_> = again.iter().map(|e| sent_id(e)).collect();
        assert!(ids.iter().all(Option::is_some), "{first:?}");
        assert_eq!(ids, resent);
        assert_eq!(ids[0].map(|id| id.get_version_num()), Some(5));
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn different_commands_streams_or_calls_get_different_event_ids() {
        let one = |records: &[&'static [u8]], stream: &str| -> Vec<Option<Uuid>> {
            ids_of(records, stream, EventIds::FromContent)
                .iter()
                .map(|e| sent_id(e))
                .collect()
        };
        let a = one(&[br#"{"id":"a"}"#], "orders");
        let b = one(&[br#"{"id":"b"}"#], "orders");
        assert!(a[0].is_some() && b[0].is_some());
        assert_ne!(a, b, "another command");
        assert_ne!(a, one(&[br#"{"id":"a"}"#], "invoices"), "another stream");
        // The same record inside a bigger call is another write.
        let pair = one(&[br#"{"id":"a"}"#, br#"{"id":"b"}"#], "orders");
        assert_ne!(pair[0], a[0]);
        assert_ne!(pair[1], b[0]);
        // Two identical records in one call are two events.
        let twice = one(&[b"same", b"same"], "orders");
        assert_ne!(twice[0], twice[1]);
        // Length prefixes: moving bytes between records changes the ids.
        assert_ne!(one(&[b"ab", b"c"], "orders"), one(&[b"a", b"bc"], "orders"));
    }

    #[test]
    fn random_event_ids_are_left_to_the_client() {
        for event in ids_of(&[b"x", b"y"], "orders", EventIds::Random) {
            assert!(event.contains("id_opt: None"), "{event}");
        }
    }

    #[test]
    fn size_on_disk_counts_the_event_type_as_utf16_twice() {
        assert_eq!(size_on_disk(100, "memstate.frame"), 100 + 28);
        assert_eq!(size_on_disk(0, "é"), 2);
        assert_eq!(size_on_disk(usize::MAX, TYPE), usize::MAX);
    }
}
