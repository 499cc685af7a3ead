//! The suite against the in-memory reference stream.

fn main() -> std::process::ExitCode {
    memstate_conformance::run_libtest("memory", memstate_conformance::provision::memory)
}
