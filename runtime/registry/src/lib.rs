//! Registry client (in progress).
