//! The on-disk format: segment headers, record frames, the seal marker, the
//! durable watermark and file names. See the crate README for the layout.

use std::path::{Path, PathBuf};

use crate::position::Position;

/// The first eight bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"MEMSTJNL";
/// The format version written into every segment header and the watermark.
pub const FORMAT_VERSION: u32 = 1;
pub use crate::position::SEGMENT_HEADER_LEN;
/// Bytes of the frame header (`len`, `crc`) in front of every payload.
pub const FRAME_HEADER_LEN: u64 = 8;
/// The `len` value that marks a seal instead of a record.
pub(crate) const SEAL_MARKER: u32 = u32::MAX;
/// Bytes of a seal (a frame header with no payload).
pub const SEAL_LEN: u64 = FRAME_HEADER_LEN;
/// The largest payload the format can describe (one less than the seal marker).
pub const MAX_PAYLOAD_LEN: u64 = SEAL_MARKER as u64 - 1;

/// The magic at the start of the watermark file.
const WATERMARK_MAGIC: [u8; 4] = *b"MSWM";
/// Bytes of the watermark file.
pub(crate) const WATERMARK_LEN: usize = 64;

/// The lock file every appender holds (flock, exclusive) while writing.
pub(crate) const LOCK_FILE: &str = "journal.lock";
/// The durable watermark, rewritten after every fsync.
pub(crate) const WATERMARK_FILE: &str = "journal.watermark";
/// The extension of segment files.
const SEGMENT_EXTENSION: &str = "seg";

/// The file name of segment `number`.
pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.{SEGMENT_EXTENSION}"))
}

/// The segment number a file name stands for, if it is a segment file.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The segment header: magic, version, flags (zero), segment number, CRC32C
/// of the preceding 24 bytes, four zero bytes.
pub(crate) fn encode_segment_header(number: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&number.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was refused.
pub(crate) fn check_segment_header(bytes: &[u8], expected_number: u64) -> Result<(), String> {
    if bytes.len() < SEGMENT_HEADER_LEN as usize {
        return Err(format!(
            "segment header is incomplete ({} of {SEGMENT_HEADER_LEN} bytes)",
            bytes.len()
        ));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err("not a memstate journal segment (bad magic)".to_owned());
    }
    let stored = read_u32(&bytes[24..28]);
    if stored != crc32c::crc32c(&bytes[0..24]) {
        return Err("segment header checksum mismatch".to_owned());
    }
    let version = read_u32(&bytes[8..12]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "segment format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        ));
    }
    let number = read_u64(&bytes[16..24]);
    if number != expected_number {
        return Err(format!(
            "segment header says segment {number} but the file name says {expected_number}"
        ));
    }
    Ok(())
}

/// The checksum of a frame: CRC32C over the little-endian length and the
/// payload. Covering the length makes an all-zero frame header invalid (the
/// CRC32C of nothing is zero), so zero-filled tails never parse as records.
pub(crate) fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

/// Appends one record frame `[len u32 LE][crc u32 LE][payload]` to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    // Callers check payload sizes against the configured limit, which is never
    // above MAX_PAYLOAD_LEN, so the length always fits.
    let len = u32::try_from(payload.len()).unwrap_or(SEAL_MARKER - 1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends the seal marker that ends a segment.
pub(crate) fn encode_seal(out: &mut Vec<u8>) {
    out.extend_from_slice(&SEAL_MARKER.to_le_bytes());
    out.extend_from_slice(&frame_crc(SEAL_MARKER, &[]).to_le_bytes());
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameHeader {
    /// A record of `len` payload bytes whose checksum should be `crc`.
    Record { len: u32, crc: u32 },
    /// A seal whose checksum field is `crc` (valid when it equals the seal CRC).
    Seal { crc: u32 },
}

impl FrameHeader {
    pub(crate) fn decode(bytes: &[u8; FRAME_HEADER_LEN as usize]) -> Self {
        let len = read_u32(&bytes[0..4]);
        let crc = read_u32(&bytes[4..8]);
        if len == SEAL_MARKER {
            Self::Seal { crc }
        } else {
            Self::Record { len, crc }
        }
    }
}

/// Whether a seal's checksum field is right.
pub(crate) fn seal_crc_ok(crc: u32) -> bool {
    crc == frame_crc(SEAL_MARKER, &[])
}

/// The durable watermark: where the fsynced data ends and which record is the
/// last one. Readers never read past `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Watermark {
    /// The end of the durable data: the segment being written and the offset
    /// just past its last durable frame.
    pub end: Position,
    /// The position of the last durable record, `None` while the journal is empty.
    pub last: Option<Position>,
}

impl Watermark {
    /// The watermark of an empty journal whose first segment is `segment`.
    pub(crate) fn empty(segment: u64) -> Self {
        Self {
            end: Position::segment_start(segment),
            last: None,
        }
    }

    /// `[magic "MSWM"][version u32][end.segment u64][end.offset u64]
    /// [last.segment u64][last.offset u64][has_last u32][crc32c u32][16 zero bytes]`.
    pub(crate) fn encode(&self) -> [u8; WATERMARK_LEN] {
        let mut b = [0u8; WATERMARK_LEN];
        b[0..4].copy_from_slice(&WATERMARK_MAGIC);
        b[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.end.segment.to_le_bytes());
        b[16..24].copy_from_slice(&self.end.offset.to_le_bytes());
        let (last, has_last) = match self.last {
            Some(p) => (p, 1u32),
            None => (Position::new(0, 0), 0u32),
        };
        b[24..32].copy_from_slice(&last.segment.to_le_bytes());
        b[32..40].copy_from_slice(&last.offset.to_le_bytes());
        b[40..44].copy_from_slice(&has_last.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a watermark; `None` when it is missing, torn (being rewritten
    /// at this very moment) or of another version.
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 48 || b[0..4] != WATERMARK_MAGIC {
            return None;
        }
        if read_u32(&b[44..48]) != crc32c::crc32c(&b[0..44]) {
            return None;
        }
        if read_u32(&b[4..8]) != FORMAT_VERSION {
            return None;
        }
        let end = Position::new(read_u64(&b[8..16]), read_u64(&b[16..24]));
        let last = match read_u32(&b[40..44]) {
            0 => None,
            1 => Some(Position::new(read_u64(&b[24..32]), read_u64(&b[32..40]))),
            _ => return None,
        };
        Some(Self { end, last })
    }
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_rejects_a_wrong_number() {
        let h = encode_segment_header(7);
        assert!(check_segment_header(&h, 7).is_ok());
        assert!(
            check_segment_header(&h, 8)
                .unwrap_err()
                .contains("segment 7")
        );
        let mut bad = h;
        bad[17] ^= 1;
        assert!(
            check_segment_header(&bad, 7)
                .unwrap_err()
                .contains("checksum")
        );
        assert!(
            check_segment_header(&h[..10], 7)
                .unwrap_err()
                .contains("incomplete")
        );
    }

    #[test]
    fn a_zero_frame_header_is_not_a_valid_empty_record() {
        assert_ne!(frame_crc(0, &[]), 0);
    }

    #[test]
    fn frames_and_seals_decode() {
        let mut out = Vec::new();
        encode_frame(&mut out, b"abc");
        encode_seal(&mut out);
        let mut h = [0u8; 8];
        h.copy_from_slice(&out[0..8]);
        assert_eq!(
            FrameHeader::decode(&h),
            FrameHeader::Record {
                len: 3,
                crc: frame_crc(3, b"abc")
            }
        );
        h.copy_from_slice(&out[11..19]);
        match FrameHeader::decode(&h) {
            FrameHeader::Seal { crc } => assert!(seal_crc_ok(crc)),
            other => panic!("expected a seal, got {other:?}"),
        }
    }

    #[test]
    fn watermark_round_trips_and_detects_tearing() {
        let w = Watermark {
            end: Position::new(2, 4096),
            last: Some(Position::new(2, 4000)),
        };
        let b = w.encode();
        assert_eq!(Watermark::decode(&b), Some(w));
        assert_eq!(
            Watermark::decode(&Watermark::empty(0).encode()),
            Some(Watermark::empty(0))
        );
        let mut torn = b;
        torn[20] ^= 0xff;
        assert_eq!(Watermark::decode(&torn), None);
    }

    #[test]
    fn segment_names_round_trip() {
        let p = segment_path(Path::new("/j"), 12);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000012.seg");
        assert_eq!(parse_segment_name(name), Some(12));
        assert_eq!(parse_segment_name("journal.lock"), None);
        assert_eq!(parse_segment_name(".seg"), None);
        assert_eq!(parse_segment_name("1x.seg"), None);
    }
}
