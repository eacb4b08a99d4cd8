//! Integration tests of the write gate (`stockade_sys::fsgate`), through a real seccomp filter:
//! a child process installs the gate and runs operations, this process serves it with a test
//! judge (refusing any path with a component named `forbidden`) and checks the filesystem
//! afterwards, from outside. Each refusal has its positive control (the same operation on an
//! allowed name, or the same run with a judge that allows everything, succeeds).
//!
//! `harness = false`: the binary is also the child (`FSGATE_CHILD=<scenario>`), so a child is a
//! fresh exec, never a fork of the multi-threaded test runner. Arguments: substrings selecting
//! tests; `FSGATE_BENCH=1` also runs the per-call cost measurement.

mod bench;
mod calls;
mod child;
mod harness;
mod traps;

fn main() {
    if let Ok(s) = std::env::var("FSGATE_CHILD") {
        child::main(&s);
    }
    if let Err(e) = stockade_sys::seccomp::gate_supported() {
        if std::env::var("STOCKADE_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!("write gate unsupported under STOCKADE_REQUIRE_ROOT_TESTS=1: {e}");
        }
        eprintln!("skipping the write gate tests: {e}");
        return;
    }
    // The judge_panics case makes the test judge panic on a worker thread on purpose: keep
    // that one quiet, report any other panic as usual.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"test judge asked to panic") {
            default_hook(info);
        }
    }));
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut tests: Vec<(&str, fn())> = Vec::new();
    tests.extend(calls::TESTS.iter().copied());
    tests.extend(traps::TESTS.iter().copied());
    if std::env::var("FSGATE_BENCH").as_deref() == Ok("1") {
        tests.push(("bench_per_call_cost", bench::bench_per_call_cost));
    }
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, f) in tests {
        if !filters.is_empty() && !filters.iter().any(|x| name.contains(x.as_str())) {
            continue;
        }
        ran += 1;
        let t = std::time::Instant::now();
        match std::panic::catch_unwind(f) {
            Ok(()) => println!("test {name} ... ok ({:.2?})", t.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(name);
            }
        }
    }
    println!("\n{ran} tests, {} failed {failed:?}", failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
