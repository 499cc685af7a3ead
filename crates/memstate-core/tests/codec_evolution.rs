//! How a model's command type may evolve under each codec: the rules
//! `docs/upgrades.md` states, one test each, run for every codec. Both
//! codecs write a struct as a map of its field names and an enum as its
//! variant's name (MessagePack through `rmp-serde` with named fields), so the
//! rules are the same; each test would fail under a positional encoding
//! or if a codec dropped names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use memstate_core::{Codec, EncodedCommand};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The command type as first shipped.
mod v1 {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Deposit { account: String, amount: u64 },
        Close(String),
    }
}

/// A new field with a default.
mod with_optional_field {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Deposit {
            account: String,
            amount: u64,
            #[serde(default)]
            memo: Option<String>,
        },
        Close(String),
    }
}

/// A new field without a default.
mod with_required_field {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Deposit {
            account: String,
            amount: u64,
            memo: String,
        },
        Close(String),
    }
}

/// A new variant, appended.
mod with_new_variant {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Deposit { account: String, amount: u64 },
        Close(String),
        Freeze(String),
    }
}

/// A new variant, inserted first (every later variant's index moves).
mod with_variant_inserted_first {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Freeze(String),
        Deposit { account: String, amount: u64 },
        Close(String),
    }
}

/// The fields in another order.
mod reordered {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Close(String),
        Deposit { amount: u64, account: String },
    }
}

/// A field renamed, without and with an alias for the old name.
mod renamed {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Deposit { account: String, sum: u64 },
        Close(String),
    }
}

mod renamed_with_alias {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Deposit {
            account: String,
            #[serde(alias = "amount")]
            sum: u64,
        },
        Close(String),
    }
}

/// A variant renamed.
mod variant_renamed {
    use super::*;
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum Cmd {
        Credit { account: String, amount: u64 },
        Close(String),
    }
}

fn written<T: Serialize>(codec: Codec, command: &T) -> EncodedCommand {
    EncodedCommand::encode_as(codec, command).unwrap()
}

fn read<T: DeserializeOwned>(encoded: &EncodedCommand) -> Result<T, String> {
    encoded.decode::<T>().map_err(|e| e.to_string())
}

fn old_deposit() -> v1::Cmd {
    v1::Cmd::Deposit {
        account: "a".into(),
        amount: 5,
    }
}

#[test]
fn a_new_field_with_a_default_reads_old_commands_and_old_builds_ignore_it() {
    for codec in Codec::ALL {
        let old = written(codec, &old_deposit());
        assert_eq!(
            read::<with_optional_field::Cmd>(&old).unwrap(),
            with_optional_field::Cmd::Deposit {
                account: "a".into(),
                amount: 5,
                memo: None
            },
            "{codec}"
        );
        // An old build reads a new command without the field: it applies
        // it differently, which is why such a command needs a model version.
        let new = written(
            codec,
            &with_optional_field::Cmd::Deposit {
                account: "a".into(),
                amount: 5,
                memo: Some("rent".into()),
            },
        );
        assert_eq!(read::<v1::Cmd>(&new).unwrap(), old_deposit(), "{codec}");
    }
}

#[test]
fn a_new_field_without_a_default_cannot_read_old_commands() {
    for codec in Codec::ALL {
        let err = read::<with_required_field::Cmd>(&written(codec, &old_deposit())).unwrap_err();
        assert!(err.contains("memo"), "{codec}: {err}");
    }
}

#[test]
fn a_new_variant_reads_old_commands_and_old_builds_refuse_it_with_an_error() {
    for codec in Codec::ALL {
        for new_type in [0, 1] {
            let old = written(codec, &v1::Cmd::Close("a".into()));
            // Appended or inserted: variants are written by name.
            let ok = if new_type == 0 {
                read::<with_new_variant::Cmd>(&old).unwrap()
                    == with_new_variant::Cmd::Close("a".into())
            } else {
                read::<with_variant_inserted_first::Cmd>(&old).unwrap()
                    == with_variant_inserted_first::Cmd::Close("a".into())
            };
            assert!(ok, "{codec}");
        }
        let new = written(codec, &with_new_variant::Cmd::Freeze("a".into()));
        let err = read::<v1::Cmd>(&new).unwrap_err();
        assert!(err.contains("Freeze"), "{codec}: {err}");
    }
}

#[test]
fn reordering_fields_changes_nothing() {
    for codec in Codec::ALL {
        assert_eq!(
            read::<reordered::Cmd>(&written(codec, &old_deposit())).unwrap(),
            reordered::Cmd::Deposit {
                amount: 5,
                account: "a".into()
            },
            "{codec}"
        );
    }
}

#[test]
fn renaming_a_field_or_a_variant_breaks_old_commands_unless_aliased_or_upcast() {
    for codec in Codec::ALL {
        let old = written(codec, &old_deposit());
        let err = read::<renamed::Cmd>(&old).unwrap_err();
        assert!(err.contains("sum"), "{codec}: {err}");
        assert_eq!(
            read::<renamed_with_alias::Cmd>(&old).unwrap(),
            renamed_with_alias::Cmd::Deposit {
                account: "a".into(),
                sum: 5
            },
            "{codec}"
        );
        let err = read::<variant_renamed::Cmd>(&old).unwrap_err();
        assert!(err.contains("Deposit"), "{codec}: {err}");
        // Upcasting works on the JSON tree, whatever the codec.
        let mut tree = old.to_value().unwrap();
        let body = tree["Deposit"].take();
        let upcast = serde_json::json!({ "Credit": body });
        let again = EncodedCommand::from_value_as(codec, &upcast).unwrap();
        assert_eq!(
            read::<variant_renamed::Cmd>(&again).unwrap(),
            variant_renamed::Cmd::Credit {
                account: "a".into(),
                amount: 5
            }
        );
    }
}

#[test]
fn msgpack_writes_field_and_variant_names() {
    let bytes = written(Codec::MsgPack, &old_deposit()).as_bytes().to_vec();
    for name in ["Deposit", "account", "amount"] {
        assert!(
            bytes.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} in {bytes:02x?}"
        );
    }
}
