//! The sequence-model candidate generator of watchnext: from a user's recent
//! watches, a user vector, and the videos whose embeddings are nearest it.
//! The sequence model itself comes with the trainer; this crate holds, for
//! now, the nearest-neighbour layer it will search with: [`ann`] — one
//! trait ([`ann::AnnIndex`]), `hnsw_rs` behind it as the default the product
//! asked for, an HNSW of our own that is several times faster, and exact
//! search for ground truth and small catalogues.

pub mod ann;
