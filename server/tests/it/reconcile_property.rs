//! Property test of reconciliation: for random sets of platform records and carrier reports,
//! the summary's buckets add up and agree with a small in-test model of the matching rules
//! (call id first, latest report wins; then correlation id, paired in start-time order; the
//! period by the platform's start, or the report's own when unmatched). Deterministic: a
//! failing case prints its seed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ocx_server::domain::{
    CallDirection, CallRecord, CallType, Carrier, DiscrepancyKind, DurationReport, QualityVerdict,
    ReconciliationPeriod, ReconciliationSummary, now_micros,
};
use ocx_server::store::Store;
use ocx_server::store::sqlite::SqliteStore;

/// SplitMix64: small, deterministic, good enough to shuffle test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SEC: i64 = 1_000_000;
const TOL: i64 = SEC;

#[derive(Debug, Clone)]
struct Rec {
    call_id: String,
    correlation_id: String,
    start: i64,
    dur: i64,
}

#[derive(Debug, Clone)]
struct Rep {
    record_id: String,
    call_id: String,
    correlation_id: String,
    start: i64,
    dur: i64,
}

fn platform_record(carrier: &str, r: &Rec) -> CallRecord {
    CallRecord {
        call_id: r.call_id.clone(),
        correlation_id: r.correlation_id.clone(),
        version: 1,
        carrier_id: carrier.into(),
        tenant_id: "00000001-0000-4000-8000-000000000001".into(),
        call_type: CallType::UserOut,
        direction: CallDirection::Outbound,
        caller_number: "+441".into(),
        callee_number: "+332".into(),
        user_sip_uri: String::new(),
        invite_time: None,
        start_time: r.start,
        end_time: r.start + r.dur,
        duration_us: r.dur,
        final_sip_code: 200,
        final_sip_phrase: String::new(),
        q850_cause: 16,
        successful: true,
        destination_context: None,
        usage_country_code: String::new(),
        trunk_fqdn: String::new(),
        media_streams: Vec::new(),
        quality: QualityVerdict::Unclassified,
        poor_due_to: Vec::new(),
        content_hash: 1,
        feed_sequence: 0,
        update_time: 0,
    }
}

fn generate(rng: &mut Rng, case: u64) -> (Vec<Rec>, Vec<Rep>, (i64, i64)) {
    let corr = |rng: &mut Rng| {
        if rng.below(3) == 0 {
            String::new()
        } else {
            format!("k{}", rng.below(4))
        }
    };
    let records: Vec<Rec> = (0..rng.below(14))
        .map(|i| Rec {
            call_id: format!("case{case}-c{i}"),
            correlation_id: corr(rng),
            start: rng.below(100) as i64 * SEC,
            dur: rng.below(300) as i64 * SEC,
        })
        .collect();
    let mut reports = Vec::new();
    for j in 0..rng.below(14) {
        let target = (!records.is_empty())
            .then(|| records[rng.below(records.len() as u64) as usize].clone());
        let call_id = match (rng.below(3), &target) {
            (0, Some(t)) => t.call_id.clone(),
            (1, _) => format!("case{case}-nope{j}"),
            _ => String::new(),
        };
        let mut correlation_id = corr(rng);
        if call_id.is_empty() && correlation_id.is_empty() {
            correlation_id = format!("k{}", rng.below(4));
        }
        let base = target.as_ref().map_or(60 * SEC, |t| t.dur);
        let dur = match rng.below(4) {
            0 => base,
            1 => base + TOL,     // exactly at the tolerance: matched
            2 => base + TOL + 1, // just beyond: mismatched
            _ => rng.below(300) as i64 * SEC,
        };
        let start = match (&target, rng.below(2)) {
            (Some(t), 0) => t.start,
            _ => rng.below(100) as i64 * SEC,
        };
        reports.push(Rep {
            record_id: format!("r{j}"),
            call_id,
            correlation_id,
            start,
            dur,
        });
    }
    let a = rng.below(100) as i64 * SEC;
    let b = rng.below(100) as i64 * SEC;
    let period = (a.min(b), a.max(b) + SEC);
    (records, reports, period)
}

/// The rules, the simple way. Reports are in insertion order, which is also their update order.
fn model(records: &[Rec], reports: &[Rep], (s, e): (i64, i64)) -> ReconciliationSummary {
    let in_period = |t: i64| t >= s && t < e;
    let record_calls: HashSet<&str> = records.iter().map(|r| r.call_id.as_str()).collect();
    let report_calls: HashSet<&str> = reports.iter().map(|d| d.call_id.as_str()).collect();
    let mut pair_of_record: BTreeMap<usize, usize> = BTreeMap::new(); // record index -> report index
    // Stage 1: by call id; the latest (last inserted) report wins.
    for (ri, r) in records.iter().enumerate() {
        if let Some(di) = reports.iter().rposition(|d| d.call_id == r.call_id) {
            pair_of_record.insert(ri, di);
        }
    }
    // Stage 2: by correlation id, in start order (then insertion order), among the rest.
    let mut groups: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (ri, r) in records.iter().enumerate() {
        if !r.correlation_id.is_empty() && !report_calls.contains(r.call_id.as_str()) {
            groups.entry(&r.correlation_id).or_default().0.push(ri);
        }
    }
    for (di, d) in reports.iter().enumerate() {
        if !d.correlation_id.is_empty() && !record_calls.contains(d.call_id.as_str()) {
            groups.entry(&d.correlation_id).or_default().1.push(di);
        }
    }
    for (_, (mut rs, mut ds)) in groups {
        rs.sort_by_key(|&i| (records[i].start, i));
        ds.sort_by_key(|&i| (reports[i].start, i));
        for (ri, di) in rs.into_iter().zip(ds) {
            pair_of_record.insert(ri, di);
        }
    }
    let paired_reports: HashSet<usize> = pair_of_record.values().copied().collect();
    let mut m = ReconciliationSummary::default();
    for (ri, r) in records
        .iter()
        .enumerate()
        .filter(|(_, r)| in_period(r.start))
    {
        m.platform_count += 1;
        m.platform_duration_us += r.dur;
        match pair_of_record.get(&ri) {
            Some(&di) => {
                m.carrier_count += 1;
                m.carrier_duration_us += reports[di].dur;
                if (reports[di].dur - r.dur).abs() <= TOL {
                    m.matched += 1;
                } else {
                    m.mismatched += 1;
                }
            }
            None => m.missing_on_carrier += 1,
        }
    }
    for (di, d) in reports.iter().enumerate() {
        if !paired_reports.contains(&di) && in_period(d.start) {
            m.missing_on_platform += 1;
            m.carrier_count += 1;
            m.carrier_duration_us += d.dur;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_buckets_add_up_and_agree_with_the_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("p.db")).expect("store"));
    let mut rng = Rng(0x0C5E_ED00);
    for case in 0..150u64 {
        let carrier = format!("p{case:03}");
        store
            .create_carrier(Carrier {
                carrier_id: carrier.clone(),
                display_name: "p".into(),
                create_time: now_micros(),
            })
            .await
            .expect("carrier");
        let (records, reports, period) = generate(&mut rng, case);
        let recs = records
            .iter()
            .map(|r| platform_record(&carrier, r))
            .collect::<Vec<_>>();
        if !recs.is_empty() {
            store.ingest_call_records(recs).await.expect("ingest");
        }
        // One report per commit, so update times follow insertion order as the model assumes.
        for d in &reports {
            let report = DurationReport {
                record_id: d.record_id.clone(),
                call_id: d.call_id.clone(),
                correlation_id: d.correlation_id.clone(),
                caller_number: "+441".into(),
                callee_number: "+332".into(),
                start_time: d.start,
                duration_us: d.dur,
            };
            store
                .report_call_durations(&carrier, vec![report])
                .await
                .expect("report");
            std::thread::yield_now();
        }
        let p = ReconciliationPeriod {
            carrier_id: carrier.clone(),
            start: period.0,
            end: period.1,
            tolerance_us: TOL,
        };
        let got = store
            .reconciliation_summary(p.clone())
            .await
            .expect("summary");
        let expected = model(&records, &reports, period);
        assert_eq!(
            got, expected,
            "case {case}: records {records:?} reports {reports:?} period {period:?}"
        );
        assert_eq!(
            got.matched + got.mismatched + got.missing_on_carrier,
            got.platform_count,
            "case {case}"
        );
        assert_eq!(
            got.matched + got.mismatched + got.missing_on_platform,
            got.carrier_count,
            "case {case}"
        );
        // The discrepancy listing agrees with the summary.
        let (rows, more) = store
            .list_discrepancies(p, None, None, 1000)
            .await
            .expect("discrepancies");
        assert!(!more);
        let count = |k: DiscrepancyKind| rows.iter().filter(|(d, _)| d.kind == k).count() as i64;
        assert_eq!(
            count(DiscrepancyKind::Mismatched),
            got.mismatched,
            "case {case}"
        );
        assert_eq!(
            count(DiscrepancyKind::MissingOnCarrier),
            got.missing_on_carrier,
            "case {case}"
        );
        assert_eq!(
            count(DiscrepancyKind::MissingOnPlatform),
            got.missing_on_platform,
            "case {case}"
        );
    }
}
