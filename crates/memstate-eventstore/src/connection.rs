//! Connection strings, parsed by the client's own `ClientSettings`.
//!
//! Users write them as the KurrentDB documentation shows: `esdb://`,
//! `kurrentdb://` (and `kurrent://`, `kdb://`), with `+discover` for DNS
//! discovery, several `host:port` gossip seeds, `user:password@`, and
//! `?tls=false` for an insecure node (TLS is on by default). This module adds
//! what the client does not do: trimming, redaction of the password in every
//! message, and refusing values that would make the client panic later.

use kurrentdb::ClientSettings;

use crate::error::EventStoreStreamError;

/// Parses a connection string.
pub(crate) fn parse(connection_string: &str) -> Result<ClientSettings, EventStoreStreamError> {
    let trimmed = connection_string.trim();
    let invalid = |reason: String| EventStoreStreamError::InvalidConnectionString {
        connection_string: redact(trimmed),
        reason,
    };
    if trimmed.is_empty() {
        return Err(invalid(
            "empty; expected e.g. kurrentdb://localhost:2113?tls=false".to_owned(),
        ));
    }
    check_connection_name(trimmed).map_err(invalid)?;
    let settings = trimmed.parse::<ClientSettings>().map_err(|e| {
        // The client's message quotes the whole string, password included:
        // only a redacted copy leaves this function (hence no `source`).
        invalid(redact_within(&e.to_string(), trimmed))
    })?;
    check_tls(&settings).map_err(invalid)?;
    Ok(settings)
}

/// The client only logs a warning for a CA file given to an insecure
/// connection, and learns of an unreadable certificate file when it first
/// connects (then retries until the deadline): both are refused here, with
/// the path, before anything is sent.
fn check_tls(settings: &ClientSettings) -> Result<(), String> {
    let mut files = Vec::new();
    if let Some(ca) = settings.tls_ca_file() {
        files.push(("tlsCaFile", ca));
    }
    if let Some((cert, key)) = settings.user_certificate() {
        files.push(("userCertFile", cert));
        files.push(("userKeyFile", key));
    }
    if !settings.is_secure_mode_enabled()
        && let Some((name, _)) = files.first()
    {
        return Err(format!(
            "{name} is given but tls=false: the client would ignore it and connect without TLS; \
             remove tls=false (TLS is on by default) or the certificate settings"
        ));
    }
    for (name, path) in files {
        if let Err(e) = std::fs::File::open(path) {
            return Err(format!("{name} {path:?} cannot be read: {e}"));
        }
    }
    Ok(())
}

/// The connection string with any password replaced by `***`.
pub(crate) fn redact(connection_string: &str) -> String {
    match password_span(connection_string) {
        Some((start, end)) => format!(
            "{}***{}",
            &connection_string[..start],
            &connection_string[end..]
        ),
        None => connection_string.to_owned(),
    }
}

/// `text` with every occurrence of the password of `connection_string` hidden.
fn redact_within(text: &str, connection_string: &str) -> String {
    match password_span(connection_string) {
        Some((start, end)) if end > start => text.replace(&connection_string[start..end], "***"),
        _ => text.to_owned(),
    }
}

/// Byte range of the password in `scheme://user:password@host...`.
///
/// A password that holds `/`, `?` or `#` unencoded ends the authority early
/// for a URL parser (and the client's error then quotes the whole string):
/// when the authority has no `@`, the last `@` of the string ends the
/// password. That cannot be told from an `@` in a query value
/// (`host:2113?name=a@b`), which is then hidden too: hiding too much is the
/// safe side.
fn password_span(connection_string: &str) -> Option<(usize, usize)> {
    let authority_start = connection_string.find("://")? + 3;
    let rest = &connection_string[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let userinfo = match authority.rfind('@') {
        Some(at) => &authority[..at],
        None => &rest[..rest.rfind('@')?],
    };
    let colon = userinfo.find(':')?;
    Some((
        authority_start + colon + 1,
        authority_start + userinfo.len(),
    ))
}

/// The client sends `connectionName` as a gRPC header and panics on a value
/// that is not printable ASCII; refuse it here instead.
fn check_connection_name(connection_string: &str) -> Result<(), String> {
    let Some((_, query)) = connection_string.split_once('?') else {
        return Ok(());
    };
    let query = query.split('#').next().unwrap_or_default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !key.eq_ignore_ascii_case("connectionName") {
            continue;
        }
        let decoded = percent_decode(value);
        if !decoded.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err(
                "connectionName must be printable ASCII (it is sent as a gRPC header)".to_owned(),
            );
        }
    }
    Ok(())
}

/// Form-style percent decoding, as the URL parser applies to query values.
fn percent_decode(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(decoded) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(decoded);
                i += 3;
                continue;
            }
        }
        out.push(if byte == b'+' { b' ' } else { byte });
        i += 1;
    }
    out
}

/// Where the client will connect, for messages: `host:port[,host:port]`,
/// discovery, and TLS (with the usual fix when TLS is on).
pub(crate) fn describe(settings: &ClientSettings) -> String {
    let hosts = settings
        .hosts()
        .iter()
        .map(|e| format!("{}:{}", e.host, e.port))
        .collect::<Vec<_>>()
        .join(",");
    let discovery = if settings.is_dns_discovery_enabled() {
        " via DNS discovery"
    } else {
        ""
    };
    let tls = if settings.is_secure_mode_enabled() {
        " (TLS on; for an insecure node add ?tls=false)"
    } else {
        " (TLS off)"
    };
    format!("{hosts}{discovery}{tls}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_forms_parse() {
        let cases = [
            ("esdb://localhost:2113?tls=false", false, 1),
            ("kurrentdb://localhost:2113?tls=false", false, 1),
            ("kurrentdb://localhost:2113", true, 1),
            ("kurrent://127.0.0.1:2113?tls=false", false, 1),
            ("kdb://127.0.0.1?tls=false", false, 1),
            (
                "esdb://admin:changeit@localhost:2113?tls=true&tlsVerifyCert=false",
                true,
                1,
            ),
            ("esdb+discover://cluster.example.com:2113", true, 1),
            (
                "kurrentdb+discover://cluster.example.com:2113?tls=false",
                false,
                1,
            ),
            (
                "esdb://node1:2113,node2:2113,node3:2113?tls=false",
                false,
                3,
            ),
            ("  kurrentdb://localhost:2113?tls=false\n", false, 1),
        ];
        for (text, tls, hosts) in cases {
            let settings = match parse(text) {
                Ok(settings) => settings,
                Err(e) => panic!("{text:?} refused: {e}"),
            };
            assert_eq!(settings.is_secure_mode_enabled(), tls, "{text}");
            assert_eq!(settings.hosts().len(), hosts, "{text}");
        }
    }

    #[test]
    fn default_port_is_2113_and_discover_is_recognised() {
        let settings = parse("kurrentdb://db.internal?tls=false").ok();
        let first = settings.as_ref().and_then(|s| s.hosts().first().cloned());
        assert_eq!(
            first.map(|e| (e.host, e.port)),
            Some(("db.internal".to_owned(), 2113))
        );
        let discover = parse("esdb+discover://cluster.example.com:2113").ok();
        assert_eq!(discover.map(|s| s.is_dns_discovery_enabled()), Some(true));
    }

    #[test]
    fn invalid_strings_are_clear_errors() {
        for (text, expected) in [
            ("", "empty"),
            ("   ", "empty"),
            ("http://localhost:2113", "scheme"),
            ("localhost:2113", ""),
            ("kurrentdb://", "host"),
            ("kurrentdb://localhost:2113?tls=maybe", "tls"),
            (
                "kurrentdb://localhost:2113?nodePreference=fastest",
                "preference",
            ),
            ("kurrentdb://localhost:notaport", ""),
            ("kurrentdb://localhost:2113/some/path", "path"),
            (
                "kurrentdb://localhost:2113?connectionName=caf%C3%A9",
                "ASCII",
            ),
        ] {
            match parse(text) {
                Err(EventStoreStreamError::InvalidConnectionString { reason, .. }) => {
                    assert!(
                        reason.to_lowercase().contains(&expected.to_lowercase()),
                        "{text:?}: {reason}"
                    );
                }
                Ok(_) => panic!("{text:?} was accepted"),
                Err(other) => panic!("{text:?}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn passwords_never_appear_in_errors() {
        let text = "kurrentdb://admin:s3cr3t-pw@localhost:2113?tls=maybe";
        let error = parse(text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!error.is_empty());
        assert!(!error.contains("s3cr3t-pw"), "{error}");
        assert!(error.contains("admin:***@localhost"), "{error}");

        let bad_url = "kurrentdb://admin:s3cr3t-pw@local host:2113";
        let error = parse(bad_url)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!error.is_empty());
        assert!(!error.contains("s3cr3t-pw"), "{error}");
    }

    #[test]
    fn redaction_keeps_everything_but_the_password() {
        assert_eq!(
            redact("esdb://admin:changeit@host:2113?tls=false"),
            "esdb://admin:***@host:2113?tls=false"
        );
        assert_eq!(redact("esdb://admin@host:2113"), "esdb://admin@host:2113");
        assert_eq!(
            redact("esdb://admin:pa/ss?w#rd@host:2113?tls=false"),
            "esdb://admin:***@host:2113?tls=false"
        );
        // Indistinguishable from a password holding '?': hidden as well.
        assert_eq!(redact("esdb://host:2113?x=a@b"), "esdb://host:***@b");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn printable_connection_names_are_accepted() {
        assert!(parse("kurrentdb://h:2113?tls=false&connectionName=node-1%20a+b").is_ok());
        assert_eq!(percent_decode("a%20b+c%2"), b"a b c%2".to_vec());
    }

    #[test]
    fn tls_is_on_by_default_and_verifies_the_certificate() {
        let settings = parse("kurrentdb://db.internal:2113").ok();
        let secure = settings.as_ref().map(|s| {
            (
                s.is_secure_mode_enabled(),
                s.is_tls_certificate_verification_enabled(),
                s.tls_ca_file().cloned(),
            )
        });
        assert_eq!(secure, Some((true, true, None)));
        let unverified = parse("esdb://h:2113?tlsVerifyCert=false").ok();
        assert_eq!(
            unverified.map(|s| (
                s.is_secure_mode_enabled(),
                s.is_tls_certificate_verification_enabled()
            )),
            Some((true, false))
        );
    }

    #[test]
    fn a_private_ca_and_a_client_certificate_are_taken_from_files() {
        let dir = std::env::temp_dir().join(format!("memstate-es-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let ca = dir.join("ca.pem");
        let cert = dir.join("user.crt");
        let key = dir.join("user.key");
        for file in [&ca, &cert, &key] {
            std::fs::write(file, "-----BEGIN CERTIFICATE-----\n").ok();
        }
        let text = format!(
            "kurrentdb://h:2113?tlsCaFile={}&userCertFile={}&userKeyFile={}",
            ca.display(),
            cert.display(),
            key.display()
        );
        let settings = parse(&text);
        std::fs::remove_dir_all(&dir).ok();
        let settings = match settings {
            Ok(settings) => settings,
            Err(e) => panic!("{text:?} refused: {e}"),
        };
        assert_eq!(
            settings.tls_ca_file().map(String::as_str),
            ca.to_str(),
            "{text}"
        );
        assert_eq!(
            settings
                .user_certificate()
                .map(|(c, k)| (c.as_str(), k.as_str())),
            cert.to_str().zip(key.to_str())
        );
    }

    #[test]
    fn certificate_settings_that_would_be_ignored_or_fail_later_are_refused() {
        for (text, expected) in [
            (
                "kurrentdb://h:2113?tls=false&tlsCaFile=/etc/hostname",
                "tls=false",
            ),
            (
                "kurrentdb://h:2113?tls=false&userCertFile=/etc/hostname&userKeyFile=/etc/hostname",
                "tls=false",
            ),
            (
                "kurrentdb://h:2113?tlsCaFile=/nonexistent/memstate-ca.pem",
                "/nonexistent/memstate-ca.pem",
            ),
            (
                "kurrentdb://h:2113?userCertFile=/nonexistent/u.crt&userKeyFile=/nonexistent/u.key",
                "/nonexistent/u.crt",
            ),
            (
                "kurrentdb://h:2113?userCertFile=/etc/hostname",
                "userKeyFile",
            ),
        ] {
            match parse(text) {
                Err(EventStoreStreamError::InvalidConnectionString { reason, .. }) => {
                    assert!(reason.contains(expected), "{text:?}: {reason}");
                }
                Ok(_) => panic!("{text:?} was accepted"),
                Err(other) => panic!("{text:?}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn description_names_hosts_and_tls_fix() {
        let insecure = parse("esdb://a:1,b:2?tls=false").map(|s| describe(&s)).ok();
        assert_eq!(insecure.as_deref(), Some("a:1,b:2 (TLS off)"));
        let secure = parse("esdb://a:1")
            .map(|s| describe(&s))
            .ok()
            .unwrap_or_default();
        assert!(secure.contains("?tls=false"), "{secure}");
    }
}
