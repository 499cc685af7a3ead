//! Binary frames: the frame layout of streams whose codec is not JSON.
//!
//! ```text
//! frame    = 0xC1 codec-id version envelope+        (the envelopes run to the end)
//! envelope = id:16 origin:str ts:uint flags:u8 [epoch:uint] mv:uint reads:uint tag:u8 body
//! body     = command: len-prefixed bytes in the codec      (tag 0)
//!          | genesis: len-prefixed JSON of the settings    (tag 1)
//!          | epoch:uint (2 assume_leadership, 3 heartbeat) | nothing (4 sync)
//!          | version:uint (5 activate) | node:str (6 depart)
//! uint     = LEB128 (at most 10 bytes);  str = uint length, then UTF-8
//! ```
//!
//! The marker 0xC1 can begin neither a JSON text (it is not even UTF-8) nor
//! a MessagePack value, so a record is identified before it is decoded. The
//! envelope's own fields are laid out by hand (they change only with the
//! format version); the command inside is the codec's. Every length is
//! checked against the bytes that follow before anything is allocated, and a
//! MessagePack command is checked whole: exactly one value, every length it
//! declares within the bytes that follow.

use uuid::Uuid;

use super::{Body, CommandId, Control, Envelope, FORMAT_VERSION, FrameError, NodeId};
use crate::codec::{Codec, EncodedCommand};
use crate::settings::Settings;

/// The first byte of every binary frame.
pub const BINARY_FRAME_MARKER: u8 = 0xC1;

/// `flags` bit: the envelope carries an epoch.
const HAS_EPOCH: u8 = 1;

const TAG_COMMAND: u8 = 0;
const TAG_GENESIS: u8 = 1;
const TAG_ASSUME_LEADERSHIP: u8 = 2;
const TAG_HEARTBEAT: u8 = 3;
const TAG_SYNC: u8 = 4;
const TAG_ACTIVATE: u8 = 5;
const TAG_DEPART: u8 = 6;

/// The header of a binary frame of `codec`.
pub(super) fn header(codec: Codec) -> Option<[u8; 3]> {
    // FORMAT_VERSION is below 128: one LEB128 byte.
    Some([
        BINARY_FRAME_MARKER,
        codec.binary_id()?,
        FORMAT_VERSION as u8,
    ])
}

/// Encodes one envelope for a binary frame of `codec`.
pub(super) fn encode_envelope(codec: Codec, e: &Envelope) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(e.id.0.as_bytes());
    put_str(&mut out, &e.origin.0);
    put_uint(&mut out, e.ts);
    match e.epoch {
        Some(epoch) => {
            out.push(HAS_EPOCH);
            put_uint(&mut out, epoch);
        }
        None => out.push(0),
    }
    put_uint(&mut out, u64::from(e.model_version));
    put_uint(&mut out, u64::from(e.reads));
    match &e.body {
        Body::Command(command) => {
            out.push(TAG_COMMAND);
            let command = command.to_codec(codec)?;
            put_bytes(&mut out, command.as_bytes());
        }
        Body::Control(Control::Genesis(settings)) => {
            out.push(TAG_GENESIS);
            put_bytes(&mut out, &serde_json::to_vec(settings)?);
        }
        Body::Control(Control::AssumeLeadership { epoch }) => {
            out.push(TAG_ASSUME_LEADERSHIP);
            put_uint(&mut out, *epoch);
        }
        Body::Control(Control::Heartbeat { epoch }) => {
            out.push(TAG_HEARTBEAT);
            put_uint(&mut out, *epoch);
        }
        Body::Control(Control::Sync) => out.push(TAG_SYNC),
        Body::Control(Control::Activate { version }) => {
            out.push(TAG_ACTIVATE);
            put_uint(&mut out, u64::from(*version));
        }
        Body::Control(Control::Depart { node }) => {
            out.push(TAG_DEPART);
            put_str(&mut out, &node.0);
        }
    }
    Ok(out)
}

/// Decodes a binary frame (its first byte is the marker).
pub(super) fn decode_frame(payload: &[u8]) -> Result<(Codec, Vec<Envelope>), FrameError> {
    let mut r = Reader {
        rest: payload,
        codec: Codec::MsgPack,
    };
    let marker = r.byte().map_err(not_a_frame)?;
    if marker != BINARY_FRAME_MARKER {
        return Err(not_a_frame("no binary frame marker"));
    }
    let id = r.byte().map_err(not_a_frame)?;
    let codec = Codec::from_binary_id(id)
        .ok_or_else(|| not_a_frame(format!("binary frame of unknown codec id {id}")))?;
    r.codec = codec;
    let version = r.u32().map_err(not_a_frame)?;
    super::check_version(version)?;
    let mut envelopes = Vec::new();
    while !r.rest.is_empty() {
        let envelope = r
            .envelope()
            .map_err(|e| not_a_frame(format!("envelope {}: {e}", envelopes.len())))?;
        envelopes.push(envelope);
    }
    if envelopes.is_empty() {
        return Err(not_a_frame("frame holds no envelope"));
    }
    Ok((codec, envelopes))
}

fn not_a_frame(reason: impl Into<String>) -> FrameError {
    FrameError::NotAFrame(format!("binary frame: {}", reason.into()))
}

/// Reads fields off the front of a slice; every length is checked first.
struct Reader<'a> {
    rest: &'a [u8],
    /// The codec of the commands.
    codec: Codec,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err(format!(
                "{n} bytes declared where {} are left",
                self.rest.len()
            ));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err("an integer longer than 64 bits".into());
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("an integer longer than 64 bits".into())
    }

    fn u32(&mut self) -> Result<u32, String> {
        let v = self.uint()?;
        u32::try_from(v).map_err(|_| format!("{v} does not fit 32 bits"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.uint()?;
        let len = usize::try_from(len).map_err(|_| format!("length {len} is too large"))?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, String> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|e| format!("text that is not UTF-8: {e}"))
    }

    fn envelope(&mut self) -> Result<Envelope, String> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.take(16)?);
        let origin = NodeId(self.string()?);
        let ts = self.uint()?;
        let flags = self.byte()?;
        if flags & !HAS_EPOCH != 0 {
            return Err(format!("unknown flags {flags:#04x}"));
        }
        let epoch = if flags & HAS_EPOCH != 0 {
            Some(self.uint()?)
        } else {
            None
        };
        let model_version = self.u32()?;
        let reads = self.u32()?;
        let body = match self.byte()? {
            TAG_COMMAND => {
                let bytes = self.bytes()?;
                Body::Command(match self.codec {
                    Codec::MsgPack => EncodedCommand::from_msgpack(bytes)?,
                    Codec::Json => return Err("a JSON command in a binary frame".into()),
                })
            }
            TAG_GENESIS => {
                let settings: Settings = serde_json::from_slice(self.bytes()?)
                    .map_err(|e| format!("genesis settings: {e}"))?;
                Body::Control(Control::Genesis(settings))
            }
            TAG_ASSUME_LEADERSHIP => Body::Control(Control::AssumeLeadership {
                epoch: self.uint()?,
            }),
            TAG_HEARTBEAT => Body::Control(Control::Heartbeat {
                epoch: self.uint()?,
            }),
            TAG_SYNC => Body::Control(Control::Sync),
            TAG_ACTIVATE => Body::Control(Control::Activate {
                version: self.u32()?,
            }),
            TAG_DEPART => Body::Control(Control::Depart {
                node: NodeId(self.string()?),
            }),
            tag => {
                return Err(format!(
                    "unknown body kind {tag} (written by a newer build?)"
                ));
            }
        };
        Ok(Envelope {
            id: CommandId(Uuid::from_bytes(id)),
            origin,
            ts,
            epoch,
            model_version,
            reads,
            body,
        })
    }
}

fn put_uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(rest: &[u8]) -> Reader<'_> {
        Reader {
            rest,
            codec: Codec::MsgPack,
        }
    }

    #[test]
    fn integers_round_trip_at_their_limits_and_overlong_ones_are_refused() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_uint(&mut out, v);
            let mut r = reader(&out);
            assert_eq!(r.uint().unwrap(), v);
            assert!(r.rest.is_empty());
        }
        let mut r = reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert!(r.uint().is_err());
        let mut r = reader(&[0x80; 11]);
        assert!(r.uint().is_err());
        let mut out = Vec::new();
        put_uint(&mut out, u64::from(u32::MAX) + 1);
        assert!(reader(&out).u32().is_err());
    }

    #[test]
    fn a_length_beyond_the_payload_is_refused_before_any_allocation() {
        let mut out = Vec::new();
        put_uint(&mut out, u64::MAX);
        out.push(b'a');
        let err = reader(&out).bytes().unwrap_err();
        assert!(err.contains("declared"), "{err}");
    }
}
