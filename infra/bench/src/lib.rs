//! The pieces of the cold start benchmark that are worth testing on their own:
//! a fake Lambda Runtime API that notices "ready", parsers for valgrind's and
//! `lambent bootstrap`'s output, an ELF symbol-table check and the report.
//!
//! The orchestration (moto, child processes, valgrind) lives in
//! `src/bin/coldstart.rs`.
//!
//! The streamed chat benchmark's pieces (and the percentiles and `/proc`
//! readers both benchmarks use) are in [`chat`], the workflow benchmark's
//! summaries in `flow`, the agent-turn benchmark's in `turn`, what the
//! benchmarks of the release `lambent serve` share in `served` (feature
//! `flow`, on by default); they run in `src/bin/chatbench.rs`,
//! `src/bin/flowbench.rs` and `src/bin/turnbench.rs` on the test kit.

#[cfg(feature = "flow")]
pub mod chat;
#[cfg(feature = "flow")]
pub mod flow;
#[cfg(feature = "flow")]
pub mod served;
#[cfg(feature = "flow")]
pub mod turn;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The path every `lambda_runtime` loop polls for its next event. Its first
/// request is the moment a function is ready: init is done, the runtime
/// loop has started.
pub const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";

/// One `GET …/invocation/next` seen by the fake Runtime API.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// When the request head had been read.
    pub at: Instant,
    /// The process the harness said it was measuring at that moment.
    pub pid: u32,
    /// `VmHWM` (peak resident set) of that process at that moment, in KiB.
    pub peak_rss_kib: Option<u64>,
}

/// A fake Lambda Runtime API on 127.0.0.1. It answers a `/next` by closing
/// the connection without a response: `lambda_runtime::run` then returns
/// the transport error, `main` returns it, and the process exits. That exit
/// path is the same for the hello-world baseline and every function.
/// Anything else gets an empty `202 Accepted`.
pub struct FakeRuntimeApi {
    addr: SocketAddr,
    pid: Arc<AtomicU32>,
    ready: Receiver<Ready>,
}

impl FakeRuntimeApi {
    pub fn start() -> Result<FakeRuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fake Runtime API")?;
        let addr = listener.local_addr()?;
        let pid = Arc::new(AtomicU32::new(0));
        let (tx, ready) = mpsc::channel();
        let shared_pid = Arc::clone(&pid);
        thread::Builder::new()
            .name("fake-runtime-api".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let pid = Arc::clone(&shared_pid);
                    let tx = tx.clone();
                    // One thread per connection: a slow or silent client
                    // never holds up the next run's connection.
                    let _ = thread::Builder::new()
                        .name("fake-runtime-conn".into())
                        .spawn(move || serve_connection(stream, &pid, &tx));
                }
            })
            .context("starting the fake Runtime API thread")?;
        Ok(FakeRuntimeApi { addr, pid, ready })
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Names the process being measured (0: none), and forgets any `/next`
    /// left over from an earlier process.
    pub fn measure(&self, pid: u32) {
        self.pid.store(pid, Ordering::SeqCst);
        while self.ready.try_recv().is_ok() {}
    }

    /// The first `/next` from `pid`, waiting at most `timeout`.
    pub fn wait_ready(&self, pid: u32, timeout: Duration) -> Option<Ready> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.ready.recv_timeout(left) {
                Ok(ready) if ready.pid == pid => return Some(ready),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

fn serve_connection(mut stream: TcpStream, pid: &AtomicU32, tx: &Sender<Ready>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(600)));
    loop {
        let Some(head) = read_request_head(&mut stream) else {
            return;
        };
        if is_next_request(&head) {
            let at = Instant::now();
            // The harness names the child right after `spawn` returns; a
            // `/next` cannot normally beat that, but wait a little if it does.
            let mut measured = pid.load(Ordering::SeqCst);
            let give_up = at + Duration::from_millis(200);
            while measured == 0 && Instant::now() < give_up {
                thread::sleep(Duration::from_micros(200));
                measured = pid.load(Ordering::SeqCst);
            }
            let peak_rss_kib = if measured == 0 {
                None
            } else {
                peak_rss_kib(measured)
            };
            let _ = tx.send(Ready {
                at,
                pid: measured,
                peak_rss_kib,
            });
            // Close without answering: `run` returns an error, the process exits.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        let accepted = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
        if stream.write_all(accepted).is_err() {
            return;
        }
    }
}

/// Reads one request head (through the blank line); a body, if announced,
/// is read and dropped. `None` when the peer closed or sent garbage.
fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if length > 0 {
        let mut body = stream.take(length);
        if std::io::copy(&mut body, &mut std::io::sink()).ok()? != length {
            return None;
        }
    }
    Some(head)
}

/// Whether a request head is `GET /2018-06-01/runtime/invocation/next`.
pub fn is_next_request(head: &str) -> bool {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    parts.next() == Some("GET") && parts.next() == Some(NEXT_PATH)
}

/// `VmHWM` of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// `VmHWM` from the text of `/proc/<pid>/status`, in KiB.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// The total instruction count from valgrind's stderr (`==123== Collected : 456`).
pub fn parse_collected(valgrind_stderr: &str) -> Option<u64> {
    valgrind_stderr.lines().find_map(|line| {
        let (_, rest) = line.split_once("Collected :")?;
        rest.trim().replace(',', "").parse().ok()
    })
}

/// The `NAME=value` lines `lambent bootstrap` prints for the resources it made.
pub fn parse_bootstrap_output(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.trim().split_once('='))
        .filter(|(name, _)| name.starts_with("LAMBENT_"))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Whether an ELF file still has a symbol table (`.symtab`), i.e. is not
/// stripped. Only 64-bit little-endian ELF is understood.
pub fn elf_has_symtab(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    elf_bytes_have_symtab(&bytes)
}

fn elf_bytes_have_symtab(bytes: &[u8]) -> Result<bool> {
    const SHT_SYMTAB: u32 = 2;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        bail!("not an ELF file");
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |at: usize| -> Result<u16> {
        let raw = bytes.get(at..at + 2).context("truncated ELF file")?;
        Ok(u16::from_le_bytes([raw[0], raw[1]]))
    };
    let u32_at = |at: usize| -> Result<u32> {
        let raw = bytes.get(at..at + 4).context("truncated ELF file")?;
        let mut word = [0u8; 4];
        word.copy_from_slice(raw);
        Ok(u32::from_le_bytes(word))
    };
    let u64_at = |at: usize| -> Result<u64> {
        let raw = bytes.get(at..at + 8).context("truncated ELF file")?;
        let mut word = [0u8; 8];
        word.copy_from_slice(raw);
        Ok(u64::from_le_bytes(word))
    };
    let table = usize::try_from(u64_at(0x28)?)?;
    let entry_size = usize::from(u16_at(0x3a)?);
    let entries = usize::from(u16_at(0x3c)?);
    for index in 0..entries {
        if u32_at(table + index * entry_size + 4)? == SHT_SYMTAB {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The goals: instructions to ready at most this many times hello world's
/// (issue 15; issue 3 had asked for 1.5x, out of reach for a binary that
/// builds and warms SDK clients: docs/PERFORMANCE.md).
pub const MAX_RATIO_VS_HELLO: f64 = 10.0;
/// 6 MB, read strictly as 6 × 10⁶ bytes.
pub const MAX_ZIPPED_BYTES: u64 = 6_000_000;

/// What was measured for one binary.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    pub binary: String,
    /// Instructions from exec to exit, one value per callgrind run.
    pub instructions: Vec<u64>,
    /// Wall time from spawn to the first `/next`, one value per run, in ms.
    pub wall_ms: Vec<f64>,
    /// `VmHWM` at the first `/next`, one value per run, in KiB.
    pub peak_rss_kib: Vec<u64>,
    pub size_bytes: u64,
    pub stripped: bool,
    pub zipped_bytes: u64,
}

impl Measurement {
    pub fn instructions_median(&self) -> Option<f64> {
        let values: Vec<f64> = self.instructions.iter().map(|&n| n as f64).collect();
        median(&values)
    }
    pub fn wall_ms_median(&self) -> Option<f64> {
        median(&self.wall_ms)
    }
    pub fn peak_rss_median_kib(&self) -> Option<f64> {
        let values: Vec<f64> = self.peak_rss_kib.iter().map(|&n| n as f64).collect();
        median(&values)
    }
}

/// `12_345_678` as `12.35 M`.
pub fn millions(n: f64) -> String {
    format!("{:.2} M", n / 1e6)
}

/// Bytes as decimal megabytes (10⁶ bytes), two decimals.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// The report table. `baseline` is the hello-world row's binary name.
pub fn markdown_table(rows: &[Measurement], baseline: &str) -> String {
    let hello = rows
        .iter()
        .find(|row| row.binary == baseline)
        .and_then(Measurement::instructions_median);
    let mut out = String::new();
    out.push_str(
        "| binary | instructions to ready (exec→exit) | ratio vs hello | wall ms to ready (median) \
         | peak RSS at ready | stripped size | zipped size | goal met? |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
    for row in rows {
        let instructions = row.instructions_median();
        let ratio = match (instructions, hello) {
            (Some(n), Some(h)) if h > 0.0 => Some(n / h),
            _ => None,
        };
        let spread = match (row.instructions.iter().min(), row.instructions.iter().max()) {
            (Some(&lo), Some(&hi)) if row.instructions.len() > 1 => {
                instructions.map(|m| format!(" ±{:.2}%", (hi - lo) as f64 / m / 2.0 * 100.0))
            }
            _ => None,
        };
        let instructions_cell = instructions
            .map(|n| format!("{}{}", millions(n), spread.unwrap_or_default()))
            .unwrap_or_else(|| "n/a".into());
        let ratio_cell = ratio
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_else(|| "n/a".into());
        let wall_cell = row
            .wall_ms_median()
            .map(|ms| format!("{ms:.1}"))
            .unwrap_or_else(|| "n/a".into());
        let rss_cell = row
            .peak_rss_median_kib()
            .map(|kib| format!("{:.1} MiB", kib / 1024.0))
            .unwrap_or_else(|| "n/a".into());
        let size_cell = format!(
            "{}{}",
            megabytes(row.size_bytes),
            if row.stripped { "" } else { " (NOT stripped)" }
        );
        let verdict = if row.binary == baseline {
            "baseline".to_string()
        } else {
            let speed = ratio.map(|r| r <= MAX_RATIO_VS_HELLO);
            let size = row.zipped_bytes <= MAX_ZIPPED_BYTES;
            match speed {
                Some(true) if size => "yes".to_string(),
                Some(true) => "no (size)".to_string(),
                Some(false) if size => "no (instructions)".to_string(),
                Some(false) => "no (instructions, size)".to_string(),
                None => "n/a".to_string(),
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.binary,
            instructions_cell,
            ratio_cell,
            wall_cell,
            rss_cell,
            size_cell,
            megabytes(row.zipped_bytes),
            verdict
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_is_read_from_valgrind_stderr() {
        let stderr = "==4242== Callgrind, a call-graph generating cache profiler\n\
                      ==4242== Events    : Ir\n\
                      ==4242== Collected : 123456789\n\
                      ==4242== I   refs:      123,456,789\n";
        assert_eq!(parse_collected(stderr), Some(123_456_789));
        assert_eq!(parse_collected("no summary"), None);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    4321 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(4321));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn bootstrap_lines_become_variables() {
        let out = "LAMBENT_TABLE=bench-table\nsomething else\n\
                   LAMBENT_STEPS_QUEUE_URL=http://127.0.0.1:5000/123/q?x=1\n";
        let vars = parse_bootstrap_output(out);
        assert_eq!(vars.len(), 2);
        assert_eq!(
            vars.get("LAMBENT_TABLE").map(String::as_str),
            Some("bench-table")
        );
        assert_eq!(
            vars.get("LAMBENT_STEPS_QUEUE_URL").map(String::as_str),
            Some("http://127.0.0.1:5000/123/q?x=1")
        );
    }

    #[test]
    fn only_get_next_is_ready() {
        assert!(is_next_request(
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n"
        ));
        assert!(!is_next_request(
            "POST /2018-06-01/runtime/init/error HTTP/1.1\r\n\r\n"
        ));
        assert!(!is_next_request(""));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn the_harness_binary_itself_is_an_elf_file() {
        // Test binaries keep their symbols.
        let me = std::env::current_exe().map_err(anyhow::Error::from);
        let has = me.and_then(|path| elf_has_symtab(&path));
        assert!(matches!(has, Ok(true)), "{has:?}");
        assert!(elf_bytes_have_symtab(b"not an elf").is_err());
    }

    #[test]
    fn the_fake_api_reports_next_and_closes() {
        let api = FakeRuntimeApi::start();
        let Ok(api) = api else {
            unreachable!("the fake API starts: {:?}", api.err())
        };
        api.measure(std::process::id());
        let mut stream = TcpStream::connect(api.address());
        let Ok(stream) = stream.as_mut() else {
            unreachable!("connects: {:?}", stream.err())
        };
        let sent = stream.write_all(
            b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
        );
        assert!(sent.is_ok());
        let mut reply = [0u8; 12];
        assert!(stream.read_exact(&mut reply).is_ok());
        assert_eq!(&reply, b"HTTP/1.1 202");
        let mut rest = [0u8; 32];
        assert!(stream.read_exact(&mut rest).is_ok());
        assert!(rest.ends_with(b"\r\n\r\n"));
        let sent = stream
            .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n");
        assert!(sent.is_ok());
        let ready = api.wait_ready(std::process::id(), Duration::from_secs(5));
        assert!(ready.is_some_and(|r| r.peak_rss_kib.is_some()));
        // Closed without an answer: end of stream (or a reset), no bytes.
        let mut tail = Vec::new();
        let read = stream.read_to_end(&mut tail);
        assert!(tail.is_empty(), "{read:?} {tail:?}");
    }

    #[test]
    fn the_table_marks_goals() {
        let hello = Measurement {
            binary: "hello-lambda".into(),
            instructions: vec![1_000_000],
            zipped_bytes: 1_000_000,
            stripped: true,
            ..Measurement::default()
        };
        let slow = Measurement {
            binary: "slow".into(),
            instructions: vec![10_100_000],
            zipped_bytes: 7_000_000,
            stripped: true,
            ..Measurement::default()
        };
        let fine = Measurement {
            binary: "fine".into(),
            instructions: vec![9_900_000],
            zipped_bytes: 5_000_000,
            stripped: true,
            ..Measurement::default()
        };
        let table = markdown_table(&[hello, slow, fine], "hello-lambda");
        assert!(table.contains("| hello-lambda | 1.00 M | 1.00x |"));
        assert!(table.contains("| slow | 10.10 M | 10.10x |"));
        assert!(table.contains("no (instructions, size) |"));
        assert!(table.contains("| fine | 9.90 M | 9.90x |"));
        assert!(table.ends_with("| yes |\n"));
    }
}
