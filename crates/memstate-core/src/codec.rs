//! Command codecs: how a user command is encoded inside a frame.
//!
//! A stream has one codec, chosen when it is created and recorded in its
//! Genesis settings ([`Settings::command_codec`](crate::Settings::command_codec)):
//! a stream never mixes codecs. [`Codec::Json`] is the first format and the
//! default; [`Codec::MsgPack`] is the compact binary one (MessagePack through
//! `rmp-serde`, structs as maps with their field names, so a command type
//! evolves under the same rules as with JSON; see `docs/upgrades.md`).
//!
//! An [`EncodedCommand`] is a command as written: JSON text, or MessagePack
//! bytes. Reading a frame copies each command's encoding without decoding it;
//! applying decodes it once, straight into the model's command type.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a stream's commands are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Codec {
    /// JSON through `serde_json`: the first format, readable by every build.
    #[default]
    #[serde(rename = "json")]
    Json,
    /// MessagePack through `rmp-serde`, structs as maps of named fields.
    #[serde(rename = "msgpack")]
    MsgPack,
}

impl Codec {
    /// Every codec this build reads and writes.
    pub const ALL: [Codec; 2] = [Codec::Json, Codec::MsgPack];

    /// The codec's name, as in the Genesis settings and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
        }
    }

    /// Whether this is [`Codec::Json`].
    pub fn is_json(&self) -> bool {
        *self == Codec::Json
    }

    /// The stream format version a stream of this codec is recorded with in
    /// its Genesis settings: 1 for JSON, 2 for a binary codec. Builds from
    /// before codecs know only 1, so they refuse a binary stream at its first
    /// record (a settings mismatch) instead of reading its binary frames as
    /// records that are not frames.
    pub fn format_version(self) -> u32 {
        match self {
            Codec::Json => 1,
            Codec::MsgPack => 2,
        }
    }

    /// The byte that names the codec in a binary frame's header.
    pub(crate) fn binary_id(self) -> Option<u8> {
        match self {
            Codec::Json => None,
            Codec::MsgPack => Some(1),
        }
    }

    /// The codec a binary frame's header names.
    pub(crate) fn from_binary_id(id: u8) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.binary_id() == Some(id))
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Codec::ALL.iter().map(|c| c.name()).collect();
                format!("unknown codec {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// The codec named by a `command_codec` field of recorded settings, when it
/// is not one this build knows (by its exact recorded name): the name, or
/// the field's JSON text when it is not a string.
pub(crate) fn unknown_codec_name(named: &serde_json::Value) -> Option<String> {
    match named.as_str() {
        Some(name) if Codec::ALL.iter().any(|c| c.name() == name) => None,
        Some(name) => Some(name.to_owned()),
        None => Some(named.to_string()),
    }
}

/// A user command as written in a frame, in the stream's codec.
///
/// Reading a frame copies each command's encoding without building a tree of
/// it; applying decodes it once, straight into the model's command type.
/// Writing encodes the command once, and the frame embeds it as it is.
///
/// Errors of either codec are reported as [`serde_json::Error`] carrying the
/// codec's message.
#[derive(Clone, Debug)]
pub struct EncodedCommand(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Json(Box<serde_json::value::RawValue>),
    /// One MessagePack value, checked by [`check_msgpack`] when read.
    MsgPack(Box<[u8]>),
}

impl EncodedCommand {
    /// Encodes `command` (any `Serialize` value) as JSON text.
    ///
    /// # Errors
    ///
    /// When `command`'s `Serialize` fails.
    pub fn encode<T: Serialize + ?Sized>(command: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(command).map(|raw| Self(Repr::Json(raw)))
    }

    /// Encodes `command` in `codec`.
    ///
    /// # Errors
    ///
    /// When `command`'s `Serialize` fails.
    pub fn encode_as<T: Serialize + ?Sized>(
        codec: Codec,
        command: &T,
    ) -> Result<Self, serde_json::Error> {
        match codec {
            Codec::Json => Self::encode(command),
            Codec::MsgPack => {
                let mut out = Vec::with_capacity(64);
                let mut ser = rmp_serde::Serializer::new(&mut out)
                    .with_struct_map()
                    .with_human_readable();
                command.serialize(&mut ser).map_err(msgpack_error)?;
                Ok(Self(Repr::MsgPack(out.into_boxed_slice())))
            }
        }
    }

    /// A JSON tree encoded in `codec` (after upcasting or downcasting).
    ///
    /// # Errors
    ///
    /// Never for JSON; for MessagePack, when the encoder fails.
    pub fn from_value_as(
        codec: Codec,
        value: &serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        Self::encode_as(codec, value)
    }

    /// MessagePack bytes read from a frame: exactly one value whose every
    /// declared length fits in the bytes that follow it.
    pub(crate) fn from_msgpack(bytes: &[u8]) -> Result<Self, String> {
        check_msgpack(bytes)?;
        Ok(Self(Repr::MsgPack(bytes.into())))
    }

    /// The codec it is encoded in.
    pub fn codec(&self) -> Codec {
        match &self.0 {
            Repr::Json(_) => Codec::Json,
            Repr::MsgPack(_) => Codec::MsgPack,
        }
    }

    /// The same command in `codec` (itself when it is already).
    ///
    /// # Errors
    ///
    /// When the command cannot be read or written in the other codec.
    pub fn to_codec(&self, codec: Codec) -> Result<Self, serde_json::Error> {
        if self.codec() == codec {
            return Ok(self.clone());
        }
        Self::from_value_as(codec, &self.to_value()?)
    }

    /// Decodes the command into `T` (the model's command type), in one pass.
    ///
    /// # Errors
    ///
    /// When the encoding is not a `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match &self.0 {
            Repr::Json(raw) => serde_json::from_str(raw.get()),
            Repr::MsgPack(bytes) => {
                let mut de =
                    rmp_serde::Deserializer::from_read_ref(bytes.as_ref()).with_human_readable();
                T::deserialize(&mut de).map_err(msgpack_error)
            }
        }
    }

    /// The command as a JSON tree (for upcasting, or for display).
    ///
    /// # Errors
    ///
    /// Never for JSON (the text is valid JSON); for MessagePack, a value
    /// JSON cannot hold (a map whose keys are not strings, a float that is
    /// not finite).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.decode()
    }

    /// The JSON text, when the command is JSON.
    pub fn as_json(&self) -> Option<&str> {
        match &self.0 {
            Repr::Json(raw) => Some(raw.get()),
            Repr::MsgPack(_) => None,
        }
    }

    /// The encoded bytes: JSON text or one MessagePack value.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Json(raw) => raw.get().as_bytes(),
            Repr::MsgPack(bytes) => bytes,
        }
    }
}

fn msgpack_error(e: impl fmt::Display) -> serde_json::Error {
    serde_json::Error::custom(format_args!("msgpack: {e}"))
}

impl PartialEq for EncodedCommand {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Json(a), Repr::Json(b)) => a.get() == b.get(),
            (Repr::MsgPack(a), Repr::MsgPack(b)) => a == b,
            _ => false,
        }
    }
}

impl Default for EncodedCommand {
    /// JSON `null`.
    fn default() -> Self {
        Self(Repr::Json(serde_json::value::RawValue::NULL.to_owned()))
    }
}

impl From<&serde_json::Value> for EncodedCommand {
    fn from(value: &serde_json::Value) -> Self {
        // A `Value` always serializes; its text is valid JSON.
        Self::encode(value).unwrap_or_default()
    }
}

impl Serialize for EncodedCommand {
    /// JSON is embedded as its text; MessagePack as the tree it holds (a
    /// JSON frame never holds one: this serves display and transcoding).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Json(raw) => raw.serialize(serializer),
            Repr::MsgPack(_) => self
                .to_value()
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for EncodedCommand {
    /// From JSON: the text, as it is.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(deserializer)
            .map(|raw| Self(Repr::Json(raw)))
    }
}

/// Checks that `bytes` hold exactly one MessagePack value, and that every
/// length it declares (of a string, a byte array, an extension, the items of
/// an array or map) fits in the bytes that follow: decoding it afterwards
/// never reserves room for more items than the input could hold. Iterative,
/// so nesting cannot exhaust the stack.
pub(crate) fn check_msgpack(bytes: &[u8]) -> Result<(), String> {
    let mut pos = 0usize;
    // Values still to read; each takes at least one byte.
    let mut pending = 1usize;
    while pending > 0 {
        pending -= 1;
        let marker = *bytes
            .get(pos)
            .ok_or("a MessagePack value ends before its end")?;
        pos += 1;
        let (header, body, items) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (0, 0, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (0, usize::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (1, be(bytes, pos, 1)?, 0),
            0xc5 | 0xda => (2, be(bytes, pos, 2)?, 0),
            0xc6 | 0xdb => (4, be(bytes, pos, 4)?, 0),
            // Extensions: a length, then a type byte and the data.
            0xc7 => (1, be(bytes, pos, 1)? + 1, 0),
            0xc8 => (2, be(bytes, pos, 2)? + 1, 0),
            0xc9 => (4, be(bytes, pos, 4)? + 1, 0),
            0xcc | 0xd0 => (0, 1, 0),
            0xcd | 0xd1 => (0, 2, 0),
            0xca | 0xce | 0xd2 => (0, 4, 0),
            0xcb | 0xcf | 0xd3 => (0, 8, 0),
            0xd4 => (0, 2, 0),
            0xd5 => (0, 3, 0),
            0xd6 => (0, 5, 0),
            0xd7 => (0, 9, 0),
            0xd8 => (0, 17, 0),
            0xdc => (2, 0, be(bytes, pos, 2)?),
            0xdd => (4, 0, be(bytes, pos, 4)?),
            0xde => (2, 0, 2 * be(bytes, pos, 2)?),
            0xdf => (4, 0, 2 * be(bytes, pos, 4)?),
            0xc1 => return Err("byte 0xc1 is never used in MessagePack".into()),
        };
        pos += header;
        let left = bytes.len().saturating_sub(pos);
        if body > left {
            return Err(format!(
                "a MessagePack value declares {body} bytes where {left} are left"
            ));
        }
        pos += body;
        pending = pending.saturating_add(items);
        if pending > bytes.len() - pos {
            return Err(format!(
                "a MessagePack array or map declares more items than the {} bytes left can hold",
                bytes.len() - pos
            ));
        }
    }
    if pos != bytes.len() {
        return Err(format!(
            "{} byte(s) after the MessagePack value",
            bytes.len() - pos
        ));
    }
    Ok(())
}

/// A big-endian length of `n` bytes at `pos`.
fn be(bytes: &[u8], pos: usize, n: usize) -> Result<usize, String> {
    let field = bytes
        .get(pos..pos + n)
        .ok_or("a MessagePack length ends before its end")?;
    Ok(field
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for codec in Codec::ALL {
            assert_eq!(codec.name().parse::<Codec>().unwrap(), codec);
            assert_eq!(codec.to_string(), codec.name());
            let json = serde_json::to_string(&codec).unwrap();
            assert_eq!(json, format!("\"{}\"", codec.name()));
        }
        let err = "postcard".parse::<Codec>().unwrap_err();
        assert!(err.contains("json, msgpack"), "{err}");
        assert_eq!(Codec::from_binary_id(1), Some(Codec::MsgPack));
        assert_eq!(Codec::from_binary_id(0), None);
    }

    #[test]
    fn a_command_round_trips_in_each_codec() {
        let command = serde_json::json!({"transfer": {"from": "a", "to": "b", "amount": 5}});
        for codec in Codec::ALL {
            let encoded = EncodedCommand::encode_as(codec, &command).unwrap();
            assert_eq!(encoded.codec(), codec);
            assert_eq!(encoded.to_value().unwrap(), command);
            assert_eq!(encoded.decode::<serde_json::Value>().unwrap(), command);
            let other = Codec::ALL.into_iter().find(|c| *c != codec).unwrap();
            let moved = encoded.to_codec(other).unwrap();
            assert_eq!(moved.codec(), other);
            assert_eq!(moved.to_value().unwrap(), command);
            // Display and transcoding through serde: the same JSON.
            assert_eq!(serde_json::to_value(&encoded).unwrap(), command);
        }
        let packed = EncodedCommand::encode_as(Codec::MsgPack, &command).unwrap();
        assert!(packed.as_json().is_none());
        assert!(
            packed.as_bytes().len() < EncodedCommand::encode(&command).unwrap().as_bytes().len()
        );
    }

    #[test]
    fn msgpack_checks_refuse_lengths_beyond_the_input() {
        let good =
            EncodedCommand::encode_as(Codec::MsgPack, &serde_json::json!({"a": [1, "x", null]}))
                .unwrap();
        assert!(check_msgpack(good.as_bytes()).is_ok());
        // An array32 that declares four billion items in five bytes.
        assert!(check_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        // A str32 that declares 4 GiB.
        assert!(check_msgpack(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']).is_err());
        // A map16 of 1,000 pairs in 3 bytes; a truncated uint64.
        assert!(check_msgpack(&[0xde, 0x03, 0xe8]).is_err());
        assert!(check_msgpack(&[0xcf, 0x00]).is_err());
        // Trailing bytes, the unused marker, nothing at all.
        assert!(check_msgpack(&[0x01, 0x02]).is_err());
        assert!(check_msgpack(&[0xc1]).is_err());
        assert!(check_msgpack(&[]).is_err());
        assert!(EncodedCommand::from_msgpack(&[0x93, 0x01]).is_err());
    }
}
