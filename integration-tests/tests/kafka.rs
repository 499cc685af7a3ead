//! The suite against kafka.

fn main() -> std::process::ExitCode {
    memstate_conformance::run_libtest("kafka", memstate_conformance::provision::kafka)
}
