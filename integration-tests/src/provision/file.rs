use std::sync::Arc;

use async_trait::async_trait;
use memstate_core::Stream;
use memstate_file::FileStream;

use crate::fixture::{Backend, BoxError, Connect, Fixture};

/// Fresh journals in temporary directories; every new client opens the
/// directory again, as another process would.
#[derive(Debug, Clone, Default)]
pub struct FileBackend;

#[async_trait]
impl Backend for FileBackend {
    fn name(&self) -> String {
        "file".into()
    }

    fn location(&self) -> String {
        std::env::temp_dir().display().to_string()
    }

    async fn fresh(&self) -> Result<Fixture, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix("memstate-conformance-")
            .tempdir()?;
        let path = dir.path().to_path_buf();
        let stream = FileStream::open(&path).await?;
        let connect: Connect = Arc::new(move || {
            let path = path.clone();
            Box::pin(async move { Ok(Arc::new(FileStream::open(&path).await?) as Arc<dyn Stream>) })
        });
        Ok(Fixture::new(Arc::new(stream), connect, dir))
    }
}
