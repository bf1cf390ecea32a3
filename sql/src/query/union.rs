//! `UNION ALL`: both sides feed one operator under the left side's names.

use super::*;
use crate::builder::OP;

impl Planner<'_> {
    /// `left UNION ALL right`: both sides' rows, under the left side's
    /// column names. The right side is renamed when its names differ; both
    /// feed one pass-through operator (a union of its input edges).
    pub(crate) fn union_all(&mut self, left: &SetExpr, right: &SetExpr) -> Result<Rel, SqlError> {
        let l = self.body(left)?;
        let r = self.body(right)?;
        let at = right.span().start;
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
        Ok(Rel { uid, columns: l.columns, rowtime, origin: l.origin, qualifiers: Vec::new(), changelog, window: None })
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
