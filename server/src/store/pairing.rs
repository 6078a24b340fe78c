//! The matching rules of reconciliation (`reconciliation.proto`) as a function of facts, for
//! pairing state kept at write time: given one carrier's platform records and duration reports
//! (all of them, or a set closed under the rules, see [`Pairing`]), which report each record is
//! paired with and which reports stand alone.
//!
//! The rules:
//! 1. A report whose `call_id` names one of the carrier's records is about that record. Among
//!    several reports about one record, the one with the latest `update_time`, then the greatest
//!    `record_id`, is paired with it; the others stand alone (missing on the platform).
//! 2. Records that no report names, and reports whose `call_id` names none of the carrier's
//!    records, pair up by correlation id (never empty): within a correlation id, in start-time
//!    order (then by row id) on each side, the first record with the first report, and so on.
//!    What is left over stands alone.
//!
//! A pairing depends only on the facts, never on a period or a tolerance: the period decides
//! only which items a question counts (a record's item by the record's start time, a lone
//! report's by its own), and the tolerance only whether a pair agrees.
//!
//! The set-based SQL of `sqlite/reconcile.rs` and `postgres/reconcile.rs` states the same rules;
//! the property tests hold the two to each other.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::domain::{DiscrepancyKind, Micros, ReconciliationSummary};

/// A platform record, as far as pairing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFact {
    /// The row id.
    pub id: i64,
    /// The platform's call id (never empty).
    pub call_id: String,
    /// The SBC's correlation id; may be empty.
    pub correlation_id: String,
    /// When the call started.
    pub start_time: Micros,
    /// The platform's duration.
    pub duration_us: i64,
}

/// A carrier's duration report, as far as pairing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFact {
    /// The row id.
    pub id: i64,
    /// The platform's call id the carrier gave, or empty.
    pub call_id: String,
    /// The correlation id the carrier gave, or empty.
    pub correlation_id: String,
    /// When the carrier says the call started.
    pub start_time: Micros,
    /// The carrier's duration.
    pub duration_us: i64,
    /// When the report was last written (created or corrected).
    pub update_time: Micros,
    /// The carrier's own id of the report.
    pub record_id: String,
}

/// One thing a reconciliation counts: a platform record with the report paired with it, a
/// record with none (missing on the carrier's side), or a report with none (missing on the
/// platform's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    /// The record's row id, if the item has a record.
    pub record: Option<i64>,
    /// The report's row id, if the item has a report.
    pub report: Option<i64>,
    /// What decides the item's period: the record's start time, or a lone report's own.
    pub period_time: Micros,
    /// The platform's duration, if the item has a record.
    pub platform_us: Option<i64>,
    /// The carrier's duration, if the item has a report.
    pub carrier_us: Option<i64>,
    /// How a pair was made: [`STAGE_CALL_ID`] or [`STAGE_CORRELATION`]; [`STAGE_ALONE`] for an
    /// item alone. A re-pairing reads it to know whether a row left a correlation group with
    /// a partner (`store::repair::ClosedSet::widened`).
    pub stage: i64,
}

/// An item alone: a record with no report, or a report with no record.
pub const STAGE_ALONE: i64 = 0;
/// A pair made by call id (rule 1).
pub const STAGE_CALL_ID: i64 = 1;
/// A pair made by correlation id (rule 2).
pub const STAGE_CORRELATION: i64 = 2;

impl Item {
    /// How far the two durations are apart, for a pair.
    pub fn difference_us(&self) -> Option<i64> {
        Some(
            self.platform_us?
                .abs_diff(self.carrier_us?)
                .try_into()
                .unwrap_or(i64::MAX),
        )
    }

    /// The class of the pair's difference ([`difference_class`]); `None` for an item alone.
    pub fn difference_class(&self) -> Option<i64> {
        self.difference_us().map(difference_class)
    }

    /// What kind of item it is, as discrepancies name them: a pair is
    /// [`DiscrepancyKind::Mismatched`] here whatever its durations (the tolerance decides
    /// whether it is one).
    pub fn kind(&self) -> DiscrepancyKind {
        match (self.record, self.report) {
            (Some(_), Some(_)) => DiscrepancyKind::Mismatched,
            (Some(_), None) => DiscrepancyKind::MissingOnCarrier,
            _ => DiscrepancyKind::MissingOnPlatform,
        }
    }

    /// The item's key among its period's discrepancies: the record's row id, or a lone
    /// report's.
    pub fn key(&self) -> i64 {
        self.record.or(self.report).unwrap_or_default()
    }

    /// Counts the item into `summary`, a pair as matched when its durations are at most
    /// `tolerance_us` apart. (Whether the item is in the period is the caller's question.)
    pub fn count_into(&self, summary: &mut ReconciliationSummary, tolerance_us: i64) {
        if let Some(platform) = self.platform_us {
            summary.platform_count += 1;
            summary.platform_duration_us += platform;
        }
        if let Some(carrier) = self.carrier_us {
            summary.carrier_count += 1;
            summary.carrier_duration_us += carrier;
        }
        match (self.difference_us(), self.platform_us, self.carrier_us) {
            (Some(d), _, _) if d <= tolerance_us => summary.matched += 1,
            (Some(_), _, _) => summary.mismatched += 1,
            (None, Some(_), _) => summary.missing_on_carrier += 1,
            (None, None, _) => summary.missing_on_platform += 1,
        }
    }
}

/// An hour, in microseconds: the unit of the aggregates kept beside the pairing state.
pub const HOUR_US: i64 = 3_600_000_000;

/// A day, in microseconds (UTC days: 24 hours from midnight).
pub const DAY_US: i64 = 24 * HOUR_US;

/// Classes of difference per doubling: a class spans an eighth of its octave (a width of at
/// most 12.5% of its lower bound).
pub const CLASSES_PER_OCTAVE: u32 = 8;

/// The class of a difference of `d` µs between a pair's durations, for aggregates that must
/// split the pairs at any tolerance: 0 for no difference, then classes in increasing order of
/// difference, [`CLASSES_PER_OCTAVE`] per doubling (log-linear, by the leading bits). Every
/// difference in a class below the tolerance's is within the tolerance, every one in a class
/// above it beyond, so only the pairs of the tolerance's own class need reading one by one.
pub fn difference_class(d: i64) -> i64 {
    if d <= 0 {
        return 0;
    }
    let d = d.unsigned_abs();
    let top = 63 - d.leading_zeros(); // the position of the leading bit
    let bits = CLASSES_PER_OCTAVE.trailing_zeros(); // 3 bits of mantissa
    let mantissa = if top >= bits {
        (d >> (top - bits)) & u64::from(CLASSES_PER_OCTAVE - 1)
    } else {
        (d << (bits - top)) & u64::from(CLASSES_PER_OCTAVE - 1)
    };
    1 + i64::from(top) * i64::from(CLASSES_PER_OCTAVE) + mantissa as i64
}

/// The pairing of one carrier's records and reports.
///
/// Given every record and report of the carrier, it is the carrier's whole pairing. Given a
/// subset, it is that subset's part of the whole pairing as long as the subset is closed: with
/// each record it holds every report naming its call id; with each report naming a record's call
/// id it holds that record; with any record or report in stage 2 it holds every record and
/// report of the same correlation id. `store::repair::ClosedSet` says what to read for that.
#[derive(Debug, Default)]
pub struct Pairing {
    /// Every item, records' first (by record id), then lone reports (by report id).
    pub items: Vec<Item>,
}

impl Pairing {
    /// Pairs `records` with `reports` by the rules above.
    pub fn of(records: &[RecordFact], reports: &[ReportFact]) -> Pairing {
        let by_call: HashMap<&str, &RecordFact> =
            records.iter().map(|r| (r.call_id.as_str(), r)).collect();
        // Stage 1: the reports about each record, and the one that wins.
        let mut winner: HashMap<i64, (&ReportFact, i64)> = HashMap::new();
        let mut named = HashSet::new();
        for d in reports {
            if d.call_id.is_empty() {
                continue;
            }
            let Some(r) = by_call.get(d.call_id.as_str()) else {
                continue;
            };
            named.insert(r.id);
            let better = winner.get(&r.id).is_none_or(|(w, _)| {
                (d.update_time, d.record_id.as_str()) > (w.update_time, w.record_id.as_str())
            });
            if better {
                winner.insert(r.id, (d, STAGE_CALL_ID));
            }
        }
        // Stage 2: by correlation id, among the records no report names and the reports naming
        // no record.
        let mut groups: BTreeMap<&str, (Vec<&RecordFact>, Vec<&ReportFact>)> = BTreeMap::new();
        for r in records {
            if !r.correlation_id.is_empty() && !named.contains(&r.id) {
                groups.entry(&r.correlation_id).or_default().0.push(r);
            }
        }
        for d in reports {
            let about_a_record = !d.call_id.is_empty() && by_call.contains_key(d.call_id.as_str());
            if !d.correlation_id.is_empty() && !about_a_record {
                groups.entry(&d.correlation_id).or_default().1.push(d);
            }
        }
        for (rs, ds) in groups.values_mut() {
            rs.sort_by_key(|r| (r.start_time, r.id));
            ds.sort_by_key(|d| (d.start_time, d.id));
            for (r, d) in rs.iter().zip(ds.iter()) {
                winner.insert(r.id, (d, STAGE_CORRELATION));
            }
        }
        let paired: HashSet<i64> = winner.values().map(|(d, _)| d.id).collect();
        let mut items: Vec<Item> = records
            .iter()
            .map(|r| {
                let d = winner.get(&r.id);
                Item {
                    record: Some(r.id),
                    report: d.map(|(d, _)| d.id),
                    period_time: r.start_time,
                    platform_us: Some(r.duration_us),
                    carrier_us: d.map(|(d, _)| d.duration_us),
                    stage: d.map_or(STAGE_ALONE, |(_, stage)| *stage),
                }
            })
            .collect();
        items.sort_by_key(|i| i.record);
        let mut lone: Vec<Item> = reports
            .iter()
            .filter(|d| !paired.contains(&d.id))
            .map(|d| Item {
                record: None,
                report: Some(d.id),
                period_time: d.start_time,
                platform_us: None,
                carrier_us: Some(d.duration_us),
                stage: STAGE_ALONE,
            })
            .collect();
        lone.sort_by_key(|i| i.report);
        items.extend(lone);
        Pairing { items }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: i64, call: &str, corr: &str, start: i64, dur: i64) -> RecordFact {
        RecordFact {
            id,
            call_id: call.into(),
            correlation_id: corr.into(),
            start_time: start,
            duration_us: dur,
        }
    }

    fn rep(id: i64, call: &str, corr: &str, start: i64, dur: i64, updated: i64) -> ReportFact {
        ReportFact {
            id,
            call_id: call.into(),
            correlation_id: corr.into(),
            start_time: start,
            duration_us: dur,
            update_time: updated,
            record_id: format!("r{id}"),
        }
    }

    /// (record, report) of every item.
    fn pairs(p: &Pairing) -> Vec<(Option<i64>, Option<i64>)> {
        p.items.iter().map(|i| (i.record, i.report)).collect()
    }

    #[test]
    fn a_call_id_pairs_first_and_the_latest_report_wins() {
        let records = [rec(1, "a", "k", 10, 60)];
        let reports = [
            rep(11, "a", "", 10, 61, 5),
            rep(12, "a", "", 10, 62, 7),
            rep(13, "a", "", 10, 63, 7),
        ];
        let p = Pairing::of(&records, &reports);
        // Updated at 7 both; r13 > r12.
        assert_eq!(
            pairs(&p),
            [(Some(1), Some(13)), (None, Some(11)), (None, Some(12))]
        );
        assert_eq!(p.items[0].difference_us(), Some(3));
        assert_eq!(p.items[1].period_time, 10);
    }

    #[test]
    fn correlation_ids_pair_the_rest_in_start_order() {
        let records = [
            rec(1, "a", "k", 30, 60),
            rec(2, "b", "k", 10, 60),
            rec(3, "c", "k", 20, 60),
            // Named by a report: stage 1, whatever its correlation id.
            rec(4, "d", "k", 5, 60),
        ];
        let reports = [
            rep(11, "", "k", 50, 60, 1),
            rep(12, "nope", "k", 40, 60, 1),
            rep(13, "d", "k", 0, 60, 1),
            rep(14, "", "other", 0, 60, 1),
        ];
        let p = Pairing::of(&records, &reports);
        // Records by start: 2 (10), 3 (20), 1 (30); reports by start: 12 (40), 11 (50).
        assert_eq!(
            pairs(&p),
            [
                (Some(1), None),
                (Some(2), Some(12)),
                (Some(3), Some(11)),
                (Some(4), Some(13)),
                (None, Some(14)),
            ]
        );
    }

    #[test]
    fn difference_classes_grow_with_the_difference_and_split_octaves_in_eight() {
        assert_eq!(difference_class(0), 0);
        let mut last = 0;
        for d in 1..100_000i64 {
            let c = difference_class(d);
            assert!(c >= last, "{d}");
            last = c;
        }
        for d in [
            1i64,
            7,
            1000,
            999_999,
            3_600_000_000,
            86_400_000_000,
            i64::MAX,
        ] {
            assert!(difference_class(d) > 0);
            assert!(
                difference_class(d) <= difference_class(d.saturating_add(1)),
                "{d}"
            );
        }
        // One octave, [1024, 2048), is eight classes of 128.
        let classes: std::collections::BTreeSet<i64> = (1024..2048).map(difference_class).collect();
        assert_eq!(classes.len(), 8);
        assert_eq!(difference_class(1024), difference_class(1151));
        assert_ne!(difference_class(1151), difference_class(1152));
    }

    #[test]
    fn empty_correlation_ids_never_pair() {
        let p = Pairing::of(&[rec(1, "a", "", 0, 60)], &[rep(11, "", "", 0, 60, 1)]);
        assert_eq!(pairs(&p), [(Some(1), None), (None, Some(11))]);
    }
}
