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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (out.status.code().unwrap_or(-1), lines)
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
        lines[0].ends_with(r#""key": null, "value": "one", "encoding": "utf8"}"#),
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
            "verify"
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
    assert!(lines.last().unwrap().contains(r#""sound": true"#));
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
