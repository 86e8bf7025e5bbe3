//! Shared kit for the end-to-end tests (image builders, ground truth).
