//! The `nexmark` connector: Nexmark's event generator as a table, in the
//! layout of the Nexmark project's Flink table (`event_type` and one `ROW`
//! per kind of event), run by the `nexmark_source` operator.

use serde_json::{json, Map, Value};

use super::{physical, Options};
use crate::builder::Col;
use crate::error::{did_you_mean, SqlError};
use crate::parse::TableDef;
use crate::types::SqlType;

/// Options of the `nexmark` connector: the Nexmark project's names, and
/// Weir's `base-time`.
pub const OPTIONS: &[&str] = &[
    "connector",
    "events.num",
    "first-event.rate",
    "next-event.rate",
    "person.proportion",
    "auction.proportion",
    "bid.proportion",
    "base-time",
];

/// The generator's columns and their types.
fn columns() -> Vec<(&'static str, SqlType)> {
    use SqlType::{BigInt, String as Str, Timestamp};
    let row =
        |fields: &[(&str, SqlType)]| SqlType::Row(fields.iter().map(|(n, t)| (n.to_string(), t.clone())).collect());
    vec![
        ("event_type", SqlType::Int),
        (
            "person",
            row(&[
                ("id", BigInt),
                ("name", Str),
                ("emailAddress", Str),
                ("creditCard", Str),
                ("city", Str),
                ("state", Str),
                ("dateTime", Timestamp),
                ("extra", Str),
            ]),
        ),
        (
            "auction",
            row(&[
                ("id", BigInt),
                ("itemName", Str),
                ("description", Str),
                ("initialBid", BigInt),
                ("reserve", BigInt),
                ("dateTime", Timestamp),
                ("expires", Timestamp),
                ("seller", BigInt),
                ("category", BigInt),
                ("extra", Str),
            ]),
        ),
        (
            "bid",
            row(&[
                ("auction", BigInt),
                ("bidder", BigInt),
                ("price", BigInt),
                ("channel", Str),
                ("url", Str),
                ("dateTime", Timestamp),
                ("extra", Str),
            ]),
        ),
    ]
}

/// Whether a declared type reads what the generator gives: the same type,
/// or a `ROW` declaring some of its fields, each of a type that reads.
fn reads(declared: &SqlType, given: &SqlType) -> Result<(), String> {
    match (declared, given) {
        (SqlType::Row(want), SqlType::Row(have)) => {
            for (n, t) in want {
                let Some((_, h)) = have.iter().find(|(m, _)| m == n) else {
                    return Err(format!("has no field `{n}`{}", did_you_mean(n, have.iter().map(|(m, _)| m.as_str()))));
                };
                reads(t, h).map_err(|e| format!("field `{n}` {e}"))?;
            }
            Ok(())
        }
        (d, g) if d == g => Ok(()),
        (d, g) => Err(format!("is {g}, declared {d}")),
    }
}

/// The `nexmark_source` configuration of table `t`, and its columns.
pub fn source(t: &TableDef, opts: &mut Options<'_>) -> Result<(Map<String, Value>, Vec<Col>), SqlError> {
    let mut config = Map::new();
    let keys = [
        ("events.num", "events"),
        ("first-event.rate", "first_event_rate"),
        ("next-event.rate", "next_event_rate"),
        ("person.proportion", "person_proportion"),
        ("auction.proportion", "auction_proportion"),
        ("bid.proportion", "bid_proportion"),
        ("base-time", "base_time_ms"),
    ];
    for (option, key) in keys {
        if let Some((v, at)) = opts.take(option) {
            let n: u64 = v.trim().parse().map_err(|_| SqlError::at(at, format!("'{option}' is a whole number")))?;
            // Nexmark's `events.num` = 0 is an endless stream.
            if !(option == "events.num" && n == 0) {
                config.insert(key.into(), json!(n));
            }
        }
    }
    let given = columns();
    let mut out = Vec::new();
    for (n, ty, _) in physical(t) {
        let Some((_, g)) = given.iter().find(|(c, _)| *c == n) else {
            return Err(SqlError::at(
                t.name.span.start,
                format!(
                    "the nexmark connector has no column `{n}`{}; it produces {}",
                    did_you_mean(&n, given.iter().map(|c| c.0)),
                    given.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        reads(&ty, g).map_err(|e| SqlError::at(t.name.span.start, format!("nexmark column `{n}` {e}")))?;
        out.push(Col::typed(n, ty));
    }
    // The generator's columns, as declared where they are (the source then
    // keeps the declared ones).
    let columns = given
        .into_iter()
        .map(|(n, t)| out.iter().find(|c| c.name == n).cloned().unwrap_or_else(|| Col::typed(n, t)))
        .collect();
    Ok((config, columns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_rows_may_hold_some_fields_of_the_right_types() {
        let given = columns();
        let person = &given[1].1;
        let some = SqlType::Row(vec![("id".into(), SqlType::BigInt), ("dateTime".into(), SqlType::Timestamp)]);
        assert!(reads(&some, person).is_ok());
        let wrong = SqlType::Row(vec![("id".into(), SqlType::String)]);
        assert_eq!(reads(&wrong, person).unwrap_err(), "field `id` is BIGINT, declared STRING");
        let typo = SqlType::Row(vec![("emailadress".into(), SqlType::String)]);
        assert!(reads(&typo, person).unwrap_err().contains("did you mean `emailAddress`"));
    }
}
