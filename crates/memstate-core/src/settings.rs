//! Replicated settings: the rules every node applying a log must share.
//!
//! They travel in the stream's first record (the Genesis control message). A
//! node whose local settings differ refuses to start: two nodes must never
//! apply the same log under different rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;

/// The newest frame format this build writes and reads (see
/// [`envelope`](crate::envelope)). It lives here, beside the settings that
/// record it, so that settings need nothing from the envelope module.
pub const FORMAT_VERSION: u32 = 1;

/// What to do with a record whose bytes are not a frame at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Report it (log and stats) and go on. Every node sees the same bytes and
    /// skips them alike, so nodes stay identical.
    #[default]
    Skip,
    /// Stop applying; every call returns an error naming the record.
    Halt,
}

/// Who may write commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Every node appends; the stream orders (the default).
    #[default]
    MultiWriter,
    /// Only the elected leader's commands are applied; others are fenced.
    SingleLeader,
}

/// How commands are applied to the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyMode {
    /// Commands mutate the model in place. Contract: a command that returns an
    /// error leaves the model unchanged. A panic poisons the engine.
    #[default]
    Direct,
    /// Each command runs on a clone that replaces the model only on success: an
    /// error or a panic leaves the model untouched, and a panic becomes that
    /// command's error on every node alike. Costs a clone per command.
    Safe,
}

/// The de-duplication window: command ids remembered to drop duplicates.
///
/// It is defined by envelope timestamps, a count and a byte budget, never by
/// the host's clock or allocator, so every node keeps the same window. An id
/// leaves it when it is older than `max_age_ms`, or when keeping it would
/// exceed `max_entries` or `max_bytes`, whichever comes first (oldest first).
/// It must outlast the longest retry horizon of any adapter (librdkafka's
/// `message.timeout.ms` defaults to 300 s): at the default count bound that
/// holds up to about 3,300 commands/s sustained over those 300 s.
///
/// Bytes are *accounted*, the same on every node: [`DedupWindow::ENTRY_BYTES`]
/// per id plus the text of a recorded rejection (a decoder's message, a panic
/// message). Defaults: 10 minutes, 1,000,000 ids, 96 MiB — the count binds
/// first unless rejections carry long texts, and 1,000,000 ids take about
/// 90 MiB of resident memory (see `docs/benchmarks.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupWindow {
    /// Ids are kept at least while younger than this (by envelope timestamp,
    /// relative to the newest timestamp applied), in milliseconds.
    pub max_age_ms: u64,
    /// At most this many ids are kept; the oldest go first.
    pub max_entries: u64,
    /// At most this many accounted bytes are kept; the oldest ids go first.
    /// A Genesis record written before this bound existed reads with the
    /// default, so such a stream opens under the default configuration.
    #[serde(default = "DedupWindow::default_max_bytes")]
    pub max_bytes: u64,
}

impl Default for DedupWindow {
    fn default() -> Self {
        Self {
            max_age_ms: 10 * 60 * 1000,
            max_entries: 1_000_000,
            max_bytes: Self::default_max_bytes(),
        }
    }
}

impl DedupWindow {
    /// Bytes accounted for each id in the window, beside the text of its
    /// rejection if any: the id and its index in the lookup table, the id
    /// and its timestamp in the expiry queue, and the tables' spare room.
    pub const ENTRY_BYTES: u64 = 96;

    /// The default byte budget: 96 MiB.
    pub const fn default_max_bytes() -> u64 {
        96 * 1024 * 1024
    }

    /// The age bound as a duration.
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age_ms)
    }
}

/// The settings carried by the Genesis record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Settings {
    /// The format version the stream was started with: 1 for a JSON stream,
    /// 2 for a stream of a binary codec ([`Codec::format_version`]). Builds
    /// from before codecs know only 1: they refuse a binary stream at its
    /// Genesis record instead of taking its frames for bad records.
    pub format_version: u32,
    /// The de-duplication window.
    pub dedup: DedupWindow,
    /// What to do with bytes that are not a frame.
    pub bad_records: BadRecordPolicy,
    /// Who may write.
    pub write_mode: WriteMode,
    /// How commands are applied.
    pub apply_mode: ApplyMode,
    /// How commands are encoded in the stream's frames. Chosen when the
    /// stream is created (set it with [`Settings::with_codec`], which also
    /// sets the format version); a stream never mixes codecs. Absent from
    /// the Genesis record of a JSON stream, which keeps the bytes every build
    /// wrote before codecs existed; absent reads as JSON.
    #[serde(default, skip_serializing_if = "Codec::is_json")]
    pub command_codec: Codec,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            dedup: DedupWindow::default(),
            bad_records: BadRecordPolicy::default(),
            write_mode: WriteMode::default(),
            apply_mode: ApplyMode::default(),
            command_codec: Codec::default(),
        }
    }
}

impl Settings {
    /// These settings with commands encoded in `codec`, at the format
    /// version that codec is recorded with.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.command_codec = codec;
        self.format_version = codec.format_version();
        self
    }

    /// Describes each field that differs from `other`, empty when equal.
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        let mut out = Vec::new();
        if self.format_version != other.format_version {
            out.push(format!(
                "format_version: {} vs {}",
                self.format_version, other.format_version
            ));
        }
        if self.dedup != other.dedup {
            out.push(format!("dedup: {:?} vs {:?}", self.dedup, other.dedup));
        }
        if self.bad_records != other.bad_records {
            out.push(format!(
                "bad_records: {:?} vs {:?}",
                self.bad_records, other.bad_records
            ));
        }
        if self.write_mode != other.write_mode {
            out.push(format!(
                "write_mode: {:?} vs {:?}",
                self.write_mode, other.write_mode
            ));
        }
        if self.command_codec != other.command_codec {
            out.push(format!(
                "command_codec: {} vs {} (a stream keeps the codec it was created with)",
                self.command_codec, other.command_codec
            ));
        }
        if self.apply_mode != other.apply_mode {
            out.push(format!(
                "apply_mode: {:?} vs {:?}",
                self.apply_mode, other.apply_mode
            ));
        }
        out
    }
}
