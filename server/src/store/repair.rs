//! What a write changes in the pairing state of reconciliation, decided without I/O and shared
//! by both backends.
//!
//! A write notes the call ids and correlation ids of the rows it wrote or deleted, old and new
//! ([`Touched`]). Before it commits, the backend reads the closed set of records and reports
//! those ids reach, in [`ClosedSet`]'s steps, pairs it again ([`Pairing::of`]), reads the items
//! stored for those rows and the feed heads of their carriers, and [`plan`] compares the two:
//! an entry (a record's item, or a lone report's) that changed is written again at the next
//! position of its carrier's reconciliation feed, one that is gone is recorded as removed at
//! its own position, one that did not change is left as it is; the hour aggregates and the
//! tenants' usage sums follow every item written or deleted ([`Deltas`]). A correlation-id
//! group is re-paired only when a write touched it, never the period.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::domain::Micros;
use crate::store::pairing::{DAY_US, HOUR_US, Item, Pairing, RecordFact, ReportFact};

/// What a write touched, per carrier: call ids and correlation ids (empty ones are dropped),
/// the rows it deleted, and the rows whose ids changed under an unchanged pairing.
#[derive(Debug, Default)]
pub struct Touched {
    /// Carrier → its touched keys.
    keys: BTreeMap<String, Keyed>,
    /// Records deleted, with their call ids: their entries go.
    deleted_records: HashMap<i64, String>,
    /// Reports deleted, with the carrier's record ids: their entries go.
    deleted_reports: HashMap<i64, String>,
    /// Records whose correlation id changed: their entries are written again even when their
    /// pairing did not change, so a follower sees the new ids.
    refreshed_records: HashSet<i64>,
    /// Reports whose call id or correlation id changed (as `refreshed_records`).
    refreshed_reports: HashSet<i64>,
}

/// One carrier's touched keys.
#[derive(Debug, Default)]
pub struct Keyed {
    /// Call ids, as rows carry them now or carried them before the write.
    pub calls: BTreeSet<String>,
    /// Correlation ids whose groups are re-paired whatever the rows read say: those of rows as
    /// they were before the write, and of rows with no call id (not found by one).
    pub always: BTreeSet<String>,
    /// Correlation ids of rows as they are now, found by their call ids in the closed set's
    /// first step: their groups are re-paired if one of those rows may change them
    /// ([`ClosedSet::widened`]).
    pub current: BTreeSet<String>,
    /// Records the write itself stored for this carrier, by call id, with their usage lines:
    /// the closed set's first step takes them as stored instead of reading them back.
    pub written: HashMap<String, (RecordFact, Line)>,
}

impl Keyed {
    /// The call ids the closed set's first step must read records by: those of no record in
    /// [`Keyed::written`] (a call id names at most one record).
    pub fn unwritten_calls(&self) -> Vec<&String> {
        self.calls
            .iter()
            .filter(|c| !self.written.contains_key(*c))
            .collect()
    }

    /// The records the write stored, as the closed set's first step would have read them.
    pub fn written_records(&self) -> impl Iterator<Item = (RecordFact, Line)> + '_ {
        self.written.values().cloned()
    }
}

impl Touched {
    /// Notes a record or report of `carrier_id` with `call_id` and `correlation_id` as the
    /// write leaves it.
    pub fn note(&mut self, carrier_id: &str, call_id: &str, correlation_id: &str) {
        let keyed = self.keys.entry(carrier_id.to_owned()).or_default();
        if !call_id.is_empty() {
            keyed.calls.insert(call_id.to_owned());
        }
        if !correlation_id.is_empty() {
            let set = if call_id.is_empty() {
                &mut keyed.always
            } else {
                &mut keyed.current
            };
            set.insert(correlation_id.to_owned());
        }
    }

    /// Notes a record the write stored for `carrier_id` (after [`Touched::note`]), with its
    /// usage line: the last write of a call id wins, and a record another carrier stored
    /// earlier in the same write is no longer theirs.
    pub fn wrote_record(&mut self, carrier_id: &str, fact: RecordFact, line: Line) {
        for (other, keyed) in &mut self.keys {
            if other != carrier_id {
                keyed.written.remove(&fact.call_id);
            }
        }
        let keyed = self.keys.entry(carrier_id.to_owned()).or_default();
        keyed.written.insert(fact.call_id.clone(), (fact, line));
    }

    /// Notes a record or report of `carrier_id` with `call_id` and `correlation_id` as it was
    /// before the write (changed, moved to another carrier, or deleted).
    pub fn note_old(&mut self, carrier_id: &str, call_id: &str, correlation_id: &str) {
        let keyed = self.keys.entry(carrier_id.to_owned()).or_default();
        if !call_id.is_empty() {
            keyed.calls.insert(call_id.to_owned());
        }
        if !correlation_id.is_empty() {
            keyed.always.insert(correlation_id.to_owned());
        }
    }

    /// Notes that record `id`'s correlation id changed.
    pub fn refreshed_record(&mut self, id: i64) {
        self.refreshed_records.insert(id);
    }

    /// Notes that report `id`'s call id or correlation id changed.
    pub fn refreshed_report(&mut self, id: i64) {
        self.refreshed_reports.insert(id);
    }

    /// Notes a deleted record (and its keys).
    pub fn deleted_record(
        &mut self,
        id: i64,
        carrier_id: &str,
        call_id: &str,
        correlation_id: &str,
    ) {
        self.deleted_records.insert(id, call_id.to_owned());
        self.note_old(carrier_id, call_id, correlation_id);
    }

    /// Notes a deleted report (its carrier's `record_id`, and its keys).
    pub fn deleted_report(
        &mut self,
        id: i64,
        carrier_id: &str,
        record_id: &str,
        call_id: &str,
        correlation_id: &str,
    ) {
        self.deleted_reports.insert(id, record_id.to_owned());
        self.note_old(carrier_id, call_id, correlation_id);
    }

    /// Each touched carrier with its keys, in carrier order (the order a backend that locks
    /// carriers takes them in).
    pub fn carriers(&self) -> impl Iterator<Item = (&String, &Keyed)> {
        self.keys.iter()
    }

    /// Whether the write touched nothing a pairing depends on.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.deleted_records.is_empty() && self.deleted_reports.is_empty()
    }

    /// Whether `item`'s record or report had its ids changed.
    fn refreshed(&self, item: &Item) -> bool {
        item.record
            .is_some_and(|r| self.refreshed_records.contains(&r))
            || item
                .report
                .is_some_and(|d| self.refreshed_reports.contains(&d))
    }
}

/// A record's usage line: the tenant, the tenant-side number, the direction.
pub type Line = (String, String, i64);

/// An entry of a carrier's reconciliation feed: a record's item (with the report paired with
/// it, if any), or a lone report's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// The item of the record with this row id.
    Record(i64),
    /// The item of the report with this row id, paired with no record.
    Report(i64),
}

impl Entry {
    /// The entry an item is.
    pub fn of(item: &Item) -> Entry {
        match item.record {
            Some(record) => Entry::Record(record),
            None => Entry::Report(item.report.unwrap_or_default()),
        }
    }

    /// Its code in `recon_removed.entry`.
    pub fn code(self) -> i64 {
        match self {
            Entry::Record(_) => 1,
            Entry::Report(_) => 2,
        }
    }
}

/// An item as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The row id.
    pub id: i64,
    /// Its carrier.
    pub carrier_id: String,
    /// The item.
    pub item: Item,
    /// Its record's usage line.
    pub line_id: Option<i64>,
}

/// One carrier's closed set of touched rows, read in four steps (each a lookup the backend
/// makes, then hands the rows to [`ClosedSet::add_records`] / [`ClosedSet::add_reports`]):
/// 1. the records and reports carrying a touched call id;
/// 2. every record and report of the touched correlation ids and of those rows' own
///    ([`ClosedSet::widened`]): such a row may enter or leave stage 2 of the rules;
/// 3. the records the reports read so far name ([`ClosedSet::named`]);
/// 4. the reports naming any record read ([`ClosedSet::naming`]).
///
/// Steps 3 and 4 are both in stage 1 of the rules, so nothing further is reached. No call id
/// is looked up twice.
#[derive(Debug, Default)]
pub struct ClosedSet {
    /// Records by row id, with their usage lines.
    pub records: HashMap<i64, (RecordFact, Line)>,
    /// Reports by row id.
    pub reports: HashMap<i64, ReportFact>,
}

impl ClosedSet {
    /// Adds records read (a row already in the set is kept).
    pub fn add_records(&mut self, rows: impl IntoIterator<Item = (RecordFact, Line)>) {
        for row in rows {
            self.records.entry(row.0.id).or_insert(row);
        }
    }

    /// Adds reports read (a row already in the set is kept).
    pub fn add_reports(&mut self, rows: impl IntoIterator<Item = ReportFact>) {
        for row in rows {
            self.reports.entry(row.id).or_insert(row);
        }
    }

    /// The row ids of the records in the set.
    pub fn record_ids(&self) -> Vec<i64> {
        self.records.keys().copied().collect()
    }

    /// The row ids of the reports in the set.
    pub fn report_ids(&self) -> Vec<i64> {
        self.reports.keys().copied().collect()
    }

    /// Step 2's correlation ids, given the rows of step 1 (this set, so far) and the items
    /// stored for them (`old`, keyed by carrier and entry). A correlation group is read whole
    /// when a row of it may change its pairs:
    /// - every one of `keyed.always` (rows as they were; rows with no call id);
    /// - a row of step 1 in stage 2 now (no record has its call id, for a report; no report
    ///   names it, for a record): it may take a partner, or shift the ranks;
    /// - a row of step 1 that was paired by correlation before: leaving, it frees its partner
    ///   and shifts the ranks.
    ///
    /// A row that was in stage 2 alone and leaves it changes nothing (it ranked after every
    /// partner of its group, and so do the rows after it), and a row in stage 1 before and now
    /// stays out of every group: such rows' groups are not read. The usual report, naming a
    /// record no other report names, is one: it and its record leave stage 2, and its write
    /// reads no correlation group. A correlation id of `keyed.current` that no row of step 1
    /// carries is read too.
    pub fn widened(
        &self,
        keyed: &Keyed,
        old: &BTreeMap<(String, Entry), Stored>,
        carrier_id: &str,
    ) -> Vec<String> {
        use crate::store::pairing::STAGE_CORRELATION;
        let mut widened: BTreeSet<&str> = keyed.always.iter().map(String::as_str).collect();
        let named: HashSet<&str> = self
            .reports
            .values()
            .filter(|d| !d.call_id.is_empty())
            .map(|d| d.call_id.as_str())
            .collect();
        let recorded: HashSet<&str> = self
            .records
            .values()
            .map(|(r, _)| r.call_id.as_str())
            .collect();
        let by_correlation_before: HashSet<i64> = old
            .iter()
            .filter(|((carrier, _), s)| carrier == carrier_id && s.item.stage == STAGE_CORRELATION)
            .flat_map(|(_, s)| [s.item.record, s.item.report])
            .flatten()
            .collect();
        let mut carried: HashSet<&str> = HashSet::new();
        for (r, _) in self.records.values() {
            carried.insert(&r.correlation_id);
            let in_stage_2 = !named.contains(r.call_id.as_str());
            if in_stage_2 || by_correlation_before.contains(&r.id) {
                widened.insert(&r.correlation_id);
            }
        }
        for d in self.reports.values() {
            carried.insert(&d.correlation_id);
            let in_stage_2 = d.call_id.is_empty() || !recorded.contains(d.call_id.as_str());
            if in_stage_2 || by_correlation_before.contains(&d.id) {
                widened.insert(&d.correlation_id);
            }
        }
        widened.extend(
            keyed
                .current
                .iter()
                .map(String::as_str)
                .filter(|k| !carried.contains(k)),
        );
        widened.remove("");
        widened.into_iter().map(str::to_owned).collect()
    }

    /// Step 3's call ids: those the reports name that no record read carries, and that step
    /// 1 did not look up (`calls`).
    pub fn named(&self, calls: &BTreeSet<String>) -> Vec<String> {
        let have: BTreeSet<&str> = self
            .records
            .values()
            .map(|(r, _)| r.call_id.as_str())
            .collect();
        let named: BTreeSet<&str> = self
            .reports
            .values()
            .map(|d| d.call_id.as_str())
            .filter(|c| !c.is_empty() && !calls.contains(*c) && !have.contains(c))
            .collect();
        named.into_iter().map(str::to_owned).collect()
    }

    /// Step 4's call ids: those of the records read that step 1 did not look up.
    pub fn naming(&self, calls: &BTreeSet<String>) -> Vec<String> {
        let naming: BTreeSet<&str> = self
            .records
            .values()
            .map(|(r, _)| r.call_id.as_str())
            .filter(|c| !calls.contains(*c))
            .collect();
        naming.into_iter().map(str::to_owned).collect()
    }

    /// The pairing of the set.
    pub fn pairing(&self) -> Pairing {
        let records: Vec<RecordFact> = self.records.values().map(|(r, _)| r.clone()).collect();
        let reports: Vec<ReportFact> = self.reports.values().cloned().collect();
        Pairing::of(&records, &reports)
    }
}

/// The keys of removed entries: a record's call id, a report's record id, from the rows read
/// and deleted (a row in neither, say a record moved to another carrier and not read, is looked
/// up by the backend).
#[derive(Debug, Default)]
pub struct Keys {
    /// Record row id → call id.
    pub records: HashMap<i64, String>,
    /// Report row id → the carrier's record id.
    pub reports: HashMap<i64, String>,
}

impl Keys {
    /// The keys of the rows `touched` deleted.
    pub fn deleted(touched: &Touched) -> Keys {
        Keys {
            records: touched.deleted_records.clone(),
            reports: touched.deleted_reports.clone(),
        }
    }

    /// Adds the keys of the rows of `set`.
    pub fn add(&mut self, set: &ClosedSet) {
        self.records.extend(
            set.records
                .iter()
                .map(|(id, (r, _))| (*id, r.call_id.clone())),
        );
        self.reports
            .extend(set.reports.iter().map(|(id, d)| (*id, d.record_id.clone())));
    }

    /// The key of `entry`, if known.
    pub fn of(&self, entry: Entry) -> Option<&str> {
        match entry {
            Entry::Record(id) => self.records.get(&id),
            Entry::Report(id) => self.reports.get(&id),
        }
        .map(String::as_str)
    }
}

/// What an item adds to its carrier's hour in `recon_hours`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HourSums {
    /// Records.
    pub platform_count: i64,
    /// Their durations.
    pub platform_us: i64,
    /// Pairs.
    pub paired_count: i64,
    /// Their reports' durations.
    pub paired_carrier_us: i64,
    /// Reports alone.
    pub lone_count: i64,
    /// Their durations.
    pub lone_us: i64,
}

/// What an item with a record adds to its line's usage in one hour or day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageSums {
    /// Calls.
    pub calls: i64,
    /// Those whose duration is the carrier's report.
    pub operator_calls: i64,
    /// The durations usage counts: the report's where paired, else the platform's.
    pub total_us: i64,
}

/// The level of `usage_sums` rows per UTC hour.
pub const LEVEL_HOUR: i64 = 0;
/// The level of `usage_sums` rows per UTC day.
pub const LEVEL_DAY: i64 = 1;
/// The level of a tenant's totals (line 0) per UTC hour, and per day: `LEVEL_HOUR` or
/// `LEVEL_DAY` plus this. Usage by day reads these, one row per hour or day.
pub const LEVEL_TOTALS: i64 = 2;

/// The changes a write makes to the aggregates. Ordered maps: a backend that writes them with
/// row locks takes the locks in one order, so two writers never wait on each other in a
/// circle.
#[derive(Debug, Default)]
pub struct Deltas {
    /// (carrier, hour) → change.
    pub hours: BTreeMap<(String, i64), HourSums>,
    /// (carrier, hour, class) → change in pairs.
    pub classes: BTreeMap<(String, i64, i64), i64>,
    /// (line, level, bucket) → change.
    pub usage: BTreeMap<(i64, i64, i64), UsageSums>,
}

impl Deltas {
    /// Adds (`sign` 1) or takes away (`sign` -1) an item's contribution.
    pub fn count(&mut self, carrier_id: &str, item: &Item, line_id: Option<i64>, sign: i64) {
        let hour = item.period_time.div_euclid(HOUR_US);
        let sums = self.hours.entry((carrier_id.to_owned(), hour)).or_default();
        if let Some(p) = item.platform_us {
            sums.platform_count += sign;
            sums.platform_us += sign * p;
        }
        match (item.platform_us, item.carrier_us, item.difference_class()) {
            (Some(_), Some(c), Some(class)) => {
                sums.paired_count += sign;
                sums.paired_carrier_us += sign * c;
                *self
                    .classes
                    .entry((carrier_id.to_owned(), hour, class))
                    .or_default() += sign;
            }
            (None, Some(c), _) => {
                sums.lone_count += sign;
                sums.lone_us += sign * c;
            }
            _ => {}
        }
        if let (Some(line), Some(p)) = (line_id, item.platform_us) {
            let day = item.period_time.div_euclid(DAY_US);
            for key in [(line, LEVEL_HOUR, hour), (line, LEVEL_DAY, day)] {
                let u = self.usage.entry(key).or_default();
                u.calls += sign;
                u.operator_calls += sign * i64::from(item.carrier_us.is_some());
                u.total_us += sign * item.carrier_us.unwrap_or(p);
            }
        }
    }

    /// The changes to `usage_sums`, by (tenant, level, bucket, line), in key order: each line's,
    /// and its tenant's totals (line 0, at `LEVEL_TOTALS` above). `tenants` names each line's
    /// tenant; a line it does not name is left out.
    pub fn usage_rows(
        &self,
        tenants: &HashMap<i64, String>,
    ) -> BTreeMap<(String, i64, i64, i64), UsageSums> {
        let mut rows: BTreeMap<(String, i64, i64, i64), UsageSums> = BTreeMap::new();
        for ((line, level, bucket), u) in &self.usage {
            let Some(tenant) = tenants.get(line) else {
                continue;
            };
            for key in [
                (tenant.clone(), *level, *bucket, *line),
                (tenant.clone(), level + LEVEL_TOTALS, *bucket, 0),
            ] {
                let row = rows.entry(key).or_default();
                row.calls += u.calls;
                row.operator_calls += u.operator_calls;
                row.total_us += u.total_us;
            }
        }
        rows.retain(|_, u| *u != UsageSums::default());
        rows
    }

    /// Drops the changes that come to nothing.
    pub fn trimmed(mut self) -> Deltas {
        self.hours.retain(|_, d| *d != HourSums::default());
        self.classes.retain(|_, n| *n != 0);
        self.usage.retain(|_, u| *u != UsageSums::default());
        self
    }
}

/// An entry gone, at its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Its carrier.
    pub carrier_id: String,
    /// The entry.
    pub entry: Entry,
    /// Its period time, as it was.
    pub period_time: Micros,
    /// Its position in the carrier's feed.
    pub sequence: i64,
}

/// An item to write, at its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Its carrier.
    pub carrier_id: String,
    /// The item.
    pub item: Item,
    /// Its record's usage line.
    pub line_id: Option<i64>,
    /// Its position in the carrier's feed.
    pub sequence: i64,
}

/// What a write changes: the stored items to delete (by row id), the entries removed, the
/// items to insert, the aggregates' changes and the carriers' new heads.
#[derive(Debug, Default)]
pub struct Plan {
    /// Row ids of stored items that changed or went.
    pub deletes: Vec<i64>,
    /// Entries gone.
    pub removals: Vec<Removal>,
    /// Items new or changed.
    pub inserts: Vec<Insert>,
    /// The aggregates' changes.
    pub deltas: Deltas,
    /// Each carrier's last position drawn (only carriers that drew one).
    pub heads: BTreeMap<String, i64>,
}

impl Plan {
    /// Whether any entry changed.
    pub fn changed(&self) -> bool {
        !self.deletes.is_empty() || !self.inserts.is_empty()
    }
}

/// The carriers whose heads [`plan`] needs: those of the stored items and of the new ones.
pub fn carriers<'a>(
    old: &'a BTreeMap<(String, Entry), Stored>,
    new: &'a BTreeMap<(String, Entry), (Item, Option<i64>)>,
) -> BTreeSet<&'a str> {
    old.keys()
        .chain(new.keys())
        .map(|(carrier, _)| carrier.as_str())
        .collect()
}

/// Compares the pairing of the closed sets (`new`: each entry's item and usage line) with what
/// is stored for their rows (`old`), given the carriers' current heads: what to delete, remove,
/// insert and count. Removals take their positions first, then the items written, each in
/// (carrier, entry) order.
pub fn plan(
    old: &BTreeMap<(String, Entry), Stored>,
    new: &BTreeMap<(String, Entry), (Item, Option<i64>)>,
    touched: &Touched,
    heads: &BTreeMap<String, i64>,
) -> Plan {
    let unchanged = |stored: &Stored, (item, line_id): &(Item, Option<i64>)| {
        stored.item == *item && stored.line_id == *line_id && !touched.refreshed(item)
    };
    let mut plan = Plan::default();
    let next = |carrier_id: &str, drawn: &mut BTreeMap<String, i64>| {
        let head = drawn
            .entry(carrier_id.to_owned())
            .or_insert_with(|| heads.get(carrier_id).copied().unwrap_or(0));
        *head += 1;
        *head
    };
    for (key, stored) in old {
        let kept = new.get(key);
        if kept.is_some_and(|n| unchanged(stored, n)) {
            continue;
        }
        plan.deletes.push(stored.id);
        plan.deltas
            .count(&stored.carrier_id, &stored.item, stored.line_id, -1);
        if kept.is_none() {
            plan.removals.push(Removal {
                carrier_id: key.0.clone(),
                entry: key.1,
                period_time: stored.item.period_time,
                sequence: next(&key.0, &mut plan.heads),
            });
        }
    }
    for (key, pair) in new {
        if old.get(key).is_some_and(|stored| unchanged(stored, pair)) {
            continue;
        }
        let (item, line_id) = *pair;
        plan.deltas.count(&key.0, &item, line_id, 1);
        plan.inserts.push(Insert {
            carrier_id: key.0.clone(),
            item,
            line_id,
            sequence: next(&key.0, &mut plan.heads),
        });
    }
    plan.deltas = std::mem::take(&mut plan.deltas).trimmed();
    plan
}
