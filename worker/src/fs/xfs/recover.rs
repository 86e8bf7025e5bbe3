//! Log recovery (stub).
