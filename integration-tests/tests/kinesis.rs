//! The suite against kinesis.

fn main() -> std::process::ExitCode {
    memstate_conformance::run_libtest("kinesis", memstate_conformance::provision::kinesis)
}
