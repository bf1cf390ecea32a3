//! The SQL each database needs: quoting, upserts, deletes, the epoch table,
//! and which column types take which values.

use super::config::Dialect;
use super::rows::Kind;

impl Dialect {
    /// `name` quoted as an identifier (`schema.table` quoted part by part).
    pub fn quote(self, name: &str) -> String {
        name.split('.')
            .map(|part| match self {
                Dialect::MySql => format!("`{}`", part.replace('`', "``")),
                Dialect::Postgres => format!("\"{}\"", part.replace('"', "\"\"")),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Parameter `n` (1-based) of a statement.
    pub fn param(self, n: usize) -> String {
        match self {
            Dialect::MySql => "?".into(),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// `INSERT INTO table (columns) VALUES (…), … ` for `rows` rows, followed
    /// by the upsert clause when `key` is not empty.
    pub fn insert(self, table: &str, columns: &[String], key: &[usize], rows: usize) -> String {
        let cols: Vec<String> = columns.iter().map(|c| self.quote(c)).collect();
        let mut sql = format!("INSERT INTO {} ({}) VALUES ", self.quote(table), cols.join(", "));
        let mut n = 0;
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            let params: Vec<String> = (0..columns.len())
                .map(|_| {
                    n += 1;
                    self.param(n)
                })
                .collect();
            sql.push('(');
            sql.push_str(&params.join(", "));
            sql.push(')');
        }
        if key.is_empty() {
            return sql;
        }
        let rest: Vec<&String> = (0..columns.len()).filter(|i| !key.contains(i)).map(|i| &cols[i]).collect();
        match self {
            Dialect::MySql => {
                // `VALUES(c)` is what both MariaDB and MySQL take.
                let set: Vec<String> = if rest.is_empty() {
                    vec![format!("{0} = {0}", cols[key[0]])]
                } else {
                    rest.iter().map(|c| format!("{c} = VALUES({c})")).collect()
                };
                sql.push_str(&format!(" ON DUPLICATE KEY UPDATE {}", set.join(", ")));
            }
            Dialect::Postgres => {
                let k: Vec<&String> = key.iter().map(|&i| &cols[i]).collect();
                let k = k.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                if rest.is_empty() {
                    sql.push_str(&format!(" ON CONFLICT ({k}) DO NOTHING"));
                } else {
                    let set: Vec<String> = rest.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
                    sql.push_str(&format!(" ON CONFLICT ({k}) DO UPDATE SET {}", set.join(", ")));
                }
            }
        }
        sql
    }

    /// `DELETE FROM table WHERE (key) IN ((…), …)` for `rows` keys.
    pub fn delete(self, table: &str, key: &[String], rows: usize) -> String {
        let cols: Vec<String> = key.iter().map(|c| self.quote(c)).collect();
        let mut n = 0;
        let tuples: Vec<String> = (0..rows)
            .map(|_| {
                let p: Vec<String> = (0..key.len())
                    .map(|_| {
                        n += 1;
                        self.param(n)
                    })
                    .collect();
                format!("({})", p.join(", "))
            })
            .collect();
        format!("DELETE FROM {} WHERE ({}) IN ({})", self.quote(table), cols.join(", "), tuples.join(", "))
    }

    /// Creates the epoch table if it does not exist.
    pub fn create_epoch_table(self, table: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (sink_id VARCHAR(255) NOT NULL, subtask INTEGER NOT NULL, epoch BIGINT NOT NULL, PRIMARY KEY (sink_id, subtask))",
            self.quote(table)
        )
    }

    /// Reads and locks a subtask's committed epoch (params: sink id, subtask).
    pub fn lock_epoch(self, table: &str) -> String {
        format!(
            "SELECT epoch FROM {} WHERE sink_id = {} AND subtask = {} FOR UPDATE",
            self.quote(table),
            self.param(1),
            self.param(2)
        )
    }

    /// Sets a subtask's committed epoch (params: sink id, subtask, epoch).
    pub fn set_epoch(self, table: &str) -> String {
        let t = self.quote(table);
        match self {
            Dialect::MySql => format!(
                "INSERT INTO {t} (sink_id, subtask, epoch) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE epoch = VALUES(epoch)"
            ),
            Dialect::Postgres => format!(
                "INSERT INTO {t} (sink_id, subtask, epoch) VALUES ($1, $2, $3) ON CONFLICT (sink_id, subtask) DO UPDATE SET epoch = EXCLUDED.epoch"
            ),
        }
    }

    /// The columns of a table and their types (param: table name; in the
    /// connection's current database or schema, or `schema` when given).
    pub fn columns_query(self, qualified: bool) -> &'static str {
        match (self, qualified) {
            (Dialect::MySql, false) => "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (Dialect::MySql, true) => "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (Dialect::Postgres, false) => "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
            (Dialect::Postgres, true) => "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
        }
    }

    /// The columns of each primary key or unique constraint of a table
    /// (params as [`Dialect::columns_query`]): constraint name, column.
    pub fn unique_keys_query(self, qualified: bool) -> &'static str {
        match (self, qualified) {
            (Dialect::MySql, false) => "SELECT CAST(k.CONSTRAINT_NAME AS CHAR), CAST(k.COLUMN_NAME AS CHAR) FROM information_schema.TABLE_CONSTRAINTS c JOIN information_schema.KEY_COLUMN_USAGE k ON k.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = c.CONSTRAINT_NAME AND k.TABLE_NAME = c.TABLE_NAME WHERE c.CONSTRAINT_TYPE IN ('PRIMARY KEY', 'UNIQUE') AND c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME = ?",
            (Dialect::MySql, true) => "SELECT CAST(k.CONSTRAINT_NAME AS CHAR), CAST(k.COLUMN_NAME AS CHAR) FROM information_schema.TABLE_CONSTRAINTS c JOIN information_schema.KEY_COLUMN_USAGE k ON k.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = c.CONSTRAINT_NAME AND k.TABLE_NAME = c.TABLE_NAME WHERE c.CONSTRAINT_TYPE IN ('PRIMARY KEY', 'UNIQUE') AND c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ?",
            (Dialect::Postgres, false) => "SELECT k.constraint_name::text, k.column_name::text FROM information_schema.table_constraints c JOIN information_schema.key_column_usage k ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name AND k.table_name = c.table_name WHERE c.constraint_type IN ('PRIMARY KEY', 'UNIQUE') AND c.table_schema = current_schema() AND c.table_name = $1",
            (Dialect::Postgres, true) => "SELECT k.constraint_name::text, k.column_name::text FROM information_schema.table_constraints c JOIN information_schema.key_column_usage k ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name AND k.table_name = c.table_name WHERE c.constraint_type IN ('PRIMARY KEY', 'UNIQUE') AND c.table_schema = $1 AND c.table_name = $2",
        }
    }

    /// Whether a column of SQL type `sql_type` (as `information_schema`
    /// names it) takes values of `kind`.
    pub fn accepts(self, sql_type: &str, kind: Kind) -> bool {
        let t = sql_type.to_ascii_lowercase();
        let t = t.as_str();
        let integer = matches!(t, "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint");
        let exact = matches!(t, "numeric" | "decimal");
        match kind {
            Kind::Int => integer || exact || matches!(t, "float" | "double" | "real" | "double precision"),
            Kind::Float => exact || matches!(t, "float" | "double" | "real" | "double precision"),
            Kind::Bool => matches!(t, "boolean" | "bool" | "bit") || (self == Dialect::MySql && t == "tinyint"),
            Kind::Text => {
                matches!(t, "char" | "varchar" | "text" | "character varying" | "character" | "bpchar")
                    || (self == Dialect::MySql
                        && matches!(t, "tinytext" | "mediumtext" | "longtext" | "enum" | "set" | "json"))
            }
            Kind::Bytes => {
                matches!(t, "blob" | "tinyblob" | "mediumblob" | "longblob" | "binary" | "varbinary" | "bytea")
            }
            Kind::Timestamp => {
                matches!(t, "timestamp" | "datetime" | "timestamp without time zone" | "timestamp with time zone")
            }
            Kind::Date => t == "date",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn upserts_in_each_dialect() {
        let c = cols(&["name", "window_start", "n"]);
        assert_eq!(
            Dialect::MySql.insert("counts", &c, &[0, 1], 2),
            "INSERT INTO `counts` (`name`, `window_start`, `n`) VALUES (?, ?, ?), (?, ?, ?) ON DUPLICATE KEY UPDATE `n` = VALUES(`n`)"
        );
        assert_eq!(
            Dialect::Postgres.insert("app.counts", &c, &[0, 1], 2),
            "INSERT INTO \"app\".\"counts\" (\"name\", \"window_start\", \"n\") VALUES ($1, $2, $3), ($4, $5, $6) ON CONFLICT (\"name\", \"window_start\") DO UPDATE SET \"n\" = EXCLUDED.\"n\""
        );
        assert_eq!(
            Dialect::Postgres.insert("t", &cols(&["k"]), &[0], 1),
            "INSERT INTO \"t\" (\"k\") VALUES ($1) ON CONFLICT (\"k\") DO NOTHING"
        );
        assert_eq!(
            Dialect::MySql.insert("t", &cols(&["k"]), &[0], 1),
            "INSERT INTO `t` (`k`) VALUES (?) ON DUPLICATE KEY UPDATE `k` = `k`"
        );
        assert_eq!(Dialect::MySql.insert("t", &cols(&["a", "b"]), &[], 1), "INSERT INTO `t` (`a`, `b`) VALUES (?, ?)");
    }

    #[test]
    fn deletes_by_key_and_quoting() {
        assert_eq!(
            Dialect::Postgres.delete("t", &cols(&["a", "b"]), 2),
            "DELETE FROM \"t\" WHERE (\"a\", \"b\") IN (($1, $2), ($3, $4))"
        );
        assert_eq!(Dialect::MySql.quote("we`ird"), "`we``ird`");
        assert_eq!(Dialect::Postgres.quote("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn column_types_take_matching_values() {
        assert!(Dialect::MySql.accepts("BIGINT", Kind::Int));
        assert!(Dialect::MySql.accepts("datetime", Kind::Timestamp));
        assert!(Dialect::Postgres.accepts("timestamp without time zone", Kind::Timestamp));
        assert!(Dialect::Postgres.accepts("character varying", Kind::Text));
        assert!(!Dialect::Postgres.accepts("integer", Kind::Text));
        assert!(!Dialect::MySql.accepts("varchar", Kind::Int));
        assert!(!Dialect::Postgres.accepts("integer", Kind::Float));
        assert!(Dialect::MySql.accepts("tinyint", Kind::Bool));
        assert!(!Dialect::Postgres.accepts("smallint", Kind::Bool));
    }
}
