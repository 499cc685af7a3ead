//! Small blocking file helpers: positioned reads and writes, directory
//! fsync and the watermark file. Everything here blocks; the
//! async code calls it through `spawn_blocking` or the writer thread.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::FileStreamError;
use crate::format::{WATERMARK_FILE, WATERMARK_LEN, Watermark};

/// Reads as many bytes as are there, up to `buf.len()`, starting at `offset`.
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_at_once(file, &mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes all of `buf` at `offset`.
pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut written = 0;
    while written < buf.len() {
        match write_at_once(file, &buf[written..], offset + written as u64) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(unix)]
fn read_at_once(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(unix)]
fn write_at_once(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at_once(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(windows)]
fn write_at_once(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, buf, offset)
}

/// Makes a directory entry (a created segment) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FileStreamError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| FileStreamError::io("syncing directory", dir, e))
    }
    #[cfg(not(unix))]
    {
        // Directory handles cannot be fsynced on this platform; NTFS journals
        // its metadata itself.
        let _ = dir;
        Ok(())
    }
}

/// The length of a file by its path; `None` when it does not exist.
pub(crate) fn file_len(file: &File, path: &Path) -> Result<u64, FileStreamError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| FileStreamError::io("reading the size of", path, e))
}

/// The watermark file, opened for reading (subscribers) or writing (the lock holder).
#[derive(Debug)]
pub(crate) struct WatermarkFile {
    file: File,
    path: PathBuf,
}

impl WatermarkFile {
    /// Opens the watermark for reading; `None` when it does not exist yet.
    pub(crate) fn open_read(dir: &Path) -> Result<Option<Self>, FileStreamError> {
        let path = dir.join(WATERMARK_FILE);
        match File::open(&path) {
            Ok(file) => Ok(Some(Self { file, path })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileStreamError::io("opening the watermark", &path, e)),
        }
    }

    /// Opens (creating) the watermark for writing.
    pub(crate) fn open_write(dir: &Path) -> Result<Self, FileStreamError> {
        let path = dir.join(WATERMARK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| FileStreamError::io("opening the watermark", &path, e))?;
        Ok(Self { file, path })
    }

    /// The current watermark; `None` when the file is empty or does not
    /// decode (e.g. caught mid-rewrite: the reader tries again later).
    pub(crate) fn read(&self) -> Result<Option<Watermark>, FileStreamError> {
        let mut buf = [0u8; WATERMARK_LEN];
        let n = read_at(&self.file, &mut buf, 0)
            .map_err(|e| FileStreamError::io("reading the watermark", &self.path, e))?;
        Ok(Watermark::decode(&buf[..n]))
    }

    /// Rewrites the watermark in place. It is not fsynced: it tells readers
    /// what is durable now; after a crash, opening recomputes it from the segments.
    pub(crate) fn write(&self, watermark: &Watermark) -> Result<(), FileStreamError> {
        write_all_at(&self.file, &watermark.encode(), 0)
            .map_err(|e| FileStreamError::io("writing the watermark", &self.path, e))
    }
}
