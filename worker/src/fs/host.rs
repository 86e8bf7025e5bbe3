//! PLACEHOLDER: a mounted directory as a filesystem.
