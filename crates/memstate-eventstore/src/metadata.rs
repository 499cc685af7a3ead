//! The stream's metadata, read when the stream is first opened. KurrentDB
//! deletes events a stream's metadata tells it to (`$maxAge`, `$maxCount`,
//! `$tb`); a memstate log that loses its beginning cannot rebuild state, so
//! such a stream is refused unless
//! [`EventStoreConfig::accept_trimming_metadata`](crate::EventStoreConfig::accept_trimming_metadata)
//! is set.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use kurrentdb::StreamMetadata;
use memstate_core::StreamError;

/// What a stream's metadata lets the server delete.
///
/// Read by [`EventStoreStream::connect`](crate::EventStoreStream::connect)
/// (or the first subscription of a lazily connected stream) and reported by
/// [`EventStoreStream::history_limits`](crate::EventStoreStream::history_limits).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryLimits {
    /// `$maxAge`: events older than this are deleted.
    pub max_age: Option<Duration>,
    /// `$maxCount`: only this many of the newest events are kept.
    pub max_count: Option<u64>,
    /// `$tb` (truncate before): events with a lower revision are deleted.
    /// A `$tb` of 0 deletes nothing and is reported as `None`.
    pub truncate_before: Option<u64>,
}

impl HistoryLimits {
    /// The limits set by `metadata`, in the client's own type.
    ///
    /// The server stores and enforces `$maxAge` in seconds, but the
    /// `kurrentdb` 1.2 client reads the number as milliseconds into
    /// `StreamMetadata::max_age`; the number itself is taken here as the
    /// seconds it is.
    pub(crate) fn of(metadata: &StreamMetadata) -> Self {
        Self {
            max_age: metadata.max_age.map(|as_read| {
                Duration::from_secs(u64::try_from(as_read.as_millis()).unwrap_or(u64::MAX))
            }),
            max_count: metadata.max_count,
            truncate_before: metadata.truncate_before.filter(|&revision| revision > 0),
        }
    }

    /// `true` when the server deletes nothing of this stream on its own.
    pub fn keeps_everything(&self) -> bool {
        self.max_age.is_none() && self.max_count.is_none() && self.truncate_before.is_none()
    }
}

impl fmt::Display for HistoryLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(age) = self.max_age {
            parts.push(format!(
                "$maxAge = {} (seconds: events older than that are deleted)",
                age.as_secs()
            ));
        }
        if let Some(count) = self.max_count {
            parts.push(format!(
                "$maxCount = {count} (only the newest {count} events are kept)"
            ));
        }
        if let Some(revision) = self.truncate_before {
            parts.push(format!(
                "$tb = {revision} (events before revision {revision} are deleted)"
            ));
        }
        if parts.is_empty() {
            f.write_str("no $maxAge, $maxCount or $tb")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The last event of the stream's metadata stream (`$$<stream>`), as read.
#[derive(Debug)]
pub(crate) enum MetadataRead {
    /// No metadata was ever set.
    Absent,
    /// The data of the newest metadata event.
    Found(Bytes),
    /// The metadata could not be read (the reason says why).
    Unreadable(String),
}

/// Decides whether a stream with this metadata may be used: `Ok(Some)` with
/// the limits read, `Ok(None)` when they could not be read but that was
/// accepted, `Err(Misconfigured)` otherwise.
pub(crate) fn decide(
    stream: &str,
    read: MetadataRead,
    accept: bool,
) -> Result<Option<HistoryLimits>, StreamError> {
    let metadata = match read {
        MetadataRead::Absent => return Ok(Some(HistoryLimits::default())),
        MetadataRead::Found(data) => match serde_json::from_slice::<StreamMetadata>(&data) {
            Ok(metadata) => metadata,
            Err(e) => {
                let why = format!("its metadata (stream \"$${stream}\") does not parse: {e}");
                return unverified(stream, &why, accept);
            }
        },
        MetadataRead::Unreadable(why) => return unverified(stream, &why, accept),
    };
    let limits = HistoryLimits::of(&metadata);
    if limits.keeps_everything() {
        return Ok(Some(limits));
    }
    if accept {
        tracing::warn!(
            stream,
            %limits,
            "the stream's metadata lets KurrentDB delete events (accepted by \
             accept_trimming_metadata): every node must keep a snapshot newer than what is deleted"
        );
        return Ok(Some(limits));
    }
    Err(StreamError::Misconfigured {
        name: stream.to_owned(),
        reason: format!(
            "the stream's metadata lets KurrentDB delete events: {limits}. A memstate log must keep \
             every event, or a node without a newer snapshot cannot rebuild its state. Remove these \
             settings from the stream's metadata (write new metadata without $maxAge, $maxCount and \
             $tb; events a scavenge already removed do not come back), or, if every node keeps \
             snapshots newer than what is deleted, set accept_trimming_metadata in \
             EventStoreConfig (memstate CLI: --eventstore-accept-trimming-metadata)"
        ),
    })
}

fn unverified(stream: &str, why: &str, accept: bool) -> Result<Option<HistoryLimits>, StreamError> {
    if accept {
        tracing::warn!(
            stream,
            why,
            "cannot check whether the stream's metadata lets KurrentDB delete events; going on \
             (accept_trimming_metadata)"
        );
        return Ok(None);
    }
    Err(StreamError::Misconfigured {
        name: stream.to_owned(),
        reason: format!(
            "cannot check whether the stream's metadata lets KurrentDB delete events ($maxAge, \
             $maxCount, $tb): {why}. Give the user metadata read access to the stream ($mr in its \
             ACL), or set accept_trimming_metadata in EventStoreConfig (memstate CLI: \
             --eventstore-accept-trimming-metadata) to start without the check"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(metadata: &StreamMetadata) -> MetadataRead {
        match serde_json::to_vec(metadata) {
            Ok(bytes) => MetadataRead::Found(Bytes::from(bytes)),
            Err(e) => MetadataRead::Unreadable(e.to_string()),
        }
    }

    fn refusal(read: MetadataRead) -> String {
        match decide("orders", read, false) {
            Err(StreamError::Misconfigured { name, reason }) => {
                assert_eq!(name, "orders");
                reason
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_stream_without_metadata_keeps_everything() {
        let limits = decide("orders", MetadataRead::Absent, false);
        assert_eq!(limits.ok().flatten(), Some(HistoryLimits::default()));
    }

    #[test]
    fn metadata_that_deletes_nothing_is_accepted() {
        let metadata = StreamMetadata::builder()
            .cache_control(Duration::from_secs(10))
            .truncate_before(0)
            .insert_custom_property("owner", "billing")
            .build();
        let limits = decide("orders", found(&metadata), false).ok().flatten();
        assert!(limits.is_some_and(|l| l.keeps_everything()));
    }

    #[test]
    fn each_trimming_setting_is_refused_naming_it_and_the_way_out() {
        let cases = [
            (
                StreamMetadata::builder().max_count(1000).build(),
                "$maxCount = 1000",
            ),
            (
                StreamMetadata::builder().truncate_before(17).build(),
                "$tb = 17",
            ),
            (
                StreamMetadata::builder()
                    .max_age(Duration::from_secs(3600))
                    .build(),
                "$maxAge",
            ),
        ];
        for (metadata, named) in cases {
            let reason = refusal(found(&metadata));
            assert!(reason.contains(named), "{reason}");
            assert!(reason.contains("accept_trimming_metadata"), "{reason}");
            assert!(
                reason.contains("--eventstore-accept-trimming-metadata"),
                "{reason}"
            );
            assert!(reason.contains("Remove these settings"), "{reason}");
        }
    }

    #[test]
    fn accepted_trimming_is_reported_with_its_values() {
        let metadata = StreamMetadata::builder()
            .max_count(50)
            .truncate_before(3)
            .build();
        let limits = decide("orders", found(&metadata), true).ok().flatten();
        assert_eq!(
            limits,
            Some(HistoryLimits {
                max_age: None,
                max_count: Some(50),
                truncate_before: Some(3),
            })
        );
    }

    #[test]
    fn max_age_is_read_in_the_seconds_the_server_writes() {
        // As the server stores it: `$maxAge` in seconds (one day here).
        let stored = Bytes::from_static(br#"{"$maxAge":86400,"$acl":"$userStreamAcl"}"#);
        let limits = decide("orders", MetadataRead::Found(stored.clone()), true)
            .ok()
            .flatten();
        assert_eq!(
            limits.and_then(|l| l.max_age),
            Some(Duration::from_secs(86_400))
        );
        let reason = refusal(MetadataRead::Found(stored));
        assert!(reason.contains("$maxAge = 86400 (seconds"), "{reason}");
    }

    #[test]
    fn unreadable_metadata_is_refused_unless_accepted() {
        let reason = refusal(MetadataRead::Unreadable("access denied".to_owned()));
        assert!(reason.contains("access denied"), "{reason}");
        assert!(reason.contains("$mr"), "{reason}");
        let reason = refusal(MetadataRead::Found(Bytes::from_static(b"not json")));
        assert!(reason.contains("does not parse"), "{reason}");
        assert!(matches!(
            decide(
                "orders",
                MetadataRead::Unreadable("access denied".to_owned()),
                true
            ),
            Ok(None)
        ));
    }
}
