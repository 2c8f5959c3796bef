//! Log lines written behind the requests.
//!
//! Writing each request's JSON line straight to stderr is a `write` syscall
//! on the request's own thread, with whatever the file system or the pipe
//! behind stderr does inside it. [`LogBuffer`] instead appends the line to
//! a shared buffer (a copy under a short lock), and one thread writes the
//! buffer out every [`WRITE_INTERVAL`]: one syscall for every line of that
//! interval, off the request path.
//!
//! What this changes for whoever reads the log: a line reaches stderr at
//! most [`WRITE_INTERVAL`] after its event, in the order the events were
//! formatted. A graceful exit writes every line (the guard's drop); a crash
//! (`kill -9`, an abort) can lose the last interval's lines. Nothing is
//! dropped under load: once the buffer's limit (1 MiB for stderr) waits, the thread
//! that formats the next line writes the buffer out itself, so a stalled
//! stderr slows the gateway as it did before, instead of growing memory.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes that may wait before a line's own thread writes them out.
const DEFAULT_LIMIT: usize = 1 << 20;

/// Empty intervals before the writer thread sleeps until the next line, so
/// an idle gateway does not wake a hundred times a second.
const IDLE_INTERVALS: u32 = 100;

/// The [`MakeWriter`] of the `serve` command's log layer; see the module
/// docs. Dropping its [`LogBufferGuard`] writes what is left.
#[derive(Clone)]
pub struct LogBuffer {
    shared: Arc<Shared>,
}

struct Shared {
    lines: Mutex<Vec<u8>>,
    /// Held while a chunk is written, from before it is taken out of
    /// `lines`, so chunks reach the output in the order they were taken.
    out: Mutex<Box<dyn Write + Send>>,
    limit: usize,
    stop: AtomicBool,
    /// The writer thread sleeps until a line arrives (see [`IDLE_INTERVALS`]).
    parked: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

/// Keeps the writer thread running; dropping it writes the remaining lines
/// and ends the thread.
pub struct LogBufferGuard {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl LogBuffer {
    /// Lines for `out`, written by a thread of their own; at most `limit`
    /// bytes wait before a line's own thread writes them.
    pub fn new(out: impl Write + Send + 'static, limit: usize) -> (LogBuffer, LogBufferGuard) {
        let shared = Arc::new(Shared {
            lines: Mutex::new(Vec::new()),
            out: Mutex::new(Box::new(out)),
            limit,
            stop: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let worker = shared.clone();
        let handle = std::thread::Builder::new()
            .name("agentrouter-log".into())
            .spawn(move || worker.run())
            .ok();
        if let Some(handle) = &handle {
            let _ = shared.thread.set(handle.thread().clone());
        }
        // Without a thread (none could be started), lines are written by
        // their own thread once `limit` bytes wait, and by the guard.
        let guard = LogBufferGuard {
            shared: shared.clone(),
            handle,
        };
        (LogBuffer { shared }, guard)
    }

    /// For stderr, with the default limit (1 MiB).
    pub fn stderr() -> (LogBuffer, LogBufferGuard) {
        Self::new(io::stderr(), DEFAULT_LIMIT)
    }
}

/// Poisoning cannot leave either buffer half-changed in a way that matters
/// (an append or a swap), so a panicked holder does not stop the log.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Appends one formatted line (tracing-subscriber writes each event
    /// with one `write_all`).
    fn append(&self, line: &[u8]) -> io::Result<()> {
        let full = {
            let mut lines = lock(&self.lines);
            lines.extend_from_slice(line);
            lines.len() >= self.limit
        };
        if full {
            return self.write_out();
        }
        // SeqCst pairs with the thread's store before it re-checks `lines`:
        // either it sees this line, or this load sees it parked.
        if self.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ok(())
    }

    /// Writes every waiting line, in one `write_all`.
    fn write_out(&self) -> io::Result<()> {
        let mut out = lock(&self.out);
        let chunk = {
            let mut lines = lock(&self.lines);
            if lines.is_empty() {
                return Ok(());
            }
            let capacity = lines.len();
            std::mem::replace(&mut *lines, Vec::with_capacity(capacity))
        };
        out.write_all(&chunk)?;
        out.flush()
    }

    fn is_empty(&self) -> bool {
        lock(&self.lines).is_empty()
    }

    fn run(&self) {
        let mut idle = 0u32;
        loop {
            std::thread::park_timeout(WRITE_INTERVAL);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            if self.is_empty() {
                idle += 1;
            } else {
                idle = 0;
                // A failing stderr loses lines, as a direct write would.
                let _ = self.write_out();
            }
            if idle < IDLE_INTERVALS {
                continue;
            }
            self.parked.store(true, Ordering::SeqCst);
            while self.is_empty() && !self.stop.load(Ordering::SeqCst) {
                // Woken by `append` or the guard; the timeout is a safety net.
                std::thread::park_timeout(Duration::from_secs(1));
            }
            self.parked.store(false, Ordering::SeqCst);
            idle = 0;
        }
    }
}

impl Drop for LogBufferGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
        let _ = self.shared.write_out();
    }
}

/// One event's writer: the line goes into the buffer.
pub struct LineSink<'a> {
    shared: &'a Shared,
}

impl Write for LineSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineSink {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that keeps what was written and counts the writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = lock(&self.0);
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            lock(&self.0).1
        }
    }

    #[test]
    fn lines_from_many_threads_come_out_whole_in_each_threads_order() {
        let sink = Sink::default();
        let (buffer, guard) = LogBuffer::new(sink.clone(), DEFAULT_LIMIT);
        std::thread::scope(|s| {
            for t in 0..4 {
                let buffer = &buffer;
                s.spawn(move || {
                    for i in 0..500 {
                        let line = format!("{{\"thread\":{t},\"i\":{i}}}\n");
                        buffer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        let text = sink.text();
        let mut next = [0; 4];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect(line);
            let t = v["thread"].as_u64().unwrap() as usize;
            assert_eq!(v["i"].as_u64().unwrap() as usize, next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [500; 4]);
        // Batched: far fewer writes than lines.
        assert!(sink.writes() < 2000, "{} writes", sink.writes());
    }

    #[test]
    fn a_line_reaches_the_output_without_an_exit_and_after_an_idle_spell() {
        let sink = Sink::default();
        let (buffer, _guard) = LogBuffer::new(sink.clone(), DEFAULT_LIMIT);
        let wait_for = |want: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !sink.text().contains(want) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{want:?} never written"
                );
                std::thread::sleep(WRITE_INTERVAL);
            }
        };
        buffer.make_writer().write_all(b"first\n").unwrap();
        wait_for("first");
        // Long enough for the writer thread to park.
        while !buffer.shared.parked.load(Ordering::SeqCst) {
            std::thread::sleep(WRITE_INTERVAL);
        }
        buffer
            .make_writer()
            .write_all(b"after the idle spell\n")
            .unwrap();
        wait_for("after the idle spell");
    }

    #[test]
    fn past_the_limit_the_writing_thread_writes_the_buffer_itself() {
        let sink = Sink::default();
        let (buffer, guard) = LogBuffer::new(sink.clone(), 64);
        // Stop the writer thread first, so only the limit can write.
        drop(guard);
        let line = [b'x'; 40];
        buffer.make_writer().write_all(&line).unwrap();
        assert_eq!(sink.text().len(), 0, "under the limit: waits");
        buffer.make_writer().write_all(&line).unwrap();
        assert_eq!(sink.text().len(), 80, "at the limit: written by the caller");
    }
}
