//! What `connect` checks and sets up: the stream exists (created when
//! allowed), is active, keeps records long enough, and has one open shard.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{Shard, StreamMode, StreamModeDetails, StreamStatus};
use memstate_core::StreamError;
use tokio::time::Instant;

use crate::config::KinesisConfig;
use crate::error::{KinesisStreamError, misconfigured, not_found};

/// Refuses (or, when accepted, warns about) a retention below the minimum.
pub(crate) fn check_retention(
    config: &KinesisConfig,
    retention_hours: i32,
) -> Result<(), StreamError> {
    let minimum = config.min_retention_hours();
    if retention_hours >= minimum {
        return Ok(());
    }
    let name = config.stream_name.as_str();
    if config.accept_short_retention {
        tracing::warn!(
            stream = name,
            retention_hours,
            minimum_hours = minimum,
            "the Kinesis stream keeps records for {retention_hours} h only (accepted by \
             accept_short_retention): every node must write a snapshot within that window, or it \
             cannot start again once older records expire"
        );
        return Ok(());
    }
    Err(misconfigured(
        name,
        format!(
            "its retention period is {retention_hours} h, below the minimum of {minimum} h: Kinesis \
             deletes records older than that, and a node can then start only from a snapshot newer \
             than the oldest record kept. Raise it (aws kinesis increase-stream-retention-period \
             --stream-name {name} --retention-period-hours 8760), or lower \
             KinesisConfig::min_retention to a window within which every node writes a snapshot, or \
             set KinesisConfig::accept_short_retention"
        ),
    ))
}

/// Makes sure the stream exists and is usable: creates it when missing and
/// allowed (raising the new stream's retention as configured), then waits
/// while it is `CREATING`. Returns the retention period in hours and the
/// stream's ARN.
pub(crate) async fn ensure_active(
    client: &Client,
    config: &KinesisConfig,
) -> Result<(i32, String), StreamError> {
    let name = config.stream_name.as_str();
    let deadline = Instant::now() + config.create_timeout;
    let mut created = false;
    let mut raised = false;
    let mut pause = Duration::from_millis(50);
    loop {
        match client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(output) => {
                let Some(summary) = output.stream_description_summary() else {
                    return Err(StreamError::backend(
                        crate::error::BACKEND,
                        format!("describing stream {name:?}"),
                        "DescribeStreamSummary returned no summary",
                    ));
                };
                if summary
                    .stream_mode_details()
                    .is_some_and(|mode| *mode.stream_mode() == StreamMode::OnDemand)
                {
                    return Err(misconfigured(
                        name,
                        "it is in on-demand capacity mode, where Kinesis adds shards by itself; memstate needs \
                         exactly one shard (provisioned mode, shard count 1) because Kinesis orders records \
                         only within a shard",
                    ));
                }
                let retention_hours = summary.retention_period_hours();
                match summary.stream_status() {
                    StreamStatus::Active
                        if created
                            && !raised
                            && retention_hours < config.retention_on_create_hours() =>
                    {
                        raise_retention(client, config).await?;
                        raised = true;
                        continue; // Read the retention back.
                    }
                    // The raise is under way: wait to read the new retention.
                    StreamStatus::Updating if raised => {}
                    StreamStatus::Active | StreamStatus::Updating => {
                        if created {
                            tracing::info!(
                                stream = name,
                                retention_hours,
                                "created Kinesis stream with one shard"
                            );
                        }
                        return Ok((retention_hours, summary.stream_arn().to_owned()));
                    }
                    StreamStatus::Deleting => {
                        return Err(not_found(name, "the stream is being deleted"));
                    }
                    _ => {} // CREATING: wait below.
                }
            }
            Err(err) => {
                let err = KinesisStreamError::from_sdk(
                    "DescribeStreamSummary",
                    config.request_timeout,
                    err,
                );
                if !matches!(err, KinesisStreamError::StreamNotFound { .. }) {
                    return Err(err.into_read_error(name));
                }
                if !config.create_if_missing {
                    return Err(err.into_read_error(name));
                }
                if !created {
                    create_stream(client, config).await?;
                    created = true;
                }
            }
        }
        if Instant::now() + pause > deadline {
            return Err(StreamError::Timeout {
                action: format!("waiting for Kinesis stream {name:?} to become ACTIVE"),
                after: config.create_timeout,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Raises a new stream's retention to [`KinesisConfig::retention_on_create`].
async fn raise_retention(client: &Client, config: &KinesisConfig) -> Result<(), StreamError> {
    let name = config.stream_name.as_str();
    let hours = config.retention_on_create_hours();
    match client
        .increase_stream_retention_period()
        .stream_name(name)
        .retention_period_hours(hours)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(
                stream = name,
                hours,
                "raised the new Kinesis stream's retention period"
            );
            Ok(())
        }
        Err(err) => {
            let err = KinesisStreamError::from_sdk(
                "IncreaseStreamRetentionPeriod",
                config.request_timeout,
                err,
            );
            // Another node raising it at the same moment: read it back.
            if err.code() == Some("ResourceInUseException") {
                Ok(())
            } else {
                Err(err.into_read_error(name))
            }
        }
    }
}

async fn create_stream(client: &Client, config: &KinesisConfig) -> Result<(), StreamError> {
    let name = config.stream_name.as_str();
    let provisioned = StreamModeDetails::builder()
        .stream_mode(StreamMode::Provisioned)
        .build()
        .map_err(|e| StreamError::backend(crate::error::BACKEND, "building CreateStream", e))?;
    match client
        .create_stream()
        .stream_name(name)
        .shard_count(1)
        .stream_mode_details(provisioned)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err) => {
            let err = KinesisStreamError::from_sdk("CreateStream", config.request_timeout, err);
            // Another node created it first: that is just as good.
            if err.code() == Some("ResourceInUseException") {
                Ok(())
            } else {
                Err(err.into_read_error(name))
            }
        }
    }
}

/// Lists every shard of the stream and returns the only one, refusing a
/// stream that has ever been resharded.
pub(crate) async fn single_open_shard(
    client: &Client,
    config: &KinesisConfig,
) -> Result<Shard, StreamError> {
    let name = config.stream_name.as_str();
    let mut shards: Vec<Shard> = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // With a continuation token, Kinesis refuses the stream name.
        let request = match &next_token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(name),
        };
        let output = request.send().await.map_err(|e| {
            KinesisStreamError::from_sdk("ListShards", config.request_timeout, e)
                .into_read_error(name)
        })?;
        shards.extend(output.shards().iter().cloned());
        match output.next_token() {
            Some(token) if shards.len() <= 1000 => next_token = Some(token.to_owned()),
            _ => break,
        }
    }
    let resharded = |detail: String| {
        misconfigured(
            name,
            format!(
                "{detail}. Kinesis orders records only within one shard, so a memstate log needs a \
                 stream with exactly one shard that was never split or merged; create a new stream with \
                 one shard (provisioned mode) and do not reshard it"
            ),
        )
    };
    let mut iter = shards.into_iter();
    let (Some(shard), None) = (iter.next(), iter.next()) else {
        return Err(resharded(
            "it does not have exactly one shard (ListShards listed none or several: the stream was created \
             with several shards or was resharded)"
                .to_owned(),
        ));
    };
    if let Some(parent) = shard.parent_shard_id() {
        return Err(resharded(format!(
            "its shard {} is the child of shard {parent}: the stream was resharded",
            shard.shard_id()
        )));
    }
    if let Some(end) = shard
        .sequence_number_range()
        .and_then(|range| range.ending_sequence_number())
    {
        return Err(resharded(format!(
            "its shard {} is closed (ending sequence number {end}): the stream was resharded",
            shard.shard_id()
        )));
    }
    Ok(shard)
}
