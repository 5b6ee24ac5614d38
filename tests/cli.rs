//! The command line: JSON lines on stdout, errors as `{"error": ...}` lines
//! with a non-zero exit, streaming produce, dump, verify and the demo.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn oncelog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oncelog"))
}

fn run(args: &[&str], stdin: &[u8]) -> (i32, Vec<String>) {
    let mut child = oncelog()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading its input.
    match child.stdin.take().unwrap().write_all(stdin) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        out
    });
    // A command that hangs fails its test instead of the whole run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("oncelog {args:?} did not finish within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let lines = reader.join().unwrap().lines().map(str::to_owned).collect();
    (status.code().unwrap_or(-1), lines)
}

#[test]
fn produce_then_dump_round_trips_text_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, lines) = run(
        &["produce", d, "logs", "0", "--batch-records", "2"],
        b"one\ntwo\nthree\r\n",
    );
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines,
        vec![
            r#"{"outcome": "appended", "base_offset": 0, "last_offset": 1}"#,
            r#"{"outcome": "appended", "base_offset": 2, "last_offset": 2}"#,
        ]
    );
    let (code, lines) = run(
        &["produce", d, "logs", "0", "--durability", "os"],
        b"\xff\xfe binary\n",
    );
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        vec![r#"{"outcome": "appended", "base_offset": 3, "last_offset": 3}"#]
    );

    let (code, lines) = run(&["dump", d, "logs", "0"], b"");
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.len(), 4);
    assert!(
        lines[0].starts_with(r#"{"offset": 0, "timestamp": "#),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with(
            r#""key": null, "value": "one", "encoding": "utf8", "producer_id": -1, "producer_epoch": -1, "sequence": -1}"#
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].contains(r#""value": "three""#),
        "CR LF is stripped: {}",
        lines[2]
    );
    assert!(
        lines[3].contains(r#""value": "//4gYmluYXJ5", "encoding": "base64""#),
        "{}",
        lines[3]
    );

    let (code, lines) = run(&["dump", d, "logs", "0", "--from", "2"], b"");
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(r#"{"offset": 2,"#));

    let (code, lines) = run(&["verify", d], b"");
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(r#"{"sound": true, "partitions": 1, "segments": 1, "batches": 3"#),
        "{lines:?}"
    );
}

#[test]
fn produce_streams_each_batch_as_soon_as_its_lines_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = oncelog()
        .args([
            "produce",
            dir.path().to_str().unwrap(),
            "s",
            "0",
            "--batch-records",
            "2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdin.write_all(b"a\nb\n").unwrap();
    stdin.flush().unwrap();
    // The first batch is acknowledged while stdin is still open.
    stdout.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        r#"{"outcome": "appended", "base_offset": 0, "last_offset": 1}"#
    );
    stdin.write_all(b"c\n").unwrap();
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        r#"{"outcome": "appended", "base_offset": 2, "last_offset": 2}"#
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn errors_are_json_lines_with_a_kind_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str, i32)] = &[
        (&["produce", d, "../evil", "0"], "invalid_topic", 1),
        (&["produce", d, "t", "x"], "usage", 2),
        (
            &["produce", d, "t", "0", "--durability", "maybe"],
            "usage",
            2,
        ),
        (&["produce", d, "t", "0", "--bogus", "1"], "usage", 2),
        (&["dump", d, "missing", "0"], "not_found", 1),
        (&["dump", "/nonexistent/oncelog", "t", "0"], "not_found", 1),
        (&["producers", d, "missing", "0"], "not_found", 1),
        (
            &["producers", "/nonexistent/oncelog", "t", "0"],
            "not_found",
            1,
        ),
        (&["producers", d, "t"], "usage", 2),
        (
            &[
                "produce",
                d,
                "t",
                "0",
                "--producer",
                "p",
                "--producer-id",
                "1",
            ],
            "usage",
            2,
        ),
        (&["produce", d, "t", "0", "--epoch", "1"], "usage", 2),
        (
            &["produce", d, "t", "0", "--producer", "p", "--epoch", "1"],
            "usage",
            2,
        ),
        (&["produce", d, "t", "0", "--sequence", "1"], "usage", 2),
        (&["produce", d, "t", "0", "--producer-id", "x"], "usage", 2),
        (&["produce", d, "t", "0", "--producer-id", "-1"], "usage", 2),
        (
            &[
                "produce",
                d,
                "t",
                "0",
                "--producer-id",
                "1",
                "--epoch",
                "40000",
            ],
            "usage",
            2,
        ),
        (&["frobnicate"], "usage", 2),
        (&[], "usage", 2),
    ];
    for (args, kind, code) in cases {
        let (got, lines) = run(args, b"");
        assert_eq!(got, *code, "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(
            lines[0].starts_with(&format!(r#"{{"error": "{kind}", "message": "#)),
            "{args:?}: {}",
            lines[0]
        );
    }
}

#[test]
fn verify_reports_damage_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let input: String = (0..3000).map(|i| format!("record number {i}\n")).collect();
    // Many small segments: produce with the CLI, then damage a sealed one.
    {
        let store = oncelog::Store::open(
            dir.path(),
            oncelog::Config::default()
                .with_segment_bytes(8192)
                .with_durability(oncelog::Durability::Os),
        )
        .unwrap();
        let log = store.log("v", 0).unwrap();
        for chunk in input.lines().collect::<Vec<_>>().chunks(10) {
            let mut b = oncelog::format::BatchBuilder::new();
            for l in chunk {
                b.push(0, None, Some(l.as_bytes()), &[]);
            }
            log.append(&b.build()).unwrap();
        }
        store.close().unwrap();
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("v-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[500] ^= 0x01;
    std::fs::write(&segs[1], &bytes).unwrap();
    let (code, lines) = run(&["verify", d], b"");
    assert_eq!(code, 1, "{lines:?}");
    let problem = &lines[0];
    assert!(
        problem.starts_with(r#"{"problem": "corrupt_batch", "severity": "error""#),
        "{problem}"
    );
    assert!(
        problem.contains(&segs[1].display().to_string()),
        "{problem}"
    );
    assert!(lines.iter().any(|l| l.starts_with(r#"{"sound": false"#)));
    assert!(lines.last().unwrap().starts_with(r#"{"error": "corrupt""#));
}

#[test]
fn demo_runs_end_to_end() {
    let (code, lines) = run(&["demo"], b"");
    assert_eq!(code, 0, "{lines:?}");
    let steps: Vec<&str> = lines.iter().filter_map(|l| l.split('"').nth(3)).collect();
    assert_eq!(
        steps,
        vec![
            "open",
            "append",
            "group_commit",
            "crash",
            "recover",
            "read",
            "append_after_recovery",
            "verify",
            "producer_send",
            "ack_lost",
            "retry",
            "child_send",
            "kill",
            "recover_producers",
            "retry_after_kill",
        ]
    );
    let recover = lines
        .iter()
        .find(|l| l.contains(r#""step": "recover""#))
        .unwrap();
    assert!(!recover.contains(r#""bytes_truncated": 0,"#), "{recover}");
    assert!(
        lines.iter().any(|l| l.contains(r#""intact": true"#)),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(r#"{"step": "verify""#) && l.contains(r#""sound": true"#)),
        "{lines:?}"
    );

    // The idempotent-producer steps.
    let step = |name: &str| -> Json {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!(r#"{{"step": "{name}""#)))
            .unwrap_or_else(|| panic!("no step {name}: {lines:?}"));
        json(line)
    };
    let sent = step("producer_send");
    assert_eq!(sent["outcome"].str(), "appended");
    for (retry, original) in [
        (step("retry"), step("producer_send")),
        (step("retry_after_kill"), step("child_send")),
    ] {
        assert_eq!(retry["duplicate"], Json::Bool(true), "{retry:?}");
        assert_eq!(retry["same_offsets"], Json::Bool(true), "{retry:?}");
        assert_eq!(retry["base_offset"], original["base_offset"]);
        assert_eq!(retry["original_base_offset"], original["base_offset"]);
        assert_eq!(retry["last_offset"], original["last_offset"]);
    }
    let child = step("child_send");
    assert_eq!(child["outcome"].str(), "appended");
    assert_eq!(
        child["producer_id"], sent["producer_id"],
        "the same named producer"
    );
    assert!(child["epoch"].int() > sent["epoch"].int());
    let kill = step("kill");
    assert_eq!(kill["pid"], child["pid"]);
    assert_eq!(kill["signal"].int(), 9, "{kill:?}");
    let recover = step("recover_producers");
    assert!(recover["checkpoint_offset"].int() >= 0, "{recover:?}");
    assert_eq!(recover["batches_replayed"].int(), 1, "{recover:?}");
}

/// Lives here, not in tests/store.rs: a child spawned while another test of
/// the same process holds a store open inherits (until it execs) the lock's
/// file descriptor, which would make that test's reopen fail spuriously.
#[test]
fn a_second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = oncelog::Store::open(dir.path(), oncelog::Config::default()).unwrap();
    let out = oncelog()
        .args(["dump", dir.path().to_str().unwrap(), "t", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("{\"error\": \"locked\""), "{stdout}");
}

// ---- a small JSON reader, enough for our own output lines ---------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn int(&self) -> i64 {
        match self {
            Json::Num(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            other => panic!("not an object: {other:?}"),
        }
    }
}

impl std::ops::Index<&str> for Json {
    type Output = Json;
    fn index(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no field {key:?} in {self:?}")),
            other => panic!("not an object: {other:?}"),
        }
    }
}

fn json(line: &str) -> Json {
    fn ws(s: &mut &str) {
        *s = s.trim_start();
    }
    fn string(s: &mut &str) -> String {
        assert!(s.starts_with('"'), "expected a string at {s:?}");
        let mut out = String::new();
        let mut chars = s[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    *s = &s[i + 2..];
                    return out;
                }
                '\\' => match chars.next().unwrap().1 {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex: String = (0..4).map(|_| chars.next().unwrap().1).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                    }
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
        panic!("unterminated string");
    }
    fn value(s: &mut &str) -> Json {
        ws(s);
        let v = if let Some(rest) = s.strip_prefix("null") {
            *s = rest;
            Json::Null
        } else if let Some(rest) = s.strip_prefix("true") {
            *s = rest;
            Json::Bool(true)
        } else if let Some(rest) = s.strip_prefix("false") {
            *s = rest;
            Json::Bool(false)
        } else if s.starts_with('"') {
            Json::Str(string(s))
        } else if let Some(rest) = s.strip_prefix('[') {
            *s = rest;
            let mut items = Vec::new();
            ws(s);
            if let Some(rest) = s.strip_prefix(']') {
                *s = rest;
            } else {
                loop {
                    items.push(value(s));
                    ws(s);
                    let (c, rest) = s.split_at(1);
                    *s = rest;
                    if c == "]" {
                        break;
                    }
                    assert_eq!(c, ",");
                }
            }
            Json::Arr(items)
        } else if let Some(rest) = s.strip_prefix('{') {
            *s = rest;
            let mut fields = Vec::new();
            ws(s);
            if let Some(rest) = s.strip_prefix('}') {
                *s = rest;
            } else {
                loop {
                    ws(s);
                    let k = string(s);
                    ws(s);
                    *s = s.strip_prefix(':').expect("a colon");
                    fields.push((k, value(s)));
                    ws(s);
                    let (c, rest) = s.split_at(1);
                    *s = rest;
                    if c == "}" {
                        break;
                    }
                    assert_eq!(c, ",");
                }
            }
            Json::Obj(fields)
        } else {
            let end = s
                .find(|c: char| c != '-' && c != '.' && !c.is_ascii_digit())
                .unwrap_or(s.len());
            let (num, rest) = s.split_at(end);
            *s = rest;
            // Floats (seconds) are kept as their integer part.
            Json::Num(num.split('.').next().unwrap().parse().expect(num))
        };
        ws(s);
        v
    }
    let mut s = line;
    let v = value(&mut s);
    assert!(s.is_empty(), "trailing text after JSON: {s:?} in {line}");
    v
}

/// The `(outcome, base_offset, last_offset)` of produce's lines.
fn outcomes(lines: &[String]) -> Vec<(String, Option<i64>, Option<i64>)> {
    lines
        .iter()
        .map(|l| {
            let j = json(l);
            assert_eq!(j.keys(), ["outcome", "base_offset", "last_offset"], "{l}");
            let off = |v: &Json| (v != &Json::Null).then(|| v.int());
            (
                j["outcome"].str().to_owned(),
                off(&j["base_offset"]),
                off(&j["last_offset"]),
            )
        })
        .collect()
}

fn appended(base: i64, last: i64) -> (String, Option<i64>, Option<i64>) {
    ("appended".into(), Some(base), Some(last))
}

fn duplicate(base: i64, last: i64) -> (String, Option<i64>, Option<i64>) {
    ("duplicate".into(), Some(base), Some(last))
}

/// Asserts that `lines` ends with an error line of this kind.
fn assert_error(lines: &[String], kind: &str) {
    let last = json(lines.last().expect("an error line"));
    assert_eq!(last.keys(), ["error", "message"], "{lines:?}");
    assert_eq!(last["error"].str(), kind, "{lines:?}");
}

// ---- idempotent producers ------------------------------------------------

#[test]
fn explicit_producer_id_retries_are_duplicates_with_the_first_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = [
        "produce",
        d,
        "p",
        "0",
        "--producer-id",
        "4242",
        "--batch-records",
        "2",
    ];
    let (code, first) = run(&args, b"a\nb\nc\n");
    assert_eq!(code, 0, "{first:?}");
    assert_eq!(outcomes(&first), vec![appended(0, 1), appended(2, 2)]);

    // The same batches again (a client that never saw the answers): all
    // duplicates at the first run's offsets, nothing written.
    let (code, again) = run(&args, b"a\nb\nc\n");
    assert_eq!(code, 0, "{again:?}");
    assert_eq!(outcomes(&again), vec![duplicate(0, 1), duplicate(2, 2)]);

    // Continuing after them, with explicit --epoch and --sequence.
    let (code, next) = run(
        &[
            "produce",
            d,
            "p",
            "0",
            "--producer-id",
            "4242",
            "--epoch",
            "0",
            "--sequence",
            "3",
        ],
        b"d\ne\n",
    );
    assert_eq!(code, 0, "{next:?}");
    let next = outcomes(&next);
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|(o, _, _)| o == "appended"), "{next:?}");
    assert!(next[0].1.unwrap() > 2, "{next:?}");
    assert_eq!(next[1].1.unwrap(), next[0].1.unwrap() + 1);

    // The dump shows each record's producer, epoch and own sequence.
    let (code, dump) = run(&["dump", d, "p", "0"], b"");
    assert_eq!(code, 0, "{dump:?}");
    let recs: Vec<Json> = dump.iter().map(|l| json(l)).collect();
    assert_eq!(recs.len(), 5, "no duplicate was written: {dump:?}");
    assert_eq!(
        recs[0].keys(),
        [
            "offset",
            "timestamp",
            "key",
            "value",
            "encoding",
            "producer_id",
            "producer_epoch",
            "sequence"
        ]
    );
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["producer_id"].int(), 4242);
        assert_eq!(r["producer_epoch"].int(), 0);
        assert_eq!(r["sequence"].int(), i as i64, "{r:?}");
    }
    assert_eq!(
        recs.iter().map(|r| r["value"].str()).collect::<Vec<_>>(),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(recs[3]["offset"], Json::Num(next[0].1.unwrap()));
}

#[test]
fn refused_batches_print_the_library_error_kind_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let produce = |extra: &[&str], input: &[u8]| {
        let mut args = vec!["produce", d, "r", "0", "--producer-id", "7"];
        args.extend_from_slice(extra);
        run(&args, input)
    };
    let (code, lines) = produce(&["--batch-records", "2"], b"a\nb\nc\n");
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(outcomes(&lines), vec![appended(0, 1), appended(2, 2)]);

    // A gap: sequence 5 when 3 is next.
    let (code, lines) = produce(&["--sequence", "5"], b"x\n");
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_error(&lines, "out_of_order_sequence");
    let msg = json(&lines[0])["message"].str().to_owned();
    assert!(
        msg.contains("r-0") && msg.contains('7') && msg.contains('3'),
        "{msg}"
    );

    // Lines already printed stay: a duplicate, then a batch that partly
    // overlaps the window.
    let (code, lines) = produce(&["--batch-records", "2"], b"a\nb\nc\nd\n");
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(outcomes(&lines[..1]), vec![duplicate(0, 1)]);
    assert_error(&lines, "out_of_order_sequence");

    // A missing sequence with a producer id.
    let (code, lines) = produce(&["--sequence", "-1"], b"x\n");
    assert_eq!(code, 1, "{lines:?}");
    assert_error(&lines, "invalid_record");

    // A new epoch starts at sequence 0; then the old epoch is refused.
    let (code, lines) = produce(&["--epoch", "1"], b"y\n");
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(outcomes(&lines)[0].0, "appended");
    let (code, lines) = produce(&["--epoch", "0", "--sequence", "3"], b"z\n");
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_error(&lines, "invalid_producer_epoch");

    // Every run closed the store cleanly, refused batches included: the
    // next open finds a checkpoint and has nothing to replay.
    let store = oncelog::Store::open(dir.path(), oncelog::Config::default()).unwrap();
    let log = store.log("r", 0).unwrap();
    let report = log.recovery_report();
    assert!(report.checkpoint_offset.is_some(), "{report:?}");
    assert_eq!(report.batches_replayed, 0, "{report:?}");
    assert_eq!(log.producer(7).unwrap().epoch, 1);
    drop(log);
    store.close().unwrap();
}

#[test]
fn named_producer_resumes_across_runs_and_lists_in_producers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let named = |extra: &[&str], input: &[u8]| {
        let mut args = vec!["produce", d, "n", "0", "--producer", "billing"];
        args.extend_from_slice(extra);
        run(&args, input)
    };
    let (code, first) = named(&["--batch-records", "2"], b"a\nb\nc\n");
    assert_eq!(code, 0, "{first:?}");
    assert_eq!(outcomes(&first), vec![appended(0, 1), appended(2, 2)]);

    // A second run resumes at sequence 3: appended after the first run.
    let (code, second) = named(&[], b"d\ne\n");
    assert_eq!(code, 0, "{second:?}");
    let second = outcomes(&second);
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|(o, _, _)| o == "appended"), "{second:?}");
    let (b3, b4) = (second[0].1.unwrap(), second[1].1.unwrap());
    assert!(b3 > 2 && b4 == b3 + 1, "{second:?}");

    // A third run re-sends from sequence 0: duplicates at the old offsets.
    let (code, third) = named(&["--batch-records", "2", "--sequence", "0"], b"a\nb\nc\n");
    assert_eq!(code, 0, "{third:?}");
    assert_eq!(outcomes(&third), vec![duplicate(0, 1), duplicate(2, 2)]);
    // ... and continues from the given sequences, not the producer's own.
    let (code, fourth) = named(&["--sequence", "4"], b"e\nf\n");
    assert_eq!(code, 0, "{fourth:?}");
    let fourth = outcomes(&fourth);
    assert_eq!(fourth[0], duplicate(b4, b4));
    assert_eq!(fourth[1].0, "appended");
    let b5 = fourth[1].1.unwrap();

    // Plain batches and an explicit id on the same partition.
    let (code, _) = run(&["produce", d, "n", "0"], b"plain\n");
    assert_eq!(code, 0);
    let (code, explicit) = run(
        &[
            "produce",
            d,
            "n",
            "0",
            "--producer-id",
            "900000",
            "--sequence",
            "10",
        ],
        b"x\n",
    );
    assert_eq!(code, 0, "{explicit:?}");
    let bx = outcomes(&explicit)[0].1.unwrap();

    let (code, lines) = run(&["producers", d, "n", "0"], b"");
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.len(), 2, "plain batches have no producer: {lines:?}");
    let ps: Vec<Json> = lines.iter().map(|l| json(l)).collect();
    for p in &ps {
        assert_eq!(
            p.keys(),
            [
                "producer_id",
                "producer_epoch",
                "last_sequence",
                "batches",
                "last_append_ms",
                "name"
            ]
        );
        assert!(p["last_append_ms"].int() > 1_600_000_000_000, "{p:?}");
    }
    let (billing, other) = (&ps[0], &ps[1]);
    assert!(
        billing["producer_id"].int() < other["producer_id"].int(),
        "ordered by id"
    );
    assert_eq!(billing["name"].str(), "billing");
    assert_eq!(billing["last_sequence"].int(), 5);
    assert!(billing["producer_epoch"].int() >= 1, "{billing:?}");
    let batch = |first: i64, last: i64, base: i64, last_off: i64| {
        Json::Obj(vec![
            ("first_sequence".into(), Json::Num(first)),
            ("last_sequence".into(), Json::Num(last)),
            ("base_offset".into(), Json::Num(base)),
            ("last_offset".into(), Json::Num(last_off)),
        ])
    };
    assert_eq!(
        billing["batches"].arr(),
        [
            batch(0, 1, 0, 1),
            batch(2, 2, 2, 2),
            batch(3, 3, b3, b3),
            batch(4, 4, b4, b4),
            batch(5, 5, b5, b5),
        ],
        "oldest first"
    );
    assert_eq!(other["producer_id"].int(), 900000);
    assert_eq!(other["producer_epoch"].int(), 0);
    assert_eq!(other["name"], Json::Null);
    assert_eq!(other["last_sequence"].int(), 10);
    assert_eq!(other["batches"].arr(), [batch(10, 10, bx, bx)]);

    // The dump: the named producer's records carry its id and sequences,
    // the plain one -1s.
    let (code, dump) = run(&["dump", d, "n", "0"], b"");
    assert_eq!(code, 0, "{dump:?}");
    let recs: Vec<Json> = dump.iter().map(|l| json(l)).collect();
    let seqs: Vec<(i64, i64)> = recs
        .iter()
        .map(|r| (r["producer_id"].int(), r["sequence"].int()))
        .collect();
    let id = billing["producer_id"].int();
    assert_eq!(
        seqs,
        [
            (id, 0),
            (id, 1),
            (id, 2),
            (id, 3),
            (id, 4),
            (id, 5),
            (-1, -1),
            (900000, 10)
        ]
    );
    let plain = &recs[6];
    assert_eq!(plain["value"].str(), "plain");
    assert_eq!(plain["producer_epoch"].int(), -1);
    assert!(recs[5]["producer_epoch"].int() >= 1, "a later session");
    assert_eq!(recs[0]["producer_epoch"].int(), 0);
}

#[test]
fn producer_names_are_validated_and_producers_of_an_empty_partition_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let long = "x".repeat(300);
    let (code, lines) = run(&["produce", d, "e", "0", "--producer", &long], b"a\n");
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_error(&lines, "invalid_producer");
    let (code, lines) = run(&["produce", d, "e", "0"], b"plain\n");
    assert_eq!(code, 0, "{lines:?}");
    let (code, lines) = run(&["producers", d, "e", "0"], b"");
    assert_eq!((code, lines), (0, Vec::<String>::new()));
}
