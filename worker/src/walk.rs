//! A full walk of every directory entry of a volume, in parallel.
//!
//! Used by `worker walk` (and the benchmark that compares it with
//! `mount` + `find` and The Sleuth Kit's `fls -r`); later detectors that look
//! at every file (secrets, risky configuration) build on it.
//!
//! Two listers feed one engine. On ext4 without a journal to replay, the
//! directories are listed by inode number ([`Ext4Dirs`]): each directory is
//! read once and a directory inode reached twice (a hard link to a
//! directory, which only a damaged or hostile image has) is reported and not
//! entered again. Otherwise the walk goes through the path-based
//! [`Filesystem`] seam (where `ext4-view` replays the journal), and a cap on
//! the directories entered — the caller passes the filesystem's inodes in
//! use, since a valid tree has no more directories than that — ends a loop
//! as "truncated" instead of letting it run on.
//!
//! Filesystem readers are not `Send`, so this is the ripgrep `ignore`
//! pattern rather than rayon: a fixed set of threads, each with its own
//! lister, sharing one queue of directories. The output is counts and sorted
//! errors, so it is the same whatever order the threads run in. Depth, path
//! length and the number of entries are capped as well.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, PoisonError};

use crate::fs::resolve::join;
use crate::fs::{Ext4Dirs, FileType, Filesystem, FsError, FsKind, Volume};

/// Limits of one walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Worker threads (each opens the filesystem once). A walk waits on
    /// reads far more than it computes, so this is about reads in flight,
    /// not cores.
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
            // Measured on a cold /usr image: 2 threads 1.2 s, 8 0.5 s, 16 0.36 s.
            threads: 16,
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
    /// How directories were listed: `inode` or `path`.
    pub method: &'static str,
    /// Directories, the root included.
    pub directories: u64,
    /// Regular files.
    pub files: u64,
    /// Symbolic links (not followed).
    pub symlinks: u64,
    /// Devices, FIFOs and sockets.
    pub special: u64,
    /// Directories that could not be read or were not entered, each naming
    /// the path and why.
    pub errors: Vec<String>,
    /// True when a limit stopped the walk early.
    pub truncated: bool,
}

/// A directory to list.
struct Job {
    path: String,
    inode: Option<u64>,
    depth: usize,
}

/// One entry of a listing.
struct Child {
    name: String,
    file_type: FileType,
    inode: Option<u64>,
}

/// Lists one directory; one per thread.
trait Lister {
    fn list(&self, job: &Job) -> Result<Vec<Child>, FsError>;
}

struct InodeLister<'a>(&'a Ext4Dirs);

impl Lister for InodeLister<'_> {
    fn list(&self, job: &Job) -> Result<Vec<Child>, FsError> {
        let inode = job.inode.unwrap_or_else(|| self.0.root());
        Ok(self
            .0
            .list(inode, &job.path)?
            .into_iter()
            .map(|e| Child {
                name: e.name,
                file_type: e.file_type,
                inode: Some(e.inode),
            })
            .collect())
    }
}

struct PathLister(Box<dyn Filesystem>);

impl Lister for PathLister {
    fn list(&self, job: &Job) -> Result<Vec<Child>, FsError> {
        Ok(self
            .0
            .read_dir(&job.path)?
            .into_iter()
            .map(|e| Child {
                name: e.name,
                file_type: e.file_type,
                inode: None,
            })
            .collect())
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs taken but not finished: the walk ends when this and `jobs` are empty.
    active: usize,
    /// Directories queued so far, the root included.
    entered: u64,
    /// Directory inodes queued so far (inode listing only).
    seen: HashSet<u64>,
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
    let by_inode = match volume.kind() {
        FsKind::Ext4 => Ext4Dirs::open(std::sync::Arc::clone(volume.source())).ok(),
        _ => None,
    };
    match &by_inode {
        Some(dirs) => {
            let root = dirs.root();
            dirs.list(root, "/")?;
            run(options, "inode", Some(root), &|| {
                Ok(Box::new(InodeLister(dirs)))
            })
        }
        None => {
            volume.open()?.read_dir("/")?;
            run(options, "path", None, &|| {
                Ok(Box::new(PathLister(volume.open()?)))
            })
        }
    }
}

type MakeLister<'a> = dyn Fn() -> Result<Box<dyn Lister + 'a>, FsError> + Sync + 'a;

fn run(
    options: &WalkOptions,
    method: &'static str,
    root: Option<u64>,
    make_lister: &MakeLister<'_>,
) -> Result<WalkSummary, FsError> {
    let state = Mutex::new(Queue {
        jobs: VecDeque::from([Job {
            path: "/".to_string(),
            inode: root,
            depth: 0,
        }]),
        active: 0,
        entered: 1,
        seen: root.into_iter().collect(),
        stopped: false,
        summary: WalkSummary {
            method,
            directories: 1,
            ..WalkSummary::default()
        },
    });
    let wake = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| walk_thread(make_lister, options, &state, &wake));
        }
    });
    let mut summary = state
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .summary;
    summary.errors.sort();
    Ok(summary)
}

fn walk_thread(
    make_lister: &MakeLister<'_>,
    options: &WalkOptions,
    state: &Mutex<Queue>,
    wake: &Condvar,
) {
    let lister = make_lister();
    loop {
        let job = {
            let mut queue = state.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    queue.active += 1;
                    break Some(job);
                }
                if queue.active == 0 {
                    break None;
                }
                queue = wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let Some(job) = job else {
            wake.notify_all();
            return;
        };
        let mut found = WalkSummary::default();
        let mut children = Vec::new();
        let listing = match &lister {
            Ok(lister) => lister.list(&job),
            Err(err) => Err(FsError::Io {
                what: job.path.clone(),
                detail: format!("opening the filesystem: {err}"),
            }),
        };
        match listing {
            Err(err) => found.errors.push(format!("{}: {err}", job.path)),
            Ok(entries) => {
                for entry in entries {
                    match entry.file_type {
                        FileType::Dir => {
                            found.directories += 1;
                            let path = join(&job.path, &entry.name);
                            if job.depth >= options.max_depth || path.len() > options.max_path_len {
                                found.truncated = true;
                                found.errors.push(format!("{path}: not entered: too deep"));
                                continue;
                            }
                            children.push(Job {
                                path,
                                inode: entry.inode,
                                depth: job.depth + 1,
                            });
                        }
                        FileType::File => found.files += 1,
                        FileType::Symlink => found.symlinks += 1,
                        FileType::Special => found.special += 1,
                    }
                }
            }
        }
        let mut queue = state.lock().unwrap_or_else(PoisonError::into_inner);
        // A directory inode already queued is a hard link to a directory:
        // count the entry, do not walk it twice.
        let Queue { seen, summary, .. } = &mut *queue;
        children.retain(|child| match child.inode {
            Some(inode) if !seen.insert(inode) => {
                summary.errors.push(format!(
                    "{}: not entered: directory inode {inode} is already walked (a hard link to a directory)",
                    child.path
                ));
                false
            }
            _ => true,
        });
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
