use std::sync::Arc;

use async_trait::async_trait;
use memstate_core::{MemoryStream, Stream};

use crate::fixture::{Backend, BoxError, Connect, Fixture};

/// Fresh [`MemoryStream`]s; "new clients" are clones of the same stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryBackend;

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> String {
        "memory".into()
    }

    fn location(&self) -> String {
        "this process".into()
    }

    async fn fresh(&self) -> Result<Fixture, BoxError> {
        let stream = MemoryStream::new();
        let shared = stream.clone();
        let connect: Connect = Arc::new(move || {
            let s = shared.clone();
            Box::pin(async move { Ok(Arc::new(s) as Arc<dyn Stream>) })
        });
        Ok(Fixture::new(Arc::new(stream), connect, ()))
    }
}
