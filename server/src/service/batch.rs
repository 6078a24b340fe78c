//! The partial-accept batch write (`UploadNumbers`, `ReleaseNumbers`, `IngestCallRecords`,
//! `ReportCallDurations` and `UploadCallDurations`): every item is validated on its own, the
//! valid ones are stored together in one durable commit, and every item gets an answer in the
//! order sent (an invalid item its field violations, a valid one the store's outcome). An
//! invalid item never keeps the valid ones from being stored.

use std::future::Future;

use ocx_api::pb;
use tonic::Status;

use crate::error::{Violations, invalid, store_status};
use crate::store::StoreResult;

/// Checks the item count of a batch write: 1 to `max` items in `field`.
pub(crate) fn batch_len(len: usize, max: usize, field: &str) -> Result<(), Status> {
    if len == 0 {
        return Err(invalid(
            field,
            format!("{field} is empty: send 1 to {max} items"),
        ));
    }
    if len > max {
        return Err(invalid(
            field,
            format!("{len} items exceed the limit of {max} per call; split the batch"),
        ));
    }
    Ok(())
}

/// Validates each of `items` with `parse` (given the item and its path, `field[i]`), stores the
/// valid ones with one call of `store` (none when no item is valid), and answers every item in
/// order with `answer`: its index, the item, and the store's outcome or the item's violations.
pub(crate) async fn accept<I, T, O, R, Fut>(
    items: &[I],
    field: &str,
    parse: impl Fn(&I, &str) -> Result<T, Violations>,
    store: impl FnOnce(Vec<T>) -> Fut,
    answer: impl Fn(usize, &I, Result<O, Violations>) -> R,
) -> Result<Vec<R>, Status>
where
    Fut: Future<Output = StoreResult<Vec<O>>>,
{
    let mut parsed = Vec::with_capacity(items.len());
    let mut valid = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match parse(item, &format!("{field}[{i}]")) {
            Ok(value) => {
                valid.push(value);
                parsed.push(Ok(()));
            }
            Err(violations) => parsed.push(Err(violations)),
        }
    }
    let outcomes = if valid.is_empty() {
        Vec::new()
    } else {
        store(valid).await.map_err(store_status)?
    };
    // The store answers each item it was given, in order; anything else is a bug.
    let mut outcomes = outcomes.into_iter();
    let mut answers = Vec::with_capacity(items.len());
    for (i, (item, parsed)) in items.iter().zip(parsed).enumerate() {
        let outcome = match parsed {
            Ok(()) => match outcomes.next() {
                Some(outcome) => Ok(outcome),
                None => break,
            },
            Err(violations) => Err(violations),
        };
        answers.push(answer(i, item, outcome));
    }
    let extra = outcomes.count();
    if answers.len() != items.len() || extra > 0 {
        tracing::error!(
            items = items.len(),
            answered = answers.len(),
            extra,
            "the store answered a batch with another number of outcomes than valid items"
        );
        return Err(Status::internal("internal error; it has been logged"));
    }
    Ok(answers)
}

/// A rejected item's violations as the wire carries them: the same in one line
/// (`field: description; ...`) for the result's `reason`, and the list.
pub(crate) fn item_violations(violations: Violations) -> (String, Vec<pb::FieldViolation>) {
    let violations: Vec<pb::FieldViolation> = violations
        .into_pairs()
        .into_iter()
        .map(|(field, description)| pb::FieldViolation { field, description })
        .collect();
    let reason = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    (reason, violations)
}
