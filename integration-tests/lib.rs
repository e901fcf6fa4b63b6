//! End-to-end tests of watchnext over real gRPC on loopback ports: the
//! tests live in `tests/`, the Python client and its requirements in
//! `python/`. This library is empty on purpose; it only anchors the crate.
