//! A full walk of every directory entry of a volume, in parallel.
//!
//! Used by `worker walk` (and the benchmark that compares it with
//! `mount` + `find` and The Sleuth Kit's `fls -r`); later detectors that look
//! at every file (secrets, risky configuration) build on it.
//!
//! Filesystem readers are not `Send`, so this is the ripgrep `ignore` pattern
//! rather than rayon: a fixed set of threads, each with its own open
//! filesystem, sharing one queue of directories. The output is counts, so it
//! is the same whatever order the threads run in.
//!
//! Bounded on hostile input: depth, path length, the number of entries and
//! the number of directories entered are capped. A valid filesystem has no
//! hard link to a directory, so a walk enters each directory once and never
//! more directories than the filesystem has inodes in use; the caller passes
//! that count (from the superblock) as `max_directories`, so a directory
//! that contains itself, however often, ends the walk as "truncated" instead
//! of looping or blowing up exponentially. (`ext4-view` does not expose inode
//! numbers, which would let us recognise the repeat itself.)

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use crate::fs::{FileType, FsError, Volume};

/// Limits of one walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Worker threads (each opens the filesystem once).
    pub threads: usize,
    /// Deepest directory level entered (the root is 0).
    pub max_depth: usize,
    /// Longest path entered, in bytes (Linux's `PATH_MAX`).
    pub max_path_len: usize,
    /// Entries counted before the walk stops and says it was truncated.
    pub max_entries: u64,
    /// Directories entered before the walk stops and says it was truncated:
    /// set it to the filesystem's inodes in use.
    pub max_directories: u64,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            max_depth: 256,
            max_path_len: 4096,
            max_entries: 50_000_000,
            max_directories: u64::MAX,
        }
    }
}

/// What a walk counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkSummary {
    /// Directories, the root included.
    pub directories: u64,
    /// Regular files.
    pub files: u64,
    /// Symbolic links (not followed).
    pub symlinks: u64,
    /// Devices, FIFOs and sockets.
    pub special: u64,
    /// Directories that could not be read, each naming the path and why.
    pub errors: Vec<String>,
    /// True when a limit stopped the walk early.
    pub truncated: bool,
}

struct Job {
    path: String,
    depth: usize,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs taken but not finished: the walk ends when this and `jobs` are empty.
    active: usize,
    /// Directories queued so far, the root included.
    entered: u64,
    /// A limit was hit: no more directories are queued.
    stopped: bool,
    summary: WalkSummary,
}

/// Walk every entry of `volume` from `/`.
///
/// # Errors
/// [`FsError`] when the filesystem cannot be opened or its root read; errors
/// below the root are collected in [`WalkSummary::errors`].
pub fn walk(volume: &Volume, options: &WalkOptions) -> Result<WalkSummary, FsError> {
    let root_fs = volume.open()?;
    root_fs.read_dir("/")?;
    drop(root_fs);
    let state = Mutex::new(Queue {
        jobs: VecDeque::from([Job {
            path: "/".to_string(),
            depth: 0,
        }]),
        active: 0,
        entered: 1,
        stopped: false,
        summary: WalkSummary {
            directories: 1,
            ..WalkSummary::default()
        },
    });
    let wake = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| walk_thread(volume, options, &state, &wake));
        }
    });
    let queue = state
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut summary = queue.summary;
    summary.errors.sort();
    Ok(summary)
}

fn walk_thread(volume: &Volume, options: &WalkOptions, state: &Mutex<Queue>, wake: &Condvar) {
    let fs = volume.open();
    loop {
        let job = {
            let mut queue = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    queue.active += 1;
                    break Some(job);
                }
                if queue.active == 0 {
                    break None;
                }
                queue = wake
                    .wait(queue)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let Some(job) = job else {
            wake.notify_all();
            return;
        };
        let mut found = WalkSummary::default();
        let mut children = Vec::new();
        match &fs {
            Err(err) => found
                .errors
                .push(format!("{}: opening the filesystem: {err}", job.path)),
            Ok(fs) => match fs.read_dir(&job.path) {
                Err(err) => found.errors.push(err.to_string()),
                Ok(entries) => {
                    for entry in entries {
                        match entry.file_type {
                            FileType::Dir => {
                                found.directories += 1;
                                let path = child_path(&job.path, &entry.name);
                                if job.depth >= options.max_depth
                                    || path.len() > options.max_path_len
                                {
                                    found.truncated = true;
                                    found.errors.push(format!("{path}: not entered: too deep"));
                                    continue;
                                }
                                children.push(Job {
                                    path,
                                    depth: job.depth + 1,
                                });
                            }
                            FileType::File => {
                                found.files += 1;
                            }
                            FileType::Symlink => found.symlinks += 1,
                            FileType::Special => found.special += 1,
                        }
                    }
                }
            },
        }
        let mut queue = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let summary = &mut queue.summary;
        summary.directories += found.directories;
        summary.files += found.files;
        summary.symlinks += found.symlinks;
        summary.special += found.special;
        summary.truncated |= found.truncated;
        summary.errors.append(&mut found.errors);
        let total = summary.directories + summary.files + summary.symlinks + summary.special;
        let entered = queue.entered.saturating_add(children.len() as u64);
        if queue.stopped {
            // Another thread hit a limit: finish what is running, queue nothing.
        } else if total > options.max_entries || entered > options.max_directories {
            queue.stopped = true;
            queue.summary.truncated = true;
            let message = format!(
                "walk stopped after {total} entries and {} directories: over the limit \
                 (a directory linked into itself, or a corrupt directory tree)",
                queue.entered
            );
            queue.summary.errors.push(message);
            queue.jobs.clear();
        } else {
            queue.entered = entered;
            queue.jobs.extend(children);
        }
        queue.active -= 1;
        drop(queue);
        wake.notify_all();
    }
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}
