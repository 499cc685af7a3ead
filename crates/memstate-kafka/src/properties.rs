//! Client properties from a file, as Kafka's own tools take them
//! (`--command-config client.properties`): TLS and SASL settings kept beside
//! the deployment instead of in code.

use std::collections::BTreeMap;
use std::path::Path;

use memstate_core::StreamError;

use crate::KafkaConfig;

impl KafkaConfig {
    /// Adds every property of a properties file to
    /// [`KafkaConfig::properties`] (a key given twice keeps the file's value).
    ///
    /// The format is the plain subset of Java properties that client
    /// configuration files use: one `key=value` per line, blank lines and lines
    /// starting with `#` or `!` ignored, spaces around key and value trimmed.
    /// Line continuations and escapes are not interpreted.
    ///
    /// The properties are checked like any other: [`KafkaConfig::validate`]
    /// refuses keys the adapter owns.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use memstate_kafka::KafkaConfig;
    ///
    /// let dir = std::env::temp_dir().join(format!("memstate-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let file = dir.join("client.properties");
    /// std::fs::write(
    ///     &file,
    ///     "# the broker's SASL_SSL listener\n\
    ///      security.protocol=SASL_SSL\n\
    ///      ssl.ca.location=/etc/kafka/ca.pem\n\
    ///      sasl.mechanism=SCRAM-SHA-512\n\
    ///      sasl.username=memstate\n\
    ///      sasl.password=s3cret\n",
    /// )?;
    /// let config = KafkaConfig::new("broker:9093", "orders").with_properties_file(&file)?;
    /// assert_eq!(config.properties["sasl.mechanism"], "SCRAM-SHA-512");
    /// assert!(config.validate().is_ok());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StreamError::Misconfigured`] when the file cannot be read or a line
    /// is neither blank, a comment, nor `key=value` with a non-empty key; the
    /// error names the file and the line, never a value.
    pub fn with_properties_file(mut self, path: impl AsRef<Path>) -> Result<Self, StreamError> {
        let path = path.as_ref();
        let bad = |reason: String| StreamError::Misconfigured {
            name: self.topic.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(format!(
                "cannot read the properties file {}: {e}",
                path.display()
            ))
        })?;
        let properties = parse_properties(&text)
            .map_err(|reason| bad(format!("properties file {}: {reason}", path.display())))?;
        self.properties.extend(properties);
        Ok(self)
    }
}

/// `key=value` lines; the error names the line (values may be secrets).
pub(crate) fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut properties = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {} is not key=value (nor blank, nor a # comment)",
                number + 1
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("line {} has no key before '='", number + 1));
        }
        properties.insert(key.to_owned(), value.trim().to_owned());
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_comments_and_blank_lines() {
        let parsed = parse_properties(
            "# comment\n! also a comment\n\n security.protocol = SASL_SSL \n\
             sasl.jaas.config=a=b c=\"d\";\nempty=\n",
        );
        let expected: BTreeMap<String, String> = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.jaas.config", "a=b c=\"d\";"),
            ("empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(parsed, Ok(expected));
    }

    #[test]
    fn a_malformed_line_is_named_without_its_content() {
        let err = parse_properties("a=b\nsasl.password hunter2\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_properties(" = value\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("no key"), "{err}");
    }

    #[test]
    fn a_missing_file_is_a_clear_misconfiguration() {
        let err = KafkaConfig::new("b:1", "t")
            .with_properties_file("/nonexistent/memstate/client.properties")
            .unwrap_err();
        assert!(matches!(err, StreamError::Misconfigured { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("/nonexistent/memstate/client.properties"),
            "{err}"
        );
    }

    #[test]
    fn file_properties_reach_the_config_and_are_validated() {
        let dir = std::env::temp_dir().join(format!(
            "memstate-kafka-props-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.properties");
        std::fs::write(&good, "security.protocol=SSL\nssl.ca.location=/ca.pem\n").unwrap();
        let weak = dir.join("weak.properties");
        std::fs::write(&weak, "acks=1\n").unwrap();
        let config = KafkaConfig::new("b:1", "t")
            .with_property("client.rack", "r1")
            .with_properties_file(&good)
            .unwrap();
        assert_eq!(config.properties.get("security.protocol").unwrap(), "SSL");
        assert_eq!(config.properties.get("client.rack").unwrap(), "r1");
        let weakened = KafkaConfig::new("b:1", "t")
            .with_properties_file(&weak)
            .unwrap();
        assert!(weakened.validate().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
