//! Costs and their aggregates. A call's cost is computed from its token
//! counts and the model's prices, as an exact decimal. The call's settle
//! writes one **pending entry** (its usage, its day, agent, model, session
//! and owner) in the same transaction as the record that makes the call
//! counted once (its assistant message, or a call marker). A **fold** (the
//! sweeper's, and in `lambent serve` a task every few seconds) later adds pending
//! entries to the aggregates, per UTC day and per agent, model and session
//! (and, for the deployment, per user too), and deletes them, in one
//! transaction. Aggregates are keyed `USAGE#<dimension>#<day>#<value>`, so a
//! date range of one dimension is one query that starts at its first day.
//!
//! So a call writes one item for its usage instead of nine: the settle stays
//! small (on DynamoDB, 2 write units instead of 18), and a fold adds a batch
//! of calls to each aggregate once.
//!
//! The deployment's aggregates and the pending entries are spread over
//! [`SHARDS`] partitions (`USAGE#<shard>`, by call ID), summed when read, so
//! no item is written by every call (on DynamoDB, concurrent transactions
//! that touch one item cancel each other). A report reads the folded
//! aggregates and the pending entries; each shard's fold count
//! (`USAGE#<shard>/FOLDS`), read before and after, tells it that no fold
//! moved entries between the two reads, so a report is exact whenever it
//! is read.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::models::Prices;
use super::users;
use lambent_core::chat::Usage;
use lambent_core::error::{Error, Result};
use lambent_ports::store::{Condition, MAX_PAGE_SIZE, MAX_TRANSACTION_ITEMS};
use lambent_ports::{Item, ItemStore, Key, Query, StoreCursor, TxOp, Update};

/// The partitions the deployment's aggregates and the pending entries are
/// spread over.
pub const SHARDS: u32 = 16;
/// The sort-key prefix of a pending entry: `PENDING#<owner>#<call_id>`.
const PENDING: &str = "PENDING#";
/// The sort key of a shard's fold count.
const FOLDS: &str = "FOLDS";
/// Pending entries a fold reads of each shard at a time; it commits them in
/// transactions of at most 100 items (their aggregates, their deletes and
/// the fold counts).
const FOLD_PAGE: usize = 40;
/// Reads of a report that a fold may disturb, before it gives up.
const REPORT_ATTEMPTS: u32 = 5;
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

/// The write that counts one call: its pending entry, in the shard of its
/// call ID. It must go in one transaction with the call's create-only
/// record; a fold adds it to the aggregates later.
pub fn pending_op(facts: &CallFacts<'_>) -> TxOp {
    let u = facts.usage;
    let mut item = Item::new(Key::new(
        deployment_partition(crate::shard_of(facts.call_id, SHARDS)),
        format!("{PENDING}{}#{}", facts.owner, facts.call_id),
    ))
    .with("owner", facts.owner)
    .with("agent", facts.agent_id.unwrap_or(NO_AGENT))
    .with("model", facts.model)
    .with("day", facts.day)
    .with("calls", Decimal::ONE)
    .with("input_tokens", Decimal::from(u.input_tokens))
    .with("output_tokens", Decimal::from(u.output_tokens))
    .with("cache_read_tokens", Decimal::from(u.cache_read_tokens))
    .with("cache_write_tokens", Decimal::from(u.cache_write_tokens))
    .with("cost_usd", facts.cost_usd);
    if let Some(session) = facts.session_id {
        item = item.with("session", session);
    }
    TxOp::Put {
        item,
        condition: None,
    }
}

/// A pending entry, as a fold and a report read it.
struct Pending {
    owner: String,
    agent: String,
    model: String,
    day: String,
    session: Option<String>,
    totals: Totals,
}

impl Pending {
    fn of(item: &Item) -> Result<Pending> {
        let mut totals = Totals::default();
        totals.add_item(item);
        Ok(Pending {
            owner: crate::text(item, "owner")?,
            agent: crate::text(item, "agent")?,
            model: crate::text(item, "model")?,
            day: crate::text(item, "day")?,
            session: crate::opt_text(item, "session"),
            totals,
        })
    }

    /// The group of `dimension` it counts in, in the user's partition
    /// (`deployment`: false) or the deployment's; `None` where it has no
    /// aggregate (a call without a session; users, per user).
    fn group(&self, dimension: Dimension, deployment: bool) -> Option<&str> {
        match dimension {
            Dimension::Day => Some(WHOLE_DAY),
            Dimension::Agent => Some(&self.agent),
            Dimension::Model => Some(&self.model),
            Dimension::Session => self.session.as_deref(),
            Dimension::User => deployment.then_some(self.owner.as_str()),
        }
    }

    /// Every aggregate it is added to: the deployment's (in
    /// `deployment_pk`, the shard its fold writes them in) and, if the user
    /// still exists, the user's (a deleted user's partition stays empty).
    fn aggregate_keys(&self, deployment_pk: &str, user_exists: bool) -> Vec<Key> {
        let user_pk = users::partition(&self.owner);
        let mut keys = Vec::with_capacity(9);
        let partitions = [(user_pk.as_str(), false), (deployment_pk, true)];
        let partitions = match user_exists {
            true => &partitions[..],
            false => &partitions[1..],
        };
        for &(pk, deployment) in partitions {
            for dimension in DIMENSIONS {
                if let Some(value) = self.group(dimension, deployment) {
                    keys.push(aggregate_key(pk, dimension, &self.day, value));
                }
            }
        }
        keys
    }
}

const DIMENSIONS: [Dimension; 5] = [
    Dimension::Day,
    Dimension::Agent,
    Dimension::Model,
    Dimension::Session,
    Dimension::User,
];

fn add_totals(totals: &Totals) -> Update {
    Update::new()
        .add("calls", Decimal::from(totals.calls))
        .add("input_tokens", Decimal::from(totals.input_tokens))
        .add("output_tokens", Decimal::from(totals.output_tokens))
        .add("cache_read_tokens", Decimal::from(totals.cache_read_tokens))
        .add(
            "cache_write_tokens",
            Decimal::from(totals.cache_write_tokens),
        )
        .add("cost_usd", totals.cost_usd)
}

fn folds_key(shard: u32) -> Key {
    Key::new(deployment_partition(shard), FOLDS)
}

/// Folds up to `max` pending entries into the aggregates, a transaction per
/// batch of entries from every shard: the aggregates' ADDs (the
/// deployment's in the shard of the batch's first entry: a report sums the
/// shards), the entries' deletes (each on condition that it still exists,
/// so two folds of one entry cannot both land) and the fold count of each
/// shard it takes entries from. Returns how many were folded; stops early,
/// without an error, when another fold got to an entry first.
pub async fn fold(store: &dyn ItemStore, max: usize) -> Result<usize> {
    let mut folded = 0;
    while folded < max {
        let pages = futures::future::try_join_all((0..SHARDS).map(|shard| async move {
            let page = store
                .query(
                    Query::partition(deployment_partition(shard))
                        .prefix(PENDING)
                        .limit(FOLD_PAGE),
                )
                .await?;
            Ok::<_, lambent_ports::StoreError>((shard, page))
        }))
        .await?;
        let more = pages.iter().any(|(_, page)| page.next.is_some());
        let mut entries: Vec<(u32, Item)> = pages
            .into_iter()
            .flat_map(|(shard, page)| page.items.into_iter().map(move |item| (shard, item)))
            .collect();
        entries.truncate(max - folded);
        if entries.is_empty() {
            break;
        }
        let live = live_owners(store, &entries).await?;
        let mut rest = entries.as_slice();
        while !rest.is_empty() {
            let (ops, taken) = fold_batch(rest, &live)?;
            match crate::transact_retrying(store, ops).await {
                Ok(()) => folded += taken,
                // Another fold took these entries (or some of them) first.
                Err(e) if e.is_condition_failure() => return Ok(folded),
                Err(e) => return Err(e.into()),
            }
            rest = &rest[taken..];
        }
        if !more {
            break;
        }
    }
    Ok(folded)
}

/// The owners of `entries` who still exist: a deleted user's calls are
/// folded into the deployment's aggregates only, so the fold does not put
/// items back in the partition the user's deletion emptied.
async fn live_owners(
    store: &dyn ItemStore,
    entries: &[(u32, Item)],
) -> Result<std::collections::BTreeSet<String>> {
    let owners: std::collections::BTreeSet<&str> = entries
        .iter()
        .filter_map(|(_, item)| item.get_str("owner"))
        .collect();
    let found =
        futures::future::try_join_all(owners.iter().map(|owner| users::get(store, owner))).await?;
    Ok(owners
        .into_iter()
        .zip(found)
        .filter(|(_, user)| user.is_some())
        .map(|(owner, _)| owner.to_owned())
        .collect())
}

/// One fold transaction over the first of `entries` (at least one), within
/// a transaction's 100 items; and how many entries it takes.
fn fold_batch(
    entries: &[(u32, Item)],
    live: &std::collections::BTreeSet<String>,
) -> Result<(Vec<TxOp>, usize)> {
    let deployment_pk = deployment_partition(entries[0].0);
    let mut sums: BTreeMap<Key, Totals> = BTreeMap::new();
    let mut shards = std::collections::BTreeSet::new();
    let mut deletes = Vec::new();
    for (shard, item) in entries {
        let pending = Pending::of(item)?;
        let keys = pending.aggregate_keys(&deployment_pk, live.contains(&pending.owner));
        let new = keys.iter().filter(|k| !sums.contains_key(*k)).count();
        let new_shard = usize::from(!shards.contains(shard));
        if !deletes.is_empty()
            && sums.len() + new + deletes.len() + 1 + shards.len() + new_shard
                > MAX_TRANSACTION_ITEMS
        {
            break;
        }
        for key in keys {
            sums.entry(key).or_default().add(&pending.totals);
        }
        shards.insert(*shard);
        deletes.push(TxOp::Delete {
            key: item.key.clone(),
            condition: Some(Condition::Exists),
        });
    }
    let taken = deletes.len();
    let mut ops: Vec<TxOp> = sums
        .into_iter()
        .map(|(key, totals)| TxOp::Update {
            key,
            update: add_totals(&totals),
            condition: None,
        })
        .collect();
    ops.extend(deletes);
    ops.extend(shards.into_iter().map(|shard| TxOp::Update {
        key: folds_key(shard),
        update: Update::new().add("folds", Decimal::ONE),
        condition: None,
    }));
    Ok((ops, taken))
}

/// Every shard's fold count, at once.
async fn fold_counts(store: &dyn ItemStore) -> Result<Vec<Decimal>> {
    let keys: Vec<Key> = (0..SHARDS).map(folds_key).collect();
    let items = futures::future::try_join_all(keys.iter().map(|k| store.get(k))).await?;
    Ok(items
        .into_iter()
        .map(|item| {
            item.and_then(|i| i.get_decimal("folds"))
                .unwrap_or_default()
        })
        .collect())
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
    for _ in 0..REPORT_ATTEMPTS {
        let before = fold_counts(store).await?;
        let (folded, pending) = futures::future::try_join(
            read_aggregates(store, scope, dimension, from, to),
            read_pending(store, scope, dimension, from, to),
        )
        .await?;
        // A fold between the two looks may have moved entries from one read
        // to the other: read again.
        if fold_counts(store).await? == before {
            let mut groups = folded;
            for (group, totals) in pending {
                groups.entry(group).or_default().add(&totals);
            }
            return Ok(assemble(groups, dimension));
        }
    }
    Err(Error::Unavailable(
        "usage kept being folded while it was read".into(),
    ))
}

/// The folded aggregates of `dimension` between `from` and `to`: the
/// scope's partitions (the user's, or every deployment shard) read at once.
async fn read_aggregates(
    store: &dyn ItemStore,
    scope: &Scope,
    dimension: Dimension,
    from: &str,
    to: &str,
) -> Result<BTreeMap<String, Totals>> {
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
    Ok(groups)
}

/// The pending entries of the scope (a user's: the prefix of their ID in
/// each shard) between `from` and `to`, grouped as their aggregates will be.
async fn read_pending(
    store: &dyn ItemStore,
    scope: &Scope,
    dimension: Dimension,
    from: &str,
    to: &str,
) -> Result<BTreeMap<String, Totals>> {
    let (prefix, deployment) = match scope {
        Scope::User(owner) => (format!("{PENDING}{owner}#"), false),
        Scope::Everyone => (PENDING.to_owned(), true),
    };
    let shards = futures::future::try_join_all(
        (0..SHARDS).map(|shard| read_all(store, deployment_partition(shard), &prefix)),
    )
    .await?;
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    for item in shards.iter().flatten() {
        let pending = Pending::of(item)?;
        if pending.day.as_str() < from || pending.day.as_str() > to {
            continue;
        }
        let group = match (dimension, pending.group(dimension, deployment)) {
            (_, None) => continue,
            (Dimension::Day, Some(_)) => pending.day.as_str(),
            (_, Some(value)) => value,
        };
        groups
            .entry(group.to_owned())
            .or_default()
            .add(&pending.totals);
    }
    Ok(groups)
}

/// Every item of `pk` under `prefix`, page by page.
async fn read_all(store: &dyn ItemStore, pk: String, prefix: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .query(
                Query::partition(pk.as_str())
                    .prefix(prefix)
                    .limit(MAX_PAGE_SIZE)
                    .after(after.take()),
            )
            .await?;
        items.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(items),
        }
    }
}

fn assemble(groups: BTreeMap<String, Totals>, dimension: Dimension) -> (Vec<Group>, Totals) {
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
    (groups, total)
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
