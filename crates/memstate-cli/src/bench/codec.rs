//! The codec candidates, measured: the bank's Transfer command alone and a
//! frame of 64 envelopes, encoded and decoded by each format, and their sizes.
//!
//! JSON and MessagePack (named fields, the format memstate offers) are
//! measured through memstate's own frame code (`encode_envelope_as`,
//! `encode_frame_as`, `decode_frame` and the command decoded into the
//! model's type): what the engine does. The others are measured encoding
//! the same envelopes as a plain serde structure (the envelope's fields and
//! the typed command): MessagePack with positional fields, postcard, CBOR
//! (ciborium). What was chosen and why: `docs/architecture.md`.

use std::hint::black_box;
use std::time::Instant;

use memstate_core::envelope::{decode_frame, encode_envelope_as, encode_frame_as};
use memstate_core::{Body, Codec, CommandId, EncodedCommand, Envelope, NodeId};
use serde::{Deserialize, Serialize};

use super::Extra;
use super::Plan;
use super::workload::{now_ms, transfer};
use crate::bank::BankCommand;

/// Envelopes per frame measured.
const FRAME: usize = 64;

/// One candidate's figures.
#[derive(Debug, Serialize)]
struct Candidate {
    format: &'static str,
    /// Bytes of one Transfer command.
    command_bytes: usize,
    command_encode_ns: f64,
    command_decode_ns: f64,
    /// Bytes of a frame of 64 envelopes, and per envelope.
    frame_bytes: usize,
    frame_bytes_per_envelope: f64,
    /// Per envelope, encoding and decoding a frame of 64 (commands decoded
    /// into `BankCommand`).
    frame_encode_ns_per_envelope: f64,
    frame_decode_ns_per_envelope: f64,
}

impl Candidate {
    /// From a command's size and (encode, decode) times, and a frame's size
    /// and (encode, decode) times for the whole frame.
    fn of(
        format: &'static str,
        command_bytes: usize,
        (command_encode_ns, command_decode_ns): (f64, f64),
        frame_bytes: usize,
        (frame_encode, frame_decode): (f64, f64),
    ) -> Self {
        let per = FRAME as f64;
        Self {
            format,
            command_bytes,
            command_encode_ns,
            command_decode_ns,
            frame_bytes,
            frame_bytes_per_envelope: frame_bytes as f64 / per,
            frame_encode_ns_per_envelope: frame_encode / per,
            frame_decode_ns_per_envelope: frame_decode / per,
        }
    }
}

/// The envelope as a plain serde structure, for the formats memstate does
/// not frame itself.
#[derive(Serialize, Deserialize)]
struct PlainEnvelope {
    id: uuid::Uuid,
    origin: String,
    ts: u64,
    epoch: Option<u64>,
    mv: u32,
    reads: u32,
    command: BankCommand,
}

/// One serde format's encoders and decoders of both shapes measured.
struct Format {
    name: &'static str,
    encode_command: fn(&BankCommand) -> Result<Vec<u8>, String>,
    encode_frame: fn(&Vec<PlainEnvelope>) -> Result<Vec<u8>, String>,
    decode_command: fn(&[u8]) -> Result<BankCommand, String>,
    decode_frame: fn(&[u8]) -> Result<Vec<PlainEnvelope>, String>,
}

fn msgpack_positional<S: Serialize + ?Sized>(v: &S) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec(v).map_err(|e| e.to_string())
}

fn from_msgpack<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(b).map_err(|e| e.to_string())
}

fn postcard<S: Serialize + ?Sized>(v: &S) -> Result<Vec<u8>, String> {
    ::postcard::to_allocvec(v).map_err(|e| e.to_string())
}

fn from_postcard<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    ::postcard::from_bytes(b).map_err(|e| e.to_string())
}

fn cbor<S: Serialize + ?Sized>(v: &S) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(128);
    ciborium::into_writer(v, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn from_cbor<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    ciborium::from_reader(b).map_err(|e| e.to_string())
}

fn formats() -> [Format; 3] {
    [
        Format {
            name: "msgpack-positional",
            encode_command: msgpack_positional,
            encode_frame: msgpack_positional,
            decode_command: from_msgpack,
            decode_frame: from_msgpack,
        },
        Format {
            name: "postcard",
            encode_command: postcard,
            encode_frame: postcard,
            decode_command: from_postcard,
            decode_frame: from_postcard,
        },
        Format {
            name: "cbor",
            encode_command: cbor,
            encode_frame: cbor,
            decode_command: from_cbor,
            decode_frame: from_cbor,
        },
    ]
}

/// Nanoseconds per call of `f`, over `n` calls.
fn per_call(n: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let started = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(started.elapsed().as_nanos() as f64 / n.max(1) as f64)
}

fn envelopes(codec: Codec) -> Result<Vec<Envelope>, String> {
    let ts = now_ms();
    (0..FRAME)
        .map(|i| {
            let command = transfer(1000, i, i as u64);
            Ok(Envelope {
                id: CommandId::random(),
                origin: NodeId::new("bench-node-1"),
                ts: ts + i as u64,
                epoch: None,
                model_version: 1,
                reads: 1,
                body: Body::Command(
                    EncodedCommand::encode_as(codec, &command).map_err(|e| e.to_string())?,
                ),
            })
        })
        .collect()
}

/// The figures of memstate's own frames in `codec`.
fn memstate_frames(codec: Codec, rounds: usize) -> Result<Candidate, String> {
    let command = transfer(1000, 7, 7);
    let n = rounds * FRAME;
    let encoded = EncodedCommand::encode_as(codec, &command).map_err(|e| e.to_string())?;
    let command_encode_ns = per_call(n, || {
        black_box(EncodedCommand::encode_as(codec, black_box(&command)))
            .map(drop)
            .map_err(|e| e.to_string())
    })?;
    let command_decode_ns = per_call(n, || {
        black_box(encoded.decode::<BankCommand>())
            .map(drop)
            .map_err(|e| e.to_string())
    })?;
    let list = envelopes(codec)?;
    let encode_frame = || -> Result<Vec<u8>, String> {
        let parts = list
            .iter()
            .map(|e| encode_envelope_as(codec, e).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(encode_frame_as(codec, parts.iter().map(Vec::as_slice)))
    };
    let frame = encode_frame()?;
    let frame_encode = per_call(rounds, || encode_frame().map(|f| drop(black_box(f))))?;
    let frame_decode = per_call(rounds, || {
        for e in decode_frame(black_box(&frame)).map_err(|e| e.to_string())? {
            if let Body::Command(c) = e.body {
                black_box(c.decode::<BankCommand>().map_err(|e| e.to_string())?);
            }
        }
        Ok(())
    })?;
    let format = match codec {
        Codec::Json => "json (memstate frame)",
        _ => "msgpack (memstate frame)",
    };
    Ok(Candidate::of(
        format,
        encoded.as_bytes().len(),
        (command_encode_ns, command_decode_ns),
        frame.len(),
        (frame_encode, frame_decode),
    ))
}

/// The figures of a serde format encoding the plain structures.
fn plain(format: &Format, rounds: usize) -> Result<Candidate, String> {
    let command = transfer(1000, 7, 7);
    let n = rounds * FRAME;
    let bytes = (format.encode_command)(&command)?;
    let command_encode_ns = per_call(n, || (format.encode_command)(black_box(&command)).map(drop))?;
    let command_decode_ns = per_call(n, || (format.decode_command)(black_box(&bytes)).map(drop))?;
    let ts = now_ms();
    let list: Vec<PlainEnvelope> = (0..FRAME)
        .map(|i| PlainEnvelope {
            id: uuid::Uuid::new_v4(),
            origin: "bench-node-1".into(),
            ts: ts + i as u64,
            epoch: None,
            mv: 1,
            reads: 1,
            command: transfer(1000, i, i as u64),
        })
        .collect();
    let frame = (format.encode_frame)(&list)?;
    let frame_encode = per_call(rounds, || (format.encode_frame)(black_box(&list)).map(drop))?;
    let frame_decode = per_call(rounds, || {
        (format.decode_frame)(black_box(&frame)).map(drop)
    })?;
    Ok(Candidate::of(
        format.name,
        bytes.len(),
        (command_encode_ns, command_decode_ns),
        frame.len(),
        (frame_encode, frame_decode),
    ))
}

fn measure(plan: &Plan) -> Result<Vec<Candidate>, String> {
    // Frames of 64 per measurement: 20,000 (a million envelopes) in a full
    // run, 500 with --quick.
    let rounds = (plan.replay_commands / FRAME as u64).clamp(50, 20_000) as usize;
    let mut out = Vec::new();
    for codec in Codec::ALL {
        out.push(memstate_frames(codec, rounds)?);
    }
    for format in formats() {
        out.push(plain(&format, rounds)?);
    }
    Ok(out)
}

fn table(candidates: &[Candidate]) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "\ncodecs (Transfer command; frame of 64 envelopes, commands decoded into BankCommand)\n\
         format                   | cmd bytes | cmd enc ns | cmd dec ns | frame bytes/env | frame enc ns/env | frame dec ns/env\n",
    );
    for c in candidates {
        let _ = writeln!(
            out,
            "{:<24} | {:>9} | {:>10.0} | {:>10.0} | {:>15.1} | {:>16.0} | {:>16.0}",
            c.format,
            c.command_bytes,
            c.command_encode_ns,
            c.command_decode_ns,
            c.frame_bytes_per_envelope,
            c.frame_encode_ns_per_envelope,
            c.frame_decode_ns_per_envelope
        );
    }
    out
}

/// Runs the codec part.
pub(crate) fn run(plan: &Plan) -> Extra {
    plan.progress("codec: the Transfer command and frames of 64 in each candidate format");
    match measure(plan) {
        Ok(candidates) => Extra::new(
            "codec",
            serde_json::to_value(&candidates),
            table(&candidates),
            false,
        ),
        Err(e) => Extra::new(
            "codec",
            Ok(serde_json::json!({ "error": e })),
            format!("\ncodec: FAILED: {e}\n"),
            true,
        ),
    }
}
