//! The tables of Synapse's schema roomcache reads, and the query that asks
//! whether roomcache's role may read them. Part of [`super`]: every SQL
//! string against Synapse's schema.

use super::Query;

/// Every table of Synapse's schema that a query of this module reads, in
/// alphabetical order: what roomcache's read-only role needs `SELECT` on.
/// Start-up checks each of them ([`TABLE_ACCESS`]); a test checks that the
/// queries read exactly these and that docs/synapse.md grants exactly these.
pub(crate) const SYNAPSE_TABLES: [&str; 15] = [
    "account_data",
    "cache_invalidation_stream_by_instance",
    "current_state_delta_stream",
    "event_json",
    "events",
    "ex_outlier_stream",
    "local_current_membership",
    "redactions",
    "rejections",
    "room_account_data",
    "room_memberships",
    "room_tags",
    "room_tags_revisions",
    "rooms",
    "stream_positions",
];

/// Every sequence of Synapse's schema a query of this module reads (the
/// highest position each followed stream has allocated), alphabetically:
/// roomcache's role needs `SELECT` on them too, checked and documented as
/// the tables are.
pub(crate) const SYNAPSE_SEQUENCES: [&str; 3] = [
    "account_data_sequence",
    "cache_invalidation_stream_seq",
    "events_stream_seq",
];

/// Reads, for each table (or sequence) named in `$1`, the session's role, whether the
/// table is found in the search path (a missing table, or a schema the role
/// has no `USAGE` on, is not) and whether the role may `SELECT` from it.
pub(crate) const TABLE_ACCESS: Query = Query {
    name: "which of Synapse's tables the role may read",
    sql: "SELECT current_user::text, t.name, to_regclass(t.name) IS NOT NULL,
                 COALESCE(has_table_privilege(to_regclass(t.name), 'SELECT'), false)
          FROM UNNEST($1::text[]) AS t(name) ORDER BY t.name",
    columns: &[
        "current_user",
        "table name",
        "found (to_regclass)",
        "readable (has_table_privilege)",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The relations this module's SQL reads rows of (its source before
    /// the tests; names a query defines itself, `WITH [RECURSIVE] name`,
    /// left out).
    fn relations_in_queries() -> std::collections::BTreeSet<String> {
        let source = [
            include_str!("mod.rs"),
            include_str!("forgets.rs"),
            include_str!("positions.rs"),
            include_str!("tables.rs"),
        ]
        .map(|text| text.split("#[cfg(test)]").next().unwrap_or_default())
        .concat();
        let words: Vec<&str> = source
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let defined: std::collections::BTreeSet<&str> = words
            .windows(2)
            .filter(|pair| pair[0] == "WITH" || pair[0] == "RECURSIVE")
            .map(|pair| pair[1])
            .collect();
        words
            .windows(2)
            .filter(|pair| pair[0] == "FROM" || pair[0] == "JOIN")
            .map(|pair| pair[1])
            .filter(|word| word.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .filter(|word| !defined.contains(word))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_table_and_sequence_lists_are_exactly_what_the_queries_read() {
        let listed: std::collections::BTreeSet<String> = SYNAPSE_TABLES
            .iter()
            .chain(&SYNAPSE_SEQUENCES)
            .map(|t| t.to_string())
            .collect();
        assert_eq!(relations_in_queries(), listed);
        let mut sorted = SYNAPSE_TABLES;
        sorted.sort_unstable();
        assert_eq!(sorted, SYNAPSE_TABLES);
        let mut sorted = SYNAPSE_SEQUENCES;
        sorted.sort_unstable();
        assert_eq!(sorted, SYNAPSE_SEQUENCES);
    }

    /// docs/synapse.md's read-only role (section B.1) grants `SELECT` on
    /// exactly the tables roomcache reads.
    #[test]
    fn the_documented_grants_are_exactly_the_tables_read() {
        let doc = include_str!("../../../docs/synapse.md");
        let grant = doc
            .split("GRANT SELECT ON")
            .nth(1)
            .and_then(|rest| rest.split("TO roomcache_reader").next())
            .expect("docs/synapse.md grants SELECT ON ... TO roomcache_reader");
        let documented: std::collections::BTreeSet<String> =
            grant.split(',').map(|t| t.trim().to_owned()).collect();
        let listed: std::collections::BTreeSet<String> =
            SYNAPSE_TABLES.iter().map(|t| t.to_string()).collect();
        assert_eq!(documented, listed);
        assert!(doc.contains(&format!(
            "These {} tables are all roomcache reads",
            SYNAPSE_TABLES.len()
        )));
        let sequences = doc
            .split("GRANT SELECT ON SEQUENCE")
            .nth(1)
            .and_then(|rest| rest.split("TO roomcache_reader").next())
            .expect("docs/synapse.md grants SELECT ON SEQUENCE ... TO roomcache_reader");
        let documented: std::collections::BTreeSet<String> =
            sequences.split(',').map(|t| t.trim().to_owned()).collect();
        let listed: std::collections::BTreeSet<String> =
            SYNAPSE_SEQUENCES.iter().map(|t| t.to_string()).collect();
        assert_eq!(documented, listed);
    }
}
