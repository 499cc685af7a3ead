//! Choosing and opening a backend from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use memstate_core::Stream;
use memstate_file::FileStream;

use crate::CliError;

/// The stream databases memstate runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The embedded file journal (the default).
    File,
    /// In-process memory (for trying things; nothing is kept).
    Memory,
}

/// Where the stream lives.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Which backend to run on.
    #[arg(long, value_enum, default_value = "file")]
    pub backend: BackendKind,
    /// File journal directory (default: a fresh temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// An opened backend: a way to open clients of one stream.
pub struct Opened {
    /// What and where, for printing.
    pub description: String,
    kind: OpenedKind,
    _temp: Option<tempfile::TempDir>,
}

enum OpenedKind {
    File(PathBuf),
    Memory(memstate_core::MemoryStream),
}

impl Opened {
    /// The journal directory, for the file backend.
    pub fn journal_dir(&self) -> Option<&std::path::Path> {
        match &self.kind {
            OpenedKind::File(dir) => Some(dir),
            OpenedKind::Memory(_) => None,
        }
    }

    /// A new client of the stream, as a separate node would open it.
    pub async fn client(&self) -> Result<Arc<dyn Stream>, CliError> {
        match &self.kind {
            OpenedKind::File(dir) => Ok(Arc::new(FileStream::open(dir).await.map_err(|e| {
                CliError::Backend(format!("cannot open the journal at {}: {e}", dir.display()))
            })?)),
            OpenedKind::Memory(m) => Ok(Arc::new(m.clone())),
        }
    }
}

impl BackendArgs {
    /// Opens (creating where needed) the stream these arguments name.
    pub async fn open(&self) -> Result<Opened, CliError> {
        match self.backend {
            BackendKind::File => {
                let (dir, temp) = match &self.dir {
                    Some(d) => (d.clone(), None),
                    None => {
                        let t = tempfile::Builder::new()
                            .prefix("memstate-demo-")
                            .tempdir()
                            .map_err(|e| {
                                CliError::Backend(format!(
                                    "cannot create a temporary directory: {e}"
                                ))
                            })?;
                        (t.path().to_path_buf(), Some(t))
                    }
                };
                Ok(Opened {
                    description: format!("file journal {}", dir.display()),
                    kind: OpenedKind::File(dir),
                    _temp: temp,
                })
            }
            BackendKind::Memory => Ok(Opened {
                description: "in-process memory stream".into(),
                kind: OpenedKind::Memory(memstate_core::MemoryStream::new()),
                _temp: None,
            }),
        }
    }
}
