//! Delivery: hands the undelivered treatment sends of the [`StateStore`] to the outside.
//!
//! Two ways out:
//!
//! - [`Outbox`]: one JSON line per send appended to a file (`.moments/outbox.ndjson`) that
//!   another program reads. Exactly once, crashes included: the line is synced to disk
//!   before the send is marked delivered, and a send whose id is already in the file is
//!   only marked (the crash came between the two). A line torn by a crash is cut off when
//!   the outbox is opened. The store remembers where the file ended at each mark, so only
//!   the lines after it need reading ([`Outbox::open_for`]).
//! - [`Webhook`]: an HTTP `POST` of the send as JSON to the endpoint, with the header
//!   `Idempotency-Key: <send_id>` so the receiver can drop a repeat. A `webhook` message is
//!   a partner's request: it goes to its own `url`, with its rendered `body` and its
//!   `method` (POST by default; GET and DELETE without a body), with the same header. At least once: a crash
//!   after the receiver answered and before the send was marked posts it again, with the
//!   same key.
//!
//! Every failure is recorded in the store (the attempts log, `last_error`,
//! `next_attempt_at`) and never lost. The retry policy ([`RetryPolicy`]):
//!
//! - a *transient* failure (connection refused or reset, time-out, HTTP 5xx, 408 or 429,
//!   an outbox write error) is tried again within the same call, after 0.5 s and 1 s
//!   (three tries in all), then left for a later call at `now` + 1 min, doubling with each
//!   recorded failure up to 12 h;
//! - a 429 or 503 with `Retry-After` (seconds, or an HTTP date counted from the response's
//!   `Date`) is transient, but the next try waits at least that long (up to 12 h): within
//!   the call only when the wait is no longer than the pause before the next try, else in
//!   a later call, and the host's other sends wait with it;
//! - a *permanent* failure (any other HTTP 4xx, a 3xx, a bad URL, no endpoint, `https`
//!   in a build without TLS) is not tried again within the call, and is left for a later
//!   call at `now` + 1 h, doubling up to 12 h: someone may fix the receiver or the
//!   configuration meanwhile;
//! - after 10 recorded failures of either kind, delivery gives up on the send for good:
//!   it is marked `gave_up_at` in the store, keeps its errors, and is never tried again.
//!
//! When every try of a send to one host failed transiently, the other sends to that host
//! are not tried in the same call (each is recorded as failed, with that error), so a dead
//! receiver costs one send's tries per call rather than one per send.
//!
//! All instants (delivery, failure, next attempt) are taken from the `now` given, so a run
//! over simulated time stays consistent; only the pauses between tries are real time.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::outcome::Send;
use crate::state::{OutboxMark, StateError, StateStore};

/// Where the outbox lives unless told otherwise, relative to the project directory.
pub const DEFAULT_OUTBOX_PATH: &str = ".moments/outbox.ndjson";

/// How a send leaves.
#[derive(Debug)]
pub enum Deliverer {
    Outbox(Outbox),
    Webhook(Webhook),
}

/// What one call of [`deliver_pending`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Sends marked delivered.
    pub delivered: usize,
    /// Sends that failed in this call, those given up included.
    pub failed: usize,
    /// Of the failed, those given up for good in this call.
    pub gave_up: usize,
    /// One line per failure: `<send_id>: <error>`.
    pub errors: Vec<String>,
}

/// Why delivery stopped. A failure to deliver one send is not an error: it is recorded in
/// the store and counted in the [`DeliveryReport`].
#[derive(Debug)]
pub enum DeliverError {
    /// The state store failed: nothing more can be recorded.
    State(StateError),
    /// The outbox file could not be opened or read.
    Outbox { path: PathBuf, detail: String },
}

impl fmt::Display for DeliverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliverError::State(e) => e.fmt(f),
            DeliverError::Outbox { path, detail } => {
                write!(f, "outbox {}: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for DeliverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeliverError::State(e) => Some(e),
            DeliverError::Outbox { .. } => None,
        }
    }
}

impl From<StateError> for DeliverError {
    fn from(e: StateError) -> Self {
        DeliverError::State(e)
    }
}

/// When to try a failed send again, and when to give up. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of one send within one call, for transient failures (at least 1).
    pub tries_per_call: u32,
    /// The pause before the second try within a call; it doubles before each further one.
    pub first_pause: Duration,
    /// The wait before a later call tries again after a transient failure; it doubles
    /// with each recorded failure.
    pub transient_backoff: Duration,
    /// The same after a permanent failure.
    pub permanent_backoff: Duration,
    /// The longest wait between calls.
    pub max_backoff: Duration,
    /// Recorded failures after which delivery gives up on a send for good.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            tries_per_call: 3,
            first_pause: Duration::from_millis(500),
            transient_backoff: Duration::from_secs(60),
            permanent_backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(12 * 3600),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The wait before the next call after the `failures`-th recorded failure (1-based).
    pub fn backoff(&self, kind: FailureKind, failures: u32) -> Duration {
        let base = match kind {
            FailureKind::Transient => self.transient_backoff,
            FailureKind::Permanent => self.permanent_backoff,
        };
        let doublings = failures.saturating_sub(1).min(30);
        base.saturating_mul(1 << doublings).min(self.max_backoff)
    }

    /// The pause before try `try_index` (0-based) within one call.
    fn pause_before(&self, try_index: u32) -> Duration {
        let doublings = try_index.saturating_sub(1).min(30);
        self.first_pause.saturating_mul(1 << doublings)
    }
}

/// Whether trying again soon may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The receiver is down or busy, or a write failed: try again soon.
    Transient,
    /// The receiver refused the send, or the configuration is wrong: try again much later.
    Permanent,
}

/// Sends every undelivered treatment send of `store` that may be tried at `now` (see
/// [`StateStore::undelivered`]), records each outcome in the store, and reports.
///
/// Fails only when the store (or the outbox file) cannot be used; a send that cannot be
/// delivered is recorded as failed and counted in the report.
pub fn deliver_pending(
    store: &mut StateStore,
    deliverer: &mut Deliverer,
    now: DateTime<Utc>,
) -> Result<DeliveryReport, DeliverError> {
    let mut report = DeliveryReport::default();
    // Hosts whose every try failed transiently in this call, with the failure.
    let mut down: BTreeMap<String, Failure> = BTreeMap::new();
    let mut after: Option<(DateTime<Utc>, String)> = None;
    loop {
        let page = store.undelivered_page(
            now,
            after.as_ref().map(|(at, id)| (*at, id.as_str())),
            DELIVERY_PAGE,
        )?;
        match deliverer {
            Deliverer::Outbox(outbox) => outbox.deliver(store, &page, now, &mut report)?,
            Deliverer::Webhook(webhook) => {
                webhook.deliver(store, &page, now, &mut report, &mut down)?
            }
        }
        match page.last() {
            Some(last) if page.len() as u32 == DELIVERY_PAGE => {
                after = Some((last.sent_at, last.send_id.clone()));
            }
            _ => break,
        }
    }
    Ok(report)
}

/// Sends read from the store and delivered at once, at most: a backlog (the first tick
/// over a long history) is delivered without holding all of it in memory.
const DELIVERY_PAGE: u32 = 10_000;

/// One failed attempt, as recorded.
#[derive(Debug, Clone)]
struct Failure {
    kind: FailureKind,
    error: String,
    /// The receiver's `Retry-After` (on a 429 or 503): the next attempt comes no sooner
    /// (within the policy's longest wait).
    wait_at_least: Option<Duration>,
}

impl Failure {
    fn new(kind: FailureKind, error: String) -> Failure {
        Failure {
            kind,
            error,
            wait_at_least: None,
        }
    }
}

/// Records a failure of `send_id`: when to try again, or that delivery gives up.
fn record_failure(
    store: &mut StateStore,
    policy: &RetryPolicy,
    send_id: &str,
    now: DateTime<Utc>,
    failure: Failure,
    report: &mut DeliveryReport,
) -> Result<(), StateError> {
    let Failure {
        kind,
        error,
        wait_at_least,
    } = failure;
    let failures = store
        .delivery(send_id)?
        .map_or(0, |d| d.attempts)
        .saturating_add(1);
    report.failed += 1;
    if failures >= policy.max_attempts {
        store.give_up(send_id, now, &error)?;
        report.gave_up += 1;
        report.errors.push(format!(
            "{send_id}: {error} (gave up after {failures} attempts)"
        ));
    } else {
        let asked = wait_at_least.map_or(Duration::ZERO, |w| w.min(policy.max_backoff));
        let wait = policy.backoff(kind, failures).max(asked);
        let next = chrono::Duration::from_std(wait)
            .ok()
            .and_then(|wait| now.checked_add_signed(wait))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        store.mark_failed(send_id, now, &error, next)?;
        report.errors.push(format!("{send_id}: {error}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Outbox

/// An append-only file of sends, one JSON object per line, synced to disk before each send
/// is marked delivered.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    file: File,
    /// Its canonical path and which file it is, for the store's [`OutboxMark`].
    canonical: String,
    identity: String,
    /// Length of the file up to its last complete line.
    len: u64,
    /// The `send_id` of every line read or written that the store may not know as
    /// delivered: every line of the file, or those after the store's mark.
    ids: HashSet<String>,
    policy: RetryPolicy,
}

impl Outbox {
    /// Opens (or creates, with its parent directories) the outbox at `path` and reads the
    /// send ids already in it. A last line without its newline, left by a crash in the
    /// middle of a write, is cut off (its send was never marked delivered, so it is written
    /// again). A complete line that is not a send is an error: the file is someone's data.
    pub fn open(path: &Path) -> Result<Outbox, DeliverError> {
        Outbox::open_after(path, None)
    }

    /// [`Outbox::open`] to deliver the sends of `store`: only the lines after the store's
    /// mark are read (every line before it is a send marked delivered), so opening costs
    /// what the last, perhaps interrupted, delivery wrote rather than the whole history.
    /// Of those, only the sends the store has not marked delivered are kept.
    ///
    /// The whole file is read when there is no mark, or when the file was replaced, or cut
    /// shorter or elsewhere than at the end of a line, since; the mark is then set back
    /// to its start, so that it cannot apply again to a file that grows past it.
    pub fn open_for(path: &Path, store: &mut StateStore) -> Result<Outbox, DeliverError> {
        Outbox::open_after(path, Some(store))
    }

    fn open_after(path: &Path, mut store: Option<&mut StateStore>) -> Result<Outbox, DeliverError> {
        let error = |detail: String| DeliverError::Outbox {
            path: path.to_path_buf(),
            detail,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| error(format!("cannot create directory {}: {e}", parent.display())))?;
        }
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| error(format!("cannot open: {e}")))?;
        if !existed {
            sync_parent(path);
        }
        let metadata = file
            .metadata()
            .map_err(|e| error(format!("cannot read: {e}")))?;
        let identity = file_identity(&metadata);
        let canonical = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        let start = match store.as_deref_mut() {
            Some(store) => match store.outbox_mark(&canonical)? {
                Some(mark) if fits(&mut file, &mark, &identity, metadata.len()) => mark.len,
                Some(_) => {
                    store.set_outbox_mark(&OutboxMark {
                        outbox: canonical.clone(),
                        file: identity.clone(),
                        len: 0,
                    })?;
                    0
                }
                None => 0,
            },
            None => 0,
        };
        // Read line by line: the outbox may be large, only its ids are kept.
        file.seek(SeekFrom::Start(start))
            .map_err(|e| error(format!("cannot read: {e}")))?;
        let mut reader = io::BufReader::new(&file);
        let mut ids = HashSet::new();
        let mut len = start;
        let mut torn = false;
        let mut line = Vec::new();
        for number in 1.. {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| error(format!("cannot read: {e}")))?;
            if read == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                torn = true;
                break;
            }
            len += read as u64;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let id = serde_json::from_slice::<SendId>(&line).map_err(|e| match start {
                0 => error(format!("line {number} is not a send: {e}")),
                _ => error(format!(
                    "line {number} after byte {start} is not a send: {e}"
                )),
            })?;
            ids.insert(id.send_id);
        }
        drop(reader);
        // Lines the store knows as delivered (or given up) need no reconciling.
        if let Some(store) = store {
            let mut unmarked = HashSet::new();
            for id in ids {
                let delivery = store.delivery(&id)?;
                if delivery.is_some_and(|d| d.delivered_at.is_none() && d.gave_up_at.is_none()) {
                    unmarked.insert(id);
                }
            }
            ids = unmarked;
        }
        if torn {
            file.set_len(len)
                .and_then(|()| file.sync_all())
                .map_err(|e| error(format!("cannot cut off a torn last line: {e}")))?;
        }
        Ok(Outbox {
            path: path.to_path_buf(),
            file,
            canonical,
            identity,
            len,
            ids,
            policy: RetryPolicy::default(),
        })
    }

    /// The same outbox with another retry policy for failed writes.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Outbox {
        self.policy = policy;
        self
    }

    /// The file this outbox appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a line for `send_id` is in the file.
    pub fn contains(&self, send_id: &str) -> bool {
        self.ids.contains(send_id)
    }

    /// Appends `send` as one line and syncs it to disk, without touching any store. For
    /// tools and tests; [`deliver_pending`] is the way to deliver.
    pub fn append(&mut self, send: &Send) -> io::Result<()> {
        self.write_lines(std::slice::from_ref(send))
            .map_err(|(_, e)| e)
            .map(drop)
    }

    fn deliver(
        &mut self,
        store: &mut StateStore,
        pending: &[Send],
        now: DateTime<Utc>,
        report: &mut DeliveryReport,
    ) -> Result<(), DeliverError> {
        // Already in the file: the crash came between the append and the mark.
        let (written, to_write): (Vec<&Send>, Vec<&Send>) =
            pending.iter().partition(|s| self.ids.contains(&s.send_id));
        let to_write: Vec<Send> = to_write.into_iter().cloned().collect();
        let mut remaining: &[Send] = &to_write;
        let mut delivered: Vec<&str> = written.iter().map(|s| s.send_id.as_str()).collect();
        let mut last_error = None;
        for try_index in 0..self.policy.tries_per_call.max(1) {
            if remaining.is_empty() {
                break;
            }
            if try_index > 0 {
                std::thread::sleep(self.policy.pause_before(try_index));
            }
            let (n, error) = match self.write_lines(remaining) {
                Ok(n) => (n, None),
                Err((n, e)) => (n, Some(e)),
            };
            delivered.extend(remaining[..n].iter().map(|s| s.send_id.as_str()));
            remaining = &remaining[n..];
            last_error = error;
        }
        if !delivered.is_empty() {
            let marked: HashSet<&str> = delivered.iter().copied().collect();
            // INVARIANT: the mark moves to the end of the file only when every line in it
            // is a send marked delivered: none left over from an interrupted run waits
            // for a later page, and nothing but this outbox wrote to the file.
            let all_marked = self.ids.iter().all(|id| marked.contains(id.as_str()));
            let at_end = self.file.metadata().is_ok_and(|m| m.len() == self.len);
            if all_marked && at_end {
                let mark = OutboxMark {
                    outbox: self.canonical.clone(),
                    file: self.identity.clone(),
                    len: self.len,
                };
                store.mark_written_to_outbox(&delivered, now, &mark)?;
            } else {
                store.mark_delivered_many(&delivered, now)?;
            }
            self.ids.retain(|id| !marked.contains(id.as_str()));
        }
        report.delivered += delivered.len();
        if let Some(e) = last_error {
            let error = format!("cannot write to the outbox {}: {e}", self.path.display());
            for send in remaining {
                let failure = Failure::new(FailureKind::Transient, error.clone());
                record_failure(store, &self.policy, &send.send_id, now, failure, report)?;
            }
        }
        Ok(())
    }

    /// Appends one line per send and syncs. On success, all were written. On an error, the
    /// first `n` of them are in the file and synced, and the file is cut back to them.
    fn write_lines(&mut self, sends: &[Send]) -> Result<usize, (usize, io::Error)> {
        let mut written = 0;
        let mut synced_len = self.len;
        let mut result = Ok(());
        for send in sends {
            let mut line = match serde_json::to_vec(send) {
                Ok(line) => line,
                Err(e) => {
                    result = Err(io::Error::other(e));
                    break;
                }
            };
            line.push(b'\n');
            if let Err(e) = self.file.write_all(&line) {
                result = Err(e);
                break;
            }
            synced_len += line.len() as u64;
            written += 1;
        }
        // Whatever happened, sync what was written: those lines are kept.
        let synced = if written > 0 {
            self.file.sync_data()
        } else {
            Ok(())
        };
        match (result, synced) {
            (Ok(()), Ok(())) => {
                self.commit_lines(&sends[..written], synced_len);
                Ok(written)
            }
            (Err(e), Ok(())) => {
                // A partial line may follow the synced ones: cut it off.
                self.commit_lines(&sends[..written], synced_len);
                self.cut_back();
                Err((written, e))
            }
            (_, Err(e)) => {
                // Nothing written is known to be on disk: forget all of it.
                self.cut_back();
                Err((0, e))
            }
        }
    }

    fn commit_lines(&mut self, sends: &[Send], len: u64) {
        self.ids.extend(sends.iter().map(|s| s.send_id.clone()));
        self.len = len;
    }

    /// Cuts the file back to its last known complete line. Best effort: if this fails
    /// too, the next [`Outbox::open`] repairs the torn line.
    fn cut_back(&mut self) {
        if self.file.set_len(self.len).is_ok() {
            let _ = self.file.sync_all();
        }
    }
}

/// Only the id of an outbox line.
#[derive(serde::Deserialize)]
struct SendId {
    send_id: String,
}

/// Whether `mark` can be where reading `file` starts: the same file, at least that long,
/// and a line ending just before it.
fn fits(file: &mut File, mark: &OutboxMark, identity: &str, len: u64) -> bool {
    if mark.file != identity || mark.len > len {
        return false;
    }
    if mark.len == 0 {
        return true;
    }
    let mut last = [0u8];
    file.seek(SeekFrom::Start(mark.len - 1))
        .and_then(|_| file.read_exact(&mut last))
        .is_ok_and(|()| last[0] == b'\n')
}

/// Which file this is, so that a file moved away and replaced is not taken for the one the
/// store's mark is about: device and inode on Unix.
fn file_identity(metadata: &std::fs::Metadata) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        format!("{}:{}", metadata.dev(), metadata.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        String::new()
    }
}

/// Makes a new file's directory entry durable. Best effort (and a no-op off Unix).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        let dir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

// ---------------------------------------------------------------------------------------
// Webhook

/// How to reach the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where sends go, except a `webhook` send with a `url` in its message, which goes
    /// there. `None`: such sends only; any other send fails (permanently).
    pub endpoint: Option<String>,
    /// The limit for one request, from connecting to reading the answer.
    pub timeout: Duration,
    pub policy: RetryPolicy,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            endpoint: None,
            timeout: Duration::from_secs(10),
            policy: RetryPolicy::default(),
        }
    }
}

/// Posts each send as JSON to an HTTP endpoint.
///
/// `https` needs the `tls` cargo feature (on by default). Redirects are not followed: a
/// 3xx answer is a permanent failure naming where it pointed, so the configuration can be
/// fixed rather than the message silently posted elsewhere.
pub struct Webhook {
    config: WebhookConfig,
    agent: ureq::Agent,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The outcome of one request.
enum Posted {
    Delivered,
    Failed(Failure),
}

impl Webhook {
    pub fn new(config: WebhookConfig) -> Webhook {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("moments/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Webhook { config, agent }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Where `send` goes: its message's `url` for a `webhook` send, else the endpoint.
    pub fn url_for<'a>(&'a self, send: &'a Send) -> Option<&'a str> {
        own_url(send).or(self.config.endpoint.as_deref())
    }

    fn deliver(
        &mut self,
        store: &mut StateStore,
        pending: &[Send],
        now: DateTime<Utc>,
        report: &mut DeliveryReport,
        down: &mut BTreeMap<String, Failure>,
    ) -> Result<(), DeliverError> {
        let policy = self.config.policy.clone();
        for send in pending {
            let outcome = match self.url_for(send) {
                None => Posted::Failed(Failure::new(
                    FailureKind::Permanent,
                    format!(
                        "no webhook endpoint is configured for a {} send",
                        send.channel
                    ),
                )),
                Some(url) => {
                    let host = host_of(url);
                    match down.get(&host) {
                        // Not tried, and waits as long as the host's failed send.
                        Some(failed) => Posted::Failed(Failure {
                            error: format!(
                                "not tried: {host} failed earlier in this run: {}",
                                failed.error
                            ),
                            ..failed.clone()
                        }),
                        None => {
                            let outcome = self.post_with_retries(url, send, now);
                            if let Posted::Failed(failure) = &outcome {
                                if failure.kind == FailureKind::Transient {
                                    down.insert(host, failure.clone());
                                }
                            }
                            outcome
                        }
                    }
                }
            };
            match outcome {
                Posted::Delivered => {
                    store.mark_delivered(&send.send_id, now)?;
                    report.delivered += 1;
                }
                Posted::Failed(failure) => {
                    record_failure(store, &policy, &send.send_id, now, failure, report)?;
                }
            }
        }
        Ok(())
    }

    /// What is sent for `send`: a `webhook` message going to its own `url` is the partner's
    /// request, its rendered `body` with its `method` (POST by default); anything else is the
    /// whole send as JSON, POSTed to the endpoint.
    fn request_for(&self, send: &Send) -> Result<(String, Vec<u8>), String> {
        if own_url(send).is_some() {
            let method = send
                .message
                .get("method")
                .map(|m| m.trim().to_ascii_uppercase())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "POST".to_owned());
            let body = send.message.get("body").cloned().unwrap_or_default();
            return Ok((method, body.into_bytes()));
        }
        serde_json::to_vec(send)
            .map(|body| ("POST".to_owned(), body))
            .map_err(|e| format!("cannot serialise: {e}"))
    }

    /// Posts `send`, trying again after a transient failure, up to the policy's tries.
    /// `now` is the tick's clock, from which a `Retry-After` date is counted when the
    /// response has no `Date`.
    fn post_with_retries(&self, url: &str, send: &Send, now: DateTime<Utc>) -> Posted {
        let (method, body) = match self.request_for(send) {
            Ok(request) => request,
            Err(e) => return Posted::Failed(Failure::new(FailureKind::Permanent, e)),
        };
        let tries = self.config.policy.tries_per_call.max(1);
        let mut errors: Vec<String> = Vec::new();
        for try_index in 0..tries {
            if try_index > 0 {
                std::thread::sleep(self.config.policy.pause_before(try_index));
            }
            match self.post(&method, url, &send.send_id, &body, now) {
                Posted::Delivered => return Posted::Delivered,
                Posted::Failed(failure) if failure.kind == FailureKind::Permanent => {
                    return Posted::Failed(failure)
                }
                Posted::Failed(failure) => {
                    errors.push(failure.error);
                    // Tried again within the call only when the receiver's wait, if it
                    // asked for one, is no longer than the pause before the next try.
                    let next = try_index + 1;
                    let policy = &self.config.policy;
                    if let Some(wait) = failure
                        .wait_at_least
                        .filter(|&wait| next >= tries || wait > policy.pause_before(next))
                    {
                        errors.dedup();
                        let error = match next {
                            1 => errors.join("; "),
                            _ => format!("{next} tries: {}", errors.join("; ")),
                        };
                        return Posted::Failed(Failure {
                            wait_at_least: Some(wait),
                            ..Failure::new(FailureKind::Transient, error)
                        });
                    }
                }
            }
        }
        errors.dedup();
        Posted::Failed(Failure::new(
            FailureKind::Transient,
            format!("{} tries: {}", tries, errors.join("; ")),
        ))
    }

    /// One request. GET and DELETE carry no body.
    fn post(
        &self,
        method: &str,
        url: &str,
        send_id: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Posted {
        if !cfg!(feature = "tls") && url.trim_start().to_ascii_lowercase().starts_with("https:") {
            return Posted::Failed(Failure::new(
                FailureKind::Permanent,
                format!("cannot post to {url}: this moments was built without TLS (cargo feature `tls`)"),
            ));
        }
        let result = match method {
            "GET" => self
                .agent
                .get(url)
                .header("Idempotency-Key", send_id)
                .call(),
            "DELETE" => self
                .agent
                .delete(url)
                .header("Idempotency-Key", send_id)
                .call(),
            "PUT" => self
                .agent
                .put(url)
                .header("Idempotency-Key", send_id)
                .header("Content-Type", "application/json")
                .send(body),
            "PATCH" => self
                .agent
                .patch(url)
                .header("Idempotency-Key", send_id)
                .header("Content-Type", "application/json")
                .send(body),
            _ => self
                .agent
                .post(url)
                .header("Idempotency-Key", send_id)
                .header("Content-Type", "application/json")
                .send(body),
        };
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                let kind = match e {
                    ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::HostNotFound
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::Protocol(_) => FailureKind::Transient,
                    _ => FailureKind::Permanent,
                };
                return Posted::Failed(Failure::new(kind, format!("{method} {url}: {e}")));
            }
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Posted::Delivered;
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = match status {
            429 | 503 => header("retry-after")
                .and_then(|value| retry_after(&value, header("date").as_deref(), now)),
            _ => None,
        };
        let location = header("location");
        let mut snippet = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(200)
            .read_to_end(&mut snippet);
        let snippet = String::from_utf8_lossy(&snippet);
        let snippet: String = snippet.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut error = format!("{method} {url}: HTTP {status}");
        if let Some(location) = location {
            error.push_str(&format!(" (redirects to {location}; not followed)"));
        }
        if !snippet.is_empty() {
            error.push_str(": ");
            error.push_str(&snippet);
        }
        if let Some(wait) = retry_after {
            error.push_str(&format!(" (retry after {}s)", wait.as_secs()));
        }
        let kind = if status >= 500 || status == 408 || status == 429 {
            FailureKind::Transient
        } else {
            FailureKind::Permanent
        };
        Posted::Failed(Failure {
            wait_at_least: retry_after,
            ..Failure::new(kind, error)
        })
    }
}

/// The `url` of a `webhook` message: a partner's request goes there, as written.
fn own_url(send: &Send) -> Option<&str> {
    (send.channel == "webhook")
        .then(|| send.message.get("url"))
        .flatten()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
}

/// The wait a `Retry-After` header asks for: whole seconds, or an HTTP date, counted from
/// the response's `Date` (the receiver's clock) or else from `clock`. `None` when it does
/// not parse; a date already past asks for no wait.
fn retry_after(value: &str, date: Option<&str>, clock: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let http_date = |text: &str| {
        DateTime::parse_from_rfc2822(text.trim())
            .ok()
            .map(|d| d.with_timezone(&Utc))
    };
    let until = http_date(value)?;
    let from = date.and_then(http_date).unwrap_or(clock);
    Some((until - from).to_std().unwrap_or(Duration::ZERO))
}

/// The scheme and authority of `url`, to group sends by receiver.
fn host_of(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(uri) => format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        ),
        Err(_) => url.to_owned(),
    }
}
