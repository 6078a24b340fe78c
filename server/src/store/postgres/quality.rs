//! The quality aggregates (`quality_groups`, `quality_cells`) on PostgreSQL: the reads and
//! writes of [`crate::store::quality`], as on SQLite.
//!
//! Several replicas write at once. A write changes the cells of the carriers whose records it
//! writes or deletes, and it holds those carriers' head rows locked (`carrier_heads`, taken
//! before the records are written, and again here, in carrier order, which costs nothing when
//! held): two writes of one carrier's cells run one after the other, so a cell read here is
//! the cell the write replaces.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;

use super::pool::{PgError, PgResult};
use crate::domain::QualityQuery;
use crate::store::StoreError;
use crate::store::quality::{CellKey, Changes, Figures, Group, QualityRow, Summary, cuts};

/// The error for a cell that does not decode.
fn malformed(carrier_id: &str) -> PgError {
    PgError::Store(StoreError::Internal(format!(
        "a quality cell of carrier {carrier_id} does not decode"
    )))
}

/// Writes what `changes` adds to and takes from each cell: a cell that comes to no call is
/// deleted. Three statements for all the cells: read, write, delete.
pub async fn apply(db: &impl GenericClient, changes: Changes) -> PgResult<()> {
    let cells = changes.sorted();
    if cells.is_empty() {
        return Ok(());
    }
    let mut carriers: Vec<&str> = cells.iter().map(|((c, ..), _)| c.as_str()).collect();
    carriers.dedup();
    super::pairing::lock_heads(db, &carriers).await?;
    let ids = group_ids(db, &cells).await?;
    let (mut carrier, mut level, mut bucket, mut group) = (vec![], vec![], vec![], vec![]);
    for ((c, l, b, g), _) in &cells {
        carrier.push(c.as_str());
        level.push(i64::from(*l));
        bucket.push(*b);
        group.push(ids[&(c.clone(), g.clone())]);
    }
    let stmt = db
        .prepare_cached(
            "SELECT q.carrier_id, q.level, q.bucket, q.group_id, q.figures
               FROM quality_cells q
               JOIN unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
                    AS u(carrier_id, level, bucket, group_id)
                 ON (q.carrier_id, q.level, q.bucket, q.group_id)
                    = (u.carrier_id, u.level, u.bucket, u.group_id)",
        )
        .await?;
    let mut stored: HashMap<(String, i64, i64, i64), Vec<u8>> = HashMap::new();
    for row in db
        .query(&stmt, &[&carrier, &level, &bucket, &group])
        .await?
    {
        stored.insert((row.get(0), row.get(1), row.get(2), row.get(3)), row.get(4));
    }
    let (mut written, mut emptied) = (Cells::default(), Cells::default());
    for (i, ((carrier_id, _, _, _), change)) in cells.iter().enumerate() {
        let key = (carrier_id.clone(), level[i], bucket[i], group[i]);
        let mut figures = match stored.get(&key) {
            Some(bytes) => Figures::decode(bytes).ok_or_else(|| malformed(carrier_id))?,
            None => Figures::default(),
        };
        figures.add(change, 1);
        if figures.calls() <= 0 {
            emptied.push(&key, Vec::new());
        } else {
            written.push(&key, figures.encode());
        }
    }
    if !written.carrier.is_empty() {
        let stmt = db
            .prepare_cached(
                "INSERT INTO quality_cells (carrier_id, level, bucket, group_id, figures)
                 SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
                                      $5::BYTEA[])
                 ON CONFLICT (carrier_id, level, bucket, group_id)
                 DO UPDATE SET figures = excluded.figures",
            )
            .await?;
        db.execute(
            &stmt,
            &[
                &written.carrier,
                &written.level,
                &written.bucket,
                &written.group,
                &written.figures,
            ],
        )
        .await?;
    }
    if !emptied.carrier.is_empty() {
        let stmt = db
            .prepare_cached(
                "DELETE FROM quality_cells q
                  USING unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
                        AS u(carrier_id, level, bucket, group_id)
                  WHERE (q.carrier_id, q.level, q.bucket, q.group_id)
                        = (u.carrier_id, u.level, u.bucket, u.group_id)",
            )
            .await?;
        db.execute(
            &stmt,
            &[
                &emptied.carrier,
                &emptied.level,
                &emptied.bucket,
                &emptied.group,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Cells to write, one array per column.
#[derive(Default)]
struct Cells {
    carrier: Vec<String>,
    level: Vec<i64>,
    bucket: Vec<i64>,
    group: Vec<i64>,
    figures: Vec<Vec<u8>>,
}

impl Cells {
    fn push(&mut self, (c, l, b, g): &(String, i64, i64, i64), figures: Vec<u8>) {
        self.carrier.push(c.clone());
        self.level.push(*l);
        self.bucket.push(*b);
        self.group.push(*g);
        self.figures.push(figures);
    }
}

/// The ids of the cells' groups, created if new (`ON CONFLICT DO NOTHING`, then read: a group
/// another replica created meanwhile is found).
async fn group_ids(
    db: &impl GenericClient,
    cells: &[(CellKey, Figures)],
) -> PgResult<HashMap<(String, Group), i64>> {
    let mut wanted: Vec<(String, Group)> = cells
        .iter()
        .map(|((c, _, _, g), _)| (c.clone(), g.clone()))
        .collect();
    wanted.sort();
    wanted.dedup();
    let column = |f: fn(&(String, Group)) -> String| wanted.iter().map(f).collect::<Vec<_>>();
    let number = |f: fn(&Group) -> i32| {
        wanted
            .iter()
            .map(|(_, g)| i64::from(f(g)))
            .collect::<Vec<_>>()
    };
    let carrier = column(|w| w.0.clone());
    let trunk = column(|w| w.1.trunk_fqdn.clone());
    let country = column(|w| w.1.usage_country_code.clone());
    let codec = column(|w| w.1.codec.clone());
    let context = number(|g| g.destination_context);
    let call_type = number(|g| g.call_type);
    let direction = number(|g| g.direction);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &carrier, &trunk, &country, &context, &call_type, &direction, &codec,
    ];
    let stmt = db
        .prepare_cached(
            "INSERT INTO quality_groups (carrier_id, trunk_fqdn, usage_country_code,
                                         destination_context, call_type, direction, codec)
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[],
                                  $5::BIGINT[], $6::BIGINT[], $7::TEXT[])
             ON CONFLICT DO NOTHING",
        )
        .await?;
    db.execute(&stmt, &params).await?;
    let stmt = db
        .prepare_cached(
            "SELECT q.id, q.carrier_id, q.trunk_fqdn, q.usage_country_code,
                    q.destination_context, q.call_type, q.direction, q.codec
               FROM quality_groups q
               JOIN unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[],
                           $6::BIGINT[], $7::TEXT[])
                    AS u(carrier_id, trunk_fqdn, usage_country_code, destination_context,
                         call_type, direction, codec)
                 ON (q.carrier_id, q.trunk_fqdn, q.usage_country_code, q.destination_context,
                     q.call_type, q.direction, q.codec)
                    = (u.carrier_id, u.trunk_fqdn, u.usage_country_code, u.destination_context,
                       u.call_type, u.direction, u.codec)",
        )
        .await?;
    Ok(db
        .query(&stmt, &params)
        .await?
        .iter()
        .map(|r| ((r.get(1), group_at(r, 2)), r.get(0)))
        .collect())
}

/// The group in columns `at..at + 6` of `r`.
fn group_at(r: &tokio_postgres::Row, at: usize) -> Group {
    let code = |i: usize| i32::try_from(r.get::<_, i64>(i)).unwrap_or_default();
    Group {
        trunk_fqdn: r.get(at),
        usage_country_code: r.get(at + 1),
        destination_context: code(at + 2),
        call_type: code(at + 3),
        direction: code(at + 4),
        codec: r.get(at + 5),
    }
}

/// The summary's rows: for one carrier, or for every carrier with cells.
pub async fn summary(db: &impl GenericClient, q: &QualityQuery) -> PgResult<Vec<QualityRow>> {
    let carriers: Vec<String> = match &q.carrier_id {
        Some(c) => vec![c.clone()],
        None => db
            .query("SELECT DISTINCT carrier_id FROM quality_groups", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    let mut summary = Summary::new(q);
    let groups_stmt = db
        .prepare_cached(
            "SELECT id, trunk_fqdn, usage_country_code, destination_context, call_type,
                    direction, codec
               FROM quality_groups WHERE carrier_id = $1",
        )
        .await?;
    let cells_stmt = db
        .prepare_cached(
            "SELECT bucket, group_id, figures FROM quality_cells
              WHERE carrier_id = $1 AND level = $2 AND bucket >= $3 AND bucket < $4",
        )
        .await?;
    for carrier_id in &carriers {
        let groups: HashMap<i64, Group> = db
            .query(&groups_stmt, &[carrier_id])
            .await?
            .iter()
            .map(|r| (r.get(0), group_at(r, 1)))
            .collect();
        for (level, from, to) in cuts(q) {
            let level = i64::from(level);
            for row in db
                .query(&cells_stmt, &[carrier_id, &level, &from, &to])
                .await?
            {
                let (bucket, group_id): (i64, i64) = (row.get(0), row.get(1));
                let figures: &[u8] = row.get(2);
                let group = groups.get(&group_id).ok_or_else(|| malformed(carrier_id))?;
                summary
                    .add(level as i32, bucket, group, figures)
                    .ok_or_else(|| malformed(carrier_id))?;
            }
        }
    }
    Ok(summary.rows().map_err(StoreError::from)?)
}
