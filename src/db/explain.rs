//! `EXPLAIN (FORMAT JSON)` around a diesel query on PostgreSQL, with its bound
//! values: the planner's row estimate for a filter, where counting the rows
//! would cost a scan of all of them.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Text;

/// A query, explained.
pub struct Explain<Q>(pub Q);

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql("EXPLAIN (FORMAT JSON) ");
        self.0.walk_ast(out.reborrow())
    }
}

impl<Q> Query for Explain<Q> {
    type SqlType = Text;
}

/// The top node's estimated rows of an `EXPLAIN (FORMAT JSON)` answer; 0 when it
/// cannot be read.
pub fn estimated_rows(plan: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(plan)
        .ok()
        .and_then(|v| v.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64())
        .map_or(0, |rows| rows as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_nodes_estimate_is_read() {
        let plan = r#"[{"Plan": {"Node Type": "Index Only Scan", "Plan Rows": 2000123, "Plans": []}}]"#;
        assert_eq!(estimated_rows(plan), 2_000_123);
        assert_eq!(estimated_rows("not json"), 0);
    }
}
