//! The Grafana dashboard (`deploy/grafana/ocx.json`) against a running server: after a scenario
//! that uses every service, each metric a panel queries is in a scrape, with every label a
//! query groups or selects by, and every value it selects on. A panel over a metric that was
//! renamed, or that the server no longer exports, fails here rather than going blank on an
//! operator's screen.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use ocx_client::{Client, pb};
use ocx_testkit::{at, call, carrier, consent, ingest, numbers, provision, report, tenant};

use crate::metrics::{MetricsServer, scrape};

/// The dashboard, as committed.
const DASHBOARD: &str = include_str!("../../../deploy/grafana/ocx.json");

/// Labels Prometheus adds to every series at scrape time, not the server.
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

/// Every PromQL expression of the dashboard: the panels' targets and the template variables'
/// queries, with where each comes from.
fn expressions(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {title:?} must query the dashboard's data source variable"
            );
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            found.push((format!("panel {title:?}"), expr.to_owned()));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = var["query"]["query"].as_str() {
            found.push((format!("variable {:?}", var["name"]), query.to_owned()));
        }
    }
    found
}

/// A scrape's series: metric name → the label sets of its samples.
fn series(scrape: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut all: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, rest) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').map_or("", |(l, _)| l)),
            None => (line.split(' ').next().unwrap_or(line), ""),
        };
        let labels = rest
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        all.entry(name.to_owned()).or_default().push(labels);
    }
    all
}

/// What one expression asks of the server's metrics: the metric names, the labels it groups
/// by, and each selector's matchers (metric, label, operator, value).
struct Query {
    metrics: BTreeSet<String>,
    grouped_by: BTreeSet<String>,
    matchers: Vec<(String, String, String, String)>,
}

/// Reads the names, groupings and matchers out of a PromQL expression. Enough PromQL for the
/// dashboard's own queries: `ocx_*` selectors with optional `{...}` matchers, `by (...)`,
/// and `label_values(metric, label)`.
fn parse(expr: &str) -> Query {
    let mut query = Query {
        metrics: BTreeSet::new(),
        grouped_by: BTreeSet::new(),
        matchers: Vec::new(),
    };
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("ocx_") {
        let start = i + at;
        let end = start
            + expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len() - start);
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        i = end;
        if preceded {
            continue;
        }
        let name = expr[start..end].to_owned();
        if expr[end..].starts_with('{') {
            let close = end + expr[end..].find('}').expect("a selector's closing brace");
            for matcher in expr[end + 1..close]
                .split(',')
                .filter(|m| !m.trim().is_empty())
            {
                let matcher = matcher.trim();
                let op_at = matcher.find(['=', '!']).expect("a matcher's operator");
                let label = matcher[..op_at].trim().to_owned();
                let rest = &matcher[op_at..];
                let op_len =
                    if rest.starts_with("=~") || rest.starts_with("!=") || rest.starts_with("!~") {
                        2
                    } else {
                        1
                    };
                let value = rest[op_len..].trim().trim_matches('"').to_owned();
                query
                    .matchers
                    .push((name.clone(), label, rest[..op_len].to_owned(), value));
            }
            i = close;
        }
        query.metrics.insert(name);
    }
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let after = &rest[at + 4..];
        let close = after.find(')').expect("by (...) closes");
        query
            .grouped_by
            .extend(after[..close].split(',').map(|l| l.trim().to_owned()));
        rest = &after[close..];
    }
    if let Some(args) = expr.strip_prefix("label_values(")
        && let Some((_, label)) = args.trim_end_matches(')').split_once(',')
    {
        query.grouped_by.insert(label.trim().to_owned());
    }
    query
}

/// Drives every service once, the way a carrier and the platform would, and leaves the three
/// feeds open with what they sent received.
async fn scenario(server: &MetricsServer) -> Vec<Box<dyn std::any::Any>> {
    let platform = Client::connect(server.endpoint.clone(), server.key.clone())
        .await
        .expect("connect");
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    let ns = numbers("+4420794", 0, 3);
    provision(&a.client, &tenant(1), &ns).await;
    let missing = a.client.get_number("", "+442079469999").await;
    assert!(missing.is_err(), "an error, for the errors panel");
    let start = ocx_testkit::now_secs() - 7_200;
    let records: Vec<pb::CallRecord> = (0..5)
        .map(|i| {
            call(
                &format!("d-{i}"),
                pb::CallDirection::Outbound,
                &ns[0],
                "+33142685300",
                &tenant(1),
                start + i,
            )
        })
        .collect();
    ingest(&platform, records).await;
    let reports = vec![report("r-0", "d-0", "d-0@sbc.example", start, 61_000_000)];
    a.client
        .report_call_durations("", reports)
        .await
        .expect("durations");

    // The three feeds, each read until it has sent what is stored.
    let mut calls = Box::pin(a.client.stream_call_records("", 0).await.expect("feed"));
    for _ in 0..5 {
        calls.next().await.expect("a record").expect("ok");
    }
    let mut events = Box::pin(a.client.watch_number_events("", 0).await.expect("watch"));
    events.next().await.expect("an event").expect("ok");
    let mut changes = Box::pin(
        a.client
            .watch_reconciliation(pb::WatchReconciliationRequest::default())
            .await
            .expect("watch"),
    );
    changes.next().await.expect("changes").expect("ok");

    let (from, to) = (at(start - 3_600), at(start + 3_600));
    a.client
        .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
            start_time: from,
            end_time: to,
            ..Default::default()
        })
        .await
        .expect("summary");
    a.client
        .list_discrepancies(pb::ListDiscrepanciesRequest {
            start_time: from,
            end_time: to,
            ..Default::default()
        })
        .await
        .expect("discrepancies");
    platform
        .get_tenant_usage(pb::GetTenantUsageRequest {
            tenant_id: tenant(1),
            start_time: from,
            end_time: to,
            grouping: pb::UsageGrouping::NumberAndDirection as i32,
        })
        .await
        .expect("usage");
    let (hour_from, hour_to) = ocx_client::whole_hours(&from.expect("from"), &to.expect("to"));
    a.client
        .quality_summary(pb::GetQualitySummaryRequest {
            start_time: Some(hour_from),
            end_time: Some(hour_to),
            ..Default::default()
        })
        .await
        .expect("quality");
    vec![Box::new(calls), Box::new(events), Box::new(changes)]
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_in_a_scrape_of_a_running_server() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let server = MetricsServer::start().await;
    let feeds = scenario(&server).await;
    let text = scrape(server.metrics_addr).await;
    let scraped = series(&text);

    // The feeds' own metrics count what the follower received (each entry was counted as it
    // was queued, before the client could read it).
    let feed = |name: &str, feed: &str| {
        crate::metrics::sample(&text, name, &[("feed", feed)]).unwrap_or_default()
    };
    assert_eq!(
        feed("ocx_feed_entries_sent_total", "call_records"),
        5.0,
        "{text}"
    );
    assert!(feed("ocx_feed_entries_sent_total", "number_events") >= 1.0);
    assert!(feed("ocx_feed_entries_sent_total", "reconciliation") >= 1.0);
    assert!(feed("ocx_feed_lag_seconds_count", "call_records") >= 1.0);
    assert!(feed("ocx_feed_lag_seconds_count", "number_events") >= 1.0);
    // Stored moments ago: the call records' lag is under a minute (in the histogram's sum).
    let lag = feed("ocx_feed_lag_seconds_sum", "call_records")
        / feed("ocx_feed_lag_seconds_count", "call_records");
    assert!((0.0..60.0).contains(&lag), "{lag}");

    let expressions = expressions(&dashboard);
    assert!(expressions.len() >= 20, "{} queries", expressions.len());
    let mut charted = BTreeSet::new();
    for (source, expr) in &expressions {
        let query = parse(expr);
        assert!(
            !query.metrics.is_empty(),
            "{source} queries no ocx metric: {expr}"
        );
        let mut labels_there = BTreeSet::new();
        for metric in &query.metrics {
            let samples = scraped.get(metric).unwrap_or_else(|| {
                panic!("{source} queries {metric}, which a scrape does not have")
            });
            labels_there.extend(samples.iter().flat_map(|s| s.keys().cloned()));
            charted.insert(metric.trim_end_matches("_bucket").to_owned());
        }
        for label in &query.grouped_by {
            assert!(
                labels_there.contains(label) || SCRAPE_LABELS.contains(&label.as_str()),
                "{source} groups by {label:?}, which {:?} do not carry",
                query.metrics
            );
        }
        for (metric, label, op, value) in &query.matchers {
            if SCRAPE_LABELS.contains(&label.as_str()) {
                continue;
            }
            let values: BTreeSet<&str> = scraped[metric]
                .iter()
                .filter_map(|s| s.get(label).map(String::as_str))
                .collect();
            assert!(
                !values.is_empty(),
                "{source} selects {metric} on {label:?}, which it does not carry"
            );
            match op.as_str() {
                "=" => assert!(
                    values.contains(value.as_str()),
                    "{source}: no {metric} with {label}={value:?} (has {values:?})"
                ),
                "=~" => {
                    for alternative in value.split('|') {
                        assert!(
                            values.contains(alternative),
                            "{source}: no {metric} with {label}={alternative:?} (has {values:?})"
                        );
                    }
                }
                _ => {} // a negative matcher selects what is there
            }
        }
    }
    // Every metric family the server exports is on the dashboard, but for the limits' own
    // settings, charted as a table of ocx_limit.
    let exported: BTreeSet<String> = scraped
        .keys()
        .filter(|name| name.starts_with("ocx_"))
        .map(|name| {
            ["_bucket", "_sum", "_count", "_created"]
                .iter()
                .fold(name.clone(), |n, suffix| {
                    n.trim_end_matches(suffix).to_owned()
                })
        })
        .collect();
    let missing: Vec<&String> = exported.difference(&charted).collect();
    assert!(missing.is_empty(), "exported but on no panel: {missing:?}");
    drop(feeds);
    server.stop().await;
}
