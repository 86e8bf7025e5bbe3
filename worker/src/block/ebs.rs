//! An EBS snapshot read through the EBS direct APIs: the one bridge from the
//! synchronous parsers to async AWS calls.
//!
//! Why this shape (after awslabs/coldsnap's download path, which fetches
//! every block; we fetch only what the parsers ask for):
//! - The block map comes from `ListSnapshotBlocks` when the source opens, one
//!   window of [`LIST_WINDOW`] block indices per call, listed concurrently. A
//!   block that is not listed was never written: it reads as zeros and costs
//!   no call.
//! - `GetSnapshotBlock` runs on demand. Each block's SHA-256 and length are
//!   checked against what the service returned; a mismatch is retried, then
//!   is an error naming the snapshot and block.
//! - A bounded cache (default 256 MiB) holds fetched blocks; concurrent reads
//!   of one block share one fetch (a slot that later readers wait on).
//! - Sequential reads fetch ahead; [`BlockSource::prefetch`] lets a parser
//!   announce ranges it will read, fetched in parallel in the background
//!   (at most half the cache per announcement, however long the ranges).
//! - At most `max_in_flight` requests at once (default 64) and a client-side
//!   rate limit (default 500/s, under the 1,000 requests/s per-snapshot
//!   quota). Throttling (`RequestThrottledException`, `ThrottlingException`),
//!   5xx, timeouts and connection failures back off exponentially with full
//!   jitter; the SDK's own retries are disabled so the two do not stack.
//! - Every request has a timeout, so a read never hangs.
//!
//! The parsers call [`BlockSource::read_exact_at`] from rayon threads; this
//! source owns its own tokio runtime and blocks those threads on it (never
//! a tokio worker thread).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ebs::Client;
use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{BlockError, BlockSource, RemoteStats, check_range};

/// Block indices covered by one `ListSnapshotBlocks` call (its `MaxResults`
/// maximum): the block map of a window is complete after one call.
pub const LIST_WINDOW: u64 = 10_000;

/// How to read a snapshot.
#[derive(Debug, Clone)]
pub struct EbsOptions {
    /// AWS region (default: the SDK's usual chain, `AWS_REGION` and profiles).
    pub region: Option<String>,
    /// Bytes of fetched blocks kept (default 256 MiB).
    pub cache_bytes: u64,
    /// Requests in flight at most (default 64).
    pub max_in_flight: usize,
    /// Requests per second at most (default 500; AWS allows 1,000 per snapshot).
    pub requests_per_second: u32,
    /// Blocks fetched ahead of a sequential read (default 8 = 4 MiB).
    pub read_ahead_blocks: u64,
    /// Tries per request before giving up (default 8).
    pub max_attempts: u32,
    /// Timeout of one request attempt (default 30 s).
    pub request_timeout: Duration,
    /// `MaxResults` of `ListSnapshotBlocks` (default and maximum 10,000;
    /// tests set it low to exercise pagination).
    pub list_page_size: i32,
}

impl Default for EbsOptions {
    fn default() -> Self {
        Self {
            region: None,
            cache_bytes: 256 * 1024 * 1024,
            max_in_flight: 64,
            requests_per_second: 500,
            read_ahead_blocks: 8,
            max_attempts: 8,
            request_timeout: Duration::from_secs(30),
            list_page_size: 10_000,
        }
    }
}

/// A fetched block, or why it could not be.
#[derive(Debug, Clone)]
enum SlotState {
    Pending,
    Ready(Arc<[u8]>),
    Failed(String),
}

/// One block's fetch, shared by every reader that wants it.
#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

impl Slot {
    fn pending() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SlotState::Pending),
            ready: Condvar::new(),
        })
    }

    fn fill(&self, state: SlotState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        self.ready.notify_all();
    }

    fn wait(&self) -> Result<Arc<[u8]>, String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match &*state {
                SlotState::Pending => {
                    state = self
                        .ready
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                SlotState::Ready(data) => return Ok(Arc::clone(data)),
                SlotState::Failed(why) => return Err(why.clone()),
            }
        }
    }

    fn is_pending(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            SlotState::Pending
        )
    }

    fn is_failed(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            SlotState::Failed(_)
        )
    }
}

/// Fetched blocks, evicted oldest first past the byte budget (pending
/// fetches are never evicted).
#[derive(Debug, Default)]
struct Cache {
    slots: HashMap<u64, Arc<Slot>>,
    order: VecDeque<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    blocks_fetched: AtomicU64,
    api_calls: AtomicU64,
    retries: AtomicU64,
    cache_hits: AtomicU64,
}

/// Spaces requests `1 / rate` apart.
#[derive(Debug)]
struct RateLimit {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimit {
    async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        let at = (*next).max(now);
        *next = at + self.interval;
        drop(next);
        if at > now {
            tokio::time::sleep(at - now).await;
        }
    }
}

struct Shared {
    client: Client,
    snapshot_id: String,
    block_size: u64,
    options: EbsOptions,
    /// Allocated blocks and their tokens.
    tokens: HashMap<u64, Box<str>>,
    cache: Mutex<Cache>,
    in_flight: tokio::sync::Semaphore,
    rate: RateLimit,
    counters: Counters,
    /// The block after the last read, to notice sequential access.
    next_sequential: Mutex<u64>,
}

/// A snapshot as a block source. See the module documentation.
pub struct EbsSource {
    shared: Arc<Shared>,
    size: u64,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for EbsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EbsSource")
            .field("snapshot_id", &self.shared.snapshot_id)
            .field("size", &self.size)
            .field("blocks_allocated", &self.shared.tokens.len())
            .finish_non_exhaustive()
    }
}

/// Why one call failed, and whether trying again may help.
struct CallError {
    retryable: bool,
    detail: String,
}

fn classify<E>(err: &SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = aws_sdk_ebs::error::DisplayErrorContext(err).to_string();
    let retryable = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            matches!(
                service.err().code(),
                Some(
                    "RequestThrottledException"
                        | "ThrottlingException"
                        | "InternalServerException"
                        | "ServiceUnavailableException"
                )
            ) || service.raw().status().is_server_error()
        }
        _ => false,
    };
    CallError { retryable, detail }
}

/// Backoff before try `attempt` (1-based retries): full jitter over an
/// exponential ceiling of 100 ms × 2^attempt, at most 10 s.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 100u64.saturating_mul(1u64 << attempt.min(7)).min(10_000);
    let random = RandomState::new().hash_one((attempt, Instant::now()));
    Duration::from_millis(random % ceiling_ms.max(1))
}

impl EbsSource {
    /// Open `snapshot_id`: configure the SDK from the environment (including
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_EBS`) and list its block map.
    ///
    /// # Errors
    /// [`BlockError::Remote`] naming the snapshot when it does not exist, is
    /// not readable, or the listing fails after retries.
    pub fn open(snapshot_id: &str, options: EbsOptions) -> Result<Self, BlockError> {
        let remote = |detail: String| BlockError::Remote {
            what: format!("snapshot {snapshot_id}"),
            detail,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ebs-io")
            .enable_all()
            .build()
            .map_err(|err| remote(format!("starting the I/O runtime: {err}")))?;
        let client = runtime.block_on(async {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .retry_config(RetryConfig::disabled())
                .timeout_config(
                    TimeoutConfig::builder()
                        .operation_attempt_timeout(options.request_timeout)
                        .connect_timeout(Duration::from_secs(10))
                        .build(),
                );
            if let Some(region) = &options.region {
                loader = loader.region(aws_config::Region::new(region.clone()));
            }
            Client::new(&loader.load().await)
        });
        let counters = Counters::default();
        let (volume_bytes, block_size, tokens) = runtime
            .block_on(list_block_map(&client, snapshot_id, &options, &counters))
            .map_err(remote)?;
        let shared = Arc::new(Shared {
            client,
            snapshot_id: snapshot_id.to_string(),
            block_size,
            tokens,
            cache: Mutex::new(Cache::default()),
            in_flight: tokio::sync::Semaphore::new(options.max_in_flight.max(1)),
            rate: RateLimit {
                interval: Duration::from_secs(1) / options.requests_per_second.max(1),
                next: tokio::sync::Mutex::new(Instant::now()),
            },
            counters,
            next_sequential: Mutex::new(u64::MAX),
            options,
        });
        Ok(Self {
            shared,
            size: volume_bytes,
            runtime,
        })
    }

    /// The blocks covering `first..=last`, fetched as needed (`None`: never
    /// written, reads as zeros).
    fn blocks(&self, first: u64, last: u64) -> Result<Vec<Option<Arc<[u8]>>>, BlockError> {
        let shared = &self.shared;
        let mut waits = Vec::new();
        let mut fetch = Vec::new();
        {
            let mut cache = shared.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for index in first..=last {
                if !shared.tokens.contains_key(&index) {
                    waits.push(None);
                    continue;
                }
                // A failed fetch (a read-ahead that gave up, say) is tried
                // again by the reader that needs the block.
                if let Some(slot) = cache.slots.get(&index).filter(|slot| !slot.is_failed()) {
                    shared.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                    waits.push(Some((index, Arc::clone(slot))));
                    continue;
                }
                let slot = Slot::pending();
                insert(&mut cache, index, Arc::clone(&slot), shared);
                fetch.push((index, Arc::clone(&slot)));
                waits.push(Some((index, slot)));
            }
        }
        if !fetch.is_empty() {
            self.runtime.block_on(fetch_all(Arc::clone(shared), fetch));
        }
        waits
            .into_iter()
            .map(|wait| match wait {
                None => Ok(None),
                Some((index, slot)) => slot.wait().map(Some).map_err(|detail| {
                    forget(shared, index);
                    BlockError::Remote {
                        what: format!("snapshot {} block {index}", shared.snapshot_id),
                        detail,
                    }
                }),
            })
            .collect()
    }

    /// Start fetching the allocated, uncached blocks among `indices` in the
    /// background.
    fn fetch_in_background(&self, indices: impl Iterator<Item = u64>) {
        let shared = &self.shared;
        let mut fetch = Vec::new();
        {
            let mut cache = shared.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for index in indices {
                if shared.tokens.contains_key(&index) && !cache.slots.contains_key(&index) {
                    let slot = Slot::pending();
                    insert(&mut cache, index, Arc::clone(&slot), shared);
                    fetch.push((index, slot));
                }
            }
        }
        if !fetch.is_empty() {
            self.runtime.spawn(fetch_all(Arc::clone(shared), fetch));
        }
    }

    /// Block size of the snapshot in bytes (524,288 on AWS).
    pub fn block_size(&self) -> u64 {
        self.shared.block_size
    }
}

/// Insert `slot` for `index`, evicting the oldest finished blocks past the
/// byte budget.
fn insert(cache: &mut Cache, index: u64, slot: Arc<Slot>, shared: &Shared) {
    cache.slots.insert(index, slot);
    cache.order.push_back(index);
    let budget = usize::try_from(shared.options.cache_bytes / shared.block_size.max(1))
        .unwrap_or(usize::MAX)
        .max(1);
    let mut scanned = 0;
    while cache.slots.len() > budget && scanned < cache.order.len() {
        let Some(oldest) = cache.order.pop_front() else {
            break;
        };
        match cache.slots.get(&oldest) {
            Some(slot) if slot.is_pending() => {
                cache.order.push_back(oldest);
                scanned += 1;
            }
            Some(_) => {
                cache.slots.remove(&oldest);
            }
            None => {}
        }
    }
}

/// Drop a failed block from the cache so that a later read tries again.
fn forget(shared: &Shared, index: u64) {
    let mut cache = shared.cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache
        .slots
        .get(&index)
        .is_some_and(|slot| !slot.is_pending())
    {
        cache.slots.remove(&index);
        cache.order.retain(|&i| i != index);
    }
}

async fn fetch_all(shared: Arc<Shared>, fetch: Vec<(u64, Arc<Slot>)>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, slot) in fetch {
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            let state = match fetch_block(&shared, index).await {
                Ok(data) => SlotState::Ready(data),
                Err(why) => SlotState::Failed(why),
            };
            slot.fill(state);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Fetch and verify one block, retrying what may succeed on another try.
async fn fetch_block(shared: &Shared, index: u64) -> Result<Arc<[u8]>, String> {
    let token = shared
        .tokens
        .get(&index)
        .ok_or_else(|| "not in the block map".to_string())?;
    let block_index =
        i32::try_from(index).map_err(|_| format!("block index {index} is out of range"))?;
    let _permit = shared
        .in_flight
        .acquire()
        .await
        .map_err(|_| "the source is closing".to_string())?;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        shared.rate.wait().await;
        shared.counters.api_calls.fetch_add(1, Ordering::Relaxed);
        let result = shared
            .client
            .get_snapshot_block()
            .snapshot_id(&shared.snapshot_id)
            .block_index(block_index)
            .block_token(token.as_ref())
            .send()
            .await;
        let failure = match result {
            Ok(output) => match verify(shared, output).await {
                Ok(data) => {
                    shared
                        .counters
                        .blocks_fetched
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(snapshot = %shared.snapshot_id, block = index, attempt, "fetched");
                    return Ok(data);
                }
                Err(detail) => CallError {
                    retryable: true,
                    detail,
                },
            },
            Err(err) => classify(&err),
        };
        if !failure.retryable || attempt >= shared.options.max_attempts {
            return Err(format!(
                "GetSnapshotBlock failed after {attempt} attempt(s): {}",
                failure.detail
            ));
        }
        shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(snapshot = %shared.snapshot_id, block = index, attempt, error = %failure.detail, "retrying");
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// The block's bytes, if their length and SHA-256 match what the service
/// says they are.
async fn verify(
    shared: &Shared,
    output: aws_sdk_ebs::operation::get_snapshot_block::GetSnapshotBlockOutput,
) -> Result<Arc<[u8]>, String> {
    let expected_len = output.data_length;
    let checksum = output.checksum.clone();
    // The attempt timeout covers the response head; the body gets its own.
    let data = tokio::time::timeout(shared.options.request_timeout, output.block_data.collect())
        .await
        .map_err(|_| "timed out reading the block data".to_string())?
        .map_err(|err| format!("reading the block data: {err}"))?
        .into_bytes();
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if expected_len.and_then(|l| u64::try_from(l).ok()) != Some(len) || len != shared.block_size {
        return Err(format!(
            "{len} bytes received, DataLength {expected_len:?}, block size {}",
            shared.block_size
        ));
    }
    let Some(checksum) = checksum else {
        return Err("no checksum returned".to_string());
    };
    let expected = base64::engine::general_purpose::STANDARD
        .decode(checksum.as_bytes())
        .map_err(|err| format!("checksum {checksum:?} is not base64: {err}"))?;
    let actual = Sha256::digest(&data);
    if actual.as_slice() != expected.as_slice() {
        return Err(format!(
            "checksum mismatch: SHA-256 of the data is {}, the service says {checksum}",
            base64::engine::general_purpose::STANDARD.encode(actual)
        ));
    }
    Ok(Arc::from(&data[..]))
}

/// The blocks that hold `ranges` (byte offset, length) of a source of
/// `size` bytes, range after range, at most `cap` of them (at least one).
///
/// A hint is not a download: the ranges come from the image (extents a
/// hostile inode may make as long as it likes), so the count is capped
/// before anything is allocated. [`EbsSource`] caps a hint at half its
/// cache: more would evict the first blocks before they are read.
fn hinted_blocks(ranges: &[(u64, u64)], size: u64, block_size: u64, cap: usize) -> Vec<u64> {
    let cap = cap.max(1);
    let mut indices = Vec::new();
    for &(offset, len) in ranges {
        let room = cap.saturating_sub(indices.len());
        if room == 0 {
            break;
        }
        if len == 0 || offset >= size || block_size == 0 {
            continue;
        }
        let end = offset.saturating_add(len).min(size);
        indices.extend((offset / block_size..=(end - 1) / block_size).take(room));
    }
    indices
}

/// The volume size in bytes, the block size, and every allocated block's
/// token, listed window by window, concurrently.
async fn list_block_map(
    client: &Client,
    snapshot_id: &str,
    options: &EbsOptions,
    counters: &Counters,
) -> Result<(u64, u64, HashMap<u64, Box<str>>), String> {
    // The first window also tells the volume's size.
    let (volume_gib, block_size, mut tokens) =
        list_window(client, snapshot_id, 0, options, counters).await?;
    let volume_bytes = volume_gib
        .checked_mul(1 << 30)
        .ok_or_else(|| format!("volume size {volume_gib} GiB overflows"))?;
    if !(512..=(64 << 20)).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(format!(
            "block size {block_size} is not a sane power of two"
        ));
    }
    let blocks = volume_bytes.div_ceil(block_size);
    let windows = blocks.div_ceil(LIST_WINDOW);
    let limit = Arc::new(tokio::sync::Semaphore::new(options.max_in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for window in 1..windows {
        let client = client.clone();
        let snapshot_id = snapshot_id.to_string();
        let options = options.clone();
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            let counters = Counters::default();
            let listed = list_window(&client, &snapshot_id, window, &options, &counters).await;
            (listed, counters)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (listed, window_counters) =
            joined.map_err(|err| format!("listing task failed: {err}"))?;
        counters.api_calls.fetch_add(
            window_counters.api_calls.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        counters.retries.fetch_add(
            window_counters.retries.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        tokens.extend(listed?.2);
    }
    tokens.retain(|&index, _| index < blocks);
    Ok((volume_bytes, block_size, tokens))
}

/// The tokens of the allocated blocks in window `window`
/// (`window * LIST_WINDOW ..`), following `NextToken` within the window.
async fn list_window(
    client: &Client,
    snapshot_id: &str,
    window: u64,
    options: &EbsOptions,
    counters: &Counters,
) -> Result<(u64, u64, HashMap<u64, Box<str>>), String> {
    let start = window.saturating_mul(LIST_WINDOW);
    let end = start.saturating_add(LIST_WINDOW);
    let start_index =
        i32::try_from(start).map_err(|_| format!("block index {start} is out of range"))?;
    let mut tokens = HashMap::new();
    let mut next_token: Option<String> = None;
    let (mut volume_gib, mut block_size) = (0, 0);
    // Bounded: every page must advance through the window.
    for _page in 0..=LIST_WINDOW {
        let mut attempt = 0u32;
        let output = loop {
            attempt += 1;
            counters.api_calls.fetch_add(1, Ordering::Relaxed);
            let mut request = client
                .list_snapshot_blocks()
                .snapshot_id(snapshot_id)
                .max_results(options.list_page_size);
            request = match &next_token {
                Some(token) => request.next_token(token),
                None => request.starting_block_index(start_index),
            };
            match request.send().await {
                Ok(output) => break output,
                Err(err) => {
                    let failure = classify(&err);
                    if !failure.retryable || attempt >= options.max_attempts {
                        return Err(format!(
                            "ListSnapshotBlocks from block {start} failed after {attempt} attempt(s): {}",
                            failure.detail
                        ));
                    }
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        };
        volume_gib = output
            .volume_size()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(volume_gib);
        block_size = output
            .block_size()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(block_size);
        let mut past_window = false;
        for block in output.blocks() {
            let (Some(index), Some(token)) = (block.block_index(), block.block_token()) else {
                continue;
            };
            let Ok(index) = u64::try_from(index) else {
                continue;
            };
            if index >= end {
                past_window = true;
            } else if index >= start {
                tokens.insert(index, Box::from(token));
            }
        }
        next_token = output.next_token().map(str::to_string);
        if past_window || next_token.is_none() || output.blocks().is_empty() {
            return Ok((volume_gib, block_size, tokens));
        }
    }
    Err(format!(
        "ListSnapshotBlocks from block {start} did not finish its window"
    ))
}

impl BlockSource for EbsSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        let block_size = self.shared.block_size;
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let first = offset / block_size;
        let last = (offset + len - 1) / block_size;
        let sequential = {
            let mut next = self
                .shared
                .next_sequential
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let sequential = *next == first || *next == last;
            *next = last + 1;
            sequential
        };
        if sequential && self.shared.options.read_ahead_blocks > 0 {
            self.fetch_in_background(last + 1..=last + self.shared.options.read_ahead_blocks);
        }
        let blocks = self.blocks(first, last)?;
        let mut written = 0usize;
        let mut position = offset;
        for block in blocks {
            let within = usize::try_from(position % block_size).unwrap_or(0);
            let take = (usize::try_from(block_size).unwrap_or(usize::MAX) - within)
                .min(buf.len() - written);
            let target = &mut buf[written..written + take];
            match block {
                Some(data) => target.copy_from_slice(&data[within..within + take]),
                None => target.fill(0),
            }
            written += take;
            position += u64::try_from(take).unwrap_or(u64::MAX);
        }
        Ok(())
    }

    fn prefetch(&self, ranges: &[(u64, u64)]) {
        let block_size = self.shared.block_size;
        let cap =
            usize::try_from(self.shared.options.cache_bytes / block_size / 2).unwrap_or(usize::MAX);
        let indices = hinted_blocks(ranges, self.size, block_size, cap);
        self.fetch_in_background(indices.into_iter());
    }

    fn remote_stats(&self) -> Option<RemoteStats> {
        let counters = &self.shared.counters;
        Some(RemoteStats {
            blocks_allocated: u64::try_from(self.shared.tokens.len()).unwrap_or(u64::MAX),
            blocks_fetched: counters.blocks_fetched.load(Ordering::Relaxed),
            api_calls: counters.api_calls.load(Ordering::Relaxed),
            retries: counters.retries.load(Ordering::Relaxed),
            cache_hits: counters.cache_hits.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: u64 = 512 * 1024;

    #[test]
    fn hinted_blocks_cover_each_range_in_order() {
        let ranges = [(BLOCK + 10, 2 * BLOCK), (0, 1), (5 * BLOCK, 0)];
        assert_eq!(
            hinted_blocks(&ranges, 100 * BLOCK, BLOCK, 100),
            [1, 2, 3, 0]
        );
    }

    #[test]
    fn hinted_blocks_stop_at_the_end_of_the_source() {
        let ranges = [(3 * BLOCK, u64::MAX), (200 * BLOCK, BLOCK)];
        assert_eq!(hinted_blocks(&ranges, 5 * BLOCK, BLOCK, 100), [3, 4]);
    }

    #[test]
    fn a_huge_hint_is_capped_before_it_is_listed() {
        // A hostile extent of an exabyte on a 16 TiB snapshot: 256 blocks,
        // not 32 million (nor an allocation of their indices).
        let size = 16 << 40;
        let ranges = [(0, u64::MAX), (BLOCK, u64::MAX)];
        let hinted = hinted_blocks(&ranges, size, BLOCK, 256);
        assert_eq!(hinted.len(), 256);
        assert_eq!(hinted.first(), Some(&0));
        assert_eq!(hinted.last(), Some(&255));
        // Many ranges share one cap.
        let many = vec![(0, 8 * BLOCK); 10_000];
        assert_eq!(hinted_blocks(&many, size, BLOCK, 256).len(), 256);
    }
}
