//! [`KinesisCredentials`]: where the AWS credentials come from, and a
//! `Debug` that keeps the secrets out of logs.

use std::fmt;

/// Where the AWS credentials come from.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KinesisCredentials {
    /// The AWS default chain: environment, profile files, web identity, ECS,
    /// and the EC2 instance-metadata service. Set `AWS_EC2_METADATA_DISABLED=true`
    /// where the metadata address must not be contacted.
    #[default]
    DefaultChain,
    /// Fixed keys, e.g. for an emulator. With these (and a region) the client
    /// is built without any provider chain, so nothing is probed.
    Static {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: String,
        /// A session token for temporary credentials.
        session_token: Option<String>,
    },
}

impl KinesisCredentials {
    /// Fixed keys without a session token.
    pub fn fixed(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }
}

impl fmt::Debug for KinesisCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs.
        match self {
            Self::DefaultChain => f.write_str("DefaultChain"),
            Self::Static {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field(
                    "session_token",
                    &session_token.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}
