//! [`KinesisConfig`]: which stream, where, with which credentials, and how
//! fast to poll.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use memstate_core::StreamError;

use crate::consumer::ReadMode;
use crate::credentials::KinesisCredentials;
use crate::error::misconfigured;

/// The environment variable that names a Kinesis emulator endpoint for tests
/// (`http://127.0.0.1:14567` with `integration-tests/scripts/kinesis.sh`).
pub const ENDPOINT_ENV: &str = "MEMSTATE_KINESIS_ENDPOINT";

/// The region used with an emulator when none is given.
const EMULATOR_REGION: &str = "us-east-1";

/// How to reach one Kinesis stream and how to read it.
///
/// Build it with [`KinesisConfig::new`] (AWS, default credential and region
/// chains) or [`KinesisConfig::emulator`] (a local emulator), then adjust it
/// with the `with_*` methods or by assigning the public fields.
///
/// # Polling and the shard's read limit
///
/// Kinesis allows **5 `GetRecords` calls per second per shard, shared by every
/// consumer** of the shard. Each subscription polls at most once per
/// [`min_poll_interval`](Self::min_poll_interval) while it is caught up, and
/// backs off to [`max_poll_interval`](Self::max_poll_interval) while the
/// stream is idle. With `n` nodes (each with one subscription) keep
/// `min_poll_interval >= n × 200 ms`; throttled calls back off exponentially
/// anyway, but every throttled call wastes a slot of the shared budget.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KinesisConfig {
    /// The Kinesis stream name (1–128 characters of `a-z A-Z 0-9 _ . -`).
    pub stream_name: String,
    /// The AWS region; `None` uses the default region chain (`AWS_REGION`,
    /// profile files, instance metadata).
    pub region: Option<String>,
    /// An endpoint override, e.g. `http://127.0.0.1:14567` for an emulator.
    pub endpoint_url: Option<String>,
    /// Where the credentials come from.
    pub credentials: KinesisCredentials,
    /// Create the stream (one shard, provisioned mode) when it does not exist,
    /// and wait until it is `ACTIVE`.
    pub create_if_missing: bool,
    /// The shortest pause between two `GetRecords` calls of one subscription
    /// once it has caught up. Default 200 ms.
    pub min_poll_interval: Duration,
    /// The longest pause between two `GetRecords` calls while the stream is
    /// idle. Default 1 s.
    pub max_poll_interval: Duration,
    /// The longest any one Kinesis call may take, SDK retries included.
    /// Default 10 s.
    pub request_timeout: Duration,
    /// The longest a TCP/TLS connection may take to open. Default 3 s.
    pub connect_timeout: Duration,
    /// The longest to wait for a stream to become `ACTIVE` after creating it.
    /// Default 120 s.
    pub create_timeout: Duration,
    /// How long one call may keep being retried while Kinesis throttles it
    /// (`ProvisionedThroughputExceededException`, `LimitExceededException`,
    /// `KMSThrottlingException`), with jittered exponential backoff, before
    /// the throttling is reported as an error. The same budget covers reads
    /// (`GetRecords`, `GetShardIterator`) and writes (`PutRecord`, where it
    /// comes on top of the SDK's own attempts). Default 60 s.
    pub throttle_budget: Duration,
    /// The retention period a stream this adapter creates is given
    /// (`IncreaseStreamRetentionPeriod` right after `CreateStream`). Whole
    /// hours from 24 h to 8760 h (365 days); default the maximum, 8760 h.
    /// Retention beyond 24 h is billed by AWS.
    pub retention_on_create: Duration,
    /// The shortest retention period `connect` accepts on a stream (read with
    /// `DescribeStreamSummary`). Default 8760 h, the maximum: records older
    /// than the retention are deleted by Kinesis, and a node can then start
    /// only from a snapshot newer than the oldest record kept. Lower it to a
    /// window within which every node is sure to write a snapshot.
    pub min_retention: Duration,
    /// Connect to a stream whose retention is below
    /// [`min_retention`](Self::min_retention) anyway, with a warning (the
    /// explicit opt-in). Default `false`: such a stream is refused.
    pub accept_short_retention: bool,
    /// How subscriptions read the shard: `GetRecords` polling (the default)
    /// or enhanced fan-out (`SubscribeToShard` push, one registered consumer
    /// per node). See [`ReadMode`].
    pub read_mode: ReadMode,
}

impl KinesisConfig {
    /// The default [`KinesisConfig::min_poll_interval`].
    pub const DEFAULT_MIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
    /// The default [`KinesisConfig::max_poll_interval`].
    pub const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);
    /// The default [`KinesisConfig::throttle_budget`].
    pub const DEFAULT_THROTTLE_BUDGET: Duration = Duration::from_secs(60);
    /// Kinesis's shortest retention period (and a new stream's), 24 hours.
    pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);
    /// Kinesis's longest retention period, 8760 hours (365 days).
    pub const MAX_RETENTION: Duration = Duration::from_secs(8760 * 3600);

    /// A stream on AWS, reached with the default credential and region chains.
    pub fn new(stream_name: impl Into<String>) -> Self {
        Self {
            stream_name: stream_name.into(),
            region: None,
            endpoint_url: None,
            credentials: KinesisCredentials::DefaultChain,
            create_if_missing: false,
            min_poll_interval: Self::DEFAULT_MIN_POLL_INTERVAL,
            max_poll_interval: Self::DEFAULT_MAX_POLL_INTERVAL,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            create_timeout: Duration::from_secs(120),
            throttle_budget: Self::DEFAULT_THROTTLE_BUDGET,
            retention_on_create: Self::MAX_RETENTION,
            min_retention: Self::MAX_RETENTION,
            accept_short_retention: false,
            read_mode: ReadMode::Polling,
        }
    }

    /// A stream on a local emulator (kinesis-mock) at `endpoint_url`: static
    /// test credentials, region `us-east-1`, the stream created when missing,
    /// and fast polling (the emulator enforces no read limit).
    ///
    /// # Examples
    ///
    /// ```
    /// use memstate_kinesis::KinesisConfig;
    ///
    /// let config = KinesisConfig::emulator("http://127.0.0.1:14567", "orders-test-1");
    /// assert!(config.create_if_missing);
    /// assert_eq!(config.region.as_deref(), Some("us-east-1"));
    /// ```
    pub fn emulator(endpoint_url: impl Into<String>, stream_name: impl Into<String>) -> Self {
        Self {
            region: Some(EMULATOR_REGION.to_owned()),
            endpoint_url: Some(endpoint_url.into()),
            credentials: KinesisCredentials::fixed("memstate-test", "memstate-test"),
            create_if_missing: true,
            min_poll_interval: Duration::from_millis(50),
            max_poll_interval: Duration::from_millis(250),
            create_timeout: Duration::from_secs(30),
            ..Self::new(stream_name)
        }
    }

    /// [`KinesisConfig::emulator`] at the endpoint named by
    /// `MEMSTATE_KINESIS_ENDPOINT` ([`ENDPOINT_ENV`]), or `None` when it is
    /// unset or empty.
    pub fn emulator_from_env(stream_name: impl Into<String>) -> Option<Self> {
        let endpoint = std::env::var(ENDPOINT_ENV)
            .ok()
            .filter(|e| !e.trim().is_empty())?;
        Some(Self::emulator(endpoint.trim(), stream_name))
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets an endpoint override.
    pub fn with_endpoint_url(mut self, endpoint_url: impl Into<String>) -> Self {
        self.endpoint_url = Some(endpoint_url.into());
        self
    }

    /// Sets the credentials.
    pub fn with_credentials(mut self, credentials: KinesisCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Creates the stream when it does not exist.
    pub fn with_create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Sets the shortest and longest pause between `GetRecords` calls.
    pub fn with_poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.min_poll_interval = min;
        self.max_poll_interval = max;
        self
    }

    /// Sets the timeout of each Kinesis call.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the connection timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long to wait for a new stream to become `ACTIVE`.
    pub fn with_create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
        self
    }

    /// Sets how long a throttled call is retried before the throttling is
    /// reported.
    pub fn with_throttle_budget(mut self, budget: Duration) -> Self {
        self.throttle_budget = budget;
        self
    }

    /// Sets the retention period given to a stream this adapter creates
    /// (whole hours, 24 h to 8760 h).
    pub fn with_retention_on_create(mut self, retention: Duration) -> Self {
        self.retention_on_create = retention;
        self
    }

    /// Sets the shortest retention period `connect` accepts. Every node must
    /// then write a snapshot within this window (see the crate docs).
    pub fn with_min_retention(mut self, retention: Duration) -> Self {
        self.min_retention = retention;
        self
    }

    /// Accepts (`true`, with a warning) or refuses (`false`, the default) a
    /// stream whose retention is below [`KinesisConfig::min_retention`].
    pub fn with_short_retention_accepted(mut self, accept: bool) -> Self {
        self.accept_short_retention = accept;
        self
    }

    /// Reads by enhanced fan-out through the consumer `consumer_name`, which
    /// must be stable for this node and unique among the stream's nodes (see
    /// [`ReadMode::EnhancedFanOut`]).
    pub fn with_enhanced_fan_out(mut self, consumer_name: impl Into<String>) -> Self {
        self.read_mode = ReadMode::EnhancedFanOut {
            consumer_name: consumer_name.into(),
        };
        self
    }

    /// Sets how subscriptions read the shard.
    pub fn with_read_mode(mut self, mode: ReadMode) -> Self {
        self.read_mode = mode;
        self
    }

    /// [`KinesisConfig::retention_on_create`] in whole hours.
    pub(crate) fn retention_on_create_hours(&self) -> i32 {
        hours(self.retention_on_create)
    }

    /// [`KinesisConfig::min_retention`] in hours, rounded up.
    pub(crate) fn min_retention_hours(&self) -> i32 {
        let secs = self.min_retention.as_secs();
        i32::try_from(secs.div_ceil(3600)).unwrap_or(i32::MAX)
    }

    /// Checks the settings that need no network.
    ///
    /// # Errors
    ///
    /// [`StreamError::Misconfigured`] for an invalid stream name, a zero or
    /// inverted poll interval, or a zero timeout.
    pub fn validate(&self) -> Result<(), StreamError> {
        let name = &self.stream_name;
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if name.is_empty() || name.len() > 128 || !name.chars().all(valid_char) {
            return Err(misconfigured(
                name,
                "a Kinesis stream name has 1 to 128 characters from a-z, A-Z, 0-9, '_', '.', '-'",
            ));
        }
        if self.min_poll_interval.is_zero() || self.min_poll_interval > self.max_poll_interval {
            return Err(misconfigured(
                name,
                format!(
                    "min_poll_interval ({:?}) must be above zero and at most max_poll_interval ({:?})",
                    self.min_poll_interval, self.max_poll_interval
                ),
            ));
        }
        if let Some(endpoint) = &self.endpoint_url {
            check_endpoint(endpoint).map_err(|reason| misconfigured(name, reason))?;
        }
        if self.request_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.create_timeout.is_zero()
        {
            return Err(misconfigured(name, "timeouts must be above zero"));
        }
        let on_create = self.retention_on_create;
        if on_create < Self::MIN_RETENTION
            || on_create > Self::MAX_RETENTION
            || !on_create.as_secs().is_multiple_of(3600)
            || on_create.subsec_nanos() != 0
        {
            return Err(misconfigured(
                name,
                format!(
                    "retention_on_create ({on_create:?}) must be whole hours from 24 h to 8760 h, \
                     the range Kinesis accepts"
                ),
            ));
        }
        if self.min_retention > Self::MAX_RETENTION {
            return Err(misconfigured(
                name,
                format!(
                    "min_retention ({:?}) is above 8760 h, the longest retention Kinesis offers: no \
                     stream could satisfy it",
                    self.min_retention
                ),
            ));
        }
        self.read_mode
            .validate()
            .map_err(|reason| misconfigured(name, reason))
    }

    /// Builds the SDK client this configuration describes. Useful on its own
    /// to drive the same stream with the raw client (benchmarks, tooling).
    ///
    /// With [`KinesisCredentials::Static`] and a region, the client is built
    /// directly, without the AWS provider chains (nothing is probed); otherwise
    /// the chains of `aws-config` fill in what is missing. Every call gets the
    /// configured timeouts; the SDK's standard retry policy (3 attempts,
    /// throttling backoff) stays on inside that time.
    ///
    /// # Errors
    ///
    /// [`StreamError::Misconfigured`] when no region can be found.
    pub async fn client(&self) -> Result<Client, StreamError> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.request_timeout)
            .operation_timeout(self.request_timeout)
            .build();
        let builder = match (&self.credentials, &self.region) {
            (
                KinesisCredentials::Static {
                    access_key_id,
                    secret_access_key,
                    session_token,
                },
                Some(region),
            ) => aws_sdk_kinesis::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(region.clone()))
                .credentials_provider(Credentials::new(
                    access_key_id.clone(),
                    secret_access_key.clone(),
                    session_token.clone(),
                    None,
                    "memstate-static",
                )),
            (credentials, region) => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let KinesisCredentials::Static {
                    access_key_id,
                    secret_access_key,
                    session_token,
                } = credentials
                {
                    loader = loader.credentials_provider(Credentials::new(
                        access_key_id.clone(),
                        secret_access_key.clone(),
                        session_token.clone(),
                        None,
                        "memstate-static",
                    ));
                }
                let shared = loader.timeout_config(timeouts.clone()).load().await;
                if shared.region().is_none() {
                    return Err(misconfigured(
                        &self.stream_name,
                        "no AWS region: set KinesisConfig::region, AWS_REGION, or a profile region",
                    ));
                }
                aws_sdk_kinesis::config::Builder::from(&shared)
            }
        };
        let mut builder = builder
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard());
        if let Some(endpoint) = &self.endpoint_url {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Ok(Client::from_conf(builder.build()))
    }
}

/// Whole hours of a duration (validated to fit).
fn hours(d: Duration) -> i32 {
    i32::try_from(d.as_secs() / 3600).unwrap_or(i32::MAX)
}

/// The SDK takes the scheme of an endpoint override as the choice of TLS:
/// `https://` is TLS, verified against the platform's trust store (the
/// native roots, which honour `SSL_CERT_FILE` and `SSL_CERT_DIR`);
/// `http://` is plain text, meant for a local emulator. Anything else would
/// only fail at the first call, so it is refused here.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| {
            format!(
                "endpoint_url {endpoint:?} must start with https:// (TLS) or http:// (plain, for a local emulator)"
            )
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("endpoint_url {endpoint:?} names no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_stream_names_are_refused() {
        for bad in ["", "has space", "slash/name", &"x".repeat(129)] {
            let err = KinesisConfig::new(bad).validate().unwrap_err();
            assert!(matches!(err, StreamError::Misconfigured { .. }), "{bad:?}");
        }
        assert!(
            KinesisConfig::new("memstate.orders_v1-test")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn inverted_poll_interval_is_refused() {
        let config = KinesisConfig::new("s")
            .with_poll_interval(Duration::from_secs(2), Duration::from_secs(1));
        assert!(matches!(
            config.validate(),
            Err(StreamError::Misconfigured { .. })
        ));
    }

    #[test]
    fn an_endpoint_chooses_tls_by_its_scheme_and_anything_else_is_refused() {
        for good in [
            "https://kinesis.eu-west-1.amazonaws.com",
            "https://vpce-0abc.kinesis.eu-west-1.vpce.amazonaws.com:443/",
            "http://127.0.0.1:14567",
        ] {
            let config = KinesisConfig::new("s").with_endpoint_url(good);
            assert!(config.validate().is_ok(), "{good}");
        }
        for (bad, expected) in [
            ("127.0.0.1:14567", "https://"),
            ("kinesis.eu-west-1.amazonaws.com", "https://"),
            ("tls://kinesis.example", "https://"),
            ("HTTPS//kinesis.example", "https://"),
            ("https://", "no host"),
            ("https:///path", "no host"),
        ] {
            let err = KinesisConfig::new("s")
                .with_endpoint_url(bad)
                .validate()
                .unwrap_err();
            assert!(matches!(err, StreamError::Misconfigured { .. }), "{bad}");
            assert!(err.to_string().contains(expected), "{bad}: {err}");
        }
    }

    /// The first bytes the client sends to a loopback listener at `scheme://`.
    async fn first_bytes_sent(scheme: &str) -> Vec<u8> {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let peek = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().ok()?;
            socket
                .set_read_timeout(Some(Duration::from_secs(30)))
                .ok()?;
            let mut buf = [0u8; 5];
            socket.read_exact(&mut buf).ok()?;
            Some(buf.to_vec())
        });
        let config = KinesisConfig::emulator(format!("{scheme}://127.0.0.1:{port}"), "s")
            .with_request_timeout(Duration::from_secs(30));
        let client = config
            .client()
            .await
            .expect("static credentials need no lookup");
        // The call fails (the listener answers nothing); only what it sent matters.
        let _ = client.list_streams().send().await;
        peek.join().ok().flatten().unwrap_or_default()
    }

    #[tokio::test]
    async fn an_https_endpoint_speaks_tls_and_an_http_one_plain_text() {
        let tls = first_bytes_sent("https").await;
        // A TLS record header: handshake (22), protocol major version 3.
        assert_eq!(tls.get(..2), Some(&[22u8, 3][..]), "{tls:?}");
        let plain = first_bytes_sent("http").await;
        assert_eq!(plain, b"POST ".to_vec());
    }

    #[test]
    fn retention_defaults_to_the_maximum_and_out_of_range_values_are_refused() {
        let config = KinesisConfig::new("s");
        assert_eq!(config.retention_on_create_hours(), 8760);
        assert_eq!(config.min_retention_hours(), 8760);
        assert!(!config.accept_short_retention);
        for bad in [
            Duration::from_secs(23 * 3600),
            Duration::from_secs(8761 * 3600),
            Duration::from_secs(48 * 3600 + 1),
        ] {
            let err = KinesisConfig::new("s")
                .with_retention_on_create(bad)
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("retention_on_create"), "{err}");
        }
        let err = KinesisConfig::new("s")
            .with_min_retention(Duration::from_secs(8761 * 3600))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("min_retention"), "{err}");
        let partial = KinesisConfig::new("s").with_min_retention(Duration::from_secs(90 * 60));
        assert_eq!(partial.min_retention_hours(), 2);
    }

    #[test]
    fn debug_output_hides_the_secret_key() {
        let creds = KinesisCredentials::fixed("AKIDEXAMPLE", "very-secret");
        let shown = format!("{:?}", KinesisConfig::new("s").with_credentials(creds));
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("very-secret"));
    }
}
