//! The limits a server enforces, their defaults, and the per-key rate and stream accounting.
//!
//! The per-key rate is a `governor` keyed limiter (GCRA) that forgets idle keys as it goes; the
//! per-key stream count is a map of counters that drops a key when its last stream ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;

/// Every configurable limit. The defaults are safe for a shared server; `ocx-server --help`
/// and the README list them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest request or response message, bytes (a batch of 1,000 call records with media
    /// streams is about 1.5 MB).
    pub max_message_bytes: usize,
    /// Items per batch (uploads, releases, reports, ingest batches); more is INVALID_ARGUMENT.
    pub max_batch_items: usize,
    /// Largest page; a larger `page_size` is served as this (AIP-158).
    pub max_page_size: usize,
    /// Sustained requests per second per key (a stream counts once, when it opens).
    pub rate_per_second: f64,
    /// Requests a key may make at once above the sustained rate.
    pub rate_burst: f64,
    /// Streams one key may hold open at once.
    pub max_streams_per_key: usize,
    /// Longest a unary call may run when the caller sets no deadline.
    pub default_deadline: Duration,
    /// Calls one HTTP/2 connection may have open at once (its `SETTINGS_MAX_CONCURRENT_STREAMS`):
    /// a client that opens more waits, so one connection cannot hold thousands of unanswered
    /// calls.
    pub max_concurrent_streams: u32,
    /// Streams the keys of one carrier may hold open at once, together.
    pub max_streams_per_carrier: usize,
    /// Streams the whole server holds open at once, every key together.
    pub max_streams: usize,
    /// Bytes a feed (`StreamCallRecords`, `WatchNumberEvents`) holds for its reader: messages
    /// read from the store that the client has not taken yet. The feed reads on only as the
    /// client takes them.
    pub feed_buffer_bytes: usize,
    /// Bytes of batches an upload stream (`IngestCallRecords`, `UploadCallDurations`) holds
    /// read but not yet committed; it reads the next batch only below this (one batch always).
    pub upload_buffer_bytes: usize,
    /// A feed whose client takes nothing for this long (its buffer full) is ended with
    /// UNAVAILABLE, which the SDKs resume from.
    pub stall_timeout: Duration,
    /// Connections the server holds open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A new connection must finish its handshakes (TLS, the HTTP/2 preface) and start its
    /// first call within this time, or it is closed.
    pub handshake_timeout: Duration,
    /// A connection with no call open for this long is closed (clients reconnect on their
    /// next call).
    pub idle_timeout: Duration,
    /// Sustained calls per second from one client address, counted before the key is looked
    /// at; over it, RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`.
    pub address_rate_per_second: f64,
    /// Calls one address may make at once above its sustained rate.
    pub address_rate_burst: f64,
    /// Long reads (reconciliation, usage, listings) one carrier (or the platform) may have
    /// running at once; one more is RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`, so one
    /// carrier's long queries leave the readers to the others.
    pub long_reads_per_carrier: usize,
}

impl Limits {
    /// Each limit by name, with its value (for the `ocx_limit` metric).
    pub fn named(&self) -> [(&'static str, f64); 19] {
        [
            ("max_message_bytes", self.max_message_bytes as f64),
            ("max_batch_items", self.max_batch_items as f64),
            ("max_page_size", self.max_page_size as f64),
            ("rate_per_second", self.rate_per_second),
            ("rate_burst", self.rate_burst),
            ("max_streams_per_key", self.max_streams_per_key as f64),
            (
                "default_deadline_seconds",
                self.default_deadline.as_secs_f64(),
            ),
            (
                "max_concurrent_streams",
                f64::from(self.max_concurrent_streams),
            ),
            (
                "max_streams_per_carrier",
                self.max_streams_per_carrier as f64,
            ),
            ("max_streams", self.max_streams as f64),
            ("feed_buffer_bytes", self.feed_buffer_bytes as f64),
            ("upload_buffer_bytes", self.upload_buffer_bytes as f64),
            ("stall_timeout_seconds", self.stall_timeout.as_secs_f64()),
            ("max_connections", self.max_connections as f64),
            (
                "handshake_timeout_seconds",
                self.handshake_timeout.as_secs_f64(),
            ),
            ("idle_timeout_seconds", self.idle_timeout.as_secs_f64()),
            ("address_rate_per_second", self.address_rate_per_second),
            ("address_rate_burst", self.address_rate_burst),
            ("long_reads_per_carrier", self.long_reads_per_carrier as f64),
        ]
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 * 1024 * 1024,
            max_batch_items: ocx_api::MAX_BATCH_ITEMS,
            max_page_size: ocx_api::MAX_PAGE_SIZE,
            rate_per_second: 1000.0,
            rate_burst: 2000.0,
            max_streams_per_key: 16,
            default_deadline: Duration::from_secs(120),
            max_concurrent_streams: 200,
            max_streams_per_carrier: 64,
            max_streams: 1000,
            feed_buffer_bytes: 1024 * 1024,
            upload_buffer_bytes: 16 * 1024 * 1024,
            stall_timeout: Duration::from_secs(60),
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(300),
            address_rate_per_second: 5000.0,
            address_rate_burst: 10_000.0,
            long_reads_per_carrier: 2,
        }
    }
}

/// Governor's limiter keyed by key id, on clock `C`. The state store is governor's
/// `HashMapStateStore`: one `parking_lot` mutex around a `HashMap`, held for a lookup and a
/// compare-and-swap. It is chosen over `DashMapStateStore` because it needs no further
/// dependency and the lock is held for a lookup only: for API keys (a handful) it is not
/// contended; for client addresses (IPv4 addresses and IPv6 /64 blocks, see the gate) the
/// table holds the addresses of the last minute, and the once-a-minute sweep is one pass over
/// them. `parking_lot` locks are never poisoned, so there is no error
/// path on which a check could let a request through.
type Keyed<C, K> =
    governor::RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The shortest replenish period governor can represent: a sustained rate of 10^9 per second,
/// which is what an infinite or enormous `--rate` becomes.
const MIN_PERIOD: Duration = Duration::from_nanos(1);

/// The longest replenish period: one request a year, which is what a `--rate` of zero, below
/// zero or NaN becomes (only the burst, then next to nothing), so that a mistaken setting
/// refuses rather than lets everything through.
const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The longest time a full bucket may take to refill (period × burst). Governor keeps its state
/// as `u64` nanoseconds since the limiter was made and multiplies and adds them unchecked
/// (`u64::MAX` ns is 584 years), so the bucket's span is kept far below that.
const MAX_BUCKET_SPAN: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// How often, at most, the limiter forgets idle keys.
///
/// Forgetting is done by `check` itself, by the first check at or after this interval, rather
/// than by a background task: the map only grows in `check`, so sweeping there bounds it where
/// it grows; the limiter needs no runtime, task handle or shutdown wiring; an idle server is
/// not woken; and the cost is bounded: one O(keys) pass under the store's lock (microseconds
/// for the number of API keys a server has) per interval, made by one caller (the others see
/// the advanced deadline and go on).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The governor quota for `rate` requests per second sustained and a bucket of `burst`.
///
/// The period is `1 / rate`, clamped to [`MIN_PERIOD`]..=[`MAX_PERIOD`] (a rate that is not
/// positive, or is NaN, gets [`MAX_PERIOD`]; an infinite one [`MIN_PERIOD`]). The burst is
/// whole requests: `floor(burst)`, at least 1 (NaN is 1), and at most what keeps
/// period × burst within [`MAX_BUCKET_SPAN`] (and `u32::MAX`).
fn quota(rate: f64, burst: f64) -> Quota {
    let period = if rate > 0.0 {
        Duration::try_from_secs_f64(rate.recip())
            .unwrap_or(MAX_PERIOD)
            .clamp(MIN_PERIOD, MAX_PERIOD)
    } else {
        MAX_PERIOD
    };
    let most = MAX_BUCKET_SPAN.as_nanos() / period.as_nanos();
    let most = u32::try_from(most).unwrap_or(u32::MAX);
    // `as` saturates (and is 0 for NaN), and truncates: a bucket holds whole requests.
    let burst = (burst as u32).clamp(1, most);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// Rate limits per key (an API key's id, or a client address): `rate` requests per second
/// sustained, and a bucket of `burst` that starts full (GCRA, by the `governor` crate). Cheap to
/// clone: clones share the state.
///
/// `C` is the clock; servers use governor's monotonic [`DefaultClock`], tests a
/// `FakeRelativeClock` they advance by hand. `K` is what is limited: key ids ([`String`]) or
/// client addresses ([`std::net::IpAddr`]).
pub struct RateLimiter<C: Clock = DefaultClock, K: Hash + Eq + Clone = String> {
    /// The state, shared by the clones.
    shared: Arc<Shared<C, K>>,
}

/// What the clones of a [`RateLimiter`] share.
struct Shared<C: Clock, K: Hash + Eq + Clone> {
    /// The per-key GCRA states.
    keyed: Keyed<C, K>,
    /// When the limiter was made: sweep deadlines are nanoseconds after this.
    start: C::Instant,
    /// Nanoseconds after `start` at or after which the next check sweeps idle keys.
    next_sweep: AtomicU64,
}

impl<C: Clock, K: Hash + Eq + Clone> Clone for RateLimiter<C, K> {
    fn clone(&self) -> Self {
        RateLimiter {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Clock, K: Hash + Eq + Clone> std::fmt::Debug for RateLimiter<C, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("keys", &self.shared.keyed.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<DefaultClock, K> {
    /// A limiter of `rate` requests per second per key with a bucket of `burst`, on the
    /// monotonic clock. The period is `1 / rate` (1 ns to a year; a rate of 0 or less, or NaN,
    /// is a year); the burst is whole requests, at least 1.
    pub fn new(rate: f64, burst: f64) -> RateLimiter<DefaultClock, K> {
        RateLimiter::with_clock(rate, burst, DefaultClock::default())
    }
}

impl<C: Clock, K: Hash + Eq + Clone> RateLimiter<C, K> {
    /// A limiter like [`RateLimiter::new`] on the given clock.
    pub fn with_clock(rate: f64, burst: f64, clock: C) -> RateLimiter<C, K> {
        // Written so that NaN counts as out of range.
        let in_range = rate > 0.0 && burst >= 1.0;
        if !in_range {
            tracing::warn!(
                rate,
                burst,
                "the request rate should be above 0 and the burst at least 1; a rate of 0 or \
                 less allows only the burst (then one request a year), a burst below 1 is 1"
            );
        }
        let quota = quota(rate, burst);
        tracing::debug!(
            period = ?quota.replenish_interval(),
            burst = quota.burst_size().get(),
            "rate limit"
        );
        let keyed = governor::RateLimiter::hashmap_with_clock(quota, clock);
        let start = keyed.clock().now();
        RateLimiter {
            shared: Arc::new(Shared {
                keyed,
                start,
                next_sweep: AtomicU64::new(nanos(SWEEP_EVERY)),
            }),
        }
    }

    /// Counts a request by `key`: `Ok` if it is within the rate, otherwise the time until the
    /// key's next request would be (governor's `NotUntil::wait_time_from` now).
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.sweep_if_due();
        let keyed = &self.shared.keyed;
        keyed
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(keyed.clock().now()))
    }

    /// Forgets the keys whose buckets are full again (governor's `retain_recent`: their state
    /// is the same as a new key's, so forgetting them changes no decision) and releases the
    /// memory, if [`SWEEP_EVERY`] has passed since the last sweep.
    fn sweep_if_due(&self) {
        let shared = &*self.shared;
        let now = u64::from(shared.keyed.clock().now().duration_since(shared.start));
        let due = shared.next_sweep.load(Ordering::Relaxed);
        if now < due
            || shared
                .next_sweep
                .compare_exchange(
                    due,
                    now.saturating_add(nanos(SWEEP_EVERY)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            // Not yet, or another check is sweeping.
            return;
        }
        let before = shared.keyed.len();
        shared.keyed.retain_recent();
        let after = shared.keyed.len();
        if after < before {
            shared.keyed.shrink_to_fit();
        }
        tracing::debug!(
            // Checks may add keys between the counts.
            forgotten = before.saturating_sub(after),
            kept = after,
            "rate limiter swept"
        );
    }

    /// The number of keys the limiter holds state for.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.shared.keyed.len()
    }
}

/// `d` in nanoseconds (saturating; the durations here are far shorter).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Things held at once per key, at most `max` each: open streams per API key, per carrier or
/// for the whole server (one key), long reads per carrier. Cheap to clone: clones share the
/// counts.
#[derive(Debug, Clone)]
pub struct Slots {
    /// Most held per key.
    max: usize,
    /// Held, by key; a key is dropped when its last slot is released.
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// A held slot; released when dropped (for a stream: when its response body ends).
#[derive(Debug)]
pub struct Slot {
    /// The counts it came from.
    slots: Slots,
    /// The key holding it.
    key: String,
}

impl Slots {
    /// Counts allowing `max` per key.
    pub fn new(max: usize) -> Slots {
        Slots {
            max,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `key`, or `None` if it already holds the maximum.
    pub fn acquire(&self, key: &str) -> Option<Slot> {
        let mut held = self.held.lock().ok()?;
        let count = held.entry(key.to_owned()).or_insert(0);
        if *count >= self.max {
            if *count == 0 {
                held.remove(key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            key: key.to_owned(),
        })
    }

    /// How many slots `key` holds.
    pub fn held(&self, key: &str) -> usize {
        self.held
            .lock()
            .map(|held| held.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.slots.held.lock()
            && let Some(count) = held.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use governor::clock::FakeRelativeClock;

    /// A limiter on a clock the test advances.
    fn fake(rate: f64, burst: f64) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiter::with_clock(rate, burst, clock.clone()), clock)
    }

    #[test]
    fn a_key_gets_its_burst_then_is_told_how_long_to_wait() {
        let (limiter, _clock) = fake(10.0, 3.0);
        for n in 1..=3 {
            assert_eq!(
                limiter.check(&"k".into()),
                Ok(()),
                "request {n} of the burst"
            );
        }
        assert_eq!(
            limiter.check(&"k".into()),
            Err(Duration::from_millis(100)),
            "one period at 10/s"
        );
        // Another key has its own bucket.
        assert_eq!(limiter.check(&"other".into()), Ok(()));
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_no_further_than_the_burst() {
        let (limiter, clock) = fake(10.0, 3.0);
        for _ in 0..3 {
            limiter.check(&"k".into()).expect("burst");
        }
        limiter.check(&"k".into()).expect_err("burst used up");
        clock.advance(Duration::from_millis(40));
        assert_eq!(limiter.check(&"k".into()), Err(Duration::from_millis(60)));
        // 100 ms after the burst one request is back, and only one.
        clock.advance(Duration::from_millis(60));
        assert_eq!(limiter.check(&"k".into()), Ok(()));
        assert_eq!(limiter.check(&"k".into()), Err(Duration::from_millis(100)));
        // A long pause refills the bucket, but only to the burst.
        clock.advance(Duration::from_secs(10));
        for _ in 0..3 {
            limiter.check(&"k".into()).expect("a full bucket");
        }
        limiter
            .check(&"k".into())
            .expect_err("no more than the burst");
    }

    #[test]
    fn fractional_and_large_rates_are_kept() {
        let (slow, clock) = fake(0.5, 3.0);
        for _ in 0..3 {
            slow.check(&"k".into()).expect("burst");
        }
        assert_eq!(
            slow.check(&"k".into()),
            Err(Duration::from_secs(2)),
            "0.5/s"
        );
        clock.advance(Duration::from_secs(2));
        assert_eq!(slow.check(&"k".into()), Ok(()));

        let defaults = Limits::default();
        let (fast, clock) = fake(defaults.rate_per_second, defaults.rate_burst);
        for _ in 0..2000 {
            fast.check(&"k".into()).expect("burst of 2000");
        }
        assert_eq!(
            fast.check(&"k".into()),
            Err(Duration::from_millis(1)),
            "1000/s"
        );
        clock.advance(Duration::from_millis(5));
        for _ in 0..5 {
            fast.check(&"k".into()).expect("five more after 5 ms");
        }
        fast.check(&"k".into()).expect_err("and no more");
    }

    #[test]
    fn rates_and_bursts_map_to_quotas_without_overflow() {
        let q = quota(0.5, 3.0);
        assert_eq!(
            (q.replenish_interval(), q.burst_size().get()),
            (Duration::from_secs(2), 3)
        );
        let q = quota(1000.0, 2000.0);
        assert_eq!(
            (q.replenish_interval(), q.burst_size().get()),
            (Duration::from_millis(1), 2000)
        );
        assert_eq!(quota(10.0, 2.9).burst_size().get(), 2, "whole requests");
        for burst in [0.0, 0.5, -3.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(quota(10.0, burst).burst_size().get(), 1, "burst {burst}");
        }
        for rate in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY, 1e-300] {
            let q = quota(rate, 1e12);
            assert_eq!(q.replenish_interval(), MAX_PERIOD, "rate {rate}");
            assert!(
                q.burst_size_replenished_in() <= MAX_BUCKET_SPAN,
                "rate {rate}"
            );
        }
        for rate in [1e12, f64::INFINITY] {
            let q = quota(rate, f64::INFINITY);
            assert_eq!(q.replenish_interval(), MIN_PERIOD, "rate {rate}");
            assert_eq!(q.burst_size().get(), u32::MAX, "rate {rate}");
        }
    }

    #[test]
    fn a_rate_of_zero_refuses_after_the_burst_and_never_panics() {
        let (limiter, clock) = fake(0.0, 2.0);
        limiter.check(&"k".into()).expect("first");
        limiter.check(&"k".into()).expect("second");
        let wait = limiter.check(&"k".into()).expect_err("then nothing");
        assert_eq!(wait, MAX_PERIOD);
        clock.advance(Duration::from_secs(24 * 60 * 60));
        limiter
            .check(&"k".into())
            .expect_err("not even a day later");
        // An absurdly fast rate lets everything through and does not overflow.
        let (unlimited, _clock) = fake(f64::INFINITY, f64::INFINITY);
        for _ in 0..10_000 {
            unlimited.check(&"k".into()).expect("unlimited");
        }
    }

    #[test]
    fn idle_keys_are_forgotten_at_most_once_per_interval_and_busy_ones_kept() {
        let (limiter, clock) = fake(10.0, 3.0);
        for n in 0..100 {
            limiter.check(&format!("idle-{n}")).expect("first request");
        }
        // Just before the interval: nothing is swept yet, though the keys are long idle.
        clock.advance(SWEEP_EVERY - Duration::from_millis(1));
        for _ in 0..3 {
            limiter.check(&"busy".into()).expect("burst");
        }
        assert_eq!(limiter.keys(), 101);
        // The first check after the interval sweeps: the idle keys go, the busy key (whose
        // bucket is still empty) stays, and stays limited.
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            limiter.check(&"busy".into()),
            Err(Duration::from_millis(99))
        );
        assert_eq!(limiter.keys(), 1);
        // A forgotten key starts again with a full bucket.
        for _ in 0..3 {
            limiter
                .check(&"idle-0".into())
                .expect("a full bucket again");
        }
        limiter
            .check(&"idle-0".into())
            .expect_err("and only the burst");
    }

    #[test]
    fn slots_are_counted_per_key_and_released_on_drop() {
        let slots = Slots::new(2);
        let a = slots.acquire("k").expect("first");
        let _b = slots.acquire("k").expect("second");
        assert!(slots.acquire("k").is_none(), "third is over the limit");
        assert_eq!(slots.held("k"), 2);
        assert!(slots.acquire("other").is_some());
        drop(a);
        assert_eq!(slots.held("k"), 1);
        assert!(slots.acquire("k").is_some(), "a slot came back");
        assert!(
            Slots::new(0).acquire("k").is_none(),
            "a maximum of 0 holds nothing"
        );
    }
}
