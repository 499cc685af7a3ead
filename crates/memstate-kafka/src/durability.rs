//! [`Durability`]: what an acknowledged append survives, judged at connect
//! from the topic's replication factor and `min.insync.replicas`.
//!
//! The producer runs with `acks=all`: the leader acknowledges once every
//! replica in the in-sync set has the record. That set may shrink to the
//! leader alone unless `min.insync.replicas` forbids it (the broker then
//! refuses the write instead), so an acknowledged record is on at least
//! `min.insync.replicas` brokers — never more than the replication factor —
//! and survives the loss of one fewer. `unclean.leader.election.enable=true`
//! lets a replica that missed acknowledged records become leader, which
//! voids that promise.

use std::fmt;

use memstate_core::StreamError;

use crate::config::KafkaConfig;

/// What an acknowledged append survives on this topic, from the settings
/// read at connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durability {
    /// Replicas of the topic's only partition.
    pub replication_factor: usize,
    /// The topic's effective `min.insync.replicas`; `None` when the broker
    /// did not tell (no `DescribeConfigs` permission, no answer in time).
    pub min_insync_replicas: Option<usize>,
    /// The topic's effective `unclean.leader.election.enable`; `None` when
    /// unknown.
    pub unclean_leader_election: Option<bool>,
}

impl Durability {
    /// How many brokers may be lost without losing an acknowledged record;
    /// `None` when the settings could not be read.
    pub fn broker_losses_survived(&self) -> Option<usize> {
        let min_insync = self.min_insync_replicas?;
        if self.unclean_leader_election? {
            return Some(0);
        }
        Some(min_insync.min(self.replication_factor).saturating_sub(1))
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rf = self.replication_factor;
        match (self.min_insync_replicas, self.broker_losses_survived()) {
            (Some(m), Some(0)) if self.unclean_leader_election == Some(true) => write!(
                f,
                "replication factor {rf}, min.insync.replicas {m}, unclean.leader.election.enable=true: \
                 an acknowledged record can be lost when a replica that missed it is elected leader"
            ),
            (Some(m), Some(0)) => write!(
                f,
                "replication factor {rf}, min.insync.replicas {m}: an acknowledged record may be on one \
                 broker only and is lost with that broker's disk"
            ),
            (Some(m), Some(n)) => write!(
                f,
                "replication factor {rf}, min.insync.replicas {m}: an acknowledged record is on at least \
                 {} brokers and survives the loss of {n}",
                n + 1
            ),
            _ => write!(
                f,
                "replication factor {rf}, min.insync.replicas unknown (the topic's configuration could \
                 not be read): what an acknowledged record survives is not known"
            ),
        }
    }
}

/// Warns about (or, with [`KafkaConfig::strict_durability`], refuses) a
/// topic on which an acknowledged record does not survive one broker loss.
pub(crate) fn check(config: &KafkaConfig, durability: Durability) -> Result<(), StreamError> {
    if durability.broker_losses_survived().is_some_and(|n| n >= 1) {
        tracing::debug!(topic = %config.topic, %durability, "Kafka topic durability");
        return Ok(());
    }
    let advice = "for acks=all to mean \"survives one broker\", use replication factor 3 (at least 2), \
                  min.insync.replicas=2 and unclean.leader.election.enable=false";
    if config.strict_durability {
        return Err(StreamError::Misconfigured {
            name: config.topic.clone(),
            reason: format!("{durability}; {advice} (strict_durability is set)"),
        });
    }
    tracing::warn!(topic = %config.topic, %durability, "{advice}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(rf: usize, min_insync: Option<usize>, unclean: Option<bool>) -> Durability {
        Durability {
            replication_factor: rf,
            min_insync_replicas: min_insync,
            unclean_leader_election: unclean,
        }
    }

    #[test]
    fn three_replicas_with_two_in_sync_survive_one_broker() {
        assert_eq!(d(3, Some(2), Some(false)).broker_losses_survived(), Some(1));
        assert_eq!(d(5, Some(3), Some(false)).broker_losses_survived(), Some(2));
    }

    #[test]
    fn one_in_sync_replica_survives_nothing_whatever_the_replication() {
        assert_eq!(d(3, Some(1), Some(false)).broker_losses_survived(), Some(0));
        assert_eq!(d(1, Some(1), Some(false)).broker_losses_survived(), Some(0));
        // min.insync above the replication factor refuses writes; what is
        // acknowledged is still on every replica.
        assert_eq!(d(1, Some(2), Some(false)).broker_losses_survived(), Some(0));
        assert_eq!(d(2, Some(2), Some(false)).broker_losses_survived(), Some(1));
    }

    #[test]
    fn unclean_leader_election_voids_the_promise() {
        assert_eq!(d(3, Some(2), Some(true)).broker_losses_survived(), Some(0));
        assert!(
            d(3, Some(2), Some(true))
                .to_string()
                .contains("unclean.leader.election.enable=true")
        );
    }

    #[test]
    fn unknown_settings_promise_nothing() {
        assert_eq!(d(3, None, Some(false)).broker_losses_survived(), None);
        assert!(d(3, None, None).to_string().contains("not known"));
    }

    #[test]
    fn strict_setting_refuses_and_default_only_warns() {
        let weak = d(1, Some(1), Some(false));
        let lenient = KafkaConfig::new("b:9092", "t");
        assert!(check(&lenient, weak).is_ok());
        let strict = lenient.with_strict_durability(true);
        let err = check(&strict, weak).unwrap_err();
        assert!(
            matches!(&err, StreamError::Misconfigured { reason, .. }
                if reason.contains("min.insync.replicas=2") && reason.contains("one broker only")),
            "{err}"
        );
        assert!(check(&strict, d(3, Some(2), Some(false))).is_ok());
        assert!(
            check(&strict, d(3, None, None)).is_err(),
            "unknown is not enough when strict"
        );
    }
}
