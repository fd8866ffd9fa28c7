//! Containers: create from an image, supervise through a per-container
//! monitor process, stop, remove, logs, exec. (Being written.)
