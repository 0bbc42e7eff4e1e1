//! Whether roomcache's role can read every table of Synapse's it reads
//! ([`super::queries::SYNAPSE_TABLES`]) and every sequence
//! ([`super::queries::SYNAPSE_SEQUENCES`]), and the `GRANT` that is missing
//! when not.
//!
//! Owns: the check at start-up (source mode refuses to start without every
//! grant) and the explanation the source's health gives when a query is
//! refused. May not touch: Synapse's tables beyond asking Postgres about
//! privileges.

use super::queries::{SYNAPSE_SEQUENCES, SYNAPSE_TABLES, TABLE_ACCESS};
use super::{SourceDatabase, SourceError};

/// A table roomcache reads and its role cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    pub(crate) table: String,
    /// Not found in the search path: missing, or in a schema the role has
    /// no `USAGE` on.
    pub(crate) not_found: bool,
}

/// What the role cannot read, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccessReport {
    pub(crate) role: String,
    pub(crate) unreadable: Vec<Unreadable>,
}

/// Asks Postgres which of the tables and sequences roomcache reads the
/// session's role cannot read.
pub(crate) async fn check_tables(source: &SourceDatabase) -> Result<AccessReport, SourceError> {
    let tables: Vec<&str> = SYNAPSE_TABLES
        .iter()
        .chain(&SYNAPSE_SEQUENCES)
        .copied()
        .collect();
    let rows = source.rows(&TABLE_ACCESS, &[&tables]).await?;
    let mut report = AccessReport {
        role: String::new(),
        unreadable: Vec::new(),
    };
    for row in &rows {
        report.role = row.column(0)?;
        let (found, readable): (bool, bool) = (row.column(2)?, row.column(3)?);
        if !readable {
            report.unreadable.push(Unreadable {
                table: row.column(1)?,
                not_found: !found,
            });
        }
    }
    Ok(report)
}

impl AccessReport {
    /// What is missing and the statement that grants it; `None` when every
    /// table is readable.
    pub(crate) fn explain(&self) -> Option<String> {
        if self.unreadable.is_empty() {
            return None;
        }
        let role = quote_identifier(&self.role);
        let names = |not_found: bool| -> Vec<&str> {
            self.unreadable
                .iter()
                .filter(|u| u.not_found == not_found)
                .map(|u| u.table.as_str())
                .collect()
        };
        let (denied, not_found) = (names(false), names(true));
        let (sequences, tables): (Vec<&str>, Vec<&str>) = denied
            .into_iter()
            .partition(|name| SYNAPSE_SEQUENCES.contains(name));
        let mut parts = Vec::new();
        for (names, kind) in [(tables, ""), (sequences, "SEQUENCE ")] {
            if !names.is_empty() {
                parts.push(format!(
                    "no SELECT privilege on {} (as a superuser, in Synapse's database: GRANT SELECT ON {kind}{} TO {role};)",
                    names.join(", "),
                    names.join(", ")
                ));
            }
        }
        if !not_found.is_empty() {
            parts.push(format!(
                "{} not found: not Synapse's database, a Synapse version without {}, or no USAGE on \
                 Synapse's schema (GRANT USAGE ON SCHEMA public TO {role};)",
                not_found.join(", "),
                if not_found.len() == 1 { "it" } else { "them" }
            ));
        }
        Some(format!(
            "role {role} cannot read {} of the {} tables and {} sequences of Synapse's that \
             roomcache reads: {}",
            self.unreadable.len(),
            SYNAPSE_TABLES.len(),
            SYNAPSE_SEQUENCES.len(),
            parts.join("; ")
        ))
    }
}

/// A role name as SQL writes it: bare when it is a plain lower-case
/// identifier, else double-quoted.
fn quote_identifier(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_explanation_names_each_table_and_its_grant() {
        let report = AccessReport {
            role: "roomcache_reader".into(),
            unreadable: vec![
                Unreadable {
                    table: "room_account_data".into(),
                    not_found: false,
                },
                Unreadable {
                    table: "room_tags".into(),
                    not_found: false,
                },
                Unreadable {
                    table: "ex_outlier_stream".into(),
                    not_found: true,
                },
                Unreadable {
                    table: "events_stream_seq".into(),
                    not_found: false,
                },
            ],
        };
        assert_eq!(
            report.explain().unwrap(),
            "role roomcache_reader cannot read 4 of the 15 tables and 3 sequences of Synapse's \
             that roomcache reads: no SELECT privilege on room_account_data, room_tags (as a \
             superuser, in Synapse's database: GRANT SELECT ON room_account_data, room_tags TO \
             roomcache_reader;); no SELECT privilege on events_stream_seq (as a superuser, in \
             Synapse's database: GRANT SELECT ON SEQUENCE events_stream_seq TO \
             roomcache_reader;); ex_outlier_stream not found: not Synapse's database, a Synapse \
             version without it, or no USAGE on Synapse's schema (GRANT USAGE ON SCHEMA public \
             TO roomcache_reader;)"
        );
        let fine = AccessReport {
            role: "Reader".into(),
            unreadable: vec![],
        };
        assert_eq!(fine.explain(), None);
        assert_eq!(quote_identifier("Reader \"x\""), "\"Reader \"\"x\"\"\"");
    }
}
