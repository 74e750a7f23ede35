//! `lambent bootstrap`: creates (or finds) every AWS resource that
//! `lambent serve --backend aws` and the functions use, on whatever endpoint
//! the AWS configuration points to. Running it twice changes nothing.

pub use crate::resources::Names;

/// Creates the resources and prints the environment a function would get.
pub async fn run(names: &Names) -> anyhow::Result<()> {
    let sdk = lambent_aws::load_sdk_config().await;
    let made = crate::resources::ensure_all(&sdk, names).await?;
    println!("LAMBENT_TABLE={}", made.table);
    println!("LAMBENT_SECRET_ID={}", made.secret_id);
    println!("LAMBENT_KMS_KEY_ID={}", made.kms_key_id);
    for (queue, url) in &made.queue_urls {
        println!("# {} queue: {url}", queue.as_str());
    }
    if let Some(url) = made.queue_urls.get(&lambent_ports::QueueName::Steps) {
        println!("LAMBENT_STEPS_QUEUE_URL={url}");
    }
    Ok(())
}
