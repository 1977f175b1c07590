//! Hand-written SQL that diesel may prepare once per connection and reuse.
//!
//! diesel never caches `sql_query`, so a statement sent through it is parsed and planned on
//! every call; on PostgreSQL, planning the claim costs more than running it. A [`Statement`]
//! is a fixed SQL text with `$?` where each value goes: diesel writes the backend's own
//! placeholder there (`$1` or `?`) and caches the prepared statement by its text.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Text, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// A value bound to a `$?` of a [`Statement`].
pub(crate) enum Value<'a> {
    Int(i64),
    Text(&'a str),
}

/// A fixed SQL text with values for its `$?` markers, in order.
pub(crate) struct Statement<'a> {
    sql: &'static str,
    values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    pub(crate) fn new(sql: &'static str, values: Vec<Value<'a>>) -> Self {
        debug_assert_eq!(
            sql.matches("$?").count(),
            values.len(),
            "one value per $? in {sql}"
        );
        Statement { sql, values }
    }
}

impl<DB> QueryFragment<DB> for Statement<'_>
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Text>,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut parts = self.sql.split("$?");
        out.push_sql(parts.next().unwrap_or_default());
        for (part, value) in parts.zip(&self.values) {
            match value {
                Value::Int(v) => out.push_bind_param::<BigInt, i64>(v)?,
                Value::Text(s) => out.push_bind_param::<Text, str>(s)?,
            }
            out.push_sql(part);
        }
        Ok(())
    }
}

impl QueryId for Statement<'_> {
    type QueryId = ();
    // Cached by its SQL text, which is fixed.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Statement<'_> {}
