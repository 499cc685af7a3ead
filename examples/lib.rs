//! Examples for memstate; run them with `cargo run -p memstate-examples --example NAME`:
//!
//! - `quickstart`: one node on the file journal (the README's quickstart).
//! - `kafka_cluster`: three nodes on one Kafka topic (`MEMSTATE_KAFKA_BOOTSTRAP`).
//! - `failover`: single-leader mode; the leader stops and a follower takes over.
//! - `todo_server`: your own model served over HTTP with memstate-server.
//!
//! The workspace README follows; its Rust code is compiled and run as a doctest
//! of this crate, so the quickstart it shows cannot drift from the API.
#![doc = include_str!("../README.md")]

#[cfg(test)]
mod tests {
    /// The README shows `quickstart.rs` as it is (below its module docs).
    #[test]
    fn the_readme_quickstart_is_the_quickstart_example() {
        let readme = include_str!("../README.md");
        let example = include_str!("quickstart.rs");
        let code: String = example
            .lines()
            .skip_while(|l| l.starts_with("//!"))
            .skip_while(|l| l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        let block = format!("```rust\n{code}```");
        assert!(
            readme.contains(&block),
            "README.md must show examples/quickstart.rs verbatim in a ```rust block"
        );
    }
}
