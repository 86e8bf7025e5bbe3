//! The kit the end-to-end tests share: fixture trees, disk images built at
//! test time with the real tools, ground truth from the real tools, and a
//! bounded runner for the `worker` binary.
//!
//! The data flows as in the scanner, and so do the modules:
//! [`tree`] (files) → [`image`] (mkfs, sgdisk, sfdisk) → [`run`] (the
//! scan, a child process with a time and memory bound) → compared with
//! [`truth`] (sfdisk, blkid, dpkg-query, rpm, dumpe2fs, a kernel [`mount`]).
//! [`corrupt`] damages real images for the hostile-input tests.
//!
//! Nothing here skips: a missing tool or fixture is an error that says what
//! to install or which branch brings it. `scripts/test` installs the tools
//! and the Python venv (`SCANNER_VENV`) the CycloneDX check runs in.
#![warn(missing_docs)]

pub mod check;
pub mod corrupt;
pub mod emulator;
pub mod image;
pub mod mount;
pub mod receiver;
pub mod run;
pub mod tools;
pub mod tree;
pub mod truth;

use std::path::PathBuf;

use anyhow::{Context, Result};

/// A fresh temporary directory for one test's trees and images, removed
/// when dropped.
///
/// # Errors
/// When it cannot be created.
pub fn workdir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("e2e-")
        .tempdir()
        .context("creating a temporary directory")
}

/// The Python virtual environment `scripts/test` creates (`SCANNER_VENV`).
///
/// # Errors
/// When `SCANNER_VENV` is unset or holds no Python: run the tests through
/// `scripts/test`, or set it to a venv with `scripts/requirements.txt`.
pub fn venv_python() -> Result<PathBuf> {
    let venv = std::env::var_os("SCANNER_VENV").context(
        "SCANNER_VENV is not set: run the tests with scripts/test, which creates the Python \
         venv (.cache/venv, from scripts/requirements.txt) and sets it",
    )?;
    let python = PathBuf::from(venv).join("bin/python");
    if !python.is_file() {
        anyhow::bail!(
            "SCANNER_VENV has no bin/python ({}): rerun scripts/test",
            python.display()
        );
    }
    Ok(python)
}
