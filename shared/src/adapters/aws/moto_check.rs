//! THROWAWAY: checks against a running moto (AWS_ENDPOINT_URL). Deleted after use.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::*;
use crate::ports::cipher::{CipherError, EncryptionContext, KeyCipher};
use crate::ports::queue::{Queue, QueueError, QueueName};
use crate::ports::secrets::Secrets;
use crate::ports::store::*;
use crate::secret::ExposeSecret;
use crate::time::now_epoch_secs;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn enabled() -> bool {
    std::env::var("AWS_ENDPOINT_URL").is_ok()
}

async fn setup(
    prefix: &str,
    max_receives: u32,
) -> Result<(aws_config::SdkConfig, Provisioned), ProvisionError> {
    let config = load_sdk_config().await;
    let mut names = Names::with_prefix(prefix);
    names.max_receives = max_receives;
    let p = ensure_all(&config, &names).await?;
    Ok((config, p))
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

#[tokio::test]
async fn provision_twice_and_resolve() -> R {
    if !enabled() {
        return Ok(());
    }
    let config = load_sdk_config().await;
    let names = Names::with_prefix("prov");
    let a = ensure_all(&config, &names).await?;
    let b = ensure_all(&config, &names).await?;
    assert_eq!(a, b);
    let c = resolve(&config, &names).await?;
    assert_eq!(a, c);
    println!("{a:#?}");
    assert_eq!(a.queue_urls.len(), 4);
    assert!(a.kms_key_id.starts_with("arn:aws:kms:"));
    assert!(a.secret_id.starts_with("arn:aws:secretsmanager:"));
    // a different max_receives: CreateQueue conflicts, SetQueueAttributes fixes it
    let mut other = names.clone();
    other.max_receives = 7;
    let d2 = ensure_all(&config, &other).await?;
    assert_eq!(a, d2);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&a.queue_urls[&QueueName::Steps])
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await?;
    println!("redrive after change: {:?}", attrs.attributes());
    let err = resolve(&config, &Names::with_prefix("nothere")).await;
    println!(
        "resolve missing: {}",
        err.as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    assert!(matches!(err, Err(ProvisionError::Missing { .. })));
    // Only the table exists for "half": the error names a queue.
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let _ = dynamo;
    Ok(())
}

#[tokio::test]
async fn store_basics() -> R {
    if !enabled() {
        return Ok(());
    }
    let (config, p) = setup("store", 5).await?;
    let s = DynamoStore::from_conf(&config, &p.table);
    s.ping().await?;
    let k = Key::new("U#1", "PROFILE");
    let mut item = Item::new(k.clone())
        .with("name", "ada")
        .with("n", d("0.000000001"))
        .with("big", d("12345678901234567890.12345678"))
        .with("flag", true);
    item.attrs
        .insert("bin".into(), Value::B(vec![0, 1, 2, 255]));
    item.attrs.insert("nil".into(), Value::Null);
    item.attrs.insert(
        "m".into(),
        Value::M(BTreeMap::from([
            (
                "l".into(),
                Value::L(vec![Value::Null, Value::S(String::new()), 3.into()]),
            ),
            ("neg".into(), Value::N(d("-1.50"))),
        ])),
    );
    s.put(item.clone(), Some(Condition::NotExists)).await?;
    assert_eq!(s.get(&k).await?, Some(item.clone()));
    // conditional put failure
    let again = s.put(item.clone(), Some(Condition::NotExists)).await;
    assert!(
        matches!(again, Err(StoreError::ConditionFailed)),
        "{again:?}"
    );
    // comparisons
    assert!(s
        .put(item.clone(), Some(Condition::eq("name", "ada")))
        .await
        .is_ok());
    assert!(matches!(
        s.put(item.clone(), Some(Condition::eq("name", "bob")))
            .await,
        Err(StoreError::ConditionFailed)
    ));
    // Ne with another type: true; Ne on absent attribute: false
    assert!(s
        .put(item.clone(), Some(Condition::cmp("name", Cmp::Ne, 5)))
        .await
        .is_ok());
    assert!(matches!(
        s.put(item.clone(), Some(Condition::cmp("absent", Cmp::Ne, "x")))
            .await,
        Err(StoreError::ConditionFailed)
    ));
    // ordered comparison on other type: false
    assert!(matches!(
        s.put(item.clone(), Some(Condition::cmp("name", Cmp::Gt, 5)))
            .await,
        Err(StoreError::ConditionFailed)
    ));
    assert!(s
        .put(item.clone(), Some(Condition::cmp("n", Cmp::Lt, 1)))
        .await
        .is_ok());
    assert!(matches!(
        s.put(item.clone(), Some(Condition::cmp("flag", Cmp::Lt, true)))
            .await,
        Err(StoreError::ConditionFailed)
    ));
    // Eq on maps and bools
    assert!(s
        .put(item.clone(), Some(Condition::eq("flag", true)))
        .await
        .is_ok());
    let m = item.attrs["m"].clone();
    assert!(s
        .put(
            item.clone(),
            Some(Condition::Compare("m".into(), Cmp::Eq, m))
        )
        .await
        .is_ok());
    assert!(s
        .put(
            item.clone(),
            Some(Condition::And(vec![
                Condition::Exists,
                Condition::AttrExists("bin".into()),
                Condition::Not(Box::new(Condition::AttrExists("zzz".into())))
            ]))
        )
        .await
        .is_ok());
    assert!(s
        .put(
            item.clone(),
            Some(Condition::Or(vec![
                Condition::NotExists,
                Condition::AttrNotExists("name".into())
            ]))
        )
        .await
        .is_err());

    // ADD, set_if_absent, remove
    let ck = Key::new("U#1", "COUNTER");
    let u = s
        .update(
            &ck,
            Update::new()
                .add("calls", d("1.5"))
                .set_if_absent("created", "t1"),
            None,
        )
        .await?;
    assert_eq!(u.get_decimal("calls"), Some(d("1.5")));
    let u = s
        .update(
            &ck,
            Update::new()
                .add("calls", d("1.5"))
                .set_if_absent("created", "t2")
                .set("x", "y"),
            Some(Condition::Exists),
        )
        .await?;
    assert_eq!(u.get_decimal("calls"), Some(d("3")));
    assert_eq!(u.get_str("created"), Some("t1"));
    let u = s
        .update(
            &ck,
            Update::new()
                .remove("x")
                .expire_at(Some(now_epoch_secs() + 1000)),
            None,
        )
        .await?;
    assert!(u.get("x").is_none());
    assert!(u.expires_at.is_some());
    let u = s.update(&ck, Update::new().expire_at(None), None).await?;
    assert!(u.expires_at.is_none());
    // ADD on a string: Invalid
    let bad = s
        .update(&ck, Update::new().add("created", Decimal::ONE), None)
        .await;
    println!("ADD on string: {bad:?}");
    assert!(matches!(bad, Err(StoreError::Invalid(_))));
    // condition failure on update
    let r = s
        .update(
            &ck,
            Update::new().add("calls", Decimal::ONE),
            Some(Condition::cmp("calls", Cmp::Gt, 100)),
        )
        .await;
    assert!(matches!(r, Err(StoreError::ConditionFailed)), "{r:?}");
    // empty update creates a key-only item
    let ek = Key::new("U#1", "EMPTY");
    let e = s.update(&ek, Update::new(), None).await?;
    assert_eq!(e, Item::new(ek.clone()));
    // delete returns old
    let old = s.delete(&ek, Some(Condition::Exists)).await?;
    assert_eq!(old, Some(Item::new(ek.clone())));
    assert_eq!(s.delete(&ek, None).await?, None);
    assert!(matches!(
        s.delete(&ek, Some(Condition::Exists)).await,
        Err(StoreError::ConditionFailed)
    ));
    Ok(())
}

#[tokio::test]
async fn store_expiry() -> R {
    if !enabled() {
        return Ok(());
    }
    let (config, p) = setup("expiry", 5).await?;
    let s = DynamoStore::from_conf(&config, &p.table);
    let now = now_epoch_secs();
    let k = Key::new("E", "1");
    let stale = Item::new(k.clone())
        .with("n", 5)
        .with("stale", "yes")
        .expiring_at(now - 10);
    s.put(stale.clone(), None).await?;
    assert_eq!(s.get(&k).await?, None);
    // conditions see it as absent
    for (c, ok) in [
        (Condition::Exists, false),
        (Condition::AttrExists("n".into()), false),
        (Condition::eq("n", 5), false),
        (Condition::cmp("n", Cmp::Ne, 1), false),
    ] {
        let r = s.put(stale.clone(), Some(c.clone())).await;
        assert_eq!(r.is_ok(), ok, "{c:?}: {r:?}");
    }
    // delete of expired: None
    assert_eq!(s.delete(&k, None).await?, None);
    // update on expired starts fresh
    s.put(stale.clone(), None).await?;
    let u = s
        .update(&k, Update::new().add("n", Decimal::ONE), None)
        .await?;
    assert_eq!(u.get_decimal("n"), Some(Decimal::ONE));
    assert!(u.get("stale").is_none(), "{u:?}");
    assert!(u.expires_at.is_none());
    // update with NotExists on expired succeeds, fresh
    s.put(stale.clone(), None).await?;
    let u = s
        .update(&k, Update::new().set("a", "b"), Some(Condition::NotExists))
        .await?;
    assert_eq!(u.attrs.len(), 1);
    // update with Exists on expired fails
    s.put(stale.clone(), None).await?;
    let r = s
        .update(&k, Update::new().set("a", "b"), Some(Condition::Exists))
        .await;
    assert!(matches!(r, Err(StoreError::ConditionFailed)), "{r:?}");
    assert_eq!(s.get(&k).await?, None);
    // AttrNotExists true, Not(Exists) true on expired
    s.put(stale.clone(), None).await?;
    s.put(stale.clone(), Some(Condition::AttrNotExists("n".into())))
        .await?;
    s.put(
        stale.clone(),
        Some(Condition::Not(Box::new(Condition::Exists))),
    )
    .await?;
    // transaction update on expired starts fresh; Check Exists on expired fails
    s.put(stale.clone(), None).await?;
    s.transact(vec![TxOp::Update {
        key: k.clone(),
        update: Update::new().add("n", Decimal::TWO),
        condition: Some(Condition::NotExists),
    }])
    .await?;
    let got = s.get(&k).await?.ok_or("missing")?;
    assert_eq!(got.get_decimal("n"), Some(Decimal::TWO));
    assert!(got.get("stale").is_none());
    let k2 = Key::new("E", "2");
    s.put(Item::new(k2.clone()).expiring_at(now - 1), None)
        .await?;
    let r = s
        .transact(vec![
            TxOp::Check {
                key: k2.clone(),
                condition: Condition::Exists,
            },
            TxOp::Update {
                key: Key::new("E", "3"),
                update: Update::new().set("a", "b"),
                condition: None,
            },
        ])
        .await;
    assert!(
        matches!(&r, Err(StoreError::TransactionCancelled { failed }) if failed == &vec![0]),
        "{r:?}"
    );
    assert_eq!(s.get(&Key::new("E", "3")).await?, None);
    Ok(())
}

#[tokio::test]
async fn store_query_and_transactions() -> R {
    if !enabled() {
        return Ok(());
    }
    let (config, p) = setup("query", 5).await?;
    let s = DynamoStore::from_conf(&config, &p.table);
    let now = now_epoch_secs();
    let mut live = Vec::new();
    for i in 0..25 {
        let sk = format!("MSG#{i:03}");
        let expired = i % 4 == 1;
        let mut item = Item::new(Key::new("S#1", sk.clone())).with("i", i);
        if expired {
            item = item.expiring_at(now - 5);
        } else if i % 4 == 2 {
            item = item.expiring_at(now + 1000);
        }
        if !expired {
            live.push(sk);
        }
        s.put(item, None).await?;
    }
    for sk in ["A", "MSF", "MSH", "ZZ"] {
        s.put(Item::new(Key::new("S#1", sk)), None).await?;
    }
    s.put(Item::new(Key::new("S#2", "MSG#000")), None).await?;
    for order in [Order::Ascending, Order::Descending] {
        for limit in [1, 3, 6, 7, 19, 100] {
            let mut got = Vec::new();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                let page = s
                    .query(
                        Query::partition("S#1")
                            .prefix("MSG#")
                            .order(order)
                            .limit(limit)
                            .after(cursor),
                    )
                    .await?;
                pages += 1;
                assert!(page.items.len() <= limit);
                got.extend(page.items.iter().map(|i| i.key.sk.clone()));
                match page.next {
                    Some(c) => {
                        assert_eq!(page.items.len(), limit);
                        assert_eq!(Some(&c.0), page.items.last().map(|i| &i.key.sk));
                        cursor = Some(c);
                    }
                    None => break,
                }
            }
            let mut want = live.clone();
            if order == Order::Descending {
                want.reverse();
            }
            assert_eq!(got, want, "{order:?} {limit}");
            assert_eq!(
                pages,
                want.len().div_ceil(limit).max(1),
                "{order:?} {limit}"
            );
        }
    }
    let all = s.query(Query::partition("S#1").limit(1000)).await?;
    assert_eq!(all.items.len(), live.len() + 4);
    assert!(all.next.is_none());
    let empty = s.query(Query::partition("S#9")).await?;
    assert!(empty.items.is_empty() && empty.next.is_none());

    // transactions
    let a = Key::new("T", "a");
    let b = Key::new("T", "b");
    let c = Key::new("T", "c");
    s.put(Item::new(b.clone()).with("v", 1), None).await?;
    let r = s
        .transact(vec![
            TxOp::Put {
                item: Item::new(a.clone()).with("v", 1),
                condition: Some(Condition::NotExists),
            },
            TxOp::Check {
                key: c.clone(),
                condition: Condition::Exists,
            },
            TxOp::Update {
                key: b.clone(),
                update: Update::new().add("v", Decimal::ONE),
                condition: Some(Condition::eq("v", 2)),
            },
            TxOp::Delete {
                key: Key::new("T", "d"),
                condition: None,
            },
        ])
        .await;
    assert!(
        matches!(&r, Err(StoreError::TransactionCancelled { failed }) if failed == &vec![1, 2]),
        "{r:?}"
    );
    assert_eq!(s.get(&a).await?, None);
    assert_eq!(
        s.get(&b).await?.and_then(|i| i.get_decimal("v")),
        Some(Decimal::ONE)
    );
    s.transact(vec![
        TxOp::Put {
            item: Item::new(a.clone()).with("v", 1),
            condition: Some(Condition::NotExists),
        },
        TxOp::Update {
            key: b.clone(),
            update: Update::new().add("v", Decimal::ONE),
            condition: Some(Condition::eq("v", 1)),
        },
        TxOp::Update {
            key: c.clone(),
            update: Update::new(),
            condition: None,
        },
    ])
    .await?;
    assert_eq!(
        s.get(&b).await?.and_then(|i| i.get_decimal("v")),
        Some(Decimal::TWO)
    );
    assert_eq!(s.get(&c).await?, Some(Item::new(c.clone())));
    let r = s.transact(vec![]).await;
    assert!(matches!(r, Err(StoreError::Invalid(_))));
    Ok(())
}

#[tokio::test]
async fn kms_cipher() -> R {
    if !enabled() {
        return Ok(());
    }
    let (config, p) = setup("kms", 5).await?;
    let c = KmsCipher::from_conf(&config, &p.kms_key_id);
    c.ping().await?;
    let ctx: EncryptionContext = BTreeMap::from([("user".into(), "u1".into())]);
    let other: EncryptionContext = BTreeMap::from([("user".into(), "u2".into())]);
    let ct = c.encrypt(b"sk-secret", &ctx).await?;
    assert_eq!(c.decrypt(&ct, &ctx).await?, b"sk-secret");
    let r = c.decrypt(&ct, &other).await;
    assert!(matches!(r, Err(CipherError::Rejected)), "{r:?}");
    let mut tampered = ct.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let r = c.decrypt(&tampered, &ctx).await;
    println!("tampered: {r:?}");
    assert!(matches!(r, Err(CipherError::Rejected)), "{r:?}");
    let r = c.decrypt(b"garbage", &ctx).await;
    println!("garbage: {r:?}");
    assert!(matches!(r, Err(CipherError::Rejected)), "{r:?}");
    assert!(matches!(
        c.encrypt(b"x", &BTreeMap::new()).await,
        Err(CipherError::Invalid(_))
    ));
    // a ciphertext of another key
    let kms = aws_sdk_kms::Client::new(&config);
    let k2 = kms.create_key().send().await?;
    let k2 = k2
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .ok_or("no key")?;
    let c2 = KmsCipher::from_conf(&config, &k2);
    let ct2 = c2.encrypt(b"x", &ctx).await?;
    let r = c.decrypt(&ct2, &ctx).await;
    println!("other key: {r:?}");
    assert!(matches!(r, Err(CipherError::Rejected)), "{r:?}");
    kms.disable_key().key_id(&k2).send().await?;
    let r = c2.ping().await;
    println!("disabled ping: {r:?}");
    assert!(r.is_err());
    Ok(())
}

#[tokio::test]
async fn sqs_queue() -> R {
    if !enabled() {
        return Ok(());
    }
    let (config, p) = setup("sqs", 2).await?;
    let q = SqsQueue::from_conf(&config, p.queue_urls.clone());
    q.ping().await?;
    let id = q.send(QueueName::Steps, "hello", Duration::ZERO).await?;
    let got = q
        .receive(QueueName::Steps, 10, Duration::from_secs(1), Duration::ZERO)
        .await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, id);
    assert_eq!(got[0].body, "hello");
    assert_eq!(got[0].receive_count, 1);
    // hidden
    assert!(q
        .receive(QueueName::Steps, 10, Duration::from_secs(1), Duration::ZERO)
        .await?
        .is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got2 = q
        .receive(
            QueueName::Steps,
            10,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .await?;
    assert_eq!(got2.len(), 1);
    assert_eq!(got2[0].receive_count, 2);
    // release it now, then the third receive moves it to the DLQ
    q.change_visibility(QueueName::Steps, &got2[0].receipt, Duration::ZERO)
        .await?;
    let got3 = q
        .receive(
            QueueName::Steps,
            10,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .await?;
    assert!(got3.is_empty(), "{got3:?}");
    let dlq = q
        .receive(
            QueueName::StepsDeadLetter,
            10,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .await?;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].body, "hello");
    q.delete(QueueName::StepsDeadLetter, &dlq[0].receipt)
        .await?;
    // stale / invalid receipts
    let r = q
        .change_visibility(QueueName::Steps, &got[0].receipt, Duration::from_secs(5))
        .await;
    println!("stale change_visibility: {r:?}");
    let r = q
        .change_visibility(QueueName::Steps, "nonsense", Duration::from_secs(5))
        .await;
    println!("invalid change_visibility: {r:?}");
    assert!(matches!(r, Err(QueueError::InvalidReceipt)), "{r:?}");
    let r = q.delete(QueueName::Steps, "nonsense").await;
    println!("invalid delete: {r:?}");
    assert!(matches!(r, Err(QueueError::InvalidReceipt)), "{r:?}");
    // delay
    q.send(QueueName::Triggers, "later", Duration::from_secs(2))
        .await?;
    assert!(q
        .receive(
            QueueName::Triggers,
            1,
            Duration::from_secs(30),
            Duration::ZERO
        )
        .await?
        .is_empty());
    // long poll longer than the default attempt timeout
    let started = Instant::now();
    let got = q
        .receive(
            QueueName::Triggers,
            1,
            Duration::from_secs(30),
            Duration::from_secs(7),
        )
        .await?;
    println!(
        "long poll returned after {:?} with {}",
        started.elapsed(),
        got.len()
    );
    assert_eq!(got.len(), 1);
    q.delete(QueueName::Triggers, &got[0].receipt).await?;
    let started = Instant::now();
    let got = q
        .receive(
            QueueName::Triggers,
            1,
            Duration::from_secs(30),
            Duration::from_secs(7),
        )
        .await?;
    println!("empty long poll returned after {:?}", started.elapsed());
    assert!(got.is_empty());
    // not configured
    let partial = SqsQueue::from_conf(&config, BTreeMap::new());
    assert!(matches!(
        partial.send(QueueName::Steps, "x", Duration::ZERO).await,
        Err(QueueError::NotConfigured("steps"))
    ));
    assert!(partial.ping().await.is_err());
    Ok(())
}

#[tokio::test]
async fn secrets() -> R {
    if !enabled() {
        return Ok(());
    }
    let (config, p) = setup("sec", 5).await?;
    let s = SecretsManagerSecrets::from_conf(&config, &p.secret_id);
    s.ping().await?;
    let key = s.get("signing_key").await?.ok_or("no signing key")?;
    assert_eq!(key.expose_secret().len(), 64);
    assert!(s.get("nope").await?.is_none());
    // cached: same value after the secret changes
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    sm.put_secret_value()
        .secret_id(&p.secret_id)
        .secret_string(r#"{"signing_key":"changed"}"#)
        .send()
        .await?;
    let again = s.get("signing_key").await?.ok_or("gone")?;
    assert_eq!(again.expose_secret(), key.expose_secret());
    let fresh = SecretsManagerSecrets::from_conf(&config, &p.secret_id);
    assert_eq!(
        fresh
            .get("signing_key")
            .await?
            .ok_or("gone")?
            .expose_secret(),
        "changed"
    );
    let missing = SecretsManagerSecrets::from_conf(&config, "nope/nope");
    let r = missing.get("x").await;
    println!("missing secret: {r:?}");
    assert!(r.is_err());
    // ensure_all again keeps the (changed) secret
    let (_, p2) = setup("sec", 5).await?;
    assert_eq!(p2.secret_id, p.secret_id);
    Ok(())
}
