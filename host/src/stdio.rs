//! A component's stdout and stderr, kept as Spin keeps them: appended to
//! `logs/{component}_stdout.txt` and `logs/{component}_stderr.txt` under the state directory,
//! and followed on the host's own stdout and stderr (what `spin up --follow-all` shows).
//!
//! The file matters beyond reading logs: it sits on the disk of the app's SQLite files, so a
//! full disk fails a component's write to its stderr as it does on Spin, where that once made
//! `eprintln!` panic and trap the instance (docs/reliability.md, "A full disk"). A write the
//! log file refuses fails for the guest; the copy to the host's own stream is best effort.

use std::io::Write as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Which of the component's streams, and so which of the host's it is followed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// `{component}_stdout.txt`, followed on the host's stdout.
    Stdout,
    /// `{component}_stderr.txt`, followed on the host's stderr.
    Stderr,
}

impl Stdio {
    fn suffix(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One component stream: its log file (shared by every instance) and where it is followed.
#[derive(Clone)]
pub struct ComponentLog {
    file: Arc<std::fs::File>,
    stream: Stdio,
}

impl ComponentLog {
    /// Opens (appending, created if absent) `log_dir/{component}_{stdout|stderr}.txt`.
    pub fn open(log_dir: &Path, component: &str, stream: Stdio) -> Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("cannot create log dir {}", log_dir.display()))?;
        let path = log_dir.join(format!("{component}_{}.txt", stream.suffix()));
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open log file {}", path.display()))?;
        Ok(Self {
            file: Arc::new(file),
            stream,
        })
    }

    /// The file first (its error is the guest's); then the host's stream, best effort.
    fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        (&*self.file).write_all(bytes)?;
        let _ = match self.stream {
            Stdio::Stdout => std::io::stdout().write_all(bytes),
            Stdio::Stderr => std::io::stderr().write_all(bytes),
        };
        Ok(())
    }
}

impl IsTerminal for ComponentLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for ComponentLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for ComponentLog {
    async fn ready(&mut self) {}
}

impl OutputStream for ComponentLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_all(&bytes)
            .map_err(|e| StreamError::LastOperationFailed(wasmtime::format_err!(e)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1024 * 1024)
    }
}

impl AsyncWrite for ComponentLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.write_all(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_to_the_component_s_file() {
        let dir = std::env::temp_dir().join(format!("local-host-stdio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = ComponentLog::open(&dir, "service-api", Stdio::Stderr).expect("open");
        log.write_all(b"one\n").expect("write");
        let again = ComponentLog::open(&dir, "service-api", Stdio::Stderr).expect("reopen");
        again.write_all(b"two\n").expect("write");
        let text = std::fs::read_to_string(dir.join("service-api_stderr.txt")).expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(text, "one\ntwo\n");
    }
}
