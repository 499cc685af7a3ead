//! Small pieces of the public API: stream sharing, write tokens, commands
//! without a result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use memstate_core::{CommandContext, Consistency, EngineBuilder, MemoryStream, Model, Stream};
use serde::{Deserialize, Serialize};

/// A model whose commands return nothing.
#[derive(Clone, Debug, Default)]
struct Names(Vec<String>);

#[derive(Serialize, Deserialize)]
struct Add(String);

impl Model for Names {
    type Command = Add;
    type Output = ();
    type Error = std::convert::Infallible;

    fn apply(&mut self, cmd: Add, _: &mut CommandContext<'_>) -> Result<(), Self::Error> {
        self.0.push(cmd.0);
        Ok(())
    }
}

#[tokio::test]
async fn new_accepts_a_stream_value_an_arc_dyn_stream_and_an_arc_of_a_stream() {
    let memory = MemoryStream::new();
    let shared: Arc<dyn Stream> = Arc::new(memory.clone());
    let typed: Arc<MemoryStream> = Arc::new(memory.clone());
    let a = EngineBuilder::new(Names::default(), memory.clone())
        .start()
        .await
        .unwrap();
    let b = EngineBuilder::new(Names::default(), Arc::clone(&shared))
        .start()
        .await
        .unwrap();
    let c = EngineBuilder::new(Names::default(), typed)
        .start()
        .await
        .unwrap();
    assert!(
        Arc::ptr_eq(b.stream(), &shared),
        "an Arc<dyn Stream> is shared, not wrapped again"
    );
    a.execute(Add("x".into())).await.unwrap();
    for e in [&a, &b, &c] {
        let names = e
            .query(Consistency::Linearizable, |m| m.0.clone())
            .await
            .unwrap();
        assert_eq!(names, vec!["x".to_string()]);
    }
    for e in [a, b, c] {
        e.shutdown().await;
    }
}

#[tokio::test]
async fn engine_last_write_is_the_index_of_the_latest_acknowledged_write() {
    let memory = MemoryStream::new();
    let a = EngineBuilder::new(Names::default(), memory.clone())
        .start()
        .await
        .unwrap();
    let b = EngineBuilder::new(Names::default(), memory.clone())
        .start()
        .await
        .unwrap();
    assert_eq!(a.last_write(), 0);
    let first = a.execute(Add("one".into())).await.unwrap();
    assert_eq!(a.last_write(), first.index);
    let second = a.clone().execute(Add("two".into())).await.unwrap();
    assert!(second.index > first.index);
    assert_eq!(
        a.last_write(),
        second.index,
        "shared by every handle of the engine"
    );
    assert_eq!(b.last_write(), 0, "another engine has its own");
    // Carried to the other node, the token makes its read see the write.
    let seen = b
        .query(Consistency::AtLeast(a.last_write()), |m| m.0.len())
        .await
        .unwrap();
    assert_eq!(seen, 2);
    a.shutdown().await;
    b.shutdown().await;
}
