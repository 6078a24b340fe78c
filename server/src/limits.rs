//! The limits a server enforces, their defaults, and the per-key rate and stream accounting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        }
    }
}

/// One key's token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left (fractional).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// Per-key token buckets: `rate` tokens per second up to `burst`; a request takes one.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Refill rate, tokens per second.
    rate: f64,
    /// Bucket size.
    burst: f64,
    /// The buckets by key id.
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl RateLimiter {
    /// A limiter with the given rate and burst (both at least 1).
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a token for `key` at `now`, or says how long until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// Open streams per key.
#[derive(Debug, Clone)]
pub struct StreamCounter {
    /// Most streams per key.
    max: usize,
    /// Open streams by key id.
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// A held stream slot; released when dropped (when the stream's response body ends).
#[derive(Debug)]
pub struct StreamSlot {
    /// The counter it came from.
    counter: StreamCounter,
    /// The key holding it.
    key: String,
}

impl StreamCounter {
    /// A counter allowing `max` streams per key.
    pub fn new(max: usize) -> StreamCounter {
        StreamCounter {
            max,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `key`, or `None` if it already holds the maximum.
    pub fn acquire(&self, key: &str) -> Option<StreamSlot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(key.to_owned()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            counter: self.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.counter.open.lock()
            && let Some(count) = open.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("k", t0).is_ok());
        }
        let wait = limiter.check("k", t0).expect_err("burst used up");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Another key has its own bucket.
        assert!(limiter.check("other", t0).is_ok());
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.check("k", t1).is_ok());
        assert!(limiter.check("k", t1).is_err());
    }

    #[test]
    fn stream_slots_are_counted_per_key_and_released_on_drop() {
        let counter = StreamCounter::new(2);
        let a = counter.acquire("k").expect("first");
        let _b = counter.acquire("k").expect("second");
        assert!(counter.acquire("k").is_none(), "third is over the limit");
        assert!(counter.acquire("other").is_some());
        drop(a);
        assert!(counter.acquire("k").is_some(), "a slot came back");
    }
}
