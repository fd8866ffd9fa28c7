//! Shared helpers for the end-to-end tests: bundles, unique names, cleanup.
