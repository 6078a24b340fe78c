//! Call quality and traffic aggregates for GetQualitySummary, shared by both backends and free
//! of I/O: what one call adds to its cells ([`Figures::add_call`]), what a write changes
//! ([`Changes`]), and a summary's rows from the cells a query reads ([`Summary`]).
//!
//! A cell is one carrier's calls of one group (trunk, usage country, destination context, call
//! type, direction, codec) in one UTC hour (level [`LEVEL_HOUR`]) or day ([`LEVEL_DAY`]),
//! placed by their `start_time`. It holds exact counts and sums (durations in µs, fractions and
//! MOS points in units of 10⁻⁹, so that taking a revised or purged call away again leaves no
//! rounding behind) and a histogram per metric (see [`super::histogram`]). A query reads the
//! whole days of its period from day cells and the hours at its edges from hour cells.

use std::collections::{BTreeMap, HashMap};

use super::histogram::{Accumulator, Histogram, read_varint, unzigzag, varint, zigzag};
use super::pairing::{DAY_US, HOUR_US};
use crate::domain::{
    CallDirection, CallRecord, CallType, DestinationContext, Micros, QualityBucket,
    QualityDimension, QualityFilter, QualityMetric, QualityQuery, QualityVerdict,
};

/// Cells of one UTC hour.
pub const LEVEL_HOUR: i32 = 0;
/// Cells of one UTC day.
pub const LEVEL_DAY: i32 = 1;

/// The dimensions a call is grouped by: a cell's group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    /// The trunk's FQDN.
    pub trunk_fqdn: String,
    /// The usage country.
    pub usage_country_code: String,
    /// Destination context code (0: unknown).
    pub destination_context: i32,
    /// Call type code.
    pub call_type: i32,
    /// Direction code.
    pub direction: i32,
    /// The first codec the call's streams name ("" for none).
    pub codec: String,
}

impl Group {
    /// The group of `r`.
    pub fn of(r: &CallRecord) -> Group {
        Group {
            trunk_fqdn: r.trunk_fqdn.clone(),
            usage_country_code: r.usage_country_code.clone(),
            destination_context: r.destination_context.map_or(0, DestinationContext::code),
            call_type: r.call_type.code(),
            direction: r.direction.code(),
            codec: r
                .media_streams
                .iter()
                .map(|s| s.codec.as_str())
                .find(|c| !c.is_empty())
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// Whether `filter` keeps the group's calls.
    fn kept_by(&self, f: &QualityFilter) -> bool {
        fn any<T>(list: &[T], kept: impl Fn(&T) -> bool) -> bool {
            list.is_empty() || list.iter().any(kept)
        }
        any(&f.trunk_fqdns, |t| *t == self.trunk_fqdn)
            && any(&f.usage_country_codes, |c| *c == self.usage_country_code)
            && any(&f.destination_contexts, |d| {
                d.code() == self.destination_context
            })
            && any(&f.call_types, |t| t.code() == self.call_type)
            && any(&f.directions, |d| d.code() == self.direction)
            && any(&f.codecs, |c| *c == self.codec)
    }

    /// The group with only the `dimensions` kept (the others at their defaults), and its sort
    /// key in the order of `dimensions`.
    fn projected(&self, dimensions: &[QualityDimension]) -> (Group, Vec<SortPart>) {
        let mut group = Group::default();
        let mut key = Vec::with_capacity(dimensions.len());
        for d in dimensions {
            match d {
                QualityDimension::TrunkFqdn => {
                    group.trunk_fqdn = self.trunk_fqdn.clone();
                    key.push(SortPart::Text(self.trunk_fqdn.clone()));
                }
                QualityDimension::UsageCountryCode => {
                    group.usage_country_code = self.usage_country_code.clone();
                    key.push(SortPart::Text(self.usage_country_code.clone()));
                }
                QualityDimension::DestinationContext => {
                    group.destination_context = self.destination_context;
                    key.push(SortPart::Code(self.destination_context));
                }
                QualityDimension::CallType => {
                    group.call_type = self.call_type;
                    key.push(SortPart::Code(self.call_type));
                }
                QualityDimension::Direction => {
                    group.direction = self.direction;
                    key.push(SortPart::Code(self.direction));
                }
                QualityDimension::Codec => {
                    group.codec = self.codec.clone();
                    key.push(SortPart::Text(self.codec.clone()));
                }
            }
        }
        (group, key)
    }
}

/// One grouped value in a row's sort key: strings by code point, enums by number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SortPart {
    /// An enum's number.
    Code(i32),
    /// A string.
    Text(String),
}

/// The metrics with a histogram, in the order of [`Figures`]' arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Average jitter (µs).
    Jitter = 0,
    /// Average packet loss rate (fraction).
    PacketLoss = 1,
    /// Average round-trip time (µs).
    RoundTrip = 2,
    /// Average audio degradation (MOS points).
    Degradation = 3,
    /// Average ratio of concealed samples (fraction).
    Concealed = 4,
    /// MOS.
    Mos = 5,
    /// Post-dial delay of an answered call (µs).
    PostDialDelay = 6,
}

/// Metrics with a histogram.
pub const METRICS: usize = 7;
/// Stream metrics: those with a mean kept (the first six).
const STREAM_METRICS: usize = 6;

impl Metric {
    /// Below this a value is counted as 0: 1 µs for durations, 10⁻⁵ for fractions and MOS
    /// points.
    pub fn floor(self) -> f64 {
        match self {
            Metric::Jitter | Metric::RoundTrip | Metric::PostDialDelay => 1.0,
            _ => 1e-5,
        }
    }

    /// Whether values are durations in µs (else fractions or MOS points, kept in 10⁻⁹ units in
    /// sums).
    fn is_duration(self) -> bool {
        matches!(
            self,
            Metric::Jitter | Metric::RoundTrip | Metric::PostDialDelay
        )
    }
}

/// A fraction or MOS points in the 10⁻⁹ units sums keep them in.
fn nano(v: f64) -> i64 {
    (v * 1e9).round() as i64
}

/// What the counts of [`Figures`] are, by index.
mod count {
    pub const CALLS: usize = 0;
    pub const ANSWERED: usize = 1;
    pub const USER_FAILED: usize = 2;
    pub const CONNECTED_US: usize = 3;
    pub const PDD_CALLS: usize = 4;
    pub const PDD_US: usize = 5;
    pub const STREAMS: usize = 6;
    pub const CLASSIFIED_STREAMS: usize = 7;
    pub const POOR_STREAMS: usize = 8;
    pub const GOOD_CALLS: usize = 9;
    pub const POOR_CALLS: usize = 10;
    pub const UNCLASSIFIED_CALLS: usize = 11;
    /// Calls poor due to each QualityMetric (code 1..=5 at POOR_DUE_TO + code - 1).
    pub const POOR_DUE_TO: usize = 12;
    /// Streams that measured each stream metric.
    pub const METRIC_STREAMS: usize = 17;
    /// Each stream metric's values summed (µs, or 10⁻⁹ units).
    pub const METRIC_SUMS: usize = 23;
    /// How many counts there are.
    pub const ALL: usize = 29;
}

/// A cell's contents, or one call's contribution to its cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// The counts and sums, by the indexes of `count`.
    counts: [i64; count::ALL],
    /// A histogram per [`Metric`].
    histograms: [Histogram; METRICS],
}

/// Whether a failed call failed for its user (see `QualitySummaryRow.user_failed_calls` in
/// `call_records.proto`): ITU-T E.425's user busy, no answer and rejection, and the caller
/// giving up before the answer.
pub fn user_failure(q850_cause: i32, final_sip_code: i32) -> bool {
    match q850_cause {
        16 | 17 | 18 | 19 | 21 => true,
        0 => matches!(final_sip_code, 480 | 486 | 487 | 600 | 603),
        _ => false,
    }
}

impl Figures {
    /// What the call `r` adds to its cells (the tests' way to build a cell).
    #[cfg(test)]
    fn of(r: &CallRecord) -> Figures {
        let mut f = Figures::default();
        f.add_call(r, 1);
        f
    }

    /// Adds the call `r` `sign` times (1 to add it, -1 to take it away), straight into these
    /// figures (a write adds each call to two cells: no figures of its own in between).
    pub fn add_call(&mut self, r: &CallRecord, sign: i64) {
        let (c, histograms) = (&mut self.counts, &mut self.histograms);
        c[count::CALLS] += sign;
        if r.successful {
            c[count::ANSWERED] += sign;
            c[count::CONNECTED_US] += r.duration_us * sign;
            if let Some(invite) = r.invite_time.filter(|i| *i <= r.start_time) {
                c[count::PDD_CALLS] += sign;
                c[count::PDD_US] += (r.start_time - invite) * sign;
                histograms[Metric::PostDialDelay as usize].add(
                    (r.start_time - invite) as f64,
                    Metric::PostDialDelay.floor(),
                    sign,
                );
            }
        } else if user_failure(r.q850_cause, r.final_sip_code) {
            c[count::USER_FAILED] += sign;
        }
        match r.quality {
            QualityVerdict::Good => c[count::GOOD_CALLS] += sign,
            QualityVerdict::Poor => c[count::POOR_CALLS] += sign,
            QualityVerdict::Unclassified => c[count::UNCLASSIFIED_CALLS] += sign,
        }
        for m in &r.poor_due_to {
            c[count::POOR_DUE_TO + m.code() as usize - 1] += sign;
        }
        for s in &r.media_streams {
            c[count::STREAMS] += sign;
            let (verdict, _) = crate::quality::classify(std::slice::from_ref(s));
            match verdict {
                QualityVerdict::Good => c[count::CLASSIFIED_STREAMS] += sign,
                QualityVerdict::Poor => {
                    c[count::CLASSIFIED_STREAMS] += sign;
                    c[count::POOR_STREAMS] += sign;
                }
                QualityVerdict::Unclassified => {}
            }
            let values: [(Metric, Option<f64>); STREAM_METRICS] = [
                (Metric::Jitter, s.average_jitter_us.map(|v| v as f64)),
                (Metric::PacketLoss, s.average_packet_loss_rate),
                (Metric::RoundTrip, s.average_round_trip_us.map(|v| v as f64)),
                (Metric::Degradation, s.average_audio_degradation),
                (Metric::Concealed, s.average_ratio_of_concealed_samples),
                (Metric::Mos, s.mos),
            ];
            for (metric, value) in values {
                let Some(v) = value else { continue };
                let i = metric as usize;
                c[count::METRIC_STREAMS + i] += sign;
                c[count::METRIC_SUMS + i] += sign
                    * if metric.is_duration() {
                        v as i64
                    } else {
                        nano(v)
                    };
                histograms[i].add(v, metric.floor(), sign);
            }
        }
    }

    /// Adds `other` `sign` times (1 to add a call, -1 to take it away).
    pub fn add(&mut self, other: &Figures, sign: i64) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b * sign;
        }
        for (a, b) in self.histograms.iter_mut().zip(&other.histograms) {
            a.merge(b, sign);
        }
    }

    /// The calls counted: a cell that comes to none is deleted.
    pub fn calls(&self) -> i64 {
        self.counts[count::CALLS]
    }

    /// The cell as stored: the counts, then the histograms (see [`Histogram::encode`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for c in self.counts {
            varint(&mut out, zigzag(c));
        }
        for h in &self.histograms {
            h.encode(&mut out);
        }
        out
    }

    /// A cell [`Figures::encode`] wrote; `None` if it is malformed.
    pub fn decode(mut input: &[u8]) -> Option<Figures> {
        let mut f = Figures::default();
        for c in &mut f.counts {
            *c = unzigzag(read_varint(&mut input)?);
        }
        for h in &mut f.histograms {
            *h = Histogram::decode(&mut input)?;
        }
        input.is_empty().then_some(f)
    }
}

/// Two encoded cells added up, encoded (a cell and a change to it): the counts summed, each
/// histogram's bins merged in order, bins that come to nothing dropped; without decoding into
/// maps (SQLite's writer runs it inside its UPSERT, see `sqlite::quality`). `None` if either is
/// malformed.
pub fn merge_encoded(mut a: &[u8], mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    for _ in 0..count::ALL {
        let sum = unzigzag(read_varint(&mut a)?) + unzigzag(read_varint(&mut b)?);
        varint(&mut out, zigzag(sum));
    }
    let mut bins_a: Vec<(i64, i64)> = Vec::new();
    let mut bins_b: Vec<(i64, i64)> = Vec::new();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for _ in 0..METRICS {
        read_bins(&mut a, &mut bins_a)?;
        read_bins(&mut b, &mut bins_b)?;
        merged.clear();
        let (mut i, mut j) = (0, 0);
        while i < bins_a.len() || j < bins_b.len() {
            let next = match (bins_a.get(i), bins_b.get(j)) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    (i, j) = (i + 1, j + 1);
                    (x.0, x.1 + y.1)
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    i += 1;
                    *x
                }
                (Some(x), None) => {
                    i += 1;
                    *x
                }
                (_, Some(y)) => {
                    j += 1;
                    *y
                }
                (None, None) => break,
            };
            if next.1 != 0 {
                merged.push(next);
            }
        }
        varint(&mut out, merged.len() as u64);
        let mut last = 0_i64;
        for (bin, n) in &merged {
            varint(&mut out, zigzag(bin - last));
            varint(&mut out, zigzag(*n));
            last = *bin;
        }
    }
    (a.is_empty() && b.is_empty()).then_some(out)
}

/// Reads one encoded histogram's bins (absolute, in order) into `bins`.
fn read_bins(input: &mut &[u8], bins: &mut Vec<(i64, i64)>) -> Option<()> {
    bins.clear();
    let mut bin = 0_i64;
    for _ in 0..read_varint(input)? {
        bin += unzigzag(read_varint(input)?);
        bins.push((bin, unzigzag(read_varint(input)?)));
    }
    Some(())
}

/// A cell's key: carrier, level, bucket (hours or days since the epoch), group.
pub type CellKey = (String, i32, i64, Group);

/// The cells a write changes, and by how much.
#[derive(Debug, Default)]
pub struct Changes {
    /// Cell → the change.
    pub cells: HashMap<CellKey, Figures>,
}

impl Changes {
    /// Adds (`sign` 1) or takes away (-1) the call `r` of `carrier_id` in its hour and its day.
    pub fn record(&mut self, carrier_id: &str, r: &CallRecord, sign: i64) {
        let group = Group::of(r);
        for (level, bucket) in [
            (LEVEL_HOUR, r.start_time.div_euclid(HOUR_US)),
            (LEVEL_DAY, r.start_time.div_euclid(DAY_US)),
        ] {
            self.cells
                .entry((carrier_id.to_owned(), level, bucket, group.clone()))
                .or_default()
                .add_call(r, sign);
        }
    }

    /// The changed cells, in key order (the order writers lock rows in), without those that
    /// come to nothing (a revision that changed no figure).
    pub fn sorted(self) -> Vec<(CellKey, Figures)> {
        let mut cells: Vec<_> = self
            .cells
            .into_iter()
            .filter(|(_, f)| *f != Figures::default())
            .collect();
        cells.sort_by(|a, b| a.0.cmp(&b.0));
        cells
    }
}

/// The question answered from `changes` holding every call's figures (each call added once,
/// as [`Changes::record`] does while the records are read): the reference the aggregates kept
/// at write time are held to (the property test, `ocx-bench quality`).
pub fn recomputed(q: &QualityQuery, changes: Changes) -> Result<Vec<QualityRow>, TooManyRows> {
    let cells = changes.sorted();
    let mut summary = Summary::new(q);
    for (level, from, to) in cuts(q) {
        for ((_, l, bucket, group), figures) in &cells {
            if *l == level && (from..to).contains(bucket) {
                // Encoded here, so it always decodes.
                let _ = summary.add(level, *bucket, group, &figures.encode());
            }
        }
    }
    summary.rows()
}

/// The ranges of cells a query reads: (level, first bucket, bucket after the last).
pub fn cuts(q: &QualityQuery) -> Vec<(i32, i64, i64)> {
    let (start, end) = (q.start_hour, q.end_hour);
    if q.bucket == QualityBucket::Hour {
        return vec![(LEVEL_HOUR, start, end)];
    }
    let first_day = start.div_euclid(24) + i64::from(start.rem_euclid(24) != 0);
    let last_day = end.div_euclid(24);
    if first_day >= last_day {
        return vec![(LEVEL_HOUR, start, end)];
    }
    let mut cuts = vec![(LEVEL_DAY, first_day, last_day)];
    if start < first_day * 24 {
        cuts.push((LEVEL_HOUR, start, first_day * 24));
    }
    if last_day * 24 < end {
        cuts.push((LEVEL_HOUR, last_day * 24, end));
    }
    cuts
}

/// One bucket and group's figures added up.
#[derive(Debug, Clone, Default)]
pub struct Total {
    /// The counts, as in [`Figures`].
    counts: [i64; count::ALL],
    /// A histogram per [`Metric`], merged.
    histograms: [Accumulator; METRICS],
}

impl Total {
    /// Adds an encoded cell; `None` if it is malformed.
    fn add_encoded(&mut self, mut input: &[u8]) -> Option<()> {
        for c in &mut self.counts {
            *c += unzigzag(read_varint(&mut input)?);
        }
        for h in &mut self.histograms {
            h.add_encoded(&mut input)?;
        }
        input.is_empty().then_some(())
    }
}

/// A summary's row: a bucket, a group (the grouped dimensions set), and the figures.
#[derive(Debug, Clone)]
pub struct QualityRow {
    /// The bucket's start (the period's start without buckets).
    pub bucket_start: Micros,
    /// The grouped values; the others at their defaults.
    pub group: Group,
    /// The figures.
    pub total: Total,
}

/// The distribution of one metric in a row.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Distribution {
    /// Values counted.
    pub count: i64,
    /// Their mean (exact from the sums).
    pub mean: f64,
    /// 50th, 90th, 95th and 99th percentiles (0 when nothing is counted).
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
}

impl Total {
    /// A count of [`Figures`] by index.
    fn get(&self, i: usize) -> i64 {
        self.counts[i]
    }

    /// Calls.
    pub fn calls(&self) -> i64 {
        self.get(count::CALLS)
    }
    /// Calls answered.
    pub fn answered(&self) -> i64 {
        self.get(count::ANSWERED)
    }
    /// Failed calls that failed for their user.
    pub fn user_failed(&self) -> i64 {
        self.get(count::USER_FAILED)
    }
    /// The answered calls' durations, summed (µs).
    pub fn connected_us(&self) -> i64 {
        self.get(count::CONNECTED_US)
    }
    /// Answered calls with a known post-dial delay.
    pub fn pdd_calls(&self) -> i64 {
        self.get(count::PDD_CALLS)
    }
    /// Their post-dial delays, summed (µs).
    pub fn pdd_us(&self) -> i64 {
        self.get(count::PDD_US)
    }
    /// Media streams.
    pub fn streams(&self) -> i64 {
        self.get(count::STREAMS)
    }
    /// Streams with a classifying metric.
    pub fn classified_streams(&self) -> i64 {
        self.get(count::CLASSIFIED_STREAMS)
    }
    /// Poor streams.
    pub fn poor_streams(&self) -> i64 {
        self.get(count::POOR_STREAMS)
    }
    /// Calls GOOD, POOR, UNCLASSIFIED.
    pub fn verdicts(&self) -> (i64, i64, i64) {
        (
            self.get(count::GOOD_CALLS),
            self.get(count::POOR_CALLS),
            self.get(count::UNCLASSIFIED_CALLS),
        )
    }
    /// Calls poor due to each metric, in code order, those with none left out.
    pub fn poor_due_to(&self) -> Vec<(QualityMetric, i64)> {
        (1..=5)
            .filter_map(|code| {
                let n = self.get(count::POOR_DUE_TO + code as usize - 1);
                QualityMetric::from_code(code)
                    .filter(|_| n != 0)
                    .map(|m| (m, n))
            })
            .collect()
    }

    /// The distribution of `metric`: durations in µs, the rest in their own units.
    pub fn distribution(&self, metric: Metric) -> Distribution {
        let h = &self.histograms[metric as usize];
        let (count, sum) = match metric {
            Metric::PostDialDelay => (self.pdd_calls(), self.pdd_us() as f64),
            _ => {
                let i = metric as usize;
                let sum = self.get(count::METRIC_SUMS + i) as f64;
                let sum = if metric.is_duration() { sum } else { sum / 1e9 };
                (self.get(count::METRIC_STREAMS + i), sum)
            }
        };
        let q = |p: f64| h.quantile(p).unwrap_or(0.0);
        Distribution {
            count,
            mean: if count > 0 { sum / count as f64 } else { 0.0 },
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
        }
    }
}

/// The most rows a summary answers with: a year by day for ten groups, or a month by hour for
/// five, fit; a question that would give more (a year by hour by every dimension, say) is
/// refused before it holds more memory, with words on how to ask a smaller one.
pub const MAX_ROWS: usize = 5_000;

/// A summary whose answer would have more than [`MAX_ROWS`] rows (the backends answer it
/// INVALID_ARGUMENT with these words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the summary would have more than {MAX_ROWS} rows: ask for a shorter period, larger time \
     buckets or fewer group_by dimensions"
)]
pub struct TooManyRows;

/// A summary being added up from cells.
#[derive(Debug)]
pub struct Summary<'q> {
    /// The question.
    query: &'q QualityQuery,
    /// (bucket start, sort key) → the group and its total.
    rows: BTreeMap<(Micros, Vec<SortPart>), (Group, Total)>,
    /// Whether a row beyond [`MAX_ROWS`] was left out.
    too_many: bool,
}

impl<'q> Summary<'q> {
    /// An empty summary for `query`.
    pub fn new(query: &'q QualityQuery) -> Summary<'q> {
        Summary {
            query,
            rows: BTreeMap::new(),
            too_many: false,
        }
    }

    /// Adds a cell read from the store (level, bucket, group, encoded figures); `None` if the
    /// figures are malformed.
    pub fn add(&mut self, level: i32, bucket: i64, group: &Group, figures: &[u8]) -> Option<()> {
        if !group.kept_by(&self.query.filter) {
            return Some(());
        }
        let start = match level {
            LEVEL_DAY => bucket * DAY_US,
            _ => bucket * HOUR_US,
        };
        let bucket_start = match self.query.bucket {
            QualityBucket::Whole => self.query.start_hour * HOUR_US,
            QualityBucket::Hour => start,
            QualityBucket::Day => start.div_euclid(DAY_US) * DAY_US,
        };
        let (projected, key) = group.projected(&self.query.group_by);
        let key = (bucket_start, key);
        if !self.rows.contains_key(&key) && self.rows.len() >= MAX_ROWS {
            self.too_many = true;
            return Some(());
        }
        self.rows
            .entry(key)
            .or_insert_with(|| (projected, Total::default()))
            .1
            .add_encoded(figures)
    }

    /// The rows with calls, in order; [`TooManyRows`] when there would be more than
    /// [`MAX_ROWS`].
    pub fn rows(self) -> Result<Vec<QualityRow>, TooManyRows> {
        if self.too_many {
            return Err(TooManyRows);
        }
        Ok(self
            .rows
            .into_iter()
            .filter(|(_, (_, t))| t.calls() > 0)
            .map(|((bucket_start, _), (group, total))| QualityRow {
                bucket_start,
                group,
                total,
            })
            .collect())
    }
}

/// The direction, call type and destination context of a row's group, as enums.
pub fn group_enums(
    g: &Group,
) -> (
    Option<CallDirection>,
    Option<CallType>,
    Option<DestinationContext>,
) {
    (
        CallDirection::from_code(g.direction),
        CallType::from_code(g.call_type),
        DestinationContext::from_code(g.destination_context),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(bucket: QualityBucket) -> QualityQuery {
        QualityQuery {
            carrier_id: None,
            start_hour: 0,
            end_hour: 24 * 400,
            bucket,
            group_by: vec![QualityDimension::TrunkFqdn],
            filter: QualityFilter::default(),
        }
    }

    #[test]
    fn a_summary_of_more_than_max_rows_is_refused_with_words() {
        let one = Figures {
            counts: {
                let mut c = [0; count::ALL];
                c[count::CALLS] = 1;
                c
            },
            ..Figures::default()
        }
        .encode();
        let q = query(QualityBucket::Hour);
        let fill = |hours: i64| {
            let mut summary = Summary::new(&q);
            for hour in 0..hours {
                summary
                    .add(LEVEL_HOUR, hour, &Group::default(), &one)
                    .expect("decodes");
            }
            summary.rows()
        };
        assert_eq!(fill(MAX_ROWS as i64).expect("fits").len(), MAX_ROWS);
        let refused = fill(MAX_ROWS as i64 + 1).expect_err("too many");
        assert!(refused.to_string().contains("fewer group_by"), "{refused}");
    }

    #[test]
    fn merging_encoded_cells_is_adding_their_figures() {
        let stream = |jitter_us: i64, mos: f64| crate::domain::MediaStream {
            average_jitter_us: Some(jitter_us),
            mos: Some(mos),
            ..Default::default()
        };
        let call = |n: i64| {
            let mut r = crate::domain::CallRecord {
                call_id: format!("c{n}"),
                correlation_id: String::new(),
                version: 1,
                carrier_id: "c".into(),
                tenant_id: String::new(),
                call_type: crate::domain::CallType::UserIn,
                direction: crate::domain::CallDirection::Inbound,
                caller_number: String::new(),
                callee_number: String::new(),
                user_sip_uri: String::new(),
                invite_time: Some(0),
                start_time: 1_000_000 * n,
                end_time: 1_000_000 * n,
                duration_us: 60_000_000 + n,
                final_sip_code: 200,
                final_sip_phrase: String::new(),
                q850_cause: 16,
                successful: n % 3 != 0,
                destination_context: None,
                usage_country_code: String::new(),
                trunk_fqdn: String::new(),
                media_streams: vec![stream(1_000 * n, 4.0), stream(5_000, 1.0 + n as f64 / 10.0)],
                quality: QualityVerdict::Good,
                poor_due_to: Vec::new(),
                content_hash: 0,
                feed_sequence: 0,
                update_time: 0,
            };
            (r.quality, r.poor_due_to) = crate::quality::classify(&r.media_streams);
            Figures::of(&r)
        };
        let (mut a, mut b) = (Figures::default(), Figures::default());
        for n in 0..20 {
            a.add(&call(n), 1);
        }
        for n in 10..35 {
            b.add(&call(n), 1);
        }
        let mut sum = a.clone();
        sum.add(&b, 1);
        assert_eq!(merge_encoded(&a.encode(), &b.encode()), Some(sum.encode()));
        // Taking a change away: negative counts, bins that come to nothing dropped.
        let mut minus = Figures::default();
        minus.add(&b, -1);
        assert_eq!(
            merge_encoded(&sum.encode(), &minus.encode()),
            Some(a.encode())
        );
        assert_eq!(merge_encoded(&a.encode(), &a.encode()[..5]), None);
    }

    #[test]
    fn cuts_read_whole_days_from_day_cells_and_the_edges_from_hours() {
        let mut q = query(QualityBucket::Day);
        (q.start_hour, q.end_hour) = (24 * 10 + 5, 24 * 13 + 2);
        assert_eq!(
            cuts(&q),
            [
                (LEVEL_DAY, 11, 13),
                (LEVEL_HOUR, 24 * 10 + 5, 24 * 11),
                (LEVEL_HOUR, 24 * 13, 24 * 13 + 2)
            ]
        );
        (q.start_hour, q.end_hour) = (24 * 10 + 5, 24 * 10 + 9);
        assert_eq!(cuts(&q), [(LEVEL_HOUR, 24 * 10 + 5, 24 * 10 + 9)]);
        q.bucket = QualityBucket::Hour;
        (q.start_hour, q.end_hour) = (0, 24 * 3);
        assert_eq!(cuts(&q), [(LEVEL_HOUR, 0, 72)]);
    }
}
