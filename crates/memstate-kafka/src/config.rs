//! [`KafkaConfig`]: where the topic is, how to reach it, and the limits.
//!
//! The adapter sets the client properties that its guarantees rest on
//! (idempotent producer with `acks=all`, no group membership, no automatic topic
//! creation, no silent offset reset). Every other librdkafka property — TLS,
//! SASL, tuning — passes through [`KafkaConfig::properties`] to the producer,
//! the consumers and the admin client alike.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use memstate_core::StreamError;
use rdkafka::ClientConfig;

/// Properties the adapter sets itself, with the value its guarantees need.
///
/// A user property with the same key and another value is refused by
/// [`KafkaConfig::validate`] instead of being silently overridden: `acks=1`,
/// say, would make `append` return before the record is durable.
const RESERVED: &[(&str, &str, &str)] = &[
    (
        "enable.idempotence",
        "true",
        "appends must not duplicate or reorder records on retry",
    ),
    (
        "acks",
        "all",
        "an append returns only when every in-sync replica has the record",
    ),
    (
        "enable.auto.commit",
        "false",
        "subscriptions seek to their own position and commit nothing",
    ),
    (
        "enable.auto.offset.store",
        "false",
        "subscriptions seek to their own position and commit nothing",
    ),
    (
        "auto.offset.reset",
        "error",
        "a position that no longer exists must fail, not skip to another one",
    ),
    (
        "allow.auto.create.topics",
        "false",
        "a missing topic is an error, never created by a metadata lookup",
    ),
    (
        "isolation.level",
        "read_committed",
        "aborted transactional records are never applied",
    ),
    (
        "enable.partition.eof",
        "false",
        "a subscription follows the tail instead of reporting its end",
    ),
];

/// Keys owned by dedicated [`KafkaConfig`] fields.
const FIELD_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "KafkaConfig::bootstrap_servers"),
    ("message.timeout.ms", "KafkaConfig::delivery_timeout"),
    ("delivery.timeout.ms", "KafkaConfig::delivery_timeout"),
    (
        "transactional.id",
        "nothing: the adapter does not use transactions",
    ),
];

/// How to reach one memstate stream: a single-partition Kafka topic.
///
/// Build it with [`KafkaConfig::new`] and the `with_*` methods; the fields are
/// public so that a caller may also read or adjust them.
///
/// ```
/// use std::time::Duration;
/// use memstate_kafka::KafkaConfig;
///
/// let config = KafkaConfig::new("127.0.0.1:9092", "orders")
///     .with_topic_creation(3)
///     .with_property("security.protocol", "SASL_PLAINTEXT")
///     .with_property("sasl.mechanism", "PLAIN")
///     .with_operation_timeout(Duration::from_secs(10));
/// assert!(config.create_topic);
/// assert_eq!(config.replication_factor, 3);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of one or more brokers.
    pub bootstrap_servers: String,
    /// The topic that holds the stream. It must have exactly one partition.
    pub topic: String,
    /// librdkafka properties applied to every client (producer, consumers,
    /// admin): TLS, SASL, client id, tuning. See
    /// [`KafkaConfig::validate`] for the few keys the adapter owns.
    pub properties: BTreeMap<String, String>,
    /// Create the topic on connect when it does not exist (one partition,
    /// infinite retention). Off by default: a typo in a topic name should not
    /// start a new, empty history.
    pub create_topic: bool,
    /// Replication factor of a topic created by this adapter; `-1` leaves it
    /// to the broker's `default.replication.factor`.
    pub replication_factor: i32,
    /// The largest payload an append accepts, in bytes. Larger records are
    /// refused before any I/O. See [`KafkaConfig::DEFAULT_MAX_RECORD_SIZE`].
    pub max_record_size: usize,
    /// Bound on every request that is not an append: metadata, watermarks,
    /// topic administration, and the liveness check of an idle subscription.
    pub operation_timeout: Duration,
    /// How long an append may wait for the broker's acknowledgement
    /// (librdkafka's `message.timeout.ms`). A record that times out may still
    /// have been written: the append then fails as
    /// [`StreamError::Ambiguous`].
    pub delivery_timeout: Duration,
    /// Refuse, at connect, a topic on which an acknowledged record does not
    /// survive the loss of one broker (replication factor below 2,
    /// `min.insync.replicas` below 2, or unclean leader election), or whose
    /// settings cannot be read. Off by default: such a topic draws a warning
    /// (a single-broker development cluster is fine for development). See
    /// [`crate::Durability`].
    pub strict_durability: bool,
}

impl KafkaConfig {
    /// 1,000,000 bytes: the default `message.max.bytes` of librdkafka and
    /// (less about 48 KiB of headroom for batch overhead) of Kafka brokers.
    ///
    /// It is deliberately not 1 MiB: a broker's default limit of 1,048,588
    /// bytes applies to the whole record batch, so a 1 MiB payload plus its
    /// framing would be refused by the broker after it was sent.
    pub const DEFAULT_MAX_RECORD_SIZE: usize = 1_000_000;
    /// Default [`KafkaConfig::operation_timeout`]: 30 seconds.
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`KafkaConfig::delivery_timeout`]: 30 seconds (librdkafka's own
    /// default is 300 s, which would let a dead broker hang a writer for five
    /// minutes).
    pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

    /// A configuration for `topic` on the cluster reached through
    /// `bootstrap_servers`, with the defaults: the topic must exist, records up
    /// to [`Self::DEFAULT_MAX_RECORD_SIZE`], 30-second timeouts.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            properties: BTreeMap::new(),
            create_topic: false,
            replication_factor: -1,
            max_record_size: Self::DEFAULT_MAX_RECORD_SIZE,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            delivery_timeout: Self::DEFAULT_DELIVERY_TIMEOUT,
            strict_durability: false,
        }
    }

    /// Sets [`KafkaConfig::strict_durability`].
    pub fn with_strict_durability(mut self, strict: bool) -> Self {
        self.strict_durability = strict;
        self
    }

    /// Sets one librdkafka property on every client.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Creates the topic on connect if it is missing, with this replication
    /// factor (`-1`: the broker's default).
    pub fn with_topic_creation(mut self, replication_factor: i32) -> Self {
        self.create_topic = true;
        self.replication_factor = replication_factor;
        self
    }

    /// Sets [`KafkaConfig::max_record_size`].
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// Sets [`KafkaConfig::operation_timeout`].
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets [`KafkaConfig::delivery_timeout`].
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Checks the configuration without contacting a broker.
    ///
    /// # Errors
    ///
    /// [`StreamError::Misconfigured`] when the bootstrap list or topic name is
    /// empty, the topic name is not a legal Kafka name, a timeout is zero or
    /// out of librdkafka's range, the record limit is zero, or a property
    /// contradicts what the adapter's guarantees need (for example `acks=1`)
    /// or belongs to a dedicated field (for example `bootstrap.servers`).
    pub fn validate(&self) -> Result<(), StreamError> {
        let bad = |reason: String| StreamError::Misconfigured {
            name: self.topic.clone(),
            reason,
        };
        if self.bootstrap_servers.trim().is_empty() {
            return Err(bad("bootstrap_servers is empty".to_owned()));
        }
        check_topic_name(&self.topic).map_err(bad)?;
        if self.max_record_size == 0 {
            return Err(bad("max_record_size is 0".to_owned()));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err(bad(format!(
                "replication_factor {} is neither positive nor -1 (broker default)",
                self.replication_factor
            )));
        }
        for (what, timeout) in [
            ("operation_timeout", self.operation_timeout),
            ("delivery_timeout", self.delivery_timeout),
        ] {
            if timeout.is_zero() {
                return Err(bad(format!("{what} is zero")));
            }
            // librdkafka takes timeouts as i32 milliseconds.
            if timeout.as_millis() > i32::MAX as u128 {
                return Err(bad(format!(
                    "{what} of {timeout:?} is longer than librdkafka accepts"
                )));
            }
        }
        for (key, value) in &self.properties {
            if let Some((_, required, why)) = RESERVED.iter().find(|(k, _, _)| k == key)
                && !same_value(key, value, required)
            {
                return Err(bad(format!(
                    "property {key}={value} is not allowed: memstate-kafka sets {key}={required} because {why}"
                )));
            }
            if let Some((_, field)) = FIELD_KEYS.iter().find(|(k, _)| k == key) {
                return Err(bad(format!(
                    "property {key} is not allowed here; it is set by {field}"
                )));
            }
        }
        Ok(())
    }

    /// The properties every client gets: bootstrap, the user's, and the
    /// guarantees.
    fn base_client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("client.id", format!("memstate-{}", self.topic));
        config.set("allow.auto.create.topics", "false");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Producer: idempotent, `acks=all`, bounded delivery time, a message
    /// size limit that admits [`KafkaConfig::max_record_size`].
    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut config = self.base_client_config();
        config.set("enable.idempotence", "true");
        config.set("acks", "all");
        config.set("message.timeout.ms", millis(self.delivery_timeout));
        if !self.properties.contains_key("message.max.bytes") {
            config.set(
                "message.max.bytes",
                message_max_bytes(self.max_record_size).to_string(),
            );
        }
        config
    }

    /// Consumer: assigned to partition 0 and positioned by the adapter; no
    /// group membership, no commits, no silent reset, transactional aborts
    /// hidden.
    pub(crate) fn consumer_config(&self) -> ClientConfig {
        let mut config = self.base_client_config();
        // librdkafka refuses assign() without a group id ("Unknown group"),
        // though an assigned consumer never joins the group and, with commits
        // off, leaves nothing in it. A user may pick the name (ACLs).
        if !self.properties.contains_key("group.id") {
            config.set("group.id", format!("memstate-{}", self.topic));
        }
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        config.set("auto.offset.reset", "error");
        config.set("isolation.level", "read_committed");
        config.set("enable.partition.eof", "false");
        config
    }

    /// Admin client (librdkafka builds it on a producer handle).
    pub(crate) fn admin_config(&self) -> ClientConfig {
        self.base_client_config()
    }
}

/// librdkafka's `message.max.bytes` for a payload limit: at least its own
/// default, and room for the record's framing above the payload.
pub(crate) fn message_max_bytes(max_record_size: usize) -> usize {
    max_record_size
        .saturating_add(4096)
        .clamp(1_000_000, 1_000_000_000)
}

pub(crate) fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// Kafka's rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic name is empty".to_owned());
    }
    if topic.len() > 249 {
        return Err(format!(
            "topic name is {} characters long; Kafka allows 249",
            topic.len()
        ));
    }
    if topic == "." || topic == ".." {
        return Err(format!("topic name {topic:?} is not allowed by Kafka"));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name contains {c:?}; Kafka allows only a-z A-Z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Compares a user value with the required one the way librdkafka would
/// read it (`acks=-1` is `acks=all`, booleans ignore case).
fn same_value(key: &str, value: &str, required: &str) -> bool {
    let value = value.trim();
    value.eq_ignore_ascii_case(required) || (key == "acks" && value == "-1")
}

/// Property keys whose values must not appear in logs or debug output.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "key.pem",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Properties carry SASL passwords and TLS keys: print the keys only.
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field("properties", &properties)
            .field("create_topic", &self.create_topic)
            .field("replication_factor", &self.replication_factor)
            .field("max_record_size", &self.max_record_size)
            .field("operation_timeout", &self.operation_timeout)
            .field("delivery_timeout", &self.delivery_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaConfig {
        KafkaConfig::new("127.0.0.1:9092", "memstate-test")
    }

    #[test]
    fn defaults_need_an_existing_topic_and_bound_every_wait() {
        let c = config();
        assert!(!c.create_topic);
        assert_eq!(c.max_record_size, 1_000_000);
        assert_eq!(c.operation_timeout, Duration::from_secs(30));
        assert_eq!(c.delivery_timeout, Duration::from_secs(30));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn producer_is_idempotent_with_acks_all_and_bounded_delivery() {
        let c = config().with_delivery_timeout(Duration::from_secs(7));
        let p = c.producer_config();
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("message.timeout.ms"), Some("7000"));
        assert_eq!(p.get("allow.auto.create.topics"), Some("false"));
    }

    #[test]
    fn consumer_commits_nothing_and_never_resets_silently() {
        let k = config().consumer_config();
        assert_eq!(k.get("group.id"), Some("memstate-memstate-test"));
        assert_eq!(k.get("enable.auto.commit"), Some("false"));
        assert_eq!(k.get("auto.offset.reset"), Some("error"));
        assert_eq!(k.get("allow.auto.create.topics"), Some("false"));
        assert_eq!(k.get("isolation.level"), Some("read_committed"));
    }

    #[test]
    fn user_properties_reach_every_client() {
        let c = config()
            .with_property("security.protocol", "SASL_SSL")
            .with_property("sasl.password", "hunter2");
        for client in [c.producer_config(), c.consumer_config(), c.admin_config()] {
            assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(client.get("sasl.password"), Some("hunter2"));
        }
    }

    #[test]
    fn a_property_that_weakens_durability_is_refused() {
        let err = config().with_property("acks", "1").validate().unwrap_err();
        assert!(matches!(err, StreamError::Misconfigured { .. }), "{err}");
        assert!(err.to_string().contains("acks=all"), "{err}");
        assert!(config().with_property("acks", "-1").validate().is_ok());
        assert!(
            config()
                .with_property("enable.idempotence", "TRUE")
                .validate()
                .is_ok()
        );
        assert!(
            config()
                .with_property("enable.auto.commit", "true")
                .validate()
                .is_err()
        );
        assert!(
            config()
                .with_property("auto.offset.reset", "earliest")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn properties_owned_by_fields_are_refused() {
        for key in [
            "bootstrap.servers",
            "message.timeout.ms",
            "transactional.id",
        ] {
            let err = config().with_property(key, "x").validate().unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn illegal_topic_names_and_zero_limits_are_refused() {
        assert!(KafkaConfig::new("b:1", "").validate().is_err());
        assert!(KafkaConfig::new("b:1", "has space").validate().is_err());
        assert!(KafkaConfig::new("b:1", "..").validate().is_err());
        assert!(KafkaConfig::new("b:1", "x".repeat(250)).validate().is_err());
        assert!(KafkaConfig::new("", "t").validate().is_err());
        assert!(config().with_max_record_size(0).validate().is_err());
        assert!(
            config()
                .with_operation_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(config().with_topic_creation(0).validate().is_err());
        assert!(config().with_topic_creation(-1).validate().is_ok());
    }

    #[test]
    fn message_size_limit_leaves_room_for_framing() {
        assert_eq!(message_max_bytes(1_000), 1_000_000);
        assert_eq!(message_max_bytes(1_000_000), 1_004_096);
        assert_eq!(message_max_bytes(usize::MAX), 1_000_000_000);
        let p = config().with_max_record_size(5_000_000).producer_config();
        assert_eq!(p.get("message.max.bytes"), Some("5004096"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = config()
            .with_property("sasl.password", "hunter2")
            .with_property("sasl.username", "alice");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }
}
