//! Identifiers. They are opaque strings chosen by the caller's catalogue;
//! watchnext only requires them to be non-empty, at most [`MAX_ID_BYTES`]
//! long and free of control characters, so that they are safe to log, hash
//! and store.

use std::{fmt, sync::Arc};

use crate::error::InvalidRequest;

/// The longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

fn check_id(field: &str, value: &str) -> Result<(), InvalidRequest> {
    if value.is_empty() {
        return Err(InvalidRequest::new(field, "is required and must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(InvalidRequest::new(
            field,
            format!("is {} bytes long; ids are at most {MAX_ID_BYTES} bytes", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidRequest::new(field, "must not contain control characters"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Shared, immutable text: a clone is a reference-count increment,
        /// not an allocation (a request copies hundreds of video ids from
        /// the generators' indices into its candidates and answer).
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `value` as the request field `field`.
            pub fn parse(field: &str, value: &str) -> Result<Self, InvalidRequest> {
                check_id(field, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// Validates `value` as `field`, sharing its text instead of copying it.
            pub fn parse_shared(field: &str, value: &Arc<str>) -> Result<Self, InvalidRequest> {
                check_id(field, value)?;
                Ok(Self(Arc::clone(value)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A user of the platform (possibly an anonymous cookie id).
    UserId
);
id_type!(
    /// A video of the catalogue.
    VideoId
);
id_type!(
    /// One Recommend request; impressions and feedback refer to it.
    RequestId
);

impl RequestId {
    /// The client's request id, or a fresh random one when the client sent none.
    pub fn parse_or_generate(field: &str, value: &str) -> Result<Self, InvalidRequest> {
        if value.is_empty() { Ok(Self(Arc::from(uuid::Uuid::new_v4().to_string()))) } else { Self::parse(field, value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_long_and_control_ids_are_rejected_naming_the_field() {
        let err = VideoId::parse("query_video_id", "").unwrap_err();
        assert_eq!(err.field, "query_video_id");
        assert!(err.problem.contains("required"));

        let long = "x".repeat(MAX_ID_BYTES + 1);
        let err = UserId::parse("user_id", &long).unwrap_err();
        assert!(err.problem.contains("257 bytes"), "{err}");

        assert!(VideoId::parse("video_id", "a\nb").is_err());
        assert_eq!(VideoId::parse("video_id", "v42").unwrap().as_str(), "v42");
        let shared: Arc<str> = Arc::from("v7");
        let id = VideoId::parse_shared("video_id", &shared).unwrap();
        assert!(std::ptr::eq(id.as_str(), &*shared), "parse_shared copied the text");
        assert!(VideoId::parse_shared("video_id", &Arc::from("")).is_err());
    }

    #[test]
    fn missing_request_id_gets_a_fresh_one() {
        let a = RequestId::parse_or_generate("request_id", "").unwrap();
        let b = RequestId::parse_or_generate("request_id", "").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        assert_eq!(RequestId::parse_or_generate("request_id", "r1").unwrap().as_str(), "r1");
    }
}
