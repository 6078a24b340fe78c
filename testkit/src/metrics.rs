//! The server's Prometheus metrics, read the way a scraper reads them: `GET /metrics` over
//! plain HTTP/1.1, one sample per line.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long [`wait_for`] waits between scrapes.
const POLL: Duration = Duration::from_millis(10);

/// `GET /metrics` on `addr` (`host:port`); the body.
pub async fn scrape(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: ocx\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The value of the sample whose name and labels are exactly `series` (e.g.
/// `ocx_connections_refused_total`, `ocx_limit{limit="max_streams"}`), if the scrape has it.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

/// Scrapes `addr` until `done` holds for `series`'s value, for at most `bound`; the value then.
/// Panics with the last scrape if it never does.
pub async fn wait_for(
    addr: &str,
    series: &str,
    bound: Duration,
    done: impl Fn(Option<f64>) -> bool,
) -> Option<f64> {
    let start = Instant::now();
    loop {
        let text = scrape(addr).await;
        let value = sample(&text, series);
        if done(value) {
            return value;
        }
        assert!(
            start.elapsed() < bound,
            "{series} is still {value:?} after {bound:?}:\n{text}"
        );
        // Polling an observable value, not waiting for time to pass.
        tokio::time::sleep(POLL).await;
    }
}
