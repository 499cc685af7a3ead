//! `memstate history`: a stream's commands as JSON lines.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use memstate_core::history::{Fate, History, HistoryEntry};
use serde_json::{Value, json};

use crate::CliError;
use crate::backend::{BackendArgs, BackendKind};

/// Prints the commands of an existing stream, one JSON line each: applied
/// index, time, origin node, command id, epoch, the model version it was
/// written at, what every engine did with it (applied, duplicate, fenced) and
/// the command as it was logged. Reads only;
/// the stream is never written.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The stream to read (`--dir` for the file journal, `--stream-name` for
    /// the others).
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Start here: an applied index (`120`) or a time (RFC 3339,
    /// `2026-12-02T10:00:00Z`), inclusive.
    #[arg(long, value_name = "INDEX|TIME")]
    pub from: Option<Bound>,
    /// Stop here: an applied index or a time, inclusive.
    #[arg(long, value_name = "INDEX|TIME")]
    pub to: Option<Bound>,
    /// Keep following the tail instead of stopping at the stream's head.
    #[arg(long)]
    pub follow: bool,
}

/// One end of a range: an applied index or a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// An applied index (the number `execute` returns).
    Index(u64),
    /// Milliseconds since the Unix epoch (the envelope's timestamp).
    TimeMs(u64),
}

impl std::str::FromStr for Bound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(index) = s.parse::<u64>() {
            return Ok(Bound::Index(index));
        }
        let time = humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("`{s}` is neither an applied index nor an RFC 3339 time ({e})"))?;
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("`{s}` is before 1970"))?
            .as_millis();
        Ok(Bound::TimeMs(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

impl Bound {
    /// Whether an entry lies at or after this bound.
    fn admits_from<C>(self, e: &HistoryEntry<C>) -> bool {
        match self {
            Bound::Index(i) => e.index >= i,
            Bound::TimeMs(t) => e.timestamp_ms >= t,
        }
    }

    /// Whether an entry lies after this bound (so reading can stop).
    fn passed_by<C>(self, e: &HistoryEntry<C>) -> bool {
        match self {
            Bound::Index(i) => e.index > i,
            Bound::TimeMs(t) => e.timestamp_ms > t,
        }
    }
}

/// One entry as printed.
pub fn to_json(e: &HistoryEntry<Value>) -> Value {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(e.timestamp_ms);
    let fate = match &e.fate {
        Fate::Applied => json!("applied"),
        Fate::Duplicate { first_index } => json!({ "duplicate_of": first_index }),
        Fate::Fenced { leader, epoch } => json!({
            "fenced": { "leader": leader.as_ref().map(|l| l.to_string()), "epoch": epoch }
        }),
        other => json!(format!("{other:?}")),
    };
    json!({
        "index": e.index,
        "time": humantime::format_rfc3339_millis(time).to_string(),
        "node": e.origin.to_string(),
        "command_id": e.command_id.to_string(),
        "epoch": e.epoch,
        "model_version": e.model_version,
        "fate": fate,
        "command": e.command,
    })
}

/// Runs the listing; returns how many commands were printed.
pub async fn run(args: HistoryArgs) -> Result<u64, CliError> {
    match args.backend.backend {
        BackendKind::File if args.backend.dir.is_none() => {
            return Err(CliError::Backend(
                "memstate history reads an existing journal: name it with --dir".into(),
            ));
        }
        BackendKind::File => {}
        _ if args.backend.stream_name.is_none() => {
            return Err(CliError::Backend(
                "memstate history reads an existing stream: name it with --stream-name".into(),
            ));
        }
        _ => {}
    }
    let opened = args.backend.open().await?;
    let stream = opened.client().await?;
    let history = History::<Value>::open(stream).await?;
    let mut history = if args.follow {
        history
    } else {
        history.until_head().await?
    };
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    while let Some(entry) = history.next().await? {
        if args.to.is_some_and(|to| to.passed_by(&entry)) {
            break;
        }
        if args.from.is_some_and(|from| !from.admits_from(&entry)) {
            continue;
        }
        let mut out = stdout.lock();
        writeln!(out, "{}", to_json(&entry))
            .and_then(|()| if args.follow { out.flush() } else { Ok(()) })
            .map_err(CliError::Io)?;
        printed += 1;
    }
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_is_an_index_or_a_time() {
        assert_eq!("42".parse::<Bound>(), Ok(Bound::Index(42)));
        assert_eq!(
            "1970-01-01T00:00:01.500Z".parse::<Bound>(),
            Ok(Bound::TimeMs(1500))
        );
        let err = "yesterday".parse::<Bound>().unwrap_err();
        assert!(
            err.contains("neither an applied index nor an RFC 3339 time"),
            "{err}"
        );
    }
}
