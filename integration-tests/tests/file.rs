//! The suite against the file journal.

fn main() -> std::process::ExitCode {
    memstate_conformance::run_libtest("file", memstate_conformance::provision::file)
}
