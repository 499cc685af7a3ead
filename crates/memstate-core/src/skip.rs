//! The operator's way past what the cluster cannot apply.
//!
//! Two lists, configured on every node alike (node-local configuration, not
//! records in the stream: see docs/operations.md for why):
//!
//! - command ids ([`EngineBuilder::skip_commands`](crate::EngineBuilder::skip_commands)):
//!   a command that poisons the model;
//! - whole records ([`EngineBuilder::skip_records`](crate::EngineBuilder::skip_records)):
//!   a record no node can open (a frame of a newer format, bytes that are not a
//!   frame under the `Halt` policy). A [`RecordSkip`] names the record by its
//!   cursor **and** a checksum of its bytes, so an entry passes over exactly the
//!   record the halt reported, on every node, whatever build reads it; an entry
//!   whose checksum does not match the record at its cursor is ignored (with a
//!   warning) and the record is handled as if no entry existed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::envelope::CommandId;
use crate::stream::{Cursor, Record};

/// One record to pass over: its cursor and the CRC32C of its payload.
///
/// Written `CURSOR#CRC` (the checksum as eight hex digits), the form a halt
/// message prints ([`SkipEntry`]; [`HaltReason::UnknownFormat`](crate::HaltReason::UnknownFormat),
/// [`HaltReason::BadRecord`](crate::HaltReason::BadRecord),
/// [`HaltReason::UpgradeRequired`](crate::HaltReason::UpgradeRequired) at an
/// activation) and [`FromStr`] reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordSkip {
    cursor: Cursor,
    crc: u32,
}

impl RecordSkip {
    /// Names the record at `cursor` whose payload has CRC32C `crc`.
    pub fn new(cursor: Cursor, crc: u32) -> Self {
        Self { cursor, crc }
    }

    /// The entry that passes over `record`.
    pub fn of(record: &Record) -> Self {
        Self::new(record.cursor.clone(), crc32c::crc32c(&record.payload))
    }

    /// The record's cursor.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }
}

impl fmt::Display for RecordSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:08x}", self.cursor, self.crc)
    }
}

/// The entry that gets every node past a halt, as the operator configures it:
/// a command id for [`EngineBuilder::skip_commands`](crate::EngineBuilder::skip_commands)
/// or a record for [`EngineBuilder::skip_records`](crate::EngineBuilder::skip_records).
///
/// [`HaltReason::skip`](crate::HaltReason::skip) gives it for every halt a
/// skip can get past, and the halt message prints it in its
/// [`Display`](fmt::Display) form: `skip_commands ["ID"]` or
/// `skip_records ["CURSOR#CRC"]`, the quoted text being what
/// [`CommandId`]'s and [`RecordSkip`]'s [`FromStr`] read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipEntry {
    /// One command, by id: the rest of its record is applied.
    Command(CommandId),
    /// One whole record, every envelope in it.
    Record(RecordSkip),
}

impl fmt::Display for SkipEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command(id) => write!(f, "skip_commands [\"{id}\"]"),
            Self::Record(record) => write!(f, "skip_records [\"{record}\"]"),
        }
    }
}

/// A [`RecordSkip`] that could not be read from text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a record to skip ({0}): expected CURSOR#CRC, as the halt message prints it")]
pub struct ParseRecordSkipError(String);

impl FromStr for RecordSkip {
    type Err = ParseRecordSkipError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The checksum is after the last '#': a cursor may hold one.
        let (cursor, crc) = s
            .rsplit_once('#')
            .ok_or_else(|| ParseRecordSkipError(format!("no '#' in {s:?}")))?;
        if cursor.is_empty() {
            return Err(ParseRecordSkipError(format!("no cursor in {s:?}")));
        }
        if crc.len() != 8 {
            return Err(ParseRecordSkipError(format!(
                "the checksum {crc:?} is not 8 hex digits"
            )));
        }
        let crc = u32::from_str_radix(crc, 16)
            .map_err(|e| ParseRecordSkipError(format!("the checksum {crc:?}: {e}")))?;
        Ok(Self::new(Cursor::new(cursor), crc))
    }
}

/// The operator's skip lists of one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct SkipList {
    pub(crate) commands: HashSet<CommandId>,
    /// Checksum by cursor.
    records: HashMap<Cursor, u32>,
}

impl SkipList {
    pub(crate) fn add_records(&mut self, records: impl IntoIterator<Item = RecordSkip>) {
        self.records
            .extend(records.into_iter().map(|r| (r.cursor, r.crc)));
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = RecordSkip> + '_ {
        self.records
            .iter()
            .map(|(cursor, crc)| RecordSkip::new(cursor.clone(), *crc))
    }

    /// Whether `record` is one the operator named, checksum included. An
    /// entry for its cursor with another checksum is reported and ignored.
    pub(crate) fn skips(&self, record: &Record) -> bool {
        let Some(&crc) = self.records.get(&record.cursor) else {
            return false;
        };
        let found = RecordSkip::of(record);
        if found.crc == crc {
            tracing::warn!(record = %found, "passing over a record listed in skip_records");
            true
        } else {
            tracing::warn!(
                configured = %RecordSkip::new(record.cursor.clone(), crc),
                found = %found,
                "a skip_records entry names this cursor with another checksum: not skipped"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(cursor: &str, payload: &'static [u8]) -> Record {
        Record {
            cursor: Cursor::new(cursor),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn the_printed_form_reads_back() {
        let skip = RecordSkip::of(&record("3:1#7", b"garbage"));
        let text = skip.to_string();
        assert!(text.starts_with("3:1#7#"), "{text}");
        assert_eq!(text.parse::<RecordSkip>(), Ok(skip));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["42", "#0000abcd", "42#abc", "42#0000abcg", "42#00000abcd"] {
            assert!(bad.parse::<RecordSkip>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn only_the_named_record_with_its_checksum_is_skipped() {
        let target = record("7", b"\x00\x01 not a frame");
        let mut list = SkipList::default();
        list.add_records([RecordSkip::of(&target)]);
        assert!(list.skips(&target));
        assert!(!list.skips(&record("7", b"other bytes at the same cursor")));
        assert!(!list.skips(&record("8", b"\x00\x01 not a frame")));
    }
}
