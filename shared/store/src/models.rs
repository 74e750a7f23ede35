//! The model catalog: prices in USD per million tokens, as exact decimals.
//! It ships with the public list prices of the main Anthropic and OpenAI
//! models (see [`SEED`]); admins add models or reprice them, which stores the
//! model under `MODELS/MODEL#<name>` (a stored model overrides the seed) and
//! bumps the catalog version `MODELS/VERSION`. Each process caches the
//! catalog and rereads it when the version changes.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde::Serialize;

use super::providers::ProviderKind;
use super::{decimal, text, whole};
use lambent_core::error::{Error, Result};
use lambent_ports::{Condition, Item, ItemStore, Key, Query, TxOp, Update};

const PARTITION: &str = "MODELS";
const MAX_MODELS: usize = 1000;

fn model_key(name: &str) -> Key {
    Key::new(PARTITION, format!("MODEL#{name}"))
}

fn version_key() -> Key {
    Key::new(PARTITION, "VERSION")
}

/// Prices in USD per million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Prices {
    #[schema(value_type = String, example = "3")]
    pub input_per_mtok: Decimal,
    #[schema(value_type = String, example = "15")]
    pub output_per_mtok: Decimal,
    #[schema(value_type = String, example = "0.30")]
    pub cache_read_per_mtok: Decimal,
    #[schema(value_type = String, example = "3.75")]
    pub cache_write_per_mtok: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Model {
    pub name: String,
    pub provider_kind: ProviderKind,
    #[serde(flatten)]
    pub prices: Prices,
    /// Where the prices come from: `catalog` (shipped) or `custom` (set by an admin).
    pub source: String,
}

/// Public list prices (USD per million tokens) as published by Anthropic and
/// OpenAI in November 2025: name, kind, input, output, cache read, cache
/// write. Anthropic's cache write is the 5-minute rate; OpenAI does not charge
/// for cache writes.
pub const SEED: &[(&str, ProviderKind, &str, &str, &str, &str)] = &[
    (
        "claude-opus-4-5",
        ProviderKind::Anthropic,
        "5",
        "25",
        "0.50",
        "6.25",
    ),
    (
        "claude-opus-4-1",
        ProviderKind::Anthropic,
        "15",
        "75",
        "1.50",
        "18.75",
    ),
    (
        "claude-sonnet-4-5",
        ProviderKind::Anthropic,
        "3",
        "15",
        "0.30",
        "3.75",
    ),
    (
        "claude-sonnet-4-0",
        ProviderKind::Anthropic,
        "3",
        "15",
        "0.30",
        "3.75",
    ),
    (
        "claude-haiku-4-5",
        ProviderKind::Anthropic,
        "1",
        "5",
        "0.10",
        "1.25",
    ),
    (
        "claude-3-5-haiku-latest",
        ProviderKind::Anthropic,
        "0.80",
        "4",
        "0.08",
        "1",
    ),
    ("gpt-5", ProviderKind::Openai, "1.25", "10", "0.125", "0"),
    (
        "gpt-5-mini",
        ProviderKind::Openai,
        "0.25",
        "2",
        "0.025",
        "0",
    ),
    (
        "gpt-5-nano",
        ProviderKind::Openai,
        "0.05",
        "0.40",
        "0.005",
        "0",
    ),
    ("gpt-4.1", ProviderKind::Openai, "2", "8", "0.50", "0"),
    (
        "gpt-4.1-mini",
        ProviderKind::Openai,
        "0.40",
        "1.60",
        "0.10",
        "0",
    ),
    (
        "gpt-4.1-nano",
        ProviderKind::Openai,
        "0.10",
        "0.40",
        "0.025",
        "0",
    ),
    ("gpt-4o", ProviderKind::Openai, "2.50", "10", "1.25", "0"),
    (
        "gpt-4o-mini",
        ProviderKind::Openai,
        "0.15",
        "0.60",
        "0.075",
        "0",
    ),
    ("o3", ProviderKind::Openai, "2", "8", "0.50", "0"),
    (
        "o4-mini",
        ProviderKind::Openai,
        "1.10",
        "4.40",
        "0.275",
        "0",
    ),
];

fn seed() -> BTreeMap<String, Model> {
    let price = |s: &str| Decimal::from_str(s).unwrap_or(Decimal::MAX);
    SEED.iter()
        .map(|&(name, kind, input, output, read, write)| {
            let model = Model {
                name: name.to_owned(),
                provider_kind: kind,
                prices: Prices {
                    input_per_mtok: price(input),
                    output_per_mtok: price(output),
                    cache_read_per_mtok: price(read),
                    cache_write_per_mtok: price(write),
                },
                source: "catalog".to_owned(),
            };
            (model.name.clone(), model)
        })
        .collect()
}

fn from_item(item: &Item) -> Result<Model> {
    let kind = text(item, "provider_kind")?;
    Ok(Model {
        name: super::id_after(item, "MODEL#")?.to_owned(),
        provider_kind: ProviderKind::parse(&kind)
            .ok_or_else(|| Error::Internal(format!("model kind {kind:?}")))?,
        prices: Prices {
            input_per_mtok: decimal(item, "input_per_mtok")?,
            output_per_mtok: decimal(item, "output_per_mtok")?,
            cache_read_per_mtok: decimal(item, "cache_read_per_mtok")?,
            cache_write_per_mtok: decimal(item, "cache_write_per_mtok")?,
        },
        source: "custom".to_owned(),
    })
}

async fn stored_version(store: &dyn ItemStore) -> Result<i64> {
    match store.get(&version_key()).await? {
        Some(item) => whole(&item, "version"),
        None => Ok(0),
    }
}

async fn load(store: &dyn ItemStore) -> Result<BTreeMap<String, Model>> {
    let mut models = seed();
    let page = store
        .query(
            Query::partition(PARTITION)
                .prefix("MODEL#")
                .limit(MAX_MODELS),
        )
        .await?;
    for item in &page.items {
        let model = from_item(item)?;
        models.insert(model.name.clone(), model);
    }
    Ok(models)
}

struct Snapshot {
    version: i64,
    checked: Instant,
    models: Arc<BTreeMap<String, Model>>,
}

/// The catalog as this process last read it. It rechecks the stored version
/// at most once per `recheck` and reloads only when the version moved; a
/// change made by this process is seen at once.
pub struct Catalog {
    recheck: Duration,
    snapshot: Mutex<Option<Snapshot>>,
}

impl Catalog {
    pub fn new(recheck: Duration) -> Catalog {
        Catalog {
            recheck,
            snapshot: Mutex::new(None),
        }
    }

    fn cached(&self, fresh_only: bool) -> Option<(i64, Arc<BTreeMap<String, Model>>)> {
        let guard = self.snapshot.lock().ok()?;
        let s = guard.as_ref()?;
        (!fresh_only || s.checked.elapsed() < self.recheck).then(|| (s.version, s.models.clone()))
    }

    fn remember(&self, version: i64, models: Arc<BTreeMap<String, Model>>) {
        if let Ok(mut guard) = self.snapshot.lock() {
            *guard = Some(Snapshot {
                version,
                checked: Instant::now(),
                models,
            });
        }
    }

    /// Every model, by name.
    pub async fn all(&self, store: &dyn ItemStore) -> Result<Arc<BTreeMap<String, Model>>> {
        if let Some((_, models)) = self.cached(true) {
            return Ok(models);
        }
        let version = stored_version(store).await?;
        if let Some((cached_version, models)) = self.cached(false) {
            if cached_version == version {
                self.remember(version, models.clone());
                return Ok(models);
            }
        }
        let models = Arc::new(load(store).await?);
        self.remember(version, models.clone());
        Ok(models)
    }

    pub async fn get(&self, store: &dyn ItemStore, name: &str) -> Result<Option<Model>> {
        Ok(self.all(store).await?.get(name).cloned())
    }

    /// Adds a model or reprices it. Returns the model and whether it is new
    /// to the catalog.
    pub async fn upsert(
        &self,
        store: &dyn ItemStore,
        name: &str,
        kind: ProviderKind,
        prices: Prices,
    ) -> Result<(Model, bool)> {
        let existed = self.get(store, name).await?.is_some();
        let item = Item::new(model_key(name))
            .with("provider_kind", kind.as_str())
            .with("input_per_mtok", prices.input_per_mtok)
            .with("output_per_mtok", prices.output_per_mtok)
            .with("cache_read_per_mtok", prices.cache_read_per_mtok)
            .with("cache_write_per_mtok", prices.cache_write_per_mtok)
            .with("updated_at", lambent_core::time::now_rfc3339());
        store
            .transact(vec![
                TxOp::Put {
                    item,
                    condition: None,
                },
                TxOp::Update {
                    key: version_key(),
                    update: Update::new().add("version", 1.into()),
                    condition: None::<Condition>,
                },
            ])
            .await?;
        // Reload now, so this process sees its own change at once.
        let version = stored_version(store).await?;
        let models = Arc::new(load(store).await?);
        let model = models
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("model {name} vanished after its write")))?;
        self.remember(version, models);
        Ok((model, !existed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_price_is_an_exact_decimal() {
        // seed() falls back to Decimal::MAX for a typo; none may reach it.
        for model in seed().values() {
            let p = &model.prices;
            for price in [
                p.input_per_mtok,
                p.output_per_mtok,
                p.cache_read_per_mtok,
                p.cache_write_per_mtok,
            ] {
                assert!(price < Decimal::from(1000), "{}: {price}", model.name);
            }
        }
        assert_eq!(seed().len(), SEED.len(), "duplicate model names");
    }
}
