//! The suite against eventstore.

fn main() -> std::process::ExitCode {
    memstate_conformance::run_libtest("eventstore", memstate_conformance::provision::eventstore)
}
