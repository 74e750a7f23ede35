//! Costs and their aggregates. A call's cost is computed from its token
//! counts and the model's prices, as an exact decimal; it is then added to
//! aggregates per UTC day and per agent, model and session (and, for the
//! deployment, per user too) with atomic ADDs, in the same transaction as the
//! record that makes the call counted once (its assistant message, or a call
//! marker). Aggregates are keyed `USAGE#<dimension>#<day>#<value>`, so a date
//! range of one dimension is one query that starts at its first day.
//!
//! The deployment's aggregates are spread over [`SHARDS`] partitions
//! (`USAGE#<shard>`, by call ID) and summed when read: every call writes
//! them, and on DynamoDB concurrent transactions that touch one item cancel
//! each other, so one deployment-wide item would let one call settle at a
//! time.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::models::Prices;
use super::users;
use lambent_core::chat::Usage;
use lambent_core::error::Result;
use lambent_ports::store::MAX_PAGE_SIZE;
use lambent_ports::{Item, ItemStore, Key, Query, StoreCursor, TxOp, Update};

/// The partitions the deployment's aggregates are spread over.
pub const SHARDS: u32 = 16;
/// Where the deployment's aggregates were kept before they were sharded:
/// still read, never written.
const UNSHARDED_PARTITION: &str = "USAGE";

fn deployment_partition(shard: u32) -> String {
    format!("USAGE#{shard}")
}

/// Every partition a deployment-wide report reads.
fn deployment_partitions() -> impl Iterator<Item = String> {
    std::iter::once(UNSHARDED_PARTITION.to_owned()).chain((0..SHARDS).map(deployment_partition))
}
/// The value of the `DAY` dimension, which has one aggregate per day.
const WHOLE_DAY: &str = "-";
/// The value of the `AGENT` dimension for calls made without an agent.
pub const NO_AGENT: &str = "-";

const PER_MILLION: i64 = 1_000_000;

/// What `usage` costs at `prices` (USD per million tokens), exactly.
pub fn cost(usage: &Usage, prices: &Prices) -> Decimal {
    let part = |tokens: u64, per_mtok: Decimal| Decimal::from(tokens) * per_mtok;
    let micro = part(usage.input_tokens, prices.input_per_mtok)
        + part(usage.output_tokens, prices.output_per_mtok)
        + part(usage.cache_read_tokens, prices.cache_read_per_mtok)
        + part(usage.cache_write_tokens, prices.cache_write_per_mtok);
    (micro / Decimal::from(PER_MILLION)).normalize()
}

/// The most a call can cost: every prompt token at the dearest input rate
/// (plain, cache read or cache write) and `max_tokens` of output.
pub fn worst_case(prompt_tokens: u64, max_tokens: u64, prices: &Prices) -> Decimal {
    let dearest_input = prices
        .input_per_mtok
        .max(prices.cache_read_per_mtok)
        .max(prices.cache_write_per_mtok);
    let micro = Decimal::from(prompt_tokens) * dearest_input
        + Decimal::from(max_tokens) * prices.output_per_mtok;
    (micro / Decimal::from(PER_MILLION)).normalize()
}

/// One counted call, as the aggregates see it.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    /// The call's ID: it picks the deployment shard the call counts in.
    pub call_id: &'a str,
    pub owner: &'a str,
    pub agent_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub model: &'a str,
    /// `yyyy-mm-dd` (UTC) of the call.
    pub day: &'a str,
    pub usage: Usage,
    pub cost_usd: Decimal,
}

/// The aggregate dimensions a report can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Day,
    Agent,
    Model,
    Session,
    /// Deployment-wide reports only.
    User,
}

impl Dimension {
    fn tag(self) -> &'static str {
        match self {
            Dimension::Day => "DAY",
            Dimension::Agent => "AGENT",
            Dimension::Model => "MODEL",
            Dimension::Session => "SESSION",
            Dimension::User => "USER",
        }
    }
}

fn aggregate_key(pk: &str, dimension: Dimension, day: &str, value: &str) -> Key {
    Key::new(pk, format!("USAGE#{}#{day}#{value}", dimension.tag()))
}

fn add_call(facts: &CallFacts<'_>) -> Update {
    let u = facts.usage;
    Update::new()
        .add("calls", Decimal::ONE)
        .add("input_tokens", Decimal::from(u.input_tokens))
        .add("output_tokens", Decimal::from(u.output_tokens))
        .add("cache_read_tokens", Decimal::from(u.cache_read_tokens))
        .add("cache_write_tokens", Decimal::from(u.cache_write_tokens))
        .add("cost_usd", facts.cost_usd)
}

/// The ADDs that count one call in every aggregate it belongs to. They must
/// go in one transaction with the call's create-only record.
pub fn aggregate_ops(facts: &CallFacts<'_>) -> Vec<TxOp> {
    let user_pk = users::partition(facts.owner);
    let deployment_pk = deployment_partition(crate::shard_of(facts.call_id, SHARDS));
    let mut keys = Vec::with_capacity(9);
    for pk in [user_pk.as_str(), deployment_pk.as_str()] {
        keys.push(aggregate_key(pk, Dimension::Day, facts.day, WHOLE_DAY));
        keys.push(aggregate_key(
            pk,
            Dimension::Agent,
            facts.day,
            facts.agent_id.unwrap_or(NO_AGENT),
        ));
        keys.push(aggregate_key(pk, Dimension::Model, facts.day, facts.model));
        if let Some(session) = facts.session_id {
            keys.push(aggregate_key(pk, Dimension::Session, facts.day, session));
        }
    }
    keys.push(aggregate_key(
        &deployment_pk,
        Dimension::User,
        facts.day,
        facts.owner,
    ));
    keys.into_iter()
        .map(|key| TxOp::Update {
            key,
            update: add_call(facts),
            condition: None,
        })
        .collect()
}

/// Whose usage a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    User(String),
    Everyone,
}

/// Calls, tokens and cost of one group (or of all of them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.012345")]
    pub cost_usd: Decimal,
}

impl Totals {
    fn add_item(&mut self, item: &Item) {
        let n = |name: &str| {
            use rust_decimal::prelude::ToPrimitive;
            item.get_decimal(name).and_then(|d| d.to_u64()).unwrap_or(0)
        };
        self.calls += n("calls");
        self.input_tokens += n("input_tokens");
        self.output_tokens += n("output_tokens");
        self.cache_read_tokens += n("cache_read_tokens");
        self.cache_write_tokens += n("cache_write_tokens");
        self.cost_usd += item.get_decimal("cost_usd").unwrap_or_default();
    }

    fn add(&mut self, other: &Totals) {
        self.calls += other.calls;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost_usd += other.cost_usd;
    }
}

/// One group of a report: a day, an agent, a model, a session or a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Group {
    /// The day (`yyyy-mm-dd`) or the ID or name; `null` for calls made
    /// without an agent.
    pub key: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The groups of `dimension` between `from` and `to` (days, inclusive), and
/// their sum: the scope's partitions (the user's, or every deployment
/// shard) read at once, one query per page of aggregates starting at `from`.
pub async fn report(
    store: &dyn ItemStore,
    scope: &Scope,
    dimension: Dimension,
    from: &str,
    to: &str,
) -> Result<(Vec<Group>, Totals)> {
    let partitions: Vec<String> = match scope {
        Scope::User(owner) => vec![users::partition(owner)],
        Scope::Everyone => deployment_partitions().collect(),
    };
    let read = futures::future::try_join_all(
        partitions
            .iter()
            .map(|pk| read_partition(store, pk, dimension, from, to)),
    )
    .await?;
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    for partition in read {
        for (group, totals) in partition {
            groups.entry(group).or_default().add(&totals);
        }
    }
    let mut total = Totals::default();
    let groups = groups
        .into_iter()
        .map(|(key, mut totals)| {
            totals.cost_usd = totals.cost_usd.normalize();
            total.add(&totals);
            Group {
                key: (key != NO_AGENT || dimension != Dimension::Agent).then_some(key),
                totals,
            }
        })
        .collect();
    total.cost_usd = total.cost_usd.normalize();
    Ok((groups, total))
}

/// The groups of `dimension` between `from` and `to` in partition `pk`.
async fn read_partition(
    store: &dyn ItemStore,
    pk: &str,
    dimension: Dimension,
    from: &str,
    to: &str,
) -> Result<BTreeMap<String, Totals>> {
    let prefix = format!("USAGE#{}#", dimension.tag());
    // The position just before `from`'s first aggregate.
    let mut after = Some(StoreCursor(format!("{prefix}{from}")));
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    'pages: loop {
        let page = store
            .query(
                Query::partition(pk)
                    .prefix(prefix.as_str())
                    .limit(MAX_PAGE_SIZE)
                    .after(after.take()),
            )
            .await?;
        for item in &page.items {
            let rest = item.key.sk.get(prefix.len()..).unwrap_or_default();
            let Some((day, value)) = rest.split_once('#') else {
                continue;
            };
            if day > to {
                break 'pages;
            }
            let group = match dimension {
                Dimension::Day => day,
                _ => value,
            };
            groups.entry(group.to_owned()).or_default().add_item(item);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn prices(i: &str, o: &str, r: &str, w: &str) -> Prices {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        Prices {
            input_per_mtok: d(i),
            output_per_mtok: d(o),
            cache_read_per_mtok: d(r),
            cache_write_per_mtok: d(w),
        }
    }

    #[test]
    fn cost_is_exact_per_token_category() {
        let usage = Usage {
            input_tokens: 1_234,
            output_tokens: 567,
            cache_read_tokens: 10_000,
            cache_write_tokens: 2_000,
            cache_write_1h_tokens: 500,
        };
        // 1234*3 + 567*15 + 10000*0.30 + 2000*3.75 = 3702 + 8505 + 3000 + 7500 = 22707 micro-dollars
        let c = cost(&usage, &prices("3", "15", "0.30", "3.75"));
        assert_eq!(c, Decimal::from_str("0.022707").unwrap());
        // A price no float can hold: 0.1 + 0.2 must stay 0.3.
        let tiny = Usage {
            input_tokens: 1,
            output_tokens: 2,
            ..Usage::default()
        };
        let c = cost(&tiny, &prices("0.1", "0.1", "0", "0"));
        assert_eq!(c.to_string(), "0.0000003");
    }

    #[test]
    fn worst_case_prices_every_prompt_token_at_the_dearest_input_rate() {
        let w = worst_case(1_000, 100, &prices("3", "15", "0.30", "3.75"));
        // 1000*3.75 + 100*15 = 5250 micro-dollars
        assert_eq!(w, Decimal::from_str("0.00525").unwrap());
        let usage = Usage {
            input_tokens: 1_000,
            output_tokens: 100,
            ..Usage::default()
        };
        assert!(cost(&usage, &prices("3", "15", "0.30", "3.75")) <= w);
    }
}
