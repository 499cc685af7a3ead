//! The variant names of a command enum, read from its serde `Deserialize`
//! implementation, so `POST /commands/{name}` knows which names exist.

use serde::de::{self, Deserializer, Visitor};

/// The names an externally tagged enum accepts (after `rename`/`rename_all`),
/// or `None` when the type is not such an enum (a struct, an internally
/// tagged enum): then only `POST /commands` with the whole command works,
/// unless names are registered with
/// [`ServerBuilder::command_names`](crate::ServerBuilder::command_names).
pub fn command_names<C: de::DeserializeOwned>() -> Option<Vec<String>> {
    let mut found = None;
    let _ = C::deserialize(Probe(&mut found));
    found.map(|names| names.iter().map(|n| (*n).to_owned()).collect())
}

struct Probe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not an enum"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(variants);
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Cmd {
        Put { key: String },
        CompareAndSet(u8),
        Clear,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct NotAnEnum {
        x: u8,
    }

    #[test]
    fn names_of_an_externally_tagged_enum_are_its_serde_names() {
        assert_eq!(
            command_names::<Cmd>(),
            Some(vec!["put".into(), "compare_and_set".into(), "clear".into()])
        );
    }

    #[test]
    fn a_struct_has_no_names() {
        assert_eq!(command_names::<NotAnEnum>(), None);
    }
}
