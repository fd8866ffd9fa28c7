//! Docker Engine API server (being written).
