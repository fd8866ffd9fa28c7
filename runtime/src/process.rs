//! TODO(lead): in progress.
