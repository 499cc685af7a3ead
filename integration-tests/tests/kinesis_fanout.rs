//! The suite against kinesis, every stream reading by enhanced fan-out
//! (`SubscribeToShard`) instead of polling.

fn main() -> std::process::ExitCode {
    memstate_conformance::run_libtest(
        "kinesis-fanout",
        memstate_conformance::provision::kinesis_fan_out,
    )
}
