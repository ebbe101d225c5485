//! Helpers for the kernel integration tests.
