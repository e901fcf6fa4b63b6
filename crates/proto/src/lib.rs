//! The wire contract of watchnext: the `watchnext.v1` protobuf package from
//! `proto/`, compiled into Rust messages, tonic servers and clients, plus the
//! encoded descriptor set that the servers publish through gRPC reflection.
//!
//! Nothing here has behaviour of its own; every other crate speaks these types
//! at its edges and converts to its own domain types inside.

/// `watchnext.v1`: messages, `*_server` and `*_client` modules per service.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("watchnext.v1");
}

/// Encoded `FileDescriptorSet` of every `.proto` file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("watchnext_descriptor");

/// Fully-qualified gRPC service names, as health checks and reflection list them.
pub mod service_names {
    /// `watchnext.v1.Recommender`
    pub const RECOMMENDER: &str = "watchnext.v1.Recommender";
    /// `watchnext.v1.CandidateGenerator`
    pub const CANDIDATE_GENERATOR: &str = "watchnext.v1.CandidateGenerator";
    /// `watchnext.v1.Ranker`
    pub const RANKER: &str = "watchnext.v1.Ranker";
    /// `watchnext.v1.Feedback`
    pub const FEEDBACK: &str = "watchnext.v1.Feedback";
    /// `watchnext.v1.Admin`
    pub const ADMIN: &str = "watchnext.v1.Admin";
}
