//! The `consistency` query parameter.

use std::time::Duration;

use memstate_core::Consistency;

/// Parses `local`, `read_your_writes`, `linearizable`, `at_least:<index>` or
/// `bounded:<duration>` (a number with `ms`, `s`, `m` or `h`).
///
/// `read_your_writes` needs the index of the caller's last write: given as
/// `last_write` (the `Memstate-Last-Write` header) it becomes
/// `AtLeast(last_write)`, which works on any node; without it, the writes
/// acknowledged through this node are waited for.
///
/// # Errors
///
/// A message naming what was wrong and what is accepted.
pub fn parse_consistency(text: &str, last_write: Option<u64>) -> Result<Consistency, String> {
    let (name, arg) = match text.split_once(':') {
        Some((name, arg)) => (name, Some(arg)),
        None => (text, None),
    };
    let level = match (name, arg) {
        ("local", None) => Consistency::Local,
        ("read_your_writes", None) => match last_write {
            Some(index) => Consistency::AtLeast(index),
            None => Consistency::ReadYourWrites,
        },
        ("linearizable", None) => Consistency::Linearizable,
        ("at_least", Some(index)) => Consistency::AtLeast(index.parse().map_err(|_| {
            format!("at_least needs an applied index (a whole number), got {index:?}")
        })?),
        ("bounded", Some(duration)) => Consistency::BoundedStaleness(parse_duration(duration)?),
        _ => {
            return Err(format!(
                "unknown consistency {text:?}; use local, read_your_writes, linearizable, at_least:<index> or bounded:<duration> (e.g. bounded:500ms)"
            ));
        }
    };
    Ok(level)
}

/// Parses `250ms`, `2s`, `1.5s`, `5m`, `1h`.
///
/// # Errors
///
/// A message naming the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a duration; write e.g. 250ms, 2s, 5m or 1h");
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_parses() {
        assert_eq!(parse_consistency("local", None), Ok(Consistency::Local));
        assert_eq!(
            parse_consistency("linearizable", None),
            Ok(Consistency::Linearizable)
        );
        assert_eq!(
            parse_consistency("at_least:42", None),
            Ok(Consistency::AtLeast(42))
        );
        assert_eq!(
            parse_consistency("bounded:250ms", None),
            Ok(Consistency::BoundedStaleness(Duration::from_millis(250)))
        );
        assert_eq!(
            parse_consistency("bounded:2m", None),
            Ok(Consistency::BoundedStaleness(Duration::from_secs(120)))
        );
    }

    #[test]
    fn read_your_writes_with_a_token_waits_for_that_index() {
        assert_eq!(
            parse_consistency("read_your_writes", Some(7)),
            Ok(Consistency::AtLeast(7))
        );
        assert_eq!(
            parse_consistency("read_your_writes", None),
            Ok(Consistency::ReadYourWrites)
        );
    }

    #[test]
    fn bad_levels_are_named() {
        let e = parse_consistency("eventual", None).unwrap_err();
        assert!(
            e.contains("\"eventual\"") && e.contains("at_least:<index>"),
            "{e}"
        );
        let e = parse_consistency("at_least:x", None).unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = parse_consistency("bounded:5 parsecs", None).unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
