//! `UNION ALL`: both sides feed one operator under the left side's names;
//! `INTERSECT` and `EXCEPT` group the tagged rows of both.

use super::*;
use crate::builder::OP;

/// How many rows of a value each side of an INTERSECT or EXCEPT has.
const IN_LEFT: &str = "__in_left";
const IN_RIGHT: &str = "__in_right";
/// How many times a row of an INTERSECT ALL or EXCEPT ALL is written.
const COPIES: &str = "__copies";

impl Planner<'_> {
    /// `left UNION ALL right`: both sides' rows, under the left side's
    /// column names. The right side is renamed when its names differ; both
    /// feed one pass-through operator (a union of its input edges).
    pub(crate) fn union_all(&mut self, left: &SetExpr, right: &SetExpr) -> Result<Rel, SqlError> {
        let l = self.body(left)?;
        let r = self.body(right)?;
        self.union_rels(l, r, right.span().start)
    }

    /// `left INTERSECT right` (`except`: `left EXCEPT right`), distinct:
    /// the rows of both sides tagged with their side and grouped by every
    /// column, kept while the left has the row and the right has it too
    /// (or, for EXCEPT, has it not). The result is updating, as in Flink: a
    /// right row coming later takes an EXCEPT's row back. With `all`
    /// (`INTERSECT ALL`, `EXCEPT ALL`) a row comes as often as the smaller
    /// count of both sides (or as the left's count exceeds the right's):
    /// `replicate` writes each change that many times.
    pub(crate) fn intersect(
        &mut self,
        left: &SetExpr,
        right: &SetExpr,
        except: bool,
        all: bool,
    ) -> Result<Rel, SqlError> {
        let (l, r) = (self.body(left)?, self.body(right)?);
        let tag = |me: &mut Self, rel: Rel, side: (i32, i32)| {
            let mut cols: Vec<Value> = rel.names().map(|n| json!(n)).collect();
            cols.push(json!({"name": IN_LEFT, "expr": side.0.to_string()}));
            cols.push(json!({"name": IN_RIGHT, "expr": side.1.to_string()}));
            if rel.changelog {
                cols.push(json!(OP));
            }
            let uid = me.stateless(&rel, "set-side", "project", json!({"columns": cols}));
            let mut columns = rel.columns.clone();
            columns.extend([Col::typed(IN_LEFT, SqlType::Int), Col::typed(IN_RIGHT, SqlType::Int)]);
            Rel { uid, columns, ..rel }
        };
        let what = match (except, all) {
            (false, false) => "INTERSECT",
            (true, false) => "EXCEPT",
            (false, true) => "INTERSECT ALL",
            (true, true) => "EXCEPT ALL",
        };
        if l.columns.len() != r.columns.len() {
            return Err(SqlError::at(right.span().start, format!("{what} needs as many columns on both sides")));
        }
        let names: Vec<String> = l.names().map(str::to_string).collect();
        let (l, r) = (tag(self, l, (1, 0)), tag(self, r, (0, 1)));
        let both = self.union_rels(l, r, right.span().start)?;
        let meaning = format!("{what}|{names:?}|{}", both.changelog);
        let base = format!("{}.{}-{}", both.origin, what.to_ascii_lowercase().replace(' ', "-"), fingerprint(&meaning));
        let aggregates =
            json!([{"fn": "sum", "column": IN_LEFT, "as": IN_LEFT}, {"fn": "sum", "column": IN_RIGHT, "as": IN_RIGHT}]);
        let config = self.group_config(json!({"key": names, "aggregates": aggregates}), both.changelog);
        let uid = self.b.add(&base, "group_aggregate", config, 0);
        self.b.connect(&both.uid, &uid, Partitioning::Hash, names.clone());
        let (l_n, r_n) = (quoted(IN_LEFT), quoted(IN_RIGHT));
        let keep = if except { format!("{l_n} > 0 AND {r_n} = 0") } else { format!("{l_n} > 0 AND {r_n} > 0") };
        let grouped =
            Rel { uid, rowtime: None, proctime: None, qualifiers: Vec::new(), changelog: true, window: None, ..both };
        let mut cols: Vec<Value> = names.iter().map(|n| json!(n)).collect();
        if all {
            // How many times each row is in the result.
            let copies = if except {
                format!("CASE WHEN {l_n} > {r_n} THEN {l_n} - {r_n} ELSE 0 END")
            } else {
                format!("CASE WHEN {l_n} < {r_n} THEN {l_n} ELSE {r_n} END")
            };
            let mut counted = cols.clone();
            counted.push(json!({"name": COPIES, "expr": copies}));
            counted.push(json!(OP));
            let counted = self.stateless(&grouped, "set-copies", "project", json!({"columns": counted}));
            let config = json!({"count_column": COPIES, "op_column": OP});
            let uid = self.b.add(&format!("{}.set-replicate", self.context), "replicate", config, 0);
            self.b.connect(&counted, &uid, Partitioning::Forward, Vec::new());
            let columns = grouped.columns.iter().filter(|c| c.name != IN_LEFT && c.name != IN_RIGHT).cloned().collect();
            return Ok(Rel { uid, columns, ..grouped });
        }
        let filtered = self.stateless(&grouped, "set-filter", "filter", json!({"predicate": keep}));
        cols.push(json!(OP));
        let filtered = Rel { uid: filtered, ..grouped };
        let uid = self.stateless(&filtered, "set-result", "project", json!({"columns": cols}));
        let columns = filtered.columns.iter().filter(|c| c.name != IN_LEFT && c.name != IN_RIGHT).cloned().collect();
        Ok(Rel { uid, columns, ..filtered })
    }

    /// Both relations' rows under the left's names.
    fn union_rels(&mut self, l: Rel, r: Rel, at: Location) -> Result<Rel, SqlError> {
        // An updating side makes the union updating: the other side's rows
        // are inserts.
        let changelog = l.changelog || r.changelog;
        let (l, r) = (self.as_changelog(l, changelog), self.as_changelog(r, changelog));
        if l.columns.len() != r.columns.len() {
            return Err(SqlError::at(
                at,
                format!(
                    "UNION ALL needs as many columns on both sides: ({}) against ({})",
                    l.names().collect::<Vec<_>>().join(", "),
                    r.names().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        for (a, b) in l.columns.iter().zip(&r.columns) {
            if let (Some(ta), Some(tb)) = (&a.ty, &b.ty) {
                if ta != tb {
                    return Err(SqlError::at(
                        at,
                        format!(
                            "UNION ALL: column `{}` is {ta} on the left and `{}` is {tb} on the right; CAST one side",
                            a.name, b.name
                        ),
                    ));
                }
            }
        }
        let right_uid = if l.names().eq(r.names()) {
            r.uid.clone()
        } else {
            let mut cols: Vec<Value> = l
                .columns
                .iter()
                .zip(&r.columns)
                .map(|(a, b)| json!({"name": a.name, "expr": quoted(&b.name)}))
                .collect();
            if changelog {
                cols.push(json!(OP));
            }
            self.stateless(&r, "union-rename", "project", json!({"columns": cols}))
        };
        let mut names: Vec<Value> = l.columns.iter().map(|c| json!(c.name)).collect();
        if changelog {
            names.push(json!(OP));
        }
        let uid = self.b.add(&format!("{}.union", self.context), "project", json!({"columns": names}), 0);
        // Edges of a union are routed alike: forward when both sides run
        // at the same parallelism, else both rebalanced.
        let parallelism = |uid: &str| self.b.operators.iter().find(|o| o.uid == uid).map(|o| o.parallelism);
        let routing = if parallelism(&l.uid) == Some(0) && parallelism(&right_uid) == Some(0) {
            Partitioning::Forward
        } else {
            Partitioning::Rebalance
        };
        self.b.connect(&l.uid, &uid, routing, Vec::new());
        self.b.connect(&right_uid, &uid, routing, Vec::new());
        let rowtime = l.rowtime.clone().filter(|t| {
            let i = l.columns.iter().position(|c| &c.name == t);
            i.is_some() && r.rowtime.as_deref() == i.map(|i| r.columns[i].name.as_str())
        });
        Ok(Rel {
            uid,
            columns: l.columns,
            rowtime,
            proctime: None,
            origin: l.origin,
            qualifiers: Vec::new(),
            changelog,
            window: None,
        })
    }

    /// `rel` as a changelog when `changelog` is asked for: an append-only
    /// relation's rows become inserts (`+I`).
    fn as_changelog(&mut self, rel: Rel, changelog: bool) -> Rel {
        if !changelog || rel.changelog {
            return rel;
        }
        let mut cols: Vec<Value> = rel.columns.iter().map(|c| json!(c.name)).collect();
        cols.push(json!({"name": OP, "expr": "'+I'"}));
        let uid = self.stateless(&rel, "inserts", "project", json!({"columns": cols}));
        Rel { uid, changelog: true, ..rel }
    }
}
