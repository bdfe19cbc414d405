//! The load tool's command line, run as the built binary. Besides checking the arguments, this
//! test makes `cargo test` build `target/debug/load` with the test build's features, so
//! `make load-smoke` runs it without compiling anything again.

use std::process::Command;

fn load() -> Command {
    Command::new(env!("CARGO_BIN_EXE_load"))
}

#[test]
fn help_prints_the_usage() {
    let out = load().arg("--help").output().expect("run load --help");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("usage: load [--levels"), "{text}");
}

#[test]
fn bad_arguments_fail_before_starting_a_server() {
    for args in [
        &["--levels", "0"][..],
        &["--seconds", "0"],
        &["--levels", "two"],
        &["--bogus"],
    ] {
        let out = load().args(args).output().expect("run load");
        assert!(!out.status.success(), "{args:?} was accepted");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("mask-web pid"), "{args:?} started a server");
    }
}
