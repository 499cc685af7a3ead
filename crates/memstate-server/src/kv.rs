//! The built-in model: a JSON document store by key, so a node is useful
//! without writing Rust (`memstate serve` hosts it).
//!
//! Commands: `put`, `delete`, `compare_and_set`, `increment`. Queries: `get`,
//! `list` (by key prefix, in key order), `count`. Every entry carries the
//! applied index of its last write as its `version`.

use std::collections::BTreeMap;

use memstate_core::{CommandContext, Model};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::{Hosted, ServerBuilder};

/// A stored value and the applied index of its last write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The JSON value.
    pub value: Value,
    /// The applied index of the command that last wrote it.
    pub version: u64,
}

/// JSON documents by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvStore {
    entries: BTreeMap<String, Entry>,
}

/// The commands of [`KvStore`]; over HTTP, `POST /commands/<name>` with the
/// fields as the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Value,
    },
    /// Removes `key` (a missing key is not an error).
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `value` only if its current value equals `expected`
    /// (omitted: only if the key is absent).
    CompareAndSet {
        /// The key.
        key: String,
        /// The value the key must hold; omitted or `null`: the key must be absent.
        #[serde(default)]
        expected: Option<Value>,
        /// The new value.
        value: Value,
    },
    /// Adds `by` (default 1) to the number at `key` (a missing key counts as 0).
    Increment {
        /// The key.
        key: String,
        /// The amount; integers stay integers, any float makes a float.
        #[serde(default = "one")]
        by: Number,
    },
}

fn one() -> Number {
    Number::from(1)
}

/// What a write returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvWrite {
    /// The key.
    pub key: String,
    /// Its value now (`None` after a delete).
    pub value: Option<Value>,
    /// Its value before.
    pub previous: Option<Value>,
    /// The applied index of this write.
    pub version: u64,
}

/// Why a command was refused; the store is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// Keys are non-empty.
    #[error("the key is empty")]
    EmptyKey,
    /// `compare_and_set` found another value.
    #[error("key {key:?} holds {}, not the expected value", current.as_ref().map(Value::to_string).unwrap_or_else(|| "nothing".into()))]
    Mismatch {
        /// The key.
        key: String,
        /// What it holds.
        current: Option<Value>,
    },
    /// `increment` on a value that is not a number.
    #[error("key {key:?} holds {current}, which is not a number")]
    NotANumber {
        /// The key.
        key: String,
        /// What it holds.
        current: Value,
    },
    /// The sum does not fit (an integer overflow, or not a finite float).
    #[error("incrementing key {key:?} overflows")]
    Overflow {
        /// The key.
        key: String,
    },
}

fn add(current: &Number, by: &Number) -> Option<Number> {
    if let (Some(a), Some(b)) = (current.as_i64(), by.as_i64()) {
        return a.checked_add(b).map(Number::from);
    }
    if let (Some(a), Some(b)) = (current.as_u64(), by.as_u64()) {
        return a.checked_add(b).map(Number::from);
    }
    Number::from_f64(current.as_f64()? + by.as_f64()?)
}

impl KvStore {
    /// The entry at `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    pub fn list(&self, prefix: &str, limit: usize) -> Vec<(String, Entry)> {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// How many keys start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        if prefix.is_empty() {
            return self.entries.len();
        }
        self.entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .count()
    }

    fn set(&mut self, key: String, value: Value, version: u64) -> KvWrite {
        let previous = self
            .entries
            .insert(
                key.clone(),
                Entry {
                    value: value.clone(),
                    version,
                },
            )
            .map(|e| e.value);
        KvWrite {
            key,
            value: Some(value),
            previous,
            version,
        }
    }
}

impl Model for KvStore {
    type Command = KvCommand;
    type Output = KvWrite;
    type Error = KvError;

    fn apply(
        &mut self,
        command: KvCommand,
        ctx: &mut CommandContext<'_>,
    ) -> Result<KvWrite, KvError> {
        let version = ctx.index();
        // Each successful write is also the model's event: one per command,
        // the same on every node; a refused write emits nothing.
        let write = || match command {
            KvCommand::Put { key, .. }
            | KvCommand::Delete { key }
            | KvCommand::CompareAndSet { key, .. }
            | KvCommand::Increment { key, .. }
                if key.is_empty() =>
            {
                Err(KvError::EmptyKey)
            }
            KvCommand::Put { key, value } => Ok(self.set(key, value, version)),
            KvCommand::Delete { key } => {
                let previous = self.entries.remove(&key).map(|e| e.value);
                Ok(KvWrite {
                    key,
                    value: None,
                    previous,
                    version,
                })
            }
            KvCommand::CompareAndSet {
                key,
                expected,
                value,
            } => {
                let current = self.entries.get(&key).map(|e| &e.value);
                let expected = expected.filter(|v| !v.is_null());
                if current != expected.as_ref() {
                    return Err(KvError::Mismatch {
                        current: current.cloned(),
                        key,
                    });
                }
                Ok(self.set(key, value, version))
            }
            KvCommand::Increment { key, by } => {
                let current = match self.entries.get(&key) {
                    None => Number::from(0),
                    Some(Entry {
                        value: Value::Number(n),
                        ..
                    }) => n.clone(),
                    Some(other) => {
                        return Err(KvError::NotANumber {
                            current: other.value.clone(),
                            key,
                        });
                    }
                };
                let sum =
                    add(&current, &by).ok_or_else(|| KvError::Overflow { key: key.clone() })?;
                Ok(self.set(key, Value::Number(sum), version))
            }
        };
        let written = write();
        if let Ok(w) = &written {
            ctx.emit(w);
        }
        written
    }
}

/// Parameters of the `get` query.
#[derive(Debug, Clone, Deserialize)]
pub struct GetParams {
    /// The key.
    pub key: String,
}

/// Parameters of the `list` query.
#[derive(Debug, Clone, Deserialize)]
pub struct ListParams {
    /// Keys starting with this (default: all).
    #[serde(default)]
    pub prefix: String,
    /// At most this many (default 100).
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    100
}

/// Parameters of the `count` query.
#[derive(Debug, Clone, Deserialize)]
pub struct CountParams {
    /// Keys starting with this (default: all).
    #[serde(default)]
    pub prefix: String,
}

/// One entry of a `list` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Value,
    /// The applied index of its last write.
    pub version: u64,
}

/// Registers `get`, `list` and `count` on a server hosting a [`KvStore`].
pub fn queries(builder: ServerBuilder<KvStore>) -> ServerBuilder<KvStore>
where
    KvStore: Hosted,
{
    builder
        .query("get", |kv: &KvStore, p: GetParams| kv.get(&p.key).cloned())
        .query("list", |kv: &KvStore, p: ListParams| {
            kv.list(&p.prefix, p.limit)
                .into_iter()
                .map(|(key, e)| Listed {
                    key,
                    value: e.value,
                    version: e.version,
                })
                .collect::<Vec<_>>()
        })
        .query("count", |kv: &KvStore, p: CountParams| kv.count(&p.prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use memstate_core::{CommandId, NodeId};
    use serde_json::json;

    fn run(kv: &mut KvStore, index: u64, cmd: KvCommand) -> Result<KvWrite, KvError> {
        let node = NodeId::new("n");
        let mut ctx = CommandContext::new(CommandId::random(), &node, 0, index);
        kv.apply(cmd, &mut ctx)
    }

    fn put(key: &str, value: Value) -> KvCommand {
        KvCommand::Put {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn put_get_delete() {
        let mut kv = KvStore::default();
        let w = run(&mut kv, 1, put("a", json!({"x": 1}))).unwrap();
        assert_eq!((w.previous, w.version), (None, 1));
        let w = run(&mut kv, 2, put("a", json!(2))).unwrap();
        assert_eq!(w.previous, Some(json!({"x": 1})));
        assert_eq!(
            kv.get("a"),
            Some(&Entry {
                value: json!(2),
                version: 2
            })
        );
        let w = run(&mut kv, 3, KvCommand::Delete { key: "a".into() }).unwrap();
        assert_eq!((w.value, w.previous), (None, Some(json!(2))));
        assert_eq!(kv.get("a"), None);
    }

    #[test]
    fn compare_and_set_only_on_the_expected_value() {
        let mut kv = KvStore::default();
        let cas = |expected: Option<Value>, value: Value| KvCommand::CompareAndSet {
            key: "k".into(),
            expected,
            value,
        };
        run(&mut kv, 1, cas(None, json!("a"))).unwrap();
        let e = run(&mut kv, 2, cas(None, json!("b"))).unwrap_err();
        assert_eq!(
            e,
            KvError::Mismatch {
                key: "k".into(),
                current: Some(json!("a"))
            }
        );
        let e = run(&mut kv, 3, cas(Some(json!("z")), json!("b"))).unwrap_err();
        assert!(e.to_string().contains("\"a\""), "{e}");
        run(&mut kv, 4, cas(Some(json!("a")), json!("b"))).unwrap();
        assert_eq!(kv.get("k").map(|e| &e.value), Some(&json!("b")));
    }

    #[test]
    fn increment_keeps_integers_and_refuses_what_is_not_a_number() {
        let mut kv = KvStore::default();
        let inc = |by: Number| KvCommand::Increment {
            key: "n".into(),
            by,
        };
        run(&mut kv, 1, inc(Number::from(5))).unwrap();
        run(&mut kv, 2, inc(Number::from(-7))).unwrap();
        assert_eq!(kv.get("n").map(|e| &e.value), Some(&json!(-2)));
        let w = run(&mut kv, 3, inc(Number::from_f64(0.5).unwrap())).unwrap();
        assert_eq!(w.value, Some(json!(-1.5)));
        run(&mut kv, 4, put("n", json!(i64::MAX))).unwrap();
        assert_eq!(
            run(&mut kv, 5, inc(Number::from(1))).unwrap_err(),
            KvError::Overflow { key: "n".into() }
        );
        run(&mut kv, 6, put("s", json!("text"))).unwrap();
        let e = run(
            &mut kv,
            7,
            KvCommand::Increment {
                key: "s".into(),
                by: one(),
            },
        )
        .unwrap_err();
        assert!(matches!(e, KvError::NotANumber { .. }));
        assert_eq!(
            kv.get("s").map(|e| e.version),
            Some(6),
            "a refused command changes nothing"
        );
    }

    #[test]
    fn list_and_count_by_prefix_in_key_order() {
        let mut kv = KvStore::default();
        for (i, k) in ["user/b", "user/a", "order/1", "user/c", "userx"]
            .iter()
            .enumerate()
        {
            run(&mut kv, i as u64 + 1, put(k, json!(i))).unwrap();
        }
        let keys: Vec<String> = kv.list("user/", 10).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["user/a", "user/b", "user/c"]);
        assert_eq!(kv.list("user/", 2).len(), 2);
        assert_eq!(kv.count("user/"), 3);
        assert_eq!(kv.count("user"), 4);
        assert_eq!(kv.count(""), 5);
    }

    #[test]
    fn an_empty_key_is_refused() {
        let mut kv = KvStore::default();
        assert_eq!(
            run(&mut kv, 1, put("", json!(1))).unwrap_err(),
            KvError::EmptyKey
        );
    }

    #[test]
    fn commands_read_as_the_http_api_posts_them() {
        let c: KvCommand =
            serde_json::from_value(json!({"compare_and_set": {"key": "k", "value": 1}})).unwrap();
        assert_eq!(
            c,
            KvCommand::CompareAndSet {
                key: "k".into(),
                expected: None,
                value: json!(1)
            }
        );
        let c: KvCommand = serde_json::from_value(json!({"increment": {"key": "k"}})).unwrap();
        assert_eq!(
            c,
            KvCommand::Increment {
                key: "k".into(),
                by: one()
            }
        );
        assert!(
            serde_json::from_value::<KvCommand>(json!({"put": {"key": "k", "valu": 1}})).is_err()
        );
    }
}
