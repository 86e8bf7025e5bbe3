//! Upload a disk image as an EBS snapshot through the EBS direct APIs
//! (`StartSnapshot`, `PutSnapshotBlock`, `CompleteSnapshot`), skipping
//! blocks of zeros, which a snapshot need not store.
//!
//! For `worker upload-image` (to scan an image the way a snapshot is
//! scanned) and for the tests, which build real images and upload them to
//! the local AWS emulator. The snapshot carries the ownership tag: the
//! scanner created it, so the scanner's cleanup may delete it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_ebs::Client;
use aws_sdk_ebs::error::DisplayErrorContext;
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAlgorithm, Tag};
use base64::Engine as _;
use scanner_contract::OwnershipTag;
use sha2::{Digest, Sha256};

use crate::block::{BlockSource, FileSource};

/// EBS direct's block size: every snapshot block is 512 KiB.
pub const SNAPSHOT_BLOCK_SIZE: u64 = 512 * 1024;

/// Uploads in flight at once.
const PUT_CONCURRENCY: usize = 32;

/// How to upload.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// AWS region (default: the SDK's usual chain).
    pub region: Option<String>,
    /// Snapshot description.
    pub description: Option<String>,
    /// Extra tags, besides the ownership tag.
    pub tags: Vec<(String, String)>,
}

/// What an upload made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Uploaded {
    /// The new snapshot.
    pub snapshot_id: String,
    /// Its volume size in GiB (the image size rounded up).
    pub volume_size_gib: u64,
    /// Blocks written (blocks of zeros are not).
    pub blocks_written: u64,
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The image could not be read.
    #[error("reading {path}: {detail}")]
    Read {
        /// The image.
        path: String,
        /// Why.
        detail: String,
    },
    /// An EBS direct call failed.
    #[error("{operation}: {detail}")]
    Api {
        /// The call, with the snapshot and block where known.
        operation: String,
        /// What the service said.
        detail: String,
    },
}

/// Upload the image at `path` as a new snapshot, and wait until it is
/// completed.
///
/// # Errors
/// [`UploadError`] naming the image or the failed call.
pub fn upload_image(
    path: &std::path::Path,
    options: &UploadOptions,
) -> Result<Uploaded, UploadError> {
    let read_error = |detail: String| UploadError::Read {
        path: path.display().to_string(),
        detail,
    };
    let image = Arc::new(FileSource::open(path).map_err(|err| read_error(err.to_string()))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| read_error(format!("starting the I/O runtime: {err}")))?;
    runtime.block_on(upload(image, options))
}

async fn upload(image: Arc<FileSource>, options: &UploadOptions) -> Result<Uploaded, UploadError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &options.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let client = Client::new(&loader.load().await);
    let size = image.size();
    let volume_size_gib = size.div_ceil(1 << 30).max(1);
    let ownership = OwnershipTag::default();
    let mut start = client
        .start_snapshot()
        .volume_size(i64::try_from(volume_size_gib).unwrap_or(i64::MAX))
        .timeout(60)
        .tags(
            Tag::builder()
                .key(ownership.key)
                .value(ownership.value)
                .build(),
        );
    for (key, value) in &options.tags {
        start = start.tags(Tag::builder().key(key).value(value).build());
    }
    if let Some(description) = &options.description {
        start = start.description(description);
    }
    let started = start.send().await.map_err(|err| UploadError::Api {
        operation: "StartSnapshot".to_string(),
        detail: DisplayErrorContext(&err).to_string(),
    })?;
    let snapshot_id = started.snapshot_id().unwrap_or_default().to_string();
    let block_size = started
        .block_size()
        .and_then(|b| u64::try_from(b).ok())
        .filter(|&b| b > 0)
        .unwrap_or(SNAPSHOT_BLOCK_SIZE);

    let blocks = size.div_ceil(block_size);
    let written = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(PUT_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..blocks {
        let permit = Arc::clone(&limit)
            .acquire_owned()
            .await
            .map_err(|err| UploadError::Api {
                operation: "PutSnapshotBlock".to_string(),
                detail: err.to_string(),
            })?;
        let image = Arc::clone(&image);
        let client = client.clone();
        let snapshot_id = snapshot_id.clone();
        let written = Arc::clone(&written);
        tasks.spawn(async move {
            let _permit = permit;
            put_block(&client, &image, &snapshot_id, index, block_size, &written).await
        });
        // Surface failures early rather than after queueing every block.
        while let Some(done) = tasks.try_join_next() {
            flatten(done)?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        flatten(done)?;
    }
    let blocks_written = written.load(Ordering::Relaxed);
    client
        .complete_snapshot()
        .snapshot_id(&snapshot_id)
        .changed_blocks_count(i32::try_from(blocks_written).unwrap_or(i32::MAX))
        .send()
        .await
        .map_err(|err| UploadError::Api {
            operation: format!("CompleteSnapshot {snapshot_id}"),
            detail: DisplayErrorContext(&err).to_string(),
        })?;
    Ok(Uploaded {
        snapshot_id,
        volume_size_gib,
        blocks_written,
    })
}

fn flatten(
    done: Result<Result<(), UploadError>, tokio::task::JoinError>,
) -> Result<(), UploadError> {
    done.map_err(|err| UploadError::Api {
        operation: "PutSnapshotBlock".to_string(),
        detail: format!("upload task failed: {err}"),
    })?
}

/// Read block `index` of the image and write it unless it is all zeros
/// (the image's last block is padded with zeros to a whole block).
async fn put_block(
    client: &Client,
    image: &FileSource,
    snapshot_id: &str,
    index: u64,
    block_size: u64,
    written: &AtomicU64,
) -> Result<(), UploadError> {
    let offset = index * block_size;
    let len = block_size.min(image.size() - offset);
    let mut data = vec![0u8; usize::try_from(block_size).unwrap_or(0)];
    let read_len = usize::try_from(len).unwrap_or(0);
    image
        .read_exact_at(&mut data[..read_len], offset)
        .map_err(|err| UploadError::Read {
            path: image.path().display().to_string(),
            detail: err.to_string(),
        })?;
    if data.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
    let block_index = i32::try_from(index).map_err(|_| UploadError::Api {
        operation: format!("PutSnapshotBlock {snapshot_id} block {index}"),
        detail: "block index out of range".to_string(),
    })?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
            .put_snapshot_block()
            .snapshot_id(snapshot_id)
            .block_index(block_index)
            .data_length(i32::try_from(data.len()).unwrap_or(i32::MAX))
            .checksum(&checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .block_data(ByteStream::from(data.clone()))
            .send()
            .await;
        match result {
            Ok(_) => {
                written.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(err) if attempt < 3 => {
                tracing::debug!(snapshot = snapshot_id, block = index, error = %DisplayErrorContext(&err), "retrying PutSnapshotBlock");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(err) => {
                return Err(UploadError::Api {
                    operation: format!("PutSnapshotBlock {snapshot_id} block {index}"),
                    detail: DisplayErrorContext(&err).to_string(),
                });
            }
        }
    }
}
