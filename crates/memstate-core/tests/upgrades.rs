//! Version skew never forks the cluster: a command one build cannot decode
//! stops that build's node with a clear error, whatever the bad-record policy;
//! declared model versions make a rolling upgrade refuse instead of stop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod versioned;

use std::time::Duration;

use memstate_core::{
    BadRecordPolicy, Consistency, Engine, EngineBuilder, Error, ExecuteError, HaltReason,
    MemoryStream, Model, NodeId, Settings, Status,
};
use serde::{Deserialize, Serialize};
use versioned::{v1, v2};

/// The new build: `Double` added, no version declared.
mod undeclared {
    use super::*;
    use memstate_core::CommandContext;

    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Calc {
        pub total: i64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Cmd {
        Add(i64),
        Double,
    }

    impl Model for Calc {
        type Command = Cmd;
        type Output = i64;
        type Error = String;

        fn apply(&mut self, cmd: Cmd, _ctx: &mut CommandContext<'_>) -> Result<i64, String> {
            self.total = match cmd {
                Cmd::Add(n) => self.total + n,
                Cmd::Double => self.total * 2,
            };
            Ok(self.total)
        }
    }
}

async fn start<M: Model>(
    model: M,
    stream: &MemoryStream,
    id: &str,
    settings: &Settings,
) -> Engine<M> {
    EngineBuilder::new(model, stream.clone())
        .node_id(id)
        .settings(settings.clone())
        .execute_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(30))
        .start()
        .await
        .unwrap()
}

fn engine_error<T: std::fmt::Debug, E: std::fmt::Debug>(r: Result<T, ExecuteError<E>>) -> Error {
    match r {
        Err(ExecuteError::Engine(e)) => e,
        other => panic!("expected an engine error, got {other:?}"),
    }
}

fn halt_reason<M: Model>(engine: &Engine<M>) -> HaltReason {
    match engine.status() {
        Status::Halted(reason) => reason,
        other => panic!("expected a halted engine, got {other:?}"),
    }
}

#[tokio::test]
async fn version_skew_stops_the_old_node_naming_index_command_and_version_under_either_policy() {
    for policy in [BadRecordPolicy::Skip, BadRecordPolicy::Halt] {
        let mut settings = Settings::default();
        settings.bad_records = policy;
        let stream = MemoryStream::new();
        let old = start(v1::Calc::default(), &stream, "old", &settings).await;
        let new = start(undeclared::Calc::default(), &stream, "new", &settings).await;
        assert_eq!(old.execute(v1::Cmd::Add(5)).await.unwrap().output, 5);
        let doubled = new.execute(undeclared::Cmd::Double).await.unwrap();
        assert_eq!(doubled.output, 10);
        // The old build cannot decode `Double`: it stops there instead of
        // skipping it and answering 6 where the new build answers 11.
        let err = old.wait_for_index(doubled.index).await.unwrap_err();
        assert!(matches!(err, Error::Halted(_)), "{policy:?}: {err}");
        match halt_reason(&old) {
            HaltReason::UndecodableCommand {
                index,
                version,
                reads,
                ref reason,
                ..
            } => {
                assert_eq!(index, doubled.index);
                assert_eq!((version, reads), (1, 1));
                assert!(reason.contains("Double"), "{reason}");
            }
            other => panic!("{policy:?}: expected UndecodableCommand, got {other:?}"),
        }
        let message = halt_reason(&old).to_string();
        assert!(
            message.contains(&format!("index {}", doubled.index)),
            "{message}"
        );
        assert!(message.contains("model version 1"), "{message}");
        assert!(matches!(
            engine_error(old.execute(v1::Cmd::Add(1)).await),
            Error::Halted(HaltReason::UndecodableCommand { .. })
        ));
        // Only one answer exists: the old node's model stopped at 5, before
        // the command it could not read, and answers nothing more.
        assert!(old.query(Consistency::Local, |m| m.total).await.is_err());
        assert_eq!(
            new.execute(undeclared::Cmd::Add(1)).await.unwrap().output,
            11
        );
        new.shutdown().await;
        old.shutdown().await;
    }
}

#[tokio::test]
async fn skip_commands_lets_an_old_node_past_a_command_it_cannot_decode() {
    let settings = Settings::default();
    let stream = MemoryStream::new();
    let new = start(undeclared::Calc::default(), &stream, "new", &settings).await;
    let x = memstate_core::CommandId::random();
    new.execute_with_id(x, undeclared::Cmd::Double)
        .await
        .unwrap();
    let err = EngineBuilder::new(v1::Calc::default(), stream.clone())
        .node_id("old")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Halted(HaltReason::UndecodableCommand { command_id, .. }) if command_id == x),
        "{err}"
    );
    let skipping = EngineBuilder::new(v1::Calc::default(), stream.clone())
        .node_id("old")
        .skip_commands([x])
        .start()
        .await
        .unwrap();
    assert_eq!(skipping.execute(v1::Cmd::Add(2)).await.unwrap().output, 2);
    skipping.shutdown().await;
    new.shutdown().await;
}

#[tokio::test]
async fn a_command_needing_an_inactive_version_is_refused_and_activation_waits_for_old_nodes() {
    let settings = Settings::default();
    let stream = MemoryStream::new();
    let old = start(v1::Calc::default(), &stream, "old", &settings).await;
    let new = start(v2::Calc::default(), &stream, "new", &settings).await;
    assert_eq!(new.execute(v2::Cmd::Add(5)).await.unwrap().output, 5);
    match engine_error(new.execute(v2::Cmd::Double).await) {
        Error::VersionNotActive { needed, active } => assert_eq!((needed, active), (2, 1)),
        other => panic!("expected VersionNotActive, got {other}"),
    }
    // The old node announced that it reads version 1 only.
    match new.activate_version(2).await.unwrap_err() {
        Error::ActivationRefused {
            version,
            active,
            blocking,
        } => {
            assert_eq!((version, active), (2, 1));
            assert_eq!(blocking, vec![(NodeId::new("old"), 1)]);
        }
        other => panic!("expected ActivationRefused, got {other}"),
    }
    assert_eq!(old.model_versions().active, 1);
    assert_eq!(
        old.query(Consistency::Linearizable, |m| m.total)
            .await
            .unwrap(),
        5
    );
    // A clean shutdown departs: the old node no longer holds version 2 back.
    old.shutdown().await;
    let activated = new.activate_version(2).await.unwrap();
    assert_eq!(new.model_versions().active, 2);
    assert_eq!(new.execute(v2::Cmd::Double).await.unwrap().output, 10);
    // An old build started now stops at the activation, before anything of version 2.
    let err = EngineBuilder::new(v1::Calc::default(), stream.clone())
        .node_id("old")
        .start()
        .await
        .unwrap_err();
    match err {
        Error::Halted(HaltReason::UpgradeRequired {
            index,
            version,
            reads,
            ..
        }) => assert_eq!((index, version, reads), (activated, 2, 1)),
        other => panic!("expected UpgradeRequired, got {other}"),
    }
    assert!(err.to_string().contains("upgrade this node"), "{err}");
    new.shutdown().await;
}

#[tokio::test]
async fn a_running_old_node_that_was_forgotten_stops_at_the_activation() {
    let settings = Settings::default();
    let stream = MemoryStream::new();
    let old = start(v1::Calc::default(), &stream, "old", &settings).await;
    let new = start(v2::Calc::default(), &stream, "new", &settings).await;
    new.forget_node(NodeId::new("old")).await.unwrap();
    assert!(!new.model_versions().nodes.contains_key(&NodeId::new("old")));
    let activated = new.activate_version(2).await.unwrap();
    let err = old.wait_for_index(activated).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Halted(HaltReason::UpgradeRequired { version: 2, .. })
        ),
        "{err}"
    );
    new.shutdown().await;
    old.shutdown().await;
}

#[tokio::test]
async fn the_active_version_never_goes_down() {
    let stream = MemoryStream::new();
    let new = start(v2::Calc::default(), &stream, "new", &Settings::default()).await;
    new.activate_version(2).await.unwrap();
    // Re-activating the active version changes nothing and is accepted.
    new.activate_version(2).await.unwrap();
    assert!(matches!(
        new.activate_version(1).await,
        Err(Error::ActivationRefused { version: 1, active: 2, ref blocking }) if blocking.is_empty()
    ));
    // Nor above what the node itself announced it reads.
    assert!(matches!(
        new.activate_version(3).await,
        Err(Error::ActivationRefused { version: 3, .. })
    ));
    assert_eq!(new.model_versions().active, 2);
    new.shutdown().await;
}
