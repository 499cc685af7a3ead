//! Envelopes and frames: what the engine writes into a stream.
//!
//! An [`Envelope`] carries one user command or one control message with the
//! metadata every node needs to apply it identically. A *frame* is the payload
//! of one stream record: one or more envelopes encoded together. Because a frame
//! is one record, a batch is atomic and keeps its order whatever the backend
//! does on retry; one append of one frame is the engine's group commit.
//!
//! A frame is encoded in its stream's codec ([`Codec`], recorded in the
//! Genesis settings). A JSON frame is `{"v":1,"envelopes":[...]}`. A binary
//! frame starts with [`BINARY_FRAME_MARKER`], a byte that cannot begin a JSON
//! text, then names its codec and format version (see [`binary`]'s layout),
//! so a record's kind is known before it is decoded. `v` is the format
//! version of every envelope in the frame. A reader that meets a version
//! newer than [`FORMAT_VERSION`] must halt: skipping it would make old nodes
//! diverge from upgraded ones.
//!
//! An envelope holding a Genesis record is always written in a JSON frame,
//! whatever the stream's codec ([`frame_codec`]): the first record of every
//! stream stays readable by every build.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod binary;

pub use self::binary::BINARY_FRAME_MARKER;
pub use crate::codec::{Codec, EncodedCommand};
pub use crate::settings::FORMAT_VERSION;
use crate::settings::Settings;

/// Bytes the frame wrapper adds around the encoded envelopes (generous upper
/// bound, for either codec).
pub const FRAME_OVERHEAD: usize = 32;

/// Identifies one command across the whole cluster. Supplying your own id when
/// executing makes a retry after an ambiguous failure safe: the second copy is
/// recognised and dropped by every node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub Uuid);

impl CommandId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id as 128 bits (seeds the command's deterministic RNG).
    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({})", self.0)
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for CommandId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Identifies a node; must be unique among the nodes of one stream.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// A node id from any string.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A random UUID node id, used when none is configured.
    pub fn random() -> Self {
        Self(Uuid::new_v4().to_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One command or control message, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id: returns the result to the caller and drops duplicates.
    pub id: CommandId,
    /// The node that wrote it.
    pub origin: NodeId,
    /// Milliseconds since the Unix epoch on the origin node when it was
    /// submitted. Commands see this as "now", so replay is deterministic.
    pub ts: u64,
    /// The writer's leadership epoch, in single-leader mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// On a command: the model version it is encoded at (the stream's active
    /// version when it was written; see [`Model::VERSION`](crate::Model::VERSION)).
    /// Omitted when 1, and 1 when absent: envelopes written before versions
    /// existed read as version 1.
    #[serde(
        rename = "mv",
        default = "first_version",
        skip_serializing_if = "is_first_version"
    )]
    pub model_version: u32,
    /// On a node's Genesis restatement (its start record): the newest model
    /// version that node can read, its announcement. Omitted when 1, and 1
    /// when absent.
    #[serde(default = "first_version", skip_serializing_if = "is_first_version")]
    pub reads: u32,
    /// What to apply.
    pub body: Body,
}

fn first_version() -> u32 {
    1
}

fn is_first_version(v: &u32) -> bool {
    *v == 1
}

/// The body of an envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// A user command, encoded by the model's serde implementation in the
    /// stream's codec.
    Command(EncodedCommand),
    /// A message for the engine itself.
    Control(Control),
}

/// Messages the engines exchange through the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Control {
    /// The replicated settings. The first envelope of every stream is one; a
    /// node also writes one when it starts, to learn where the log ended (later
    /// ones change nothing).
    Genesis(Settings),
    /// A claim of leadership for `epoch`; accepted iff it is `current + 1`.
    AssumeLeadership {
        /// The epoch claimed.
        epoch: u64,
    },
    /// The leader is alive.
    Heartbeat {
        /// The leader's epoch.
        epoch: u64,
    },
    /// A marker appended to learn the tail of a stream whose head is not exact.
    Sync,
    /// The operator switches the stream's active model version. Accepted iff
    /// the version is not below the active one and every node that announced
    /// itself and has not departed can read it.
    Activate {
        /// The model version to make active.
        version: u32,
    },
    /// A node leaves: its announcement no longer holds activations back.
    /// Written by the node on a clean shutdown, or by an operator for a node
    /// that is gone for good.
    Depart {
        /// The node that leaves.
        node: NodeId,
    },
}

/// The former name of [`EncodedCommand`], from when commands were JSON only.
pub type CommandJson = EncodedCommand;

impl Envelope {
    /// A short name for the body, for logs and `memstate inspect`.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::Command(_) => "command",
            Body::Control(Control::Genesis(_)) => "genesis",
            Body::Control(Control::AssumeLeadership { .. }) => "assume_leadership",
            Body::Control(Control::Heartbeat { .. }) => "heartbeat",
            Body::Control(Control::Sync) => "sync",
            Body::Control(Control::Activate { .. }) => "activate",
            Body::Control(Control::Depart { .. }) => "depart",
        }
    }
}

/// Why bytes read from a stream could not be used as a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The bytes are not a memstate frame at all.
    #[error("not a memstate frame: {0}")]
    NotAFrame(String),
    /// A frame written by a newer format this build does not know.
    #[error(
        "frame format version {found} is newer than the newest this build reads ({supported}); upgrade this node"
    )]
    UnknownVersion {
        /// The version in the frame.
        found: u32,
        /// [`FORMAT_VERSION`].
        supported: u32,
    },
    /// A Genesis record whose command codec this build does not know: a
    /// newer build created the stream (or restated its settings).
    #[error(
        "a Genesis record names command codec {codec:?}, which this build does not know (it reads {}); a newer build wrote it: upgrade this node",
        known_codecs()
    )]
    UnknownCodec {
        /// The codec as the record names it (its JSON text when it is not a
        /// string).
        codec: String,
    },
}

/// The codecs this build reads, for messages: `"json", "msgpack"`.
pub(crate) fn known_codecs() -> String {
    let names: Vec<String> = Codec::ALL
        .iter()
        .map(|c| format!("{:?}", c.name()))
        .collect();
    names.join(", ")
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
}

#[derive(Deserialize)]
struct FrameIn {
    v: u32,
    envelopes: Vec<Envelope>,
}

/// Encodes one envelope as JSON; [`encode_frame`] joins encoded envelopes.
///
/// # Errors
///
/// When the envelope cannot be serialized (a command whose `Serialize` fails).
pub fn encode_envelope(envelope: &Envelope) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(envelope)
}

/// Encodes one envelope for a frame of `codec`; [`encode_frame_as`] joins
/// encoded envelopes. A command held in another codec is converted.
///
/// # Errors
///
/// When the envelope cannot be serialized (a command whose `Serialize` fails).
pub fn encode_envelope_as(codec: Codec, envelope: &Envelope) -> Result<Vec<u8>, serde_json::Error> {
    match codec {
        Codec::Json => match &envelope.body {
            Body::Command(command) if !command.codec().is_json() => {
                let mut json = envelope.clone();
                json.body = Body::Command(command.to_codec(Codec::Json)?);
                encode_envelope(&json)
            }
            _ => encode_envelope(envelope),
        },
        Codec::MsgPack => binary::encode_envelope(codec, envelope),
    }
}

/// The codec of the frame an envelope of a stream of codec `stream` is
/// written in: the stream's, except for a Genesis record, which is always
/// JSON (the first record of a stream is readable by every build).
pub fn frame_codec(stream: Codec, body: &Body) -> Codec {
    match body {
        Body::Control(Control::Genesis(_)) => Codec::Json,
        _ => stream,
    }
}

/// Joins envelopes encoded for `codec` ([`encode_envelope_as`]) into one
/// frame payload.
pub fn encode_frame_as<'a>(codec: Codec, envelopes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    match binary::header(codec) {
        None => encode_frame(envelopes),
        Some(header) => {
            let mut out = Vec::with_capacity(256);
            out.extend_from_slice(&header);
            for e in envelopes {
                out.extend_from_slice(e);
            }
            out
        }
    }
}

/// Joins JSON-encoded envelopes ([`encode_envelope`]) into one JSON frame payload.
pub fn encode_frame<'a>(envelopes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(FORMAT_VERSION.to_string().as_bytes());
    out.extend_from_slice(b",\"envelopes\":[");
    for (i, e) in envelopes.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Decodes a frame payload of either codec into its envelopes.
///
/// # Errors
///
/// As [`decode_frame_with_codec`].
pub fn decode_frame(payload: &[u8]) -> Result<Vec<Envelope>, FrameError> {
    decode_frame_with_codec(payload).map(|(_, envelopes)| envelopes)
}

/// Decodes a frame payload into the codec it is written in and its
/// envelopes; the first byte tells a binary frame from a JSON one.
///
/// # Errors
///
/// [`FrameError::UnknownVersion`] for a newer format, [`FrameError::NotAFrame`]
/// for anything else that is not a valid frame.
///
/// A frame is parsed once. Only bytes that fail to parse as a frame of this
/// format are parsed a second time, for their version alone: a frame of a
/// newer format must be reported as such, not as garbage.
pub fn decode_frame_with_codec(payload: &[u8]) -> Result<(Codec, Vec<Envelope>), FrameError> {
    if payload.first() == Some(&BINARY_FRAME_MARKER) {
        return binary::decode_frame(payload);
    }
    let frame: FrameIn = match serde_json::from_slice(payload) {
        Ok(frame) => frame,
        Err(malformed) => {
            let probe: VersionProbe = serde_json::from_slice(payload)
                .map_err(|e| FrameError::NotAFrame(format!("no format version: {e}")))?;
            check_version(probe.v)?;
            if let Some(codec) = unknown_genesis_codec(payload) {
                return Err(FrameError::UnknownCodec { codec });
            }
            return Err(FrameError::NotAFrame(format!(
                "malformed frame: {malformed}"
            )));
        }
    };
    check_version(frame.v)?;
    if frame.envelopes.is_empty() {
        return Err(FrameError::NotAFrame("frame holds no envelope".into()));
    }
    Ok((Codec::Json, frame.envelopes))
}

/// The command codec named by a Genesis record of a JSON frame that did not
/// parse, when it is one this build does not know. Only bytes that already
/// failed to parse come here, so the second parse costs nothing on the
/// path of frames that are read.
fn unknown_genesis_codec(payload: &[u8]) -> Option<String> {
    let frame: serde_json::Value = serde_json::from_slice(payload).ok()?;
    frame.get("envelopes")?.as_array()?.iter().find_map(|e| {
        crate::codec::unknown_codec_name(e.pointer("/body/control/genesis/command_codec")?)
    })
}

/// Refuses a format version this build does not read.
pub(crate) fn check_version(v: u32) -> Result<(), FrameError> {
    if v > FORMAT_VERSION {
        return Err(FrameError::UnknownVersion {
            found: v,
            supported: FORMAT_VERSION,
        });
    }
    if v == 0 {
        return Err(FrameError::NotAFrame(
            "format version 0 does not exist".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(body: Body) -> Envelope {
        Envelope {
            id: CommandId::random(),
            origin: NodeId::new("n1"),
            ts: 42,
            epoch: None,
            model_version: 1,
            reads: 1,
            body,
        }
    }

    #[test]
    fn frame_round_trips_its_envelopes_in_order() {
        let a = envelope(Body::Command(CommandJson::from(
            &serde_json::json!({"deposit": 5}),
        )));
        let b = envelope(Body::Control(Control::Sync));
        let ea = encode_envelope(&a).unwrap();
        let eb = encode_envelope(&b).unwrap();
        let frame = encode_frame([ea.as_slice(), eb.as_slice()]);
        assert_eq!(decode_frame(&frame).unwrap(), vec![a, b]);
    }

    #[test]
    fn model_versions_are_omitted_at_one_and_read_as_one_when_absent() {
        let first = envelope(Body::Command(CommandJson::from(
            &serde_json::json!({"deposit": 5}),
        )));
        let bytes = encode_envelope(&first).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            !text.contains("\"mv\"") && !text.contains("\"reads\""),
            "{text}"
        );
        // What builds before model versions wrote: no version fields at all.
        let old = br#"{"id":"6f1c1d2e-8a7b-4c3d-9e0f-112233445566","origin":"n1","ts":1,"body":{"command":{"deposit":5}}}"#;
        let read: Envelope = serde_json::from_slice(old).unwrap();
        assert_eq!((read.model_version, read.reads), (1, 1));
        let mut later = first;
        later.model_version = 3;
        later.reads = 4;
        let bytes = encode_envelope(&later).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("\"mv\":3") && text.contains("\"reads\":4"),
            "{text}"
        );
        let frame = encode_frame([bytes.as_slice()]);
        assert_eq!(decode_frame(&frame).unwrap(), vec![later]);
    }

    #[test]
    fn a_command_keeps_its_text_and_writes_the_same_bytes_as_before() {
        // What builds that kept commands as JSON trees wrote.
        let old = br#"{"id":"6f1c1d2e-8a7b-4c3d-9e0f-112233445566","origin":"n1","ts":1,"body":{"command":{"transfer":{"from":"a","to":"b","amount":5}}}}"#;
        let read: Envelope = serde_json::from_slice(old).unwrap();
        let Body::Command(json) = &read.body else {
            panic!("a command body: {read:?}")
        };
        assert_eq!(
            json.as_json().unwrap(),
            r#"{"transfer":{"from":"a","to":"b","amount":5}}"#
        );
        assert_eq!(
            json.to_value().unwrap(),
            serde_json::json!({"transfer": {"from": "a", "to": "b", "amount": 5}})
        );
        assert_eq!(encode_envelope(&read).unwrap(), old.to_vec());
        let typed = CommandJson::encode(&serde_json::json!({"deposit": 5})).unwrap();
        assert_eq!(typed.as_json().unwrap(), r#"{"deposit":5}"#);
        assert_eq!(typed.decode::<serde_json::Value>().unwrap()["deposit"], 5);
        assert_eq!(CommandJson::default().as_json().unwrap(), "null");
    }

    #[test]
    fn newer_format_is_reported_as_unknown_version() {
        let err = decode_frame(br#"{"v":99,"envelopes":[]}"#).unwrap_err();
        assert_eq!(
            err,
            FrameError::UnknownVersion {
                found: 99,
                supported: FORMAT_VERSION
            }
        );
    }

    #[test]
    fn a_newer_frame_that_parses_as_this_format_is_still_unknown() {
        let a = envelope(Body::Control(Control::Sync));
        let frame = format!(
            r#"{{"v":{},"envelopes":[{}]}}"#,
            FORMAT_VERSION + 1,
            String::from_utf8(encode_envelope(&a).unwrap()).unwrap()
        );
        assert_eq!(
            decode_frame(frame.as_bytes()).unwrap_err(),
            FrameError::UnknownVersion {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            }
        );
        assert!(matches!(
            decode_frame(br#"{"v":0,"envelopes":[{"x":1}]}"#),
            Err(FrameError::NotAFrame(_))
        ));
    }

    #[test]
    fn garbage_is_not_a_frame() {
        assert!(matches!(
            decode_frame(b"\x00\x01garbage"),
            Err(FrameError::NotAFrame(_))
        ));
        assert!(matches!(
            decode_frame(br#"{"v":1,"envelopes":[]}"#),
            Err(FrameError::NotAFrame(_))
        ));
        assert!(matches!(
            decode_frame(br#"{"v":1,"envelopes":[{"x":1}]}"#),
            Err(FrameError::NotAFrame(_))
        ));
    }

    #[test]
    fn frame_overhead_bounds_the_wrapper() {
        let frame = encode_frame(std::iter::empty::<&[u8]>());
        assert!(frame.len() <= FRAME_OVERHEAD);
    }
}
