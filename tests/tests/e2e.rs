//! The one end-to-end test binary: the `worker` binary against disk images
//! built at test time with the real tools, compared with what the real tools
//! (sfdisk, blkid, dpkg-query, rpm, a kernel mount) say about the same
//! images. Run it through `scripts/test`, which installs those tools.
//!
//! One module per kind of input, in `tests/e2e/`; the kit is the `e2e`
//! library (`src/`).

#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/cyclonedx.rs"]
mod cyclonedx;
#[path = "e2e/daemon.rs"]
mod daemon;
#[path = "e2e/ebs.rs"]
mod ebs;
#[path = "e2e/fs_shapes.rs"]
mod fs_shapes;
#[path = "e2e/gpt.rs"]
mod gpt;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/journal.rs"]
mod journal;
#[path = "e2e/mbr.rs"]
mod mbr;
#[path = "e2e/packages.rs"]
mod packages;
#[path = "e2e/walk.rs"]
mod walk;
#[path = "e2e/xfs.rs"]
mod xfs;
