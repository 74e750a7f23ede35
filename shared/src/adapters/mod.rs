//! Adapters of the ports: `aws` (DynamoDB, KMS, SQS, Secrets Manager) and
//! `embedded` (one SQLite file and a few key files in a data directory).

pub mod aws;
pub mod embedded;
