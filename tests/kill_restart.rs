//! Short runs of the kill-restart harness (`examples/kill_restart.rs`): a
//! child process sends durably through named producers and is killed with
//! SIGKILL at random moments (inside rolls, checkpoints, retention and
//! recovery too); after every kill no acknowledged batch may be lost,
//! duplicated or out of order, and every re-send must be answered as
//! documented. Longer runs: `cargo run --release --example kill_restart --
//! --cycles 200 --seed 7`.
//!
//! The test runs the example's binary, which `cargo test` builds along with
//! the tests (`cargo test --test kill_restart` alone does not: build it first
//! with `cargo build --release --examples`, or without `--release` for a
//! debug test run).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/kill_restart`, next to this test's
/// `target/<profile>/deps/kill_restart-<hash>`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("kill_restart{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release --examples` (or `cargo build --examples` \
         for a debug test run) before `cargo test --test kill_restart`",
        bin.display()
    );
    // The binary must be newer than its source and the engine's.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut sources = vec![
        root.join("examples/kill_restart.rs"),
        root.join("Cargo.toml"),
    ];
    rust_files(&root.join("src"), &mut sources);
    // The CLI's source is not part of the example (cargo does not relink
    // the example when only it changes).
    sources.retain(|p| !p.ends_with("src/main.rs"));
    if let Some(b) = modified(&bin) {
        for s in &sources {
            assert!(
                modified(s).is_none_or(|s| b >= s),
                "{} is older than {}: rebuild it with `cargo build --release --examples`",
                bin.display(),
                s.display()
            );
        }
    }
    bin
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The figures of the harness's last line,
/// `cycles=N acked=A lost=L duplicated=D reordered=R`.
fn figures(line: &str) -> Vec<(String, u64)> {
    line.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Run the harness; its exit status, and the figures of its last line,
/// `cycles=N acked=A lost=L duplicated=D reordered=R`, by name.
fn run(args: &[&str]) -> (bool, HashMap<String, u64>, String) {
    let mut child = Command::new(example_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the kill_restart example");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).expect("read stdout");
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).expect("read stderr");
        s
    });
    // A hang fails the test instead of the whole run.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            child.wait().expect("wait");
            panic!("kill_restart {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().expect("stdout"), err.join().expect("stderr"));
    let context = format!("kill_restart {args:?} ({status})\n--- stdout\n{out}--- stderr\n{err}");
    let f = figures(out.lines().last().unwrap_or_default());
    let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["cycles", "acked", "lost", "duplicated", "reordered"],
        "{context}"
    );
    (status.success(), f.into_iter().collect(), context)
}

#[test]
fn killed_writers_lose_duplicate_and_reorder_nothing() {
    for seed in ["1", "2"] {
        let (ok, f, context) = run(&["--cycles", "6", "--seed", seed]);
        assert!(ok, "{context}");
        assert_eq!(f["cycles"], 6, "{context}");
        assert!(f["acked"] > 0, "nothing was acknowledged\n{context}");
        let bad = (f["lost"], f["duplicated"], f["reordered"]);
        assert_eq!(bad, (0, 0, 0), "{context}");
    }
}

/// The checks are not vacuous: damage injected into the directory after a
/// kill (an acknowledged batch cut off, a byte copy of a batch, a batch that
/// skips a sequence) fails the run with the matching figure.
#[test]
fn the_harness_catches_injected_damage() {
    for (inject, figure) in [
        ("lose", "lost"),
        ("duplicate", "duplicated"),
        ("gap", "reordered"),
    ] {
        // A failed run keeps its store directory: put it where this test
        // cleans up.
        let tmp = tempfile::tempdir().expect("temporary directory");
        let dir = tmp.path().join("store");
        let dir = dir.to_str().expect("a UTF-8 path");
        let args = [
            "--cycles", "6", "--seed", "3", "--inject", inject, "--dir", dir,
        ];
        let (ok, f, context) = run(&args);
        assert!(!ok, "the injected damage went unnoticed\n{context}");
        assert!(f[figure] > 0, "{context}");
    }
}
