//! Real Kafka clients against `oncelog serve`, through a fault proxy: the
//! idempotent producers of confluent-kafka (librdkafka), kafka-python and
//! aiokafka write the values "0".."N-1" while tests/kafka_clients/proxy.py
//! breaks connections around Produce requests, then the same client reads
//! the partition back, which must hold exactly the N values, in order, each
//! at the offset its producer was told.
//!
//! Scenarios, per client:
//! - drop-after-forward: Produce #2 and #5 reach the server, their responses
//!   are swallowed and the connection cut; the client resends the same
//!   batches, which the server must recognise as duplicates;
//! - drop-before-forward: the connection is cut instead of forwarding
//!   Produce #3; the resent batch must be appended once;
//! - kill-restart: as drop-after-forward at Produce #3, but the server is
//!   SIGKILLed at the cut and restarted on the same directory and port
//!   before the client may reconnect: the duplicate must be recognised from
//!   the recovered producer state, and nothing acknowledged may be lost;
//! - kill-restart-repeated: the same at Produce #1, #4 and #5.
//!
//! Each run also ends with SIGTERM, which must close the server with exit 0.
//! And negative controls: with `--test-disable-dedup` the same runs must
//! show duplicates to the checker, so that these tests can fail.
//! `ONCELOG_KAFKA_CLIENTS_KEEP=1` keeps each run's directory (data, logs).
//!
//! The clients live in a venv at `target/kafka-clients-venv`, made on first
//! use with `python3 -m venv` and pip (`ONCELOG_PYTHON` names another
//! interpreter). Without python3, venv or pip the tests print
//! "NOT RUN: why" and pass, unless `ONCELOG_REQUIRE_KAFKA_CLIENTS=1`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The clients, pinned: the versions tests/kafka_clients/README.md and
/// the research note describe.
const REQUIREMENTS: [&str; 3] = [
    "confluent-kafka==2.16.1",
    "kafka-python==3.0.12",
    "aiokafka==0.14.0",
];
/// Values produced per scenario.
const N: usize = 100;

const SERVER_READY: Duration = Duration::from_secs(30);
const PROXY_READY: Duration = Duration::from_secs(20);
const PRODUCE_DEADLINE: Duration = Duration::from_secs(90);
const CONSUME_DEADLINE: Duration = Duration::from_secs(45);
const TERM_DEADLINE: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------ scenarios

/// A fault: which Produce requests (counted by the proxy from 1, retries
/// included) are cut, how, and whether the server is SIGKILLed and
/// restarted at each cut.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scenario {
    name: &'static str,
    /// `--drop-after-forward` or `--drop-before-forward`.
    mode: &'static str,
    /// The Produce requests cut, `N[,M..]`.
    at: &'static str,
    restart: bool,
}

impl Scenario {
    fn cuts(self) -> usize {
        self.at.split(',').count()
    }
}

const DROP_AFTER_FORWARD: Scenario = Scenario {
    name: "drop-after-forward",
    mode: "--drop-after-forward",
    at: "2,5",
    restart: false,
};
const DROP_BEFORE_FORWARD: Scenario = Scenario {
    name: "drop-before-forward",
    mode: "--drop-before-forward",
    at: "3",
    restart: false,
};
const KILL_RESTART: Scenario = Scenario {
    name: "kill-restart",
    mode: "--drop-after-forward",
    at: "3",
    restart: true,
};
/// At the very first batch (the producer state is that one batch), then
/// twice in a row, the second time at the resent batch or the one after.
const KILL_RESTART_REPEATED: Scenario = Scenario {
    name: "kill-restart-repeated",
    mode: "--drop-after-forward",
    at: "1,4,5",
    restart: true,
};

macro_rules! scenario_tests {
    ($($test:ident: $client:literal, $scenario:ident;)*) => {$(
        #[test]
        fn $test() {
            let Some(python) = python() else { return };
            let run = run_scenario(&python, $client, $scenario, true);
            if let Err(problems) = check(N, &run) {
                panic!("{}", run.report(&problems));
            }
        }
    )*};
}

scenario_tests! {
    confluent_drop_after_forward: "confluent", DROP_AFTER_FORWARD;
    confluent_drop_before_forward: "confluent", DROP_BEFORE_FORWARD;
    confluent_kill_restart: "confluent", KILL_RESTART;
    kafka_python_drop_after_forward: "kafka-python", DROP_AFTER_FORWARD;
    kafka_python_drop_before_forward: "kafka-python", DROP_BEFORE_FORWARD;
    kafka_python_kill_restart: "kafka-python", KILL_RESTART;
    aiokafka_drop_after_forward: "aiokafka", DROP_AFTER_FORWARD;
    aiokafka_drop_before_forward: "aiokafka", DROP_BEFORE_FORWARD;
    aiokafka_kill_restart: "aiokafka", KILL_RESTART;
    confluent_kill_restart_repeated: "confluent", KILL_RESTART_REPEATED;
    kafka_python_kill_restart_repeated: "kafka-python", KILL_RESTART_REPEATED;
    aiokafka_kill_restart_repeated: "aiokafka", KILL_RESTART_REPEATED;
}

/// The negative controls: with a server that appends retried batches
/// again, the same checker must see the duplicates (so a run that passes
/// above is one in which the client did resend a batch the server had).
macro_rules! without_dedup_tests {
    ($($test:ident: $client:literal, $scenario:ident;)*) => {$(
        #[test]
        fn $test() {
            let Some(python) = python() else { return };
            let run = run_scenario(&python, $client, $scenario, false);
            match check(N, &run) {
                Ok(()) => panic!(
                    "{}",
                    run.report(&["with --test-disable-dedup the checker found nothing wrong: \
                                  these tests cannot fail".into()])
                ),
                Err(problems) => assert!(
                    problems.iter().any(|p| p.starts_with("duplicates")),
                    "{}",
                    run.report(&[format!(
                        "with --test-disable-dedup expected duplicates, found other problems: {problems:?}"
                    )])
                ),
            }
        }
    )*};
}

without_dedup_tests! {
    without_dedup_confluent_drop_after_forward_duplicates: "confluent", DROP_AFTER_FORWARD;
    without_dedup_confluent_kill_restart_duplicates: "confluent", KILL_RESTART;
    without_dedup_kafka_python_drop_after_forward_duplicates: "kafka-python", DROP_AFTER_FORWARD;
    without_dedup_aiokafka_drop_after_forward_duplicates: "aiokafka", DROP_AFTER_FORWARD;
}

// ------------------------------------------------------------------ one run

/// What one scenario produced, read and logged.
#[derive(Debug)]
struct Run {
    client: &'static str,
    scenario: Scenario,
    dedup: bool,
    /// Problems of the harness or the server found while running
    /// (a process that did not start, a server that did not close cleanly).
    problems: Vec<String>,
    produced: Option<Json>,
    consumed: Option<Json>,
    cuts: Vec<String>,
    logs: Vec<(String, PathBuf)>,
    /// The run's directory: the data and the logs.
    tmp: tempfile::TempDir,
}

fn run_scenario(python: &Path, client: &'static str, scenario: Scenario, dedup: bool) -> Run {
    let mut dir = tempfile::tempdir().expect("tempdir");
    let keep = std::env::var_os("ONCELOG_KAFKA_CLIENTS_KEEP").is_some_and(|v| v != "0");
    dir.disable_cleanup(keep);
    let started = Instant::now();
    let mut run = Run {
        client,
        scenario,
        dedup,
        problems: Vec::new(),
        produced: None,
        consumed: None,
        cuts: Vec::new(),
        logs: [
            ("server stderr", "server.log"),
            ("proxy stderr", "proxy.log"),
            ("producer stderr", "produce.log"),
            ("consumer stderr", "consume.log"),
        ]
        .map(|(name, file)| (name.to_string(), dir.path().join(file)))
        .into(),
        tmp: dir,
    };
    let dir = run.tmp.path().to_path_buf();
    if let Err(e) = drive(python, &mut run, &dir) {
        run.problems.push(e);
    }
    eprintln!(
        "kafka_clients: {client} {} (dedup {}): {:.1} s{}",
        scenario.name,
        if dedup { "on" } else { "off" },
        started.elapsed().as_secs_f64(),
        if keep {
            format!(", kept {}", dir.display())
        } else {
            String::new()
        }
    );
    run
}

fn drive(python: &Path, run: &mut Run, dir: &Path) -> Result<(), String> {
    let data = &dir.join("data");
    let server_log = &dir.join("server.log");
    let proxy_log = &dir.join("proxy.log");
    let produce_log = &dir.join("produce.log");
    let consume_log = &dir.join("consume.log");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients");
    let mut proxy_cmd = Command::new(python);
    proxy_cmd
        .arg(scripts.join("proxy.py"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--control-stdin",
            "--hold-at-cut",
        ])
        .args([run.scenario.mode, run.scenario.at]);
    let mut proxy = Proc::spawn("proxy", proxy_cmd, proxy_log, true)?;
    let proxy_addr = json_field(&proxy.line(PROXY_READY)?, "listening")?;

    let mut server = start_server(data, "127.0.0.1:0", &proxy_addr, run.dedup, server_log)?;
    let server_addr = server.addr.clone();
    proxy.send(&format!("upstream {server_addr}"))?;

    let topic = format!("{}-{}", run.client, run.scenario.name);
    let client_cmd = |op: &str, timeout: &str| {
        let mut c = Command::new(python);
        c.arg(scripts.join("client.py"))
            .arg(run.client)
            .args(["--bootstrap", &proxy_addr, "--topic", &topic])
            .args(["--count", &N.to_string(), op, "--timeout", timeout]);
        c
    };

    // Produce, serving the proxy's cuts meanwhile.
    let mut producer = Proc::spawn(
        "producer",
        client_cmd("--produce", "60"),
        produce_log,
        false,
    )?;
    let deadline = Instant::now() + PRODUCE_DEADLINE;
    loop {
        match proxy.lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                run.cuts.push(line);
                if run.scenario.restart {
                    server.proc.kill();
                    append_log(
                        server_log,
                        "==== test: SIGKILLed the server at the cut; restarting ====",
                    );
                    server =
                        restart_server(data, &server_addr, &proxy_addr, run.dedup, server_log)?;
                }
                proxy.send("resume")?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("the proxy exited".into()),
        }
        if producer
            .child
            .try_wait()
            .map_err(|e| e.to_string())?
            .is_some()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the producer did not finish within {PRODUCE_DEADLINE:?}"
            ));
        }
    }
    run.produced = Some(producer.last_json()?);
    if run.cuts.len() != run.scenario.cuts() {
        run.problems.push(format!(
            "the proxy cut {} time(s), expected {}: the scenario did not happen as planned",
            run.cuts.len(),
            run.scenario.cuts()
        ));
    }

    // Read it all back, through the proxy too (nothing is cut any more).
    let mut consumer = Proc::spawn(
        "consumer",
        client_cmd("--consume", "20"),
        consume_log,
        false,
    )?;
    consumer.wait(CONSUME_DEADLINE)?;
    run.consumed = Some(consumer.last_json()?);

    // SIGTERM closes the store cleanly and exits 0.
    match server.proc.terminate(TERM_DEADLINE) {
        Ok(status) if status.success() => {}
        Ok(status) => run
            .problems
            .push(format!("the server exited with {status} on SIGTERM")),
        Err(e) => run.problems.push(e),
    }
    proxy.send("quit")?;
    Ok(())
}

// ------------------------------------------------------------------ the checker

/// Everything wrong with a run: the producer must have every value
/// acknowledged, the partition must hold exactly "0".."n-1" in order, and
/// each value must be where its producer was told it is.
fn check(n: usize, run: &Run) -> Result<(), Vec<String>> {
    let mut problems = run.problems.clone();
    let (Some(produced), Some(consumed)) = (&run.produced, &run.consumed) else {
        problems.push("no result from the producer or the consumer".into());
        return Err(problems);
    };
    for (who, out) in [("producer", produced), ("consumer", consumed)] {
        if let Some(e) = out.get("error").and_then(Json::as_str) {
            problems.push(format!("{who} failed: {e}"));
        }
    }

    let mut acked_at: HashMap<String, i64> = HashMap::new();
    let mut unacked = Vec::new();
    let deliveries = produced
        .get("deliveries")
        .and_then(Json::as_array)
        .unwrap_or(&[]);
    if deliveries.len() != n {
        problems.push(format!(
            "{} delivery results for {n} values",
            deliveries.len()
        ));
    }
    for d in deliveries {
        let value = d
            .get("value")
            .and_then(Json::as_str)
            .unwrap_or("?")
            .to_string();
        match (
            d.get("offset").and_then(Json::as_i64),
            d.get("error").and_then(Json::as_str),
        ) {
            (Some(offset), _) => {
                acked_at.insert(value, offset);
            }
            (None, Some(error)) => unacked.push(format!("{value}: {error}")),
            (None, None) => unacked.push(format!("{value}: no delivery report")),
        }
    }
    if !unacked.is_empty() {
        problems.push(format!(
            "{} of {n} values not acknowledged: {}",
            unacked.len(),
            abbreviate(&unacked, 10)
        ));
    }

    let values: Vec<String> = strings(consumed.get("values"));
    let offsets: Vec<i64> = consumed
        .get("offsets")
        .and_then(Json::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(Json::as_i64)
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for v in &values {
        *seen.entry(v).or_default() += 1;
    }
    let mut dups: Vec<(&str, usize)> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(v, c)| (*v, *c))
        .collect();
    dups.sort_by_key(|(v, _)| v.parse::<i64>().unwrap_or(i64::MAX));
    if !dups.is_empty() {
        let list: Vec<String> = dups.iter().map(|(v, c)| format!("{v}×{c}")).collect();
        problems.push(format!(
            "duplicates: {} value(s) read more than once: {}",
            dups.len(),
            abbreviate(&list, 20)
        ));
    }
    let mut lost: Vec<&String> = acked_at
        .keys()
        .filter(|v| !seen.contains_key(v.as_str()))
        .collect();
    lost.sort_by_key(|v| v.parse::<i64>().unwrap_or(i64::MAX));
    if !lost.is_empty() {
        let list: Vec<String> = lost.iter().map(|v| v.to_string()).collect();
        problems.push(format!(
            "acknowledged but not read: {}",
            abbreviate(&list, 20)
        ));
    }
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    if values != expected {
        problems.push(format!(
            "read {} values, expected exactly \"0\"..\"{}\" in order: read {}",
            values.len(),
            n - 1,
            runs(&values)
        ));
    }
    if offsets.len() == values.len() {
        let mut wrong = Vec::new();
        let mut first_at: HashMap<&str, i64> = HashMap::new();
        for (v, o) in values.iter().zip(&offsets) {
            first_at.entry(v).or_insert(*o);
        }
        for (v, acked) in &acked_at {
            if let Some(read) = first_at.get(v.as_str())
                && *acked >= 0
                && acked != read
            {
                wrong.push(format!("{v}: acked at {acked}, read at {read}"));
            }
        }
        wrong.sort();
        if !wrong.is_empty() {
            problems.push(format!(
                "offsets differ from the acknowledged ones: {}",
                abbreviate(&wrong, 10)
            ));
        }
    } else {
        problems.push(format!(
            "{} offsets for {} values",
            offsets.len(),
            values.len()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

impl Run {
    /// A failure message: which client and scenario, what went wrong, what
    /// was read, the proxy's cuts and the tails of every log.
    fn report(&self, problems: &[String]) -> String {
        let mut s = format!(
            "client {} / scenario {} (dedup {}):\n",
            self.client,
            self.scenario.name,
            if self.dedup { "on" } else { "off" }
        );
        for p in problems {
            let _ = writeln!(s, "  - {p}");
        }
        if let Some(p) = &self.produced {
            let _ = writeln!(
                s,
                "producer: acked {} failed {} error {}",
                p.get("acked").and_then(Json::as_i64).unwrap_or(-1),
                p.get("failed").and_then(Json::as_i64).unwrap_or(-1),
                p.get("error").and_then(Json::as_str).unwrap_or("none")
            );
        }
        if let Some(c) = &self.consumed {
            let values = strings(c.get("values"));
            let _ = writeln!(
                s,
                "consumer: high watermark {}, read {} values: {}",
                c.get("high_watermark").and_then(Json::as_i64).unwrap_or(-1),
                values.len(),
                runs(&values)
            );
        }
        let _ = writeln!(s, "proxy cuts: {:?}", self.cuts);
        let _ = writeln!(
            s,
            "(ONCELOG_KAFKA_CLIENTS_KEEP=1 keeps each run's directory: data, logs)"
        );
        for (name, path) in &self.logs {
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            let _ = writeln!(
                s,
                "---- {name} (last {} of {} lines) ----",
                tail.len(),
                lines.len()
            );
            for l in tail {
                let _ = writeln!(s, "{l}");
            }
        }
        s
    }
}

fn strings(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .unwrap_or(&[])
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{x:?}"))
        })
        .collect()
}

fn abbreviate(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        let _ = write!(s, ", ... ({} more)", items.len() - max);
    }
    s
}

/// Values as runs of consecutive integers: `[0..=19, 10..=19, 20..=99]`.
fn runs(values: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let Ok(start) = values[i].parse::<i64>() else {
            parts.push(format!("{:?}", values[i]));
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < values.len() && values[j].parse::<i64>().ok() == Some(start + (j - i) as i64) {
            j += 1;
        }
        parts.push(if j - i == 1 {
            start.to_string()
        } else {
            format!("{start}..={}", start + (j - i - 1) as i64)
        });
        i = j;
    }
    format!("[{}]", parts.join(", "))
}

// ------------------------------------------------------------------ processes

/// A child process, killed on drop; stdout lines arrive on a channel,
/// stderr goes to a log file.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        log: &Path,
        stdin: bool,
    ) -> Result<Proc, String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{name}: log {}: {e}", log.display()))?;
        let mut child = cmd
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{name}: cannot start {cmd:?}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Proc {
            name,
            child,
            stdin,
            lines,
        })
    }

    /// The next stdout line.
    fn line(&mut self, timeout: Duration) -> Result<String, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("{}: no output within {timeout:?}", self.name))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!(
                    "{}: exited ({status}) without the expected line",
                    self.name
                ))
            }
        }
    }

    fn send(&mut self, command: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}: no stdin", self.name))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{}: sending {command:?}: {e}", self.name))
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "{}: did not finish within {timeout:?}; killed",
                    self.name
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last stdout line of an exited process, as JSON.
    fn last_json(&mut self) -> Result<Json, String> {
        let mut last = None;
        // The reader thread ends at the end of stdout.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            if !line.trim().is_empty() {
                last = Some(line);
            }
        }
        let line = last.ok_or_else(|| format!("{}: printed nothing", self.name))?;
        Json::parse(&line).map_err(|e| format!("{}: bad JSON {line:?}: {e}", self.name))
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait.
    fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: a plain syscall sending a signal to our own, not yet
        // reaped, child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        self.wait(timeout).map_err(|e| format!("{e} after SIGTERM"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin.take();
        self.kill();
    }
}

struct Server {
    proc: Proc,
    addr: String,
}

fn start_server(
    data: &Path,
    listen: &str,
    advertise: &str,
    dedup: bool,
    log: &Path,
) -> Result<Server, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oncelog"));
    cmd.arg("serve")
        .arg(data)
        .args(["--listen", listen, "--advertise", advertise]);
    // Connections closed and requests refused, for the failure reports.
    if std::env::var_os("ONCELOG_LOG").is_none() {
        cmd.env("ONCELOG_LOG", "info");
    }
    if !dedup {
        cmd.arg("--test-disable-dedup");
    }
    let mut proc = Proc::spawn("server", cmd, log, false)?;
    let line = proc.line(SERVER_READY)?;
    let addr = json_field(&line, "listening")?;
    let advertised = json_field(&line, "advertised")?;
    if advertised != advertise {
        return Err(format!(
            "server: advertises {advertised:?}, asked for {advertise:?} ({line})"
        ));
    }
    Ok(Server { proc, addr })
}

/// The same directory and port; a few tries in case the port is slow to
/// be free again.
fn restart_server(
    data: &Path,
    addr: &str,
    advertise: &str,
    dedup: bool,
    log: &Path,
) -> Result<Server, String> {
    let mut last = String::new();
    for _ in 0..5 {
        match start_server(data, addr, advertise, dedup, log) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(200));
    }
    Err(format!("could not restart the server on {addr}: {last}"))
}

fn append_log(path: &Path, line: &str) {
    if let Ok(mut f) = OpenOptions::new().append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

fn json_field(line: &str, key: &str) -> Result<String, String> {
    Json::parse(line)
        .ok()
        .and_then(|j| j.get(key).and_then(Json::as_str).map(str::to_string))
        .ok_or_else(|| format!("no {key:?} in {line:?}"))
}

// ------------------------------------------------------------------ the venv

/// The venv's python, made once per machine (and per test binary run,
/// under a file lock), or None after printing why the tests cannot run.
fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(venv) {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            if std::env::var_os("ONCELOG_REQUIRE_KAFKA_CLIENTS").is_some_and(|v| v != "0") {
                panic!("kafka_clients: cannot run and ONCELOG_REQUIRE_KAFKA_CLIENTS is set: {why}");
            }
            // Straight to the stderr file descriptor, past the test
            // harness's capture, so that a skip is never silent.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "kafka_clients: NOT RUN (these tests pass without running): {why}"
                );
            });
            None
        }
    }
}

fn venv() -> Result<PathBuf, String> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    let venv = target.join("kafka-clients-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("oncelog-requirements.txt");
    let wanted = REQUIREMENTS.join("\n") + "\n";
    fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let lock = File::create(target.join("kafka-clients-venv.lock"))
        .map_err(|e| format!("venv lock: {e}"))?;
    lock.lock().map_err(|e| format!("venv lock: {e}"))?;
    if fs::read_to_string(&marker).is_ok_and(|m| m == wanted) && python.exists() {
        return Ok(python);
    }
    let _ = fs::remove_dir_all(&venv);
    let base = std::env::var_os("ONCELOG_PYTHON").unwrap_or_else(|| "python3".into());
    let _ = writeln!(
        std::io::stderr(),
        "kafka_clients: creating {} with {} (one time)",
        venv.display(),
        base.to_string_lossy()
    );
    let mut mk = Command::new(&base);
    mk.arg("-m").arg("venv").arg(&venv);
    run_quiet(mk, Duration::from_secs(120)).map_err(|e| format!("python3 -m venv failed: {e}"))?;
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
    ])
    .args(REQUIREMENTS);
    run_quiet(pip, Duration::from_secs(600))
        .map_err(|e| format!("pip install {REQUIREMENTS:?} failed: {e}"))?;
    let mut import = Command::new(&python);
    import.args(["-c", "import confluent_kafka, kafka, aiokafka"]);
    run_quiet(import, Duration::from_secs(60))
        .map_err(|e| format!("the clients do not import: {e}"))?;
    fs::write(&marker, wanted).map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(python)
}

/// Runs a command to its end within a time limit; its output only on failure.
fn run_quiet(mut cmd: Command, timeout: Duration) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    };
    let output: String = readers.into_iter().filter_map(|t| t.join().ok()).collect();
    if status.success() {
        Ok(())
    } else {
        let tail: Vec<&str> = output.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!("{cmd:?}: {status}:\n{}", tail.join("\n")))
    }
}

// ------------------------------------------------------------------ JSON

/// Just enough JSON for the scripts' output lines.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            b: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Num(n) if n.fract() == 0.0 => Some(*n as i64),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    fields.push((k, self.value()?));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("expected ',' or '}}' at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("expected ',' or ']' at {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                {
                    self.i += 1;
                }
                let s = std::str::from_utf8(&self.b[start..self.i]).map_err(|e| e.to_string())?;
                s.parse()
                    .map(Json::Num)
                    .map_err(|e| format!("number {s:?}: {e}"))
            }
            _ => Err(format!("unexpected input at {}", self.i)),
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Result<Json, String> {
        if self.b[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self.b.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        let h = std::str::from_utf8(h).map_err(|e| e.to_string())?;
        self.i += 4;
        u32::from_str_radix(h, 16).map_err(|e| format!("\\u{h}: {e}"))
    }

    fn string(&mut self) -> Result<String, String> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.b.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.b.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut u = self.hex4()?;
                            if (0xd800..0xdc00).contains(&u) && self.b[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                u = 0x10000
                                    + ((u - 0xd800) << 10)
                                    + (lo.wrapping_sub(0xdc00) & 0x3ff);
                            }
                            char::from_u32(u).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(c),
            }
        }
    }
}

#[test]
fn the_checker_and_its_json() {
    let j = Json::parse(r#"{"a": [1, -2, "x\"\u00e9\ud83d\ude00"], "b": null, "c": {"d": true}}"#)
        .unwrap();
    assert_eq!(
        j.get("a").and_then(Json::as_array).map(<[Json]>::len),
        Some(3)
    );
    assert_eq!(
        j.get("a").unwrap().as_array().unwrap()[2].as_str(),
        Some("x\"é😀")
    );
    assert_eq!(j.get("c").and_then(|c| c.get("d")), Some(&Json::Bool(true)));
    assert_eq!(
        runs(&["0", "1", "2", "1", "5", "x"].map(String::from)),
        r#"[0..=2, 1, 5, "x"]"#
    );

    let produced = |n: usize| {
        let d: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"value": "{i}", "offset": {i}, "error": null}}"#))
            .collect();
        Json::parse(&format!(
            r#"{{"deliveries": [{}], "error": null}}"#,
            d.join(", ")
        ))
        .unwrap()
    };
    let consumed = |vals: &[usize]| {
        let v: Vec<String> = vals.iter().map(|i| format!("\"{i}\"")).collect();
        let o: Vec<String> = (0..vals.len()).map(|i| i.to_string()).collect();
        Json::parse(&format!(
            r#"{{"values": [{}], "offsets": [{}], "error": null}}"#,
            v.join(","),
            o.join(",")
        ))
        .unwrap()
    };
    let run = |vals: &[usize]| Run {
        client: "test",
        scenario: DROP_AFTER_FORWARD,
        dedup: true,
        problems: Vec::new(),
        produced: Some(produced(4)),
        consumed: Some(consumed(vals)),
        cuts: Vec::new(),
        logs: Vec::new(),
        tmp: tempfile::tempdir().unwrap(),
    };
    assert_eq!(check(4, &run(&[0, 1, 2, 3])), Ok(()));
    let dup = check(4, &run(&[0, 1, 0, 1, 2, 3])).unwrap_err();
    assert!(dup[0].starts_with("duplicates: 2 value(s)"), "{dup:?}");
    let lost = check(4, &run(&[0, 1, 3])).unwrap_err();
    assert!(
        lost.iter().any(|p| p == "acknowledged but not read: 2"),
        "{lost:?}"
    );
    let moved = check(4, &run(&[1, 0, 2, 3])).unwrap_err();
    assert!(
        moved.iter().any(|p| p.starts_with("offsets differ")),
        "{moved:?}"
    );
}
