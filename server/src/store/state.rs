//! Answers from the pairing state, decided without I/O and shared by both backends: how a
//! period is cut into whole days and hours (read from the aggregates) and edges (read from the
//! items), how the parts of a summary add up, and how usage rows are grouped and ordered.

use std::collections::{BTreeMap, HashMap};

use crate::domain::{CallDirection, Micros, UsageGrouping, UsageRow};
use crate::store::pairing::{DAY_US, HOUR_US};
use crate::store::repair::{LEVEL_DAY, LEVEL_HOUR};
use crate::store::rows::SummaryCounts;

/// The whole units of `unit` inside `[s, e)`: `[first, last)` in units, if any.
pub fn whole(s: Micros, e: Micros, unit: i64) -> Option<(i64, i64)> {
    let first = s.div_euclid(unit) + i64::from(s.rem_euclid(unit) != 0);
    let last = e.div_euclid(unit);
    (first < last).then_some((first, last))
}

/// A period cut for usage: the sums to read (`(level, unit, first, last)`: whole days, then the
/// whole hours at either edge) and the parts of an hour left at either edge, read from the
/// items.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cuts {
    /// `(level, unit in µs, first, last)`: `usage_sums` rows of `level` with `first <= bucket
    /// < last`.
    pub sums: Vec<(i64, i64, i64, i64)>,
    /// `[s, e)` ranges of start times read from the items (none empty).
    pub edges: Vec<(Micros, Micros)>,
}

impl Cuts {
    /// The cuts of `[s, e)`.
    pub fn of(s: Micros, e: Micros) -> Cuts {
        let mut cuts = Cuts::default();
        let mut by_hour = Vec::new();
        match whole(s, e, DAY_US) {
            Some((d0, d1)) => {
                cuts.sums.push((LEVEL_DAY, DAY_US, d0, d1));
                by_hour.push((s, d0 * DAY_US));
                by_hour.push((d1 * DAY_US, e));
            }
            None => by_hour.push((s, e)),
        }
        for (s, e) in by_hour {
            match whole(s, e, HOUR_US) {
                Some((h0, h1)) => {
                    cuts.sums.push((LEVEL_HOUR, HOUR_US, h0, h1));
                    cuts.edges.push((s, h0 * HOUR_US));
                    cuts.edges.push((h1 * HOUR_US, e));
                }
                None => cuts.edges.push((s, e)),
            }
        }
        cuts.edges.retain(|(s, e)| s < e);
        cuts
    }
}

/// A tenant's usage as it is added up: calls, durations and the carrier's share per group.
#[derive(Debug)]
pub struct Usage {
    /// How rows are grouped.
    grouping: UsageGrouping,
    /// The tenant's lines: id → (number, direction).
    lines: HashMap<i64, (String, i64)>,
    /// (day, number, direction) → (calls, duration, operator calls).
    groups: BTreeMap<(String, String, i64), (i64, i64, i64)>,
}

impl Usage {
    /// An empty sum for the tenant's `lines` (id → number, direction).
    pub fn new(grouping: UsageGrouping, lines: HashMap<i64, (String, i64)>) -> Usage {
        Usage {
            grouping,
            lines,
            groups: BTreeMap::new(),
        }
    }

    /// Adds `calls` calls of `line` at `time` (a start time, or a bucket's first instant).
    pub fn add(&mut self, line: i64, time: Micros, calls: i64, operator: i64, total_us: i64) {
        let key = match self.grouping {
            UsageGrouping::Day => (utc_day(time), String::new(), 0),
            UsageGrouping::NumberAndDirection => match self.lines.get(&line) {
                Some((number, direction)) => (String::new(), number.clone(), *direction),
                None => return,
            },
        };
        let g = self.groups.entry(key).or_default();
        g.0 += calls;
        g.1 += total_us;
        g.2 += operator;
    }

    /// The rows, by day or by number (byte order) then direction; groups with no call left
    /// out.
    pub fn rows(self) -> Vec<UsageRow> {
        self.groups
            .into_iter()
            .filter(|(_, (calls, _, _))| *calls > 0)
            .map(
                |((day, number, direction), (calls, duration_us, operator_count))| UsageRow {
                    day,
                    number,
                    direction: i32::try_from(direction)
                        .ok()
                        .and_then(CallDirection::from_code),
                    calls,
                    duration_us,
                    operator_count,
                },
            )
            .collect()
    }
}

/// `YYYY-MM-DD` of the UTC day of `time` (the date part of its RFC 3339 form).
pub fn utc_day(time: Micros) -> String {
    let seconds = time.div_euclid(DAY_US) * 86_400;
    let mut day = prost_types::Timestamp { seconds, nanos: 0 }.to_string();
    day.truncate(10);
    day
}

/// Adds `b`'s counts to `a`'s.
pub fn add(a: &mut SummaryCounts, b: SummaryCounts) {
    a.platform_count += b.platform_count;
    a.platform_duration_us += b.platform_duration_us;
    a.matched += b.matched;
    a.mismatched += b.mismatched;
    a.paired_report_us += b.paired_report_us;
    a.unmatched += b.unmatched;
    a.unmatched_us += b.unmatched_us;
}

/// The whole hours' part of a summary, from the hour aggregates: their sums (`platform_count,
/// platform_us, paired_count, paired_carrier_us, lone_count, lone_us`), the pairs in classes
/// beyond the tolerance's, and the pairs of the tolerance's own class beyond the tolerance.
pub fn whole_hours(sums: [i64; 6], beyond: i64, at_edge: i64) -> SummaryCounts {
    let [
        platform_count,
        platform_us,
        paired,
        paired_us,
        lone,
        lone_us,
    ] = sums;
    let mismatched = beyond + at_edge;
    SummaryCounts {
        platform_count,
        platform_duration_us: platform_us,
        matched: paired - mismatched,
        mismatched,
        paired_report_us: paired_us,
        unmatched: lone,
        unmatched_us: lone_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_cut_into_whole_days_whole_hours_and_edges() {
        let d = DAY_US;
        let h = HOUR_US;
        // Two whole days, with 1.5 hours before and 2.25 hours after.
        let cuts = Cuts::of(10 * d - 3 * h / 2, 12 * d + 9 * h / 4);
        assert_eq!(
            cuts.sums,
            vec![
                (LEVEL_DAY, d, 10, 12),
                (LEVEL_HOUR, h, 10 * 24 - 1, 10 * 24),
                (LEVEL_HOUR, h, 12 * 24, 12 * 24 + 2)
            ]
        );
        assert_eq!(
            cuts.edges,
            vec![
                (10 * d - 3 * h / 2, 10 * d - h),
                (12 * d + 2 * h, 12 * d + 9 * h / 4)
            ]
        );
        // Inside one hour: only an edge.
        let cuts = Cuts::of(h + 5, h + 10);
        assert!(cuts.sums.is_empty());
        assert_eq!(cuts.edges, vec![(h + 5, h + 10)]);
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_735_689_600_000_000), "2025-01-01");
        assert_eq!(utc_day(1_735_689_600_000_000 - 1), "2024-12-31");
    }
}
